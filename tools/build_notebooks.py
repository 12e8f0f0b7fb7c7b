"""Write the step notebooks from their builder modules (tools/notebooks/nbNN.py).

Each builder module defines ``CELLS``: a list of ``md("...")`` / ``code("...")`` cells,
written after a title cell and the ``parameters`` cell, which is generated from the
step's ``PARAMS`` with the demo values of ``params/demo.yaml`` (paths made relative to
the notebook's folder). Notebooks are written without outputs.

Usage: ``python tools/build_notebooks.py [01 02 ...]``
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from crmlab import params  # noqa: E402

KERNELSPEC = {"display_name": "crmlab (Python 3)", "language": "python", "name": "crmlab"}


def md(text: str) -> nbformat.NotebookNode:
    """A markdown cell (text is dedented)."""
    return nbformat.v4.new_markdown_cell(_dedent(text))


def code(text: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    """A code cell (text is dedented)."""
    cell = nbformat.v4.new_code_cell(_dedent(text))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n")


def _relativize(value, nb_dir: Path):
    if isinstance(value, dict):
        return {k: _relativize(v, nb_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relativize(v, nb_dir) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and value.startswith(str(ROOT)):
        return os.path.relpath(value, nb_dir)
    return value


def build(code_: str) -> Path:
    """Build one notebook and return its path."""
    name = params.step_name(code_)
    nb_rel = {c: nb for c, _, _, nb in params.STEPS}[code_]
    nb_path = ROOT / nb_rel
    spec = importlib.util.spec_from_file_location(f"nb{code_}", ROOT / "tools" / "notebooks" / f"nb{code_}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    demo = params.load(ROOT / "params" / "demo.yaml")
    defaults = _relativize(demo.for_step(code_), nb_path.parent)
    defaults["run_id"] = ""
    title = md(getattr(module, "TITLE", f"# Étape {code_} – {params.STEP_TITLES[code_]}"))
    param_cell = code(params.parameters_cell(code_, defaults), tags=["parameters"])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [title, param_cell, *module.CELLS]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i:02d}"
    nb_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, nb_path)
    return nb_path


if __name__ == "__main__":
    codes = sys.argv[1:] or [c for c, *_ in params.STEPS if (ROOT / "tools" / "notebooks" / f"nb{c}.py").exists()]
    for c in codes:
        print("écrit", build(params.step_code(c)).relative_to(ROOT))
