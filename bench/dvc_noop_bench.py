"""A no-op `dvc repro` (everything up to date): wall time of the whole command, median of 5.

Run after a complete `dvc repro`: `python bench/dvc_noop_bench.py`.
"""

import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, median, save


def main() -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        done = subprocess.run([dvc, "repro"], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if "Running stage" in done.stdout or done.returncode:
            sys.exit(f"not a no-op: run `dvc repro` to completion first\n{done.stdout[-2000:]}")
    save(
        "dvc_noop",
        {"seconds": {"median": round(median(times), 2), "all": [round(t, 2) for t in times]}, "target_seconds": 2.0},
    )


if __name__ == "__main__":
    main()
