"""The customer database: schema, one transaction per step, KPIs, checks."""

from __future__ import annotations

import pandas as pd
import pytest

from crmlab import db
from crmlab.errors import CheckError


def test_schema_has_every_canonical_table():
    con = db.connect(":memory:")
    tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(db.TABLES) <= tables
    assert {"transactions", "customers", "customer_links", "segments", "kpis", "model_fits"} <= set(db.TABLES)


def test_a_step_that_fails_leaves_the_database_as_it_was(tmp_path):
    path = tmp_path / "crm.duckdb"
    con = db.open_step(path, "01", "r1", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C1')")
    db.commit_step(con, "01", "r1")
    con.close()
    con = db.open_step(path, "01", "r2", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C2')")
    con.close()  # the step dies before commit_step
    con = db.connect(path)
    assert con.execute("SELECT customer_id FROM customers").fetchall() == [("C1",)]
    assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r1", "ok")]


def test_large_appends_inside_a_step_transaction_stay_readable():
    """DuckDB 2.0.0 returned no row for a filtered scan of >1 row group appended in an open
    transaction (so step 01 stored no transaction of Online Retail): pinned below 2."""
    con = db.connect(":memory:")
    con.execute("BEGIN")
    con.execute("CREATE TEMP TABLE a AS SELECT range AS x, 'k' AS s FROM range(400000)")
    con.execute("CREATE TEMP TABLE b AS SELECT * FROM a WHERE false")
    con.execute("INSERT INTO b SELECT * FROM a WHERE x % 2 = 0")
    assert con.execute("SELECT count(*) FROM b WHERE s = 'k'").fetchall() == [(200000,)]
    con.execute("INSERT INTO transactions (transaction_id, amount) SELECT CAST(x AS VARCHAR), 1.0 FROM b WHERE s = 'k'")
    assert con.execute("SELECT count(*), sum(amount) FROM transactions WHERE amount > 0").fetchall() == [(200000, 200000.0)]
    con.execute("ROLLBACK")


def test_write_kpis_replaces_the_run_step_rows():
    con = db.connect(":memory:")
    frame = pd.DataFrame({"kpi": ["clients", "complétude"], "value": [10, 0.5], "dimension": ["", "email"]})
    db.write_kpis(con, frame, run_id="r", step="01", as_of="2024-01-01")
    db.write_kpis(con, frame.assign(value=[12, 0.6]), run_id="r", step="01", as_of="2024-01-01")
    rows = con.execute("SELECT kpi, dimension, value, unit FROM kpis ORDER BY kpi").fetchall()
    assert rows == [("clients", "", 12.0, ""), ("complétude", "email", 0.6, "")]


def test_check_names_the_rule_and_examples():
    con = db.connect(":memory:")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C1'), ('C1')")
    with pytest.raises(CheckError, match="identifiant client unique"):
        db.check(con, "SELECT customer_id FROM customers GROUP BY 1 HAVING count(*) > 1", "identifiant client unique")
    db.check(con, "SELECT customer_id FROM customers WHERE customer_id IS NULL", "pas de client sans identifiant")


def test_memory_limit_auto_is_half_the_ram_capped(monkeypatch):
    monkeypatch.setitem(db._SETTINGS, "memory_limit", "auto")
    text = db.memory_limit_setting()
    gib = float(text.removesuffix("GiB"))
    assert 1.0 <= gib <= db.AUTO_MEMORY_CAP_GIB
    assert db.memory_limit_setting("2500MB") == "2500MB"


def test_connect_applies_the_configured_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setitem(db._SETTINGS, "memory_limit", "auto")
    db.configure(memory_limit="1GB")
    con = db.connect(tmp_path / "base.duckdb")
    try:
        # DuckDB reports the cap in binary units: 1 GB = 953.6 MiB
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "953.6 MiB"
    finally:
        con.close()


def test_an_unreadable_memory_limit_is_a_french_input_error(tmp_path, monkeypatch):
    from crmlab.errors import InputError

    monkeypatch.setitem(db._SETTINGS, "memory_limit", "beaucoup")
    with pytest.raises(InputError, match="Limite de mémoire illisible"):
        db.connect(tmp_path / "base.duckdb")
