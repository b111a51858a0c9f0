"""The notebooks run top to bottom against the current API (code cells executed in order, one namespace).

Notebooks are the first thing users open; a renamed function must break this test, not their session.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_code_cells_run(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path.name} has no code cells"
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    for index, cell in enumerate(cells):
        source = "".join(cell["source"])
        # notebook-only syntax (magics, shell escapes) is not Python
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            exec(compile("\n".join(lines), f"{path.name}[code cell {index}]", "exec"), namespace)
        except Exception as error:  # name the cell: the traceback alone points into exec
            raise AssertionError(f"{path.name}, code cell {index} failed: {error!r}\n{source}") from error
        assert all(not cell.get("outputs") or output.get("output_type") != "error" for output in cell["outputs"])
    plt.close("all")


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"
