"""Execute the notebooks top to bottom and save them with their outputs (what is committed).

    .venv/bin/python notebooks/run.py                        # all three
    .venv/bin/python notebooks/run.py 02_ablations.ipynb     # one, e.g. after publishing new ablation rows

Runs each notebook in its own folder with the project's kernel (nbclient), stops at the first cell
error, and prints how long each took. tests/test_notebooks.py executes them the same way (01 in
quick mode, MEMR1_NB_QUICK=1) without saving.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("01_walkthrough.ipynb", "02_ablations.ipynb", "03_training.ipynb")


def execute(path: Path, timeout: int = 600):
    """The executed notebook (outputs filled in); raises nbclient's CellExecutionError on a cell error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS), help="notebook files (default: all three)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    for name in args.notebooks:
        path = Path(name) if Path(name).exists() else HERE / name
        t = time.perf_counter()
        nb = execute(path, args.timeout)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - t:.0f} s, {path.stat().st_size / 1024:.0f} KB saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
