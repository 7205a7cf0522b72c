"""What a fit was given, kept in its checkpoints, so that a resume can be checked against it."""

from __future__ import annotations

import json
from typing import Any

from pytorch_lightning.callbacks import Callback


class RunRecord(Callback):
    """Keep ``settings`` (plain JSON data, e.g. the data module's config) in every checkpoint of the fit.

    The CLI adds one to every fit with the data's config; resuming with other data settings is then
    refused (:func:`lightning_kd.cli.config.refuse_changed_resume`).

    Example:
        >>> RunRecord({"data": {"batch_size": 64}}).state_dict()
        {'data': {'batch_size': 64}}
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        # through JSON: only plain values reach the checkpoint (paths as strings), so it loads weights_only
        self.settings = json.loads(json.dumps(settings, default=str))

    def record(self, key: str, value: Any) -> None:
        """Keep ``value`` (plain JSON data) under ``key`` too, replacing what was there.

        Example:
            >>> record = RunRecord({"note": "mine"})
            >>> record.record("data", {"batch_size": 64})
            >>> record.state_dict()
            {'note': 'mine', 'data': {'batch_size': 64}}
        """
        self.settings[key] = json.loads(json.dumps(value, default=str))

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the checkpoint's record stays in the checkpoint; this run records what it was given
        pass
