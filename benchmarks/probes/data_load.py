"""Time loading all of PH2 at 256x256: cold (empty cache dir) and warm (from the .npz cache).

Usage: python benchmarks/probes/data_load.py [PH2_DIR]   (default: ../shared/data/ph2 next to the repo)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "ph2"
    ph2_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KSEG_CACHE_DIR"] = cache  # empty cache: the first load decodes everything
        from kseg.data import load_ph2

        start = time.perf_counter()
        data = load_ph2(ph2_dir, image_size=256)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(5):
            start = time.perf_counter()
            load_ph2(ph2_dir, image_size=256)
            warm.append(time.perf_counter() - start)
    print(f"PH2 {ph2_dir}: {len(data)} cases -> images {data.images.shape}, cpus={os.cpu_count()}")
    print(f"cold load (empty cache): {cold:.2f} s")
    print(f"warm load (cached):      first {warm[0]:.3f} s, median of 5 {statistics.median(warm):.3f} s")


if __name__ == "__main__":
    main()
