# yolokd, AGPL-3.0 License
"""Side-by-side benchmark: yolokd's methods, the undistilled student and Ultralytics' built-in distillation.

A thin script around ``yolokd benchmark`` (the implementation ships with the package, in `yolokd.bench`)::

    python benchmarks/run.py                          # preset=cpu: the whole table, about 28 minutes on 2 CPU cores
    python benchmarks/run.py preset=micro             # a smoke test
    python benchmarks/run.py publish=BENCHMARKS.md    # also write the report into BENCHMARKS.md, the plot beside it
    python benchmarks/run.py seeds=[0,1,2] methods=[cwd,tar] epochs=20 teacher=path/to/teacher.pt
"""

from __future__ import annotations

import sys

from yolokd.bench.run import run_benchmark
from yolokd.cli import main as cli_main

__all__ = ["main", "run_benchmark"]


def main(argv: list[str] | None = None) -> int:
    """Run ``yolokd benchmark`` with these ``key=value`` arguments; returns the exit code."""
    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
