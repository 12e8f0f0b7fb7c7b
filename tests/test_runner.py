"""Tests of the chain runner on tiny fake step notebooks (see conftest.make_fake_chain)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path

import duckdb
import nbformat
import pytest
from conftest import fake_notebook, fake_run_params

from crmlab import params, report, runner
from crmlab.errors import ParamsError
from crmlab.runner import Step, run_chain, select_steps

QUIET = {"echo": lambda *a, **k: None}


def _json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- success


def test_success_writes_the_whole_run_folder(fake_run_ok):
    names = sorted(str(p.relative_to(fake_run_ok)) for p in fake_run_ok.rglob("*") if p.is_file())
    assert names == [
        "01_constituer.ipynb", "02_segmenter.ipynb", "03_interagir.ipynb",
        "html/01_constituer.html", "html/02_segmenter.html", "html/03_interagir.html",
        "index.html", "run.json",
    ]
    record = _json(fake_run_ok)
    assert (record["status"], record["exit_code"], record["error"]) == ("ok", 0, None)
    assert [(s["code"], s["status"]) for s in record["steps"]] == [("01", "ok"), ("02", "ok"), ("03", "ok")]
    for s in record["steps"]:
        assert set(s["timings"]) == {"kernel_start", "execute", "html", "total"}
        assert s["notebook"] == f"{s['code']}_{s['name']}.ipynb"
        assert s["html"] == f"html/{s['code']}_{s['name']}.html"
    assert record["params"]["run"]["run_id"] == record["run_id"]
    assert record["params"]["constituer"] == {"fail": ""}
    assert {"python", "duckdb", "pandas", "papermill", "lifetimes", "nbconvert"} <= set(record["versions"])


def test_every_step_receives_the_same_run_id(fake_run_ok):
    run_id = _json(fake_run_ok)["run_id"]
    assert run_id.startswith("essai-")
    for nb_path in sorted(fake_run_ok.glob("*.ipynb")):
        nb = nbformat.read(str(nb_path), as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1
        assert f"run_id = {run_id!r}" in injected[0].source.replace('"', "'")
        assert f"out_dir = {str(fake_run_ok)!r}" in injected[0].source.replace('"', "'")
    database = _json(fake_run_ok)["params"]["run"]["database"]
    with duckdb.connect(database, read_only=True) as con:
        rows = con.execute("SELECT DISTINCT run_id, step FROM kpis ORDER BY step").fetchall()
    assert rows == [(run_id, "01"), (run_id, "02"), (run_id, "03")]


def test_index_lists_steps_kpis_and_links(fake_run_ok):
    page = (fake_run_ok / "index.html").read_text(encoding="utf-8")
    assert '<html lang="fr">' in page
    assert "Exécution « essai »" in page
    assert "Exécution réussie" in page
    assert "30/06/2024" in page
    for stem in ("01_constituer", "02_segmenter", "03_interagir"):
        assert f'href="html/{stem}.html"' in page
        assert f'href="{stem}.ipynb"' in page
    # the first three KPIs without dimension, in the order written, formatted in French
    assert page.count("Clients : <strong>1\u202f234</strong>") == 3
    assert page.count("Taux retour : <strong>12,5\u00a0%</strong>") == 3
    assert page.count("Ca total : <strong>98\u202f765\u00a0€</strong>") == 3
    assert "Detail" not in page  # a KPI with a dimension is not a headline
    assert page.count("✓ réussie") == 3


def test_reports_hide_code_and_load_no_external_script(fake_run_ok):
    for html_path in sorted((fake_run_ok / "html").glob("*.html")):
        page = html_path.read_text(encoding="utf-8")
        assert "db.open_step" not in page and "import pandas" not in page  # no input code
        assert "In&nbsp;[" not in page and "jp-InputPrompt" not in page.split("</style>")[-1]
        assert re.search(r"<script[^>]*\bsrc=", page) is None
        assert re.search(r"<link[^>]*https?://", page) is None
        assert "<script" not in page  # no script at all: nothing to fail offline
        assert "message technique sur stderr" not in page
        assert "widget-view" not in page and "IntSlider" not in page
        assert page.count("Explorateur interactif : disponible dans JupyterLab") == 1
        assert "Fidèles" in page and "<table" in page  # text/html tables are kept
        assert re.search(r'<img[^>]+src="data:image/png;base64,', page)  # chart embedded
        assert '<html lang="fr">' in page
        assert 'href="../index.html"' in page


def test_reports_link_previous_and_next_step(fake_run_ok):
    first = (fake_run_ok / "html" / "01_constituer.html").read_text(encoding="utf-8")
    middle = (fake_run_ok / "html" / "02_segmenter.html").read_text(encoding="utf-8")
    last = (fake_run_ok / "html" / "03_interagir.html").read_text(encoding="utf-8")
    assert 'href="02_segmenter.html"' in first and "Étape 01 – Constituer la base clients</p>" in first
    assert 'href="01_constituer.html"' in middle and 'href="03_interagir.html"' in middle
    assert 'href="02_segmenter.html"' in last and "03_interagir.html\"" not in last
    assert "exécution « essai » · date de référence 30/06/2024" in middle


# --------------------------------------------------------------------------- failures


def test_input_error_stops_the_chain_with_exit_2(fake_run_failed):
    record = _json(fake_run_failed)
    assert (record["status"], record["exit_code"]) == ("failed", 2)
    assert [s["status"] for s in record["steps"]] == ["ok", "failed", "not_run"]
    failed = record["steps"][1]
    assert failed["error_type"] == "InputError" and failed["error_kind"] == "input"
    assert failed["error"] == (
        "Colonne absente dans l'export (fichier « clients.csv », colonne « email », ligne 3). "
        "Ajoutez la colonne ou corrigez le mapping"
    )
    assert record["error"]["code"] == "02"
    assert not (fake_run_failed / "03_interagir.ipynb").exists()
    assert not (fake_run_failed / "html" / "03_interagir.html").exists()


def test_index_says_which_step_failed_and_why(fake_run_failed):
    page = html.unescape((fake_run_failed / "index.html").read_text(encoding="utf-8"))
    assert "Échec à l'étape 02 – Segmenter et cibler" in page
    assert "Données ou paramètres à corriger" in page
    assert "Colonne absente dans l'export (fichier « clients.csv », colonne « email », ligne 3)" in page
    assert "Étapes suivantes non exécutées : 03." in page
    assert "✗ échec" in page and "– non exécutée" in page
    assert "code de sortie 2" in page
    # the failed step's report exists, says it failed, and the last report links no missing page
    failed = (fake_run_failed / "html" / "02_segmenter.html").read_text(encoding="utf-8")
    assert "Cette étape a échoué" in failed and "An Exception was encountered" not in failed
    assert "03_interagir.html" not in failed


@pytest.mark.parametrize(
    ("fail", "kind", "message"),
    [
        ("other", "other", "ZeroDivisionError: division by zero"),
        ("check", "check", "Contrôle échoué : un client dans deux segments"),
    ],
    ids=["python-error", "check-error"],
)
def test_other_failures_exit_1(fake_chain, tmp_path, kernel_name, fail, kind, message):
    lines = []
    result = run_chain(fake_run_params(tmp_path / "db.duckdb", {"01": fail}), fake_chain[:2], tmp_path / "run",
                       kernel_name=kernel_name, echo=lambda *a, **k: lines.append(a[0]))
    assert result.exit_code == 1
    assert [s.status for s in result.steps] == ["failed", "not_run"]
    assert (result.failed.error_kind, result.failed.error) == (kind, message)
    assert lines[0] == "[01/02] Constituer la base clients … "
    assert lines[1].startswith("✗ ")
    assert lines[2] == f"Erreur à l'étape 01 (Constituer la base clients) : {message}"
    assert _json(result.out_dir)["exit_code"] == 1


def test_selected_steps_and_sources_unchanged(fake_chain, tmp_path, kernel_name):
    before = {s.code: _sha(s.notebook) for s in fake_chain}
    run_dir = tmp_path / "run"
    (run_dir / "html").mkdir(parents=True)
    (run_dir / "html" / "03_interagir.html").write_text("ancien rapport")  # stale output of an earlier run
    lines = []
    result = run_chain(fake_run_params(tmp_path / "db.duckdb"), fake_chain, run_dir, selected=[fake_chain[2]],
                       kernel_name=kernel_name, echo=lambda *a, **k: lines.append(a[0]))
    assert result.exit_code == 0
    assert [s.status for s in result.steps] == ["skipped", "skipped", "ok"]
    assert {s.code: _sha(s.notebook) for s in fake_chain} == before
    assert "ancien rapport" not in (run_dir / "html" / "03_interagir.html").read_text(encoding="utf-8")
    assert lines[0] == "[03/03] Interagir … "
    index = (run_dir / "index.html").read_text(encoding="utf-8")
    assert index.count("· non demandée") == 2


def test_missing_kernel_is_explained(fake_chain, tmp_path):
    result = run_chain(fake_run_params(tmp_path / "db.duckdb"), fake_chain[:1], tmp_path / "run",
                       kernel_name="noyau-absent", **QUIET)
    assert result.exit_code == 1
    assert result.steps[0].error.startswith("noyau Jupyter « noyau-absent » introuvable")


def test_unreadable_notebook_is_a_failure_not_a_crash(tmp_path, kernel_name):
    bad = tmp_path / "notebooks" / "01_constituer" / "constituer.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text("pas du json")
    step = Step("01", "constituer", "Constituer la base clients", bad, None)
    result = run_chain(fake_run_params(tmp_path / "db.duckdb"), [step], tmp_path / "run",
                       kernel_name=kernel_name, **QUIET)
    assert result.exit_code == 1
    assert result.steps[0].status == "failed"
    assert (tmp_path / "run" / "index.html").exists()


# --------------------------------------------------------------------------- --steps


def _steps(codes=("01", "02", "03")):
    names = {c: n for c, n, *_ in params.STEPS}
    return [Step(c, names[c], params.STEP_TITLES[c], Path(f"/nb/{c}.ipynb")) for c in codes]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ["01", "02", "03"]),
        ("", ["01", "02", "03"]),
        ("01,03", ["01", "03"]),
        ("03,01", ["01", "03"]),
        ("2", ["02"]),
        ("segmenter", ["02"]),
        ("01-02", ["01", "02"]),
        ("constituer-interagir", ["01", "02", "03"]),
        ("02-06", ["02", "03"]),
        ("1, 3", ["01", "03"]),
        ("01,01-02", ["01", "02"]),
    ],
    ids=["none", "empty", "list", "unordered", "number", "name", "range", "name-range", "range-past-available",
         "spaces", "overlap"],
)
def test_select_steps(spec, expected):
    assert [s.code for s in select_steps(spec, _steps())] == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("07", "Étape inconnue « 07 »"),
        ("segmentr", "Étape inconnue « segmentr »"),
        ("04", "L'étape 04 \\(Collecter\\) n'est pas disponible"),
        ("03-01", "à l'envers"),
        ("04-06", "Aucune étape disponible dans l'intervalle « 04-06 »"),
    ],
    ids=["unknown-code", "typo", "not-built", "reversed", "empty-range"],
)
def test_select_steps_errors(spec, match):
    with pytest.raises(ParamsError, match=match):
        select_steps(spec, _steps())


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1234.0, "", "1\u202f234"),
        (0.125, "share", "12,5\u00a0%"),
        (12.5, "%", "12,5\u00a0%"),
        (0.031, "pp", "+3,1\u00a0pt"),
        (98765.4, "EUR", "98\u202f765\u00a0€"),
        (12.34, "money", "12,34\u00a0€"),
        (3.14159, "", "3,14"),
        (42.0, "jours", "42\u00a0jours"),
        (float("nan"), "", "–"),
        (None, "share", "–"),
        (-10.3, "NPS", "-10"),
        (12.6, "NPS", "+13"),
        (0.2, "NPS", "0"),
        (959.6, "devise", "960\u00a0€"),
    ],
    ids=["count", "share", "percent", "points", "money", "small-money", "float", "unit", "nan", "none",
         "nps-negative", "nps-positive", "nps-zero", "run-currency"],
)
def test_format_kpi(value, unit, expected):
    assert report.format_kpi(value, unit) == expected


def test_classify_errors():
    step = Step("01", "constituer", "Constituer", Path("/x.ipynb"), None)
    tb = ["\x1b[0;31m---------\x1b[0m", "Cell In[3], line 1\n----> 1 1/0", "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"]
    assert runner._classify("ZeroDivisionError", "division by zero", tb, step) == ("other", "ZeroDivisionError: division by zero")
    assert runner._classify("ParamsError", "Paramètre inconnu « run.x »", [], step) == ("input", "Paramètre inconnu « run.x »")
    assert runner._classify("CheckError", "Contrôle échoué", [], step) == ("check", "Contrôle échoué")
    # a multi-line message (DuckDB's with a caret line) is summarised by its first line
    binder = "Binder Error: No function matches string_split(INTEGER)\n\nLINE 3: SELECT ...\n        ^"
    assert runner._classify("BinderException", binder, ["...", "        ^"], step) == (
        "other", "BinderException: Binder Error: No function matches string_split(INTEGER)")


def test_replace_nav():
    page = "<p>a</p>" + report.nav_html([report.Link("Sommaire", "../index.html")]) + "<p>b</p>"
    out = report.replace_nav(page, [report.Link("Suite", "02_x.html")])
    assert out == "<p>a</p>" + report.nav_html([report.Link("Suite", "02_x.html")]) + "<p>b</p>"


# --------------------------------------------------------------------------- nbval helper (conftest)


@pytest.mark.slow  # two nested pytest + kernel start-ups
def test_run_nbval_injects_parameters_and_keeps_relative_paths(tmp_path, run_nbval):
    nb_path = tmp_path / "src" / "étape.ipynb"
    fake_notebook(nb_path, "01", "constituer")
    (nb_path.parent / "lu.txt").write_text("contenu relatif")
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells = nb.cells[:2] + [nbformat.v4.new_code_cell(
        'assert open("lu.txt").read() == "contenu relatif"\nassert name == "nbval"\n'
        'assert fail == ""'
    )]
    nbformat.write(nb, str(nb_path))
    before = _sha(nb_path)
    ok = run_nbval(nb_path, {"name": "nbval", "database": str(tmp_path / "db.duckdb")})
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert "passed" in ok.stdout
    failing = run_nbval(nb_path, {"name": "autre"})
    assert failing.returncode == 1, failing.stdout[-3000:]
    assert "AssertionError" in failing.stdout
    assert _sha(nb_path) == before


# --------------------------------------------------------------------------- tiny demo fixture (conftest)


def test_tiny_demo_fixture_writes_usable_params(tiny_demo, tmp_path):
    rp = tiny_demo.load(database=tmp_path / "db.duckdb", **{"run.name": "mini", "run.seed": 7})
    assert (rp.run["name"], rp.run["seed"], rp.run["database"]) == ("mini", 7, str(tmp_path / "db.duckdb"))
    assert (tiny_demo.data_dir / "truth" / "model.json").exists()
    paths = [s["path"] for s in rp.steps["01"]["sources"]]
    assert paths and all(p.startswith(str(tiny_demo.data_dir)) and Path(p).exists() for p in paths)


def test_step_without_inputs_is_marked_not_applicable(fake_chain, tmp_path, kernel_name, monkeypatch):
    """A step whose module says it has nothing to do is not executed: « sans objet », exit 0."""
    import types

    from crmlab import runner

    module = types.ModuleType("fake_not_applicable")
    module.not_applicable = lambda block: "aucune source déclarée" if not block.get("sources") else None
    monkeypatch.setitem(__import__("sys").modules, "fake_not_applicable", module)
    steps = [fake_chain[0], runner.Step(**{**fake_chain[1].__dict__, "module": "fake_not_applicable"}), fake_chain[2]]
    result = runner.run_chain(fake_run_params(tmp_path / "db.duckdb"), steps, tmp_path / "run",
                              kernel_name=kernel_name, echo=lambda *a, **k: None)
    assert result.exit_code == 0
    assert [s.status for s in result.steps] == ["ok", "not_applicable", "ok"]
    index = (tmp_path / "run" / "index.html").read_text(encoding="utf-8")
    assert "sans objet" in index and "aucune source déclarée" in index


def test_house_theme_matches_seaborn_whitegrid_without_importing_it():
    import subprocess
    import sys

    code = (
        "import sys, matplotlib; matplotlib.use('agg'); import matplotlib.pyplot as plt\n"
        "from crmlab import charts, display; charts.setup()\n"
        "assert 'seaborn' not in sys.modules, 'seaborn imported'\n"
        "mine = {k: plt.rcParams[k] for k in charts.WHITEGRID_RC}\n"
        "import seaborn as sns; plt.rcdefaults(); sns.set_theme(style='whitegrid', palette=charts.PALETTE)\n"
        "theirs = {k: plt.rcParams[k] for k in charts.WHITEGRID_RC}\n"
        "from matplotlib.colors import to_rgb\n"
        "norm = lambda k, v: [to_rgb(c) for c in v.by_key()['color']] if k == 'axes.prop_cycle' else str(v)\n"
        "bad = [k for k in mine if norm(k, mine[k]) != norm(k, theirs[k])]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stall_watch_kills_an_idle_kernel_and_spares_busy_and_older_ones():
    import subprocess
    import sys
    import time

    from crmlab.runner import StallWatch

    marker = "crmlab-stall-test"
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        with StallWatch(stall_s=1.0, poll_s=0.2, marker=marker) as watch:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass", marker])
            time.sleep(3.0)
            assert busy.poll() is None and not watch.stalled  # computing: left alone
            busy.kill()
            busy.wait()
            idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
            deadline = time.monotonic() + 10
            while idle.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        assert watch.stalled and idle.poll() is not None  # idle: killed
        assert older.poll() is None  # running before the watch: ignored
    finally:
        for proc in (older,):
            proc.kill()



def test_socket_waits_are_sliced_so_a_missed_wakeup_cannot_hang_the_client(monkeypatch):
    """A wait of 3 s on a kernel socket is made of 1-second polls; the timeout still holds."""
    import asyncio
    import time
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    from crmlab import runner

    calls = []

    async def fake_get_msg(self, timeout=None):
        calls.append(timeout)
        await asyncio.sleep(0.001)
        if len(calls) == 3 and not deadline_test:
            return {"msg": "late"}  # arrived unseen: found by the third short poll
        raise Empty

    deadline_test = False

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", fake_get_msg)
    monkeypatch.setattr(runner, "WAIT_SLICE_SECONDS", 1.0)
    runner.slice_socket_waits()
    runner.slice_socket_waits()  # idempotent: not wrapped twice
    chan = object.__new__(AsyncZMQSocketChannel)
    # no timeout: short polls again and again, never one endless wait
    assert asyncio.run(AsyncZMQSocketChannel.get_msg(chan, None)) == {"msg": "late"}
    assert calls == [1.0, 1.0, 1.0]
    calls.clear()
    deadline_test = True
    t0 = time.monotonic()
    monkeypatch.setattr(runner, "WAIT_SLICE_SECONDS", 0.05)
    try:
        asyncio.run(AsyncZMQSocketChannel.get_msg(chan, 0.2))
        raise AssertionError("Empty expected after the timeout")
    except Empty:
        pass
    assert time.monotonic() - t0 >= 0.2 - 1e-3
    assert len(calls) >= 4 and all(c <= 0.05 + 1e-9 for c in calls)


def test_a_kernel_that_dies_gets_one_retry(tmp_path, monkeypatch):
    """A crashed kernel (DeadKernelError) runs the step once more, and says so; a second crash fails."""
    from crmlab import runner

    class DeadKernelError(RuntimeError):
        pass

    calls = []

    def crash_once(pm, step, rp, out_nb, kernel_name, marks):
        calls.append(step.code)
        if len(calls) == 1:
            raise DeadKernelError("Kernel died")

    monkeypatch.setattr(runner, "_execute", crash_once)
    step = Step("01", "constituer", "Constituer la base clients", tmp_path / "nb.ipynb", None)
    res = runner.StepResult("01", "constituer", "Constituer la base clients")
    runner._run_step(step, fake_run_params(tmp_path / "db.duckdb"), tmp_path, res, "crmlab")
    assert calls == ["01", "01"] and res.status == "ok"
    assert "arrêté brutalement" in res.retried

    def always_crash(*args):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(runner, "_execute", always_crash)
    res = runner.StepResult("01", "constituer", "Constituer la base clients")
    runner._run_step(step, fake_run_params(tmp_path / "db.duckdb"), tmp_path, res, "crmlab")
    assert res.status == "failed" and res.error_type == "DeadKernelError"


def test_step_kernels_get_fixed_malloc_thresholds_unless_set(monkeypatch, tmp_path):
    seen = []

    class FakePapermill:
        @staticmethod
        def execute_notebook(*a, **k):
            seen.append((runner.os.environ.get("MALLOC_MMAP_THRESHOLD_"), runner.os.environ.get("MALLOC_TRIM_THRESHOLD_")))

    step = Step("01", "constituer", "Constituer", tmp_path / "01.ipynb", "crmlab.constituer")
    rp = fake_run_params(tmp_path / "db.duckdb")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    runner._execute(FakePapermill, step, rp, tmp_path / "out.ipynb", "python3", {})
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own setting is kept
    runner._execute(FakePapermill, step, rp, tmp_path / "out.ipynb", "python3", {})
    assert seen == [("131072", "67108864"), ("65536", "67108864")]
    assert runner.os.environ.get("MALLOC_TRIM_THRESHOLD_") is None  # set only while the kernel starts
    assert runner.os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"
