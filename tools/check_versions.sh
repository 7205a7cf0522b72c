#!/usr/bin/env bash
# The test suite against other versions of the dependencies than CI's pins (.ci/run): a venv of their own, the pins
# given held through the package's install, then `python -m pytest`. The floors in setup.cfg were checked so
# (2026-12-06, 1392 passed, 3 GPU skips):
#   bash tools/check_versions.sh /tmp/v-floor torch==2.11.0 torchvision==0.26.0 pytorch-lightning==2.6.0 \
#       torchmetrics==1.7.0
# (about 14 minutes on 2 CPU cores, plus the install). Leaves the venv and the tests' folders under the first argument.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: bash tools/check_versions.sh VENV_DIR PIN...}
shift
python3 -m venv "$venv"
. "$venv/bin/activate"
printf '%s\n' "$@" > "$venv/pins.txt"
python -m pip install --quiet -c "$venv/pins.txt" "$@"
python -m pip install --quiet -c "$venv/pins.txt" -e ".[dev]"
python -c "import torch, pytorch_lightning, torchmetrics; print('torch', torch.__version__, 'lightning', \
pytorch_lightning.__version__, 'torchmetrics', torchmetrics.__version__)"
export WANDB_MODE=offline
python -m pytest --basetemp="$venv/pytest"
