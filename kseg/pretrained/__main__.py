"""``python -m kseg.pretrained [RUN_DIR]``: make a run kseg's ready model
(:func:`kseg.experiment.ready_model.install`), by default the dermoscopy preset's run with the best
validation IoU (:func:`kseg.experiment.ready_model.best_run`). A command line: like ``kseg.cli``,
it may use the experiment harness."""

from __future__ import annotations

import argparse
import sys

from kseg.cli._startup import start_backend
from kseg.pretrained import provenance

DESCRIPTION = (
    "Makes the run in RUN_DIR kseg's ready model: its model.keras (with the refinement it chose) saved without "
    "optimizer state, and its leaderboard row's recipe and scores in dermoscopy.json."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kseg.pretrained", description=DESCRIPTION)
    parser.add_argument(
        "run_dir",
        nargs="?",
        help="a run folder, e.g. runs/unet-bce-seed0-0123456789ab; default: the --preset's run in --output with "
        "the best validation IoU",
    )
    parser.add_argument("--results", default="experiments.csv", help="the leaderboard that holds the run's row")
    parser.add_argument("--output", default="runs", help="the run folders to choose among")
    parser.add_argument("--preset", default="dermoscopy", help="the preset whose runs are chosen among")
    parser.add_argument(
        "--provenance-only",
        action="store_true",
        help="rewrite dermoscopy.json from the ready model's leaderboard row, leaving the model as it is",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_backend()  # after parsing: --help needs no backend
    from kseg.experiment import leaderboard
    from kseg.experiment.ready_model import best_run, install, write_provenance

    if args.provenance_only:
        table = leaderboard.read(args.results)
        row = table[(table["config_hash"] == provenance()["config_hash"]) & (table["status"] == "ok")].iloc[-1]
        print(f"[pretrained] {write_provenance(row, table)}")
        return 0
    run_dir = args.run_dir or best_run(args.results, args.output, args.preset)
    print(f"[pretrained] {run_dir} -> {install(run_dir, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
