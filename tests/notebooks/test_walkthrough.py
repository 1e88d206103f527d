"""notebooks/walkthrough.ipynb runs top to bottom (nbclient, a fresh kernel) on the tiny model.

Slow (a fresh kernel, three tiny runs: about two minutes on 2 loaded cores); `.ci/run` runs it."""

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("TINY = True" in c.source for c in code)


@pytest.mark.slow
def test_walkthrough_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    text = "\n".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    assert "checkpoints/3" in text  # the sft run saved its final checkpoint
    assert "Only the word. True False" in text  # the custom env graded "cat" and "dog" for 'c'
    assert "mean reward per step: [(0," in text  # the rl run on the custom env logged rewards
