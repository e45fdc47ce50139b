"""``python -m kseg.pretrained RUN_DIR``: make a run kseg's ready model (:func:`kseg.pretrained.install`)."""

import argparse

from kseg.pretrained import install

parser = argparse.ArgumentParser(prog="python -m kseg.pretrained", description=install.__doc__.split("\n\n")[0])
parser.add_argument("run_dir", help="a run folder of the dermoscopy preset, e.g. runs/unet-bce-seed0-0123456789ab")
parser.add_argument("--results", default="experiments.csv", help="the leaderboard that holds the run's row")
args = parser.parse_args()
print(f"[pretrained] {install(args.run_dir, args.results)}")
