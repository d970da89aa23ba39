# yolokd, AGPL-3.0 License
"""Side-by-side benchmark: yolokd's methods, the undistilled student and Ultralytics' built-in distillation.

A thin script around `yolokd.benchmark` (the implementation ships with the package, as ``yolokd benchmark``)::

    python benchmarks/run.py                    # preset=cpu: the whole table, about 28 minutes on 2 CPU cores
    python benchmarks/run.py preset=micro       # a smoke test
    python benchmarks/run.py seeds=[0,1,2] methods=[cwd,tar] epochs=20 teacher=path/to/teacher.pt
"""

from __future__ import annotations

import sys

from yolokd.benchmark import main, run_benchmark

__all__ = ["main", "run_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
