"""Shared fixtures of the test suite.

For everyone
------------
``tiny_demo`` (session)
    A small demo world (``crmlab.demo.generate(dir, scale=0.05, seed=7)``) laid out like
    the project (``<root>/data/demo`` + ``<root>/params/demo.yaml`` copied from the real
    one, so its relative paths resolve). ``tiny_demo.params(database=..., **{"run.as_of":
    ...})`` writes a params file with a fresh database and overrides; ``tiny_demo.load(...)``
    returns validated :class:`crmlab.params.RunParams`. Skips when ``crmlab.demo`` or
    ``params/demo.yaml`` does not exist yet.
``run_nbval``
    ``run_nbval(notebook, parameters) -> CompletedProcess``: inject ``parameters`` into a
    copy of ``notebook`` (papermill's ``parameterize_notebook``, the source is untouched),
    then run ``python -m pytest --nbval-lax --nbval-current-env`` on the copy in a
    subprocess with ``MPLBACKEND=agg``. The copy lives in ``tmp_path`` but its first cell
    changes the kernel's folder to the original notebook's folder, so relative paths
    behave as in JupyterLab or ``crmlab run``. Assert ``result.returncode == 0`` and show
    ``result.stdout`` on failure::

        def test_segmenter_notebook(tiny_demo, run_nbval, tmp_path):
            p = tiny_demo.load(database=tmp_path / "db.duckdb")
            res = run_nbval(NOTEBOOK, p.for_step("02"))
            assert res.returncode == 0, res.stdout[-3000:]

``kernel_name``
    ``"crmlab"`` when that kernelspec is installed (``make`` installs it), else ``"python3"``.

For the runner tests
--------------------
``fake_chain`` builds tiny step notebooks (``make_fake_chain``) that write KPIs, show a
table, a chart, a widget and stderr, and fail on demand (``fail: "input" | "check" |
"other"``), so the runner, CLI and browser tests do not depend on the real steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Kernels started by the tests (papermill, nbval, the runner) get their own IPython folder
# per test process, with the command history off: kernels of two xdist workers otherwise
# share ~/.ipython/profile_default/history.sqlite, and a kernel was seen going silent
# (the test waiting forever) while both wrote to it.
_IPYTHONDIR = Path(tempfile.mkdtemp(prefix="crmlab-ipython-"))
(_IPYTHONDIR / "profile_default").mkdir(parents=True, exist_ok=True)
(_IPYTHONDIR / "profile_default" / "ipython_kernel_config.py").write_text(
    "c.HistoryManager.enabled = False\n", encoding="utf-8")
os.environ["IPYTHONDIR"] = str(_IPYTHONDIR)

# notebook tests call papermill directly: give them the runner's sliced socket waits
# (a client waiting on one endless poll missed a kernel's reply; see runner.slice_socket_waits)
from crmlab.runner import slice_socket_waits  # noqa: E402

slice_socket_waits()


# --------------------------------------------------------------------------- kernels


@pytest.fixture(scope="session")
def kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return "crmlab" if "crmlab" in KernelSpecManager().find_kernel_specs() else "python3"


# --------------------------------------------------------------------------- tiny demo


@dataclass
class TinyDemo:
    """A small generated demo world laid out like the project."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "demo"

    @property
    def params_file(self) -> Path:
        return self.root / "params" / "demo.yaml"

    def params(self, database: str | Path | None = None, **overrides) -> Path:
        """Write a params file (next to demo.yaml) with its own database and overrides.

        ``overrides`` use dotted keys: ``**{"run.as_of": "2024-06-30", "segmenter.rfm_bins": 4}``.
        """
        data = yaml.safe_load(self.params_file.read_text(encoding="utf-8")) or {}
        data.setdefault("run", {})
        data["run"]["database"] = str(database or (self.root / "db" / f"{uuid.uuid4().hex}.duckdb"))
        for key, value in overrides.items():
            block, _, name = key.partition(".")
            data.setdefault(block, {})[name] = value
        path = self.params_file.with_name(f"test-{uuid.uuid4().hex[:10]}.yaml")
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    def load(self, database: str | Path | None = None, **overrides):
        """Validated :class:`crmlab.params.RunParams` of :meth:`params`."""
        from crmlab import params

        return params.load(self.params(database, **overrides))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> TinyDemo:
    try:
        from crmlab import demo
    except ModuleNotFoundError as exc:
        if exc.name != "crmlab.demo":
            raise
        pytest.skip("crmlab.demo n'existe pas encore : pas de données de démonstration")
    source = ROOT / "params" / "demo.yaml"
    if not source.exists():
        pytest.skip("params/demo.yaml n'existe pas encore")
    root = tmp_path_factory.mktemp("tiny_demo")
    demo.generate(root / "data" / "demo", scale=0.05, seed=7)
    (root / "params").mkdir()
    shutil.copy(source, root / "params" / "demo.yaml")
    return TinyDemo(root)


# --------------------------------------------------------------------------- nbval


def nbval_notebook(notebook: str | Path, parameters: dict, dest: str | Path, *, timeout: int = 600,
                   extra_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a parameterised copy of ``notebook`` under nbval (see the module docstring)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = Path(notebook).resolve()
    nb = load_notebook_node(str(notebook))  # as papermill reads it (every cell has metadata.tags)
    nb = parameterize_notebook(nb, dict(parameters))
    chdir = nbformat.v4.new_code_cell(f"import os\nos.chdir({str(notebook.parent)!r})")
    chdir.metadata["tags"] = ["nbval-ignore-output"]
    nb.cells.insert(0, chdir)
    for i, cell in enumerate(nb.cells):
        if not cell.get("id"):
            cell["id"] = f"nbval-{i:03d}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / notebook.name
    nbformat.write(nb, str(copy))
    env = {**os.environ, "MPLBACKEND": "agg", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval-lax",
           "--nbval-current-env", f"--nbval-cell-timeout={timeout}", "--rootdir", str(dest), *extra_args, str(copy)]
    return subprocess.run(cmd, cwd=str(dest), env=env, capture_output=True, text=True, timeout=timeout * 4)


@pytest.fixture
def run_nbval(tmp_path):
    def _run(notebook, parameters, **kwargs):
        return nbval_notebook(notebook, parameters, tmp_path / f"nbval-{uuid.uuid4().hex[:6]}", **kwargs)

    return _run


# --------------------------------------------------------------------------- fake chain

FAKE_STEPS = [("01", "constituer"), ("02", "segmenter"), ("03", "interagir")]

_FAKE_CELLS = [
    '''
import sys
import matplotlib.pyplot as plt
import pandas as pd
from crmlab import db
from crmlab.errors import CheckError, InputError
''',
    '''
con = db.open_step(database, step_code, run_id, as_of)
db.write_kpis(con, pd.DataFrame({
    "kpi": ["clients", "taux_retour", "ca_total", "detail"],
    "value": [1234.0, 0.125, 98765.4, 5.0],
    "unit": ["", "share", "EUR", ""],
    "dimension": ["", "", "", "web"],
}), run_id=run_id, step=step_code, as_of=as_of)
db.commit_step(con, step_code, run_id)
con.close()
''',
    '''
print("message technique sur stderr", file=sys.stderr)
pd.DataFrame({"segment": ["Fidèles", "À réactiver"], "clients": [12, 30]})
''',
    '''
fig, ax = plt.subplots(figsize=(4, 2.5))
ax.bar(["A", "B"], [3, 5])
ax.set_title("Les clients B achètent plus")
plt.show()
''',
    '''
import ipywidgets
ipywidgets.IntSlider(value=3, description="seuil")
''',
    '''
if fail == "input":
    raise InputError("Colonne absente dans l'export", file="clients.csv", column="email", row=3,
                     hint="Ajoutez la colonne ou corrigez le mapping")
if fail == "check":
    raise CheckError("Contrôle échoué : un client dans deux segments")
if fail == "other":
    1 / 0
''',
]


def fake_notebook(path: Path, code: str, name: str) -> Path:
    """Write one fake step notebook (parameters cell first, tagged)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "crmlab (Python 3)", "language": "python", "name": "crmlab"}
    nb.metadata["language_info"] = {"name": "python"}
    params_src = "\n".join([
        'name: str = "demo"  # nom',
        'as_of: str | None = "2024-06-30"  # date',
        'database: str = "fake.duckdb"  # base',
        "seed: int = 42  # graine",
        'currency: str = "EUR"  # devise',
        'language: str = "fr"  # langue',
        'run_id: str = ""  # identifiant',
        "truth_dir: str | None = None  # vérité",
        "out_dir: str | None = None  # dossier de l'exécution",
        'fail: str = ""  # échec simulé : input, check, other',
    ])
    cells = [
        nbformat.v4.new_markdown_cell(f"# Étape {code} – fictive ({name})\n\nUn texte *en français* avec $x^2$."),
        nbformat.v4.new_code_cell(params_src),
        nbformat.v4.new_code_cell(f'step_code = "{code}"'),
        *[nbformat.v4.new_code_cell(src.strip()) for src in _FAKE_CELLS],
        nbformat.v4.new_markdown_cell("## Conclusion\n\nFin de l'étape."),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i:02d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def make_fake_chain(root: Path):
    """Fake steps 01–03 under ``root/notebooks`` as :class:`crmlab.runner.Step` objects."""
    from crmlab import params
    from crmlab.runner import Step

    steps = []
    for code, name in FAKE_STEPS:
        nb = fake_notebook(root / "notebooks" / f"{code}_{name}" / f"{name}.ipynb", code, name)
        steps.append(Step(code, name, params.STEP_TITLES[code], nb.resolve(), None))
    return steps


def fake_run_params(database: Path, fail: dict[str, str] | None = None, name: str = "essai"):
    """:class:`crmlab.params.RunParams` for the fake chain (``fail``: code → kind)."""
    from crmlab import params

    run = {"name": name, "as_of": "2024-06-30", "database": str(database), "seed": 42, "currency": "EUR",
           "language": "fr", "run_id": "", "truth_dir": None, "out_dir": None}
    steps = {code: {"fail": (fail or {}).get(code, "")} for code, _ in FAKE_STEPS}
    return params.RunParams(file=None, run=run, steps=steps, raw={})


@pytest.fixture(scope="session")
def fake_chain(tmp_path_factory):
    """The fake steps (notebooks written once per session; never modified by runs)."""
    return make_fake_chain(tmp_path_factory.mktemp("fake_chain"))


@pytest.fixture(scope="session")
def fake_run_ok(fake_chain, tmp_path_factory, kernel_name) -> Path:
    """Run folder of a successful fake run (3 steps)."""
    from crmlab.runner import run_chain

    tmp = tmp_path_factory.mktemp("fake_run_ok")
    result = run_chain(fake_run_params(tmp / "db.duckdb"), fake_chain, tmp / "run", kernel_name=kernel_name,
                       echo=lambda *a, **k: None)
    assert result.exit_code == 0, [s.error for s in result.steps]
    return result.out_dir


@pytest.fixture(scope="session")
def fake_run_failed(fake_chain, tmp_path_factory, kernel_name) -> Path:
    """Run folder of a fake run whose step 02 raises InputError (03 not run)."""
    from crmlab.runner import run_chain

    tmp = tmp_path_factory.mktemp("fake_run_failed")
    result = run_chain(fake_run_params(tmp / "db.duckdb", {"02": "input"}), fake_chain, tmp / "run",
                       kernel_name=kernel_name, echo=lambda *a, **k: None)
    assert result.exit_code == 2
    return result.out_dir


# --------------------------------------------------------------------------- the real chain

@pytest.fixture(scope="session")
def demo_run(tiny_demo, tmp_path_factory) -> Path:
    """Run folder of the whole real chain (every available step) on the tiny demo.

    Tests using it should carry ``@pytest.mark.xdist_group("demo_run")`` so that one
    xdist worker runs the chain once for all of them.
    """
    from crmlab.runner import run

    work = tmp_path_factory.mktemp("demo_run")
    params_file = tiny_demo.params(work / "crm.duckdb")
    result = run(params_file, out=work / "run", echo=lambda *a, **k: None)
    assert result.exit_code == 0, [(s.code, s.error) for s in result.steps if s.error]
    return result.out_dir
