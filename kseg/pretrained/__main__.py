"""``python -m kseg.pretrained RUN_DIR``: make a run kseg's ready model (:func:`kseg.pretrained.install`)."""

from __future__ import annotations

import argparse
import sys

from kseg.pretrained import install


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kseg.pretrained", description=install.__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder of the dermoscopy preset, e.g. runs/unet-bce-seed0-0123456789ab")
    parser.add_argument("--results", default="experiments.csv", help="the leaderboard that holds the run's row")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"[pretrained] {install(args.run_dir, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
