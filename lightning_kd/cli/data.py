"""``lightning-kd data <corpus>``: write a corpus that cannot be downloaded here from what a package ships."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from lightning_kd.data.janeausten import prepare_jane_austen

CORPORA = {"janeausten": prepare_jane_austen}
"""Corpora the command prepares, by name: each a function ``(root, source) -> manifest``."""


def data_command(argv: list[str]) -> None:
    """Parse ``argv`` (what follows ``lightning-kd data``), write the corpus, print what was written."""
    parser = ArgumentParser(prog="lightning-kd data", description="Prepare a corpus from a package's files "
                            "(janeausten: the Jane Austen novels of Debian's r-cran-janeaustenr; see the docs).")
    parser.add_argument("corpus", choices=sorted(CORPORA), help="which corpus")
    parser.add_argument("--root", type=Path | None, default=None, help="folder to write (default: data/<corpus>)")
    parser.add_argument("--source", type=Path | None, default=None,
                        help="the package's .deb file or unpacked folder (default: where it is installed, or a "
                             "r-cran-janeaustenr_*.deb in the current folder)")
    args = parser.parse_args(argv)
    root = args.root or Path("data") / args.corpus
    manifest = CORPORA[args.corpus](root, args.source)
    for split, facts in manifest["splits"].items():
        print(f"{root / (split + '.txt')}: {facts['sentences']} sentences, {facts['tokens']} tokens "
              f"(sha256 {facts['sha256'][:12]}...)")
    print(f"vocabulary {manifest['vocabulary']} with <eos>; recipe {manifest['recipe']}; "
          f"checksums in {root / (args.corpus + '.json')}")
