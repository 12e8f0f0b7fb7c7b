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
    survey = con.execute("SELECT count(*), count(DISTINCT source) FROM interactions WHERE kind = 'enquête'").fetchone()
    scores = dict(con.execute("""SELECT s.score_type, count(*) FROM interaction_scores s JOIN interactions i USING (interaction_id)
                                 WHERE i.kind = 'enquête' GROUP BY 1""").fetchall())
    con.close()
    assert survey[1] == 1 and scores == {"nps": survey[0], "csat": survey[0]}  # one contact per answer, both scores
