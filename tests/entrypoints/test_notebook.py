import json
import os

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT
from tests.entrypoints.conftest import TINY


def test_quickstart_notebook_runs_on_a_checkpoint(trained_run, monkeypatch):
    monkeypatch.setenv("ADVMED_CKPT", str(trained_run / "checkpoints" / "best.ckpt"))
    monkeypatch.setenv("ADVMED_DATA_OVERRIDES", json.dumps(TINY))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(REPO_ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    accuracy = json.loads(next(line for line in printed.splitlines() if line.startswith('{"accuracy"')))["accuracy"]
    assert accuracy["PGD eps=0.03, 10 steps"] <= accuracy["clean"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])), "no figure shown"
