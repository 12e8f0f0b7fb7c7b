"""The whole chain on the tiny demo: run folder, reports and database, as a reviewer gets them."""

from __future__ import annotations

import json

import duckdb
import pytest

from crmlab import params

pytestmark = pytest.mark.xdist_group("demo_run")


def test_every_step_ran_and_wrote_its_report(demo_run):
    run = json.loads((demo_run / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "ok" and run["exit_code"] == 0
    built = params.available_steps()
    assert [s["code"] for s in run["steps"] if s["status"] == "ok"] == built
    index = (demo_run / "index.html").read_text(encoding="utf-8")
    for code in built:
        stem = f"{code}_{params.step_name(code)}"
        assert (demo_run / f"{stem}.ipynb").exists()
        page = (demo_run / "html" / f"{stem}.html").read_text(encoding="utf-8")
        assert params.STEP_TITLES[code] in page
        assert f"html/{stem}.html" in index
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page
        assert "most recent call last" not in page and "Warning:" not in page


def test_every_step_wrote_kpis_for_this_run(demo_run):
    run = json.loads((demo_run / "run.json").read_text(encoding="utf-8"))
    database = run["params"]["run"]["database"]
    con = duckdb.connect(database, read_only=True)
    steps = {s for (s,) in con.execute("SELECT DISTINCT step FROM kpis WHERE run_id = ?", [run["run_id"]]).fetchall()}
    assert steps == set(params.available_steps())
    statuses = con.execute("SELECT step, status FROM runs WHERE run_id = ? ORDER BY step", [run["run_id"]]).fetchall()
    assert all(status == "ok" for _, status in statuses)
    # a segment snapshot exists for as_of and every buyer is in exactly one segment
    if "02" in steps:
        dup = con.execute("SELECT count(*) - count(DISTINCT customer_id) FROM segments WHERE as_of = ?",
                          [run["params"]["run"]["as_of"]]).fetchall()[0][0]
        assert dup == 0
    con.close()


def test_reports_never_show_full_emails(demo_run):
    run = json.loads((demo_run / "run.json").read_text(encoding="utf-8"))
    con = duckdb.connect(run["params"]["run"]["database"], read_only=True)
    emails = [e for (e,) in con.execute("SELECT email FROM customers WHERE email IS NOT NULL").fetchall()]
    phones = [p for (p,) in con.execute("SELECT phone FROM customers WHERE phone IS NOT NULL").fetchall()]
    con.close()
    for page in (demo_run / "html").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not [e for e in emails if e in text], page.name
        assert not [p for p in phones if p in text], page.name
