#!/usr/bin/env python3
"""Train every model x loss (x seed) and append one row per run to experiments.csv.

python run_all.py                       # cpu preset, all models, bce/dice/focal, seed 0
python run_all.py --seeds 0 1 2         # three seeds
python run_all.py --preset smoke        # seconds, synthetic data unless PH2 is found
python run_all.py --help                # every flag
"""

import sys

from kseg.cli import run_grid_command

if __name__ == "__main__":
    sys.exit(run_grid_command(prog="run_all.py"))
