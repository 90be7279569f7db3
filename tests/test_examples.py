"""The example notebook runs, cell by cell, as a user's kernel would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"

# Runs each code cell in one namespace, in order, from the notebook's folder, and prints what
# the cells print; a failing cell fails the run with its traceback.
RUNNER = """
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
scope = {"__name__": "__main__"}
for i, cell in enumerate(cells):
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"cell {i}", "exec"), scope)
"""


def test_quickstart_notebook_runs_and_shows_its_results():
    doc = json.loads(NOTEBOOK.read_text())
    assert doc["nbformat"] == 4
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(NOTEBOOK)],
        cwd=NOTEBOOK.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "windows" in out, out  # predict's summary line
    assert "largest class:" in out and "polygons in" in out
    miou = float(out.split("agreement: mIoU ")[1].split(",")[0])
    assert 0.5 < miou <= 1.0, out
