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


def test_measure_report_shows_nps_in_whole_points_and_explains_the_alerts(demo_run):
    import re
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.text, self._cell = [], [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self._cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self._cell is not None and self.rows:
                self.rows[-1].append(self._cell.strip())
                self._cell = None

        def handle_data(self, data):
            self.text.append(data)
            if self._cell is not None:
                self._cell += data

    page = Cells()
    page.feed((demo_run / "html" / "06_mesurer.html").read_text(encoding="utf-8"))
    nps = [r for r in page.rows if len(r) >= 4 and r[2] == "NPS" and r[1] == "04"]
    assert len(nps) == 1 and re.fullmatch(r"[+-]?\d{1,3}", nps[0][3]), nps  # e.g. « -14 », never « -0,1 »
    assert -100 <= int(nps[0][3]) <= 100
    text = " ".join(page.text)
    # first run on a fresh database: step 03 ran before any inbound contact was collected
    assert "Aucune alerte client" in text and "aucun contact entrant n'était encore collecté" in text
    run = json.loads((demo_run / "run.json").read_text(encoding="utf-8"))
    con = duckdb.connect(run["params"]["run"]["database"], read_only=True)
    survey = con.execute("SELECT count(*), count(DISTINCT source) FROM interactions WHERE kind = 'enquête'").fetchall()[0]
    scores = dict(con.execute("""SELECT s.score_type, count(*) FROM interaction_scores s JOIN interactions i USING (interaction_id)
                                 WHERE i.kind = 'enquête' GROUP BY 1""").fetchall())
    con.close()
    assert survey[1] == 1 and scores == {"nps": survey[0], "csat": survey[0]}  # one contact per answer, both scores


def test_second_run_on_the_same_database_succeeds(demo_run, tmp_path):
    """Step 01 relinks every record (prospects of 04, records of 05 included): the later tables follow."""
    import shutil
    from pathlib import Path

    from crmlab.runner import run as run_chain

    first = json.loads((demo_run / "run.json").read_text(encoding="utf-8"))
    database = tmp_path / "again.duckdb"
    shutil.copy(first["params"]["run"]["database"], database)
    con = duckdb.connect(str(database), read_only=True)
    matched_before = con.execute("SELECT count(*), count(customer_id) FROM interactions").fetchall()[0]
    con.close()
    result = run_chain(Path(first["params_file"]), out=tmp_path / "run2", overrides=[f"run.database={database}"],
                       echo=lambda *a, **k: None)
    assert result.exit_code == 0, [(s.code, s.error) for s in result.steps if s.error]
    second = json.loads((tmp_path / "run2" / "run.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in second["steps"]] == ["ok"] * len(params.available_steps())
    # the tiny demo's prospects and fed records change a few cluster ids: the step-01 report says so
    report = (tmp_path / "run2" / "html" / "01_constituer.html").read_text(encoding="utf-8")
    assert "identifiant(s) client(s) changé(s) par ce rapprochement" in report
    con = duckdb.connect(str(database), read_only=True)
    q = lambda sql: con.execute(sql).fetchall()[0]  # noqa: E731
    statuses = dict(con.execute("SELECT step, status FROM runs WHERE run_id = ?", [second["run_id"]]).fetchall())
    assert {statuses[s] for s in ("04", "05", "06") if s in statuses} == {"ok"}
    # every contact matched in the first run is still matched, to an existing customer
    assert q("SELECT count(*), count(customer_id) FROM interactions") == matched_before
    assert q("SELECT count(*) FROM interactions i ANTI JOIN customers c USING (customer_id) WHERE i.customer_id IS NOT NULL") == (0,)
    for table in ("contact_history", "feed_items", "segments", "campaign_contacts", "consents"):
        assert q(f"SELECT count(*) FROM {table} t ANTI JOIN customers c USING (customer_id) WHERE t.customer_id IS NOT NULL") == (0,), table
    assert q("SELECT count(*) FROM (SELECT as_of, customer_id FROM segments GROUP BY ALL HAVING count(*) > 1)") == (0,)
    con.close()
