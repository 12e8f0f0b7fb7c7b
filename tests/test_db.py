"""The customer database: schema, one transaction per step, KPIs, checks."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from crmlab import db
from crmlab.errors import CheckError, InputError


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
    assert not (tmp_path / ("crm.duckdb" + db.STEP_MARKER_SUFFIX)).exists()
    assert not (tmp_path / ("crm.duckdb" + db.STEP_BACKUP_SUFFIX)).exists()
    con.close()
    con = db.open_step(path, "01", "r2", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C2')")
    con.close()  # the step dies before commit_step
    undone = db.restore_unfinished(path)
    assert undone["step"] == "01" and undone["run_id"] == "r2"
    con = db.connect(path)
    assert con.execute("SELECT customer_id FROM customers").fetchall() == [("C1",)]
    assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r1", "ok")]
    con.close()
    assert db.restore_unfinished(path) is None


def test_the_next_step_puts_back_a_base_left_by_a_dead_process(tmp_path, capsys):
    path = tmp_path / "crm.duckdb"
    con = db.open_step(path, "01", "r1", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C1')")
    db.commit_step(con, "01", "r1")
    con = db.open_step(path, "02", "r2", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C2')")
    con.close()
    marker = tmp_path / ("crm.duckdb" + db.STEP_MARKER_SUFFIX)
    info = json.loads(marker.read_text())
    info.update(pid=2**22 + 17, process_start=1.0)  # a process that no longer exists
    marker.write_text(json.dumps(info))
    con = db.open_step(path, "02", "r3", "2024-01-01")
    assert "ne s'était pas terminée" in capsys.readouterr().out
    assert con.execute("SELECT customer_id FROM customers").fetchall() == [("C1",)]
    db.commit_step(con, "02", "r3")
    con.close()


def test_reopening_a_step_in_the_same_process_starts_it_over(tmp_path):
    path = tmp_path / "crm.duckdb"
    con = db.open_step(path, "01", "r1", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C1')")
    con2 = db.open_step(path, "01", "r1", "2024-01-01")  # a notebook's first cells run again
    assert con2.execute("SELECT count(*) FROM customers").fetchall()[0][0] == 0
    con2.execute("INSERT INTO customers (customer_id) VALUES ('C2')")
    db.commit_step(con2, "01", "r1")
    con2.close()
    con = db.connect(path)
    assert con.execute("SELECT customer_id FROM customers").fetchall() == [("C2",)]
    assert not path.with_name(path.name + db.STEP_BACKUP_SUFFIX).exists()
    con.close()


def test_a_first_step_that_fails_leaves_no_database(tmp_path):
    path = tmp_path / "new" / "crm.duckdb"
    con = db.open_step(path, "01", "r1", "2024-01-01")
    con.execute("INSERT INTO customers (customer_id) VALUES ('C1')")
    con.close()
    assert db.restore_unfinished(path)["existed"] is False
    assert not path.exists()


def test_a_step_running_in_another_process_is_not_undone(tmp_path):
    path = tmp_path / "crm.duckdb"
    con = db.open_step(path, "01", "r1", "2024-01-01")
    con.close()
    marker = path.with_name(path.name + db.STEP_MARKER_SUFFIX)
    info = json.loads(marker.read_text())
    parent = os.getppid()  # alive, and not this process
    info.update(pid=parent, process_start=db._process_start(parent))
    marker.write_text(json.dumps(info))
    with pytest.raises(InputError, match="en cours d'utilisation par l'étape 01"):
        db.restore_unfinished(path)
    assert marker.exists()


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
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "953.6 MiB"
    finally:
        con.close()


def test_an_unreadable_memory_limit_is_a_french_input_error(tmp_path, monkeypatch):
    from crmlab.errors import InputError

    monkeypatch.setitem(db._SETTINGS, "memory_limit", "beaucoup")
    with pytest.raises(InputError, match="Limite de mémoire illisible"):
        db.connect(tmp_path / "base.duckdb")


def test_connections_draw_no_progress_bar():
    """In a kernel DuckDB draws its progress bar as widget outputs kept in the executed notebooks."""
    con = db.connect(":memory:")
    assert con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0] is False


_TYPES_SQL = """
SELECT * FROM (VALUES
    (1::BIGINT, 1::INTEGER, true, 'a', TIMESTAMP '2020-01-01 10:00', DATE '2020-01-02', 1.5::DECIMAL(10, 2),
     1.5::DOUBLE, 3::HUGEINT, [1, 2], 2::UTINYINT, {'a': 1}),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (2, 3, false, 'é', TIMESTAMP '2021-06-01', DATE '2021-06-01', 2.25, -1, 4, [], 1, {'a': NULL})
) t(b, i, bo, s, ts, d, dec, dbl, h, l, u, st)
"""


@pytest.mark.parametrize("sql", [
    _TYPES_SQL,
    f"SELECT * FROM ({_TYPES_SQL}) WHERE b IS NOT NULL",  # no NULL: plain numpy types
    f"SELECT * FROM ({_TYPES_SQL}) WHERE false",  # empty
    "SELECT 1 AS n, 'x' AS n, 2 AS n",  # same name twice
    "SELECT INTERVAL 1 DAY AS i, NULL AS x",
])
def test_to_frame_types_the_columns_as_duckdb_df_does(sql):
    con = db.connect(":memory:")
    expected = con.execute(sql).df()
    got = db.to_frame(con.sql(sql))
    assert list(got.columns) == list(expected.columns)
    assert list(got.dtypes) == list(expected.dtypes)
    for i in range(expected.shape[1]):
        e, g = expected.iloc[:, i], got.iloc[:, i]
        if e.dtype == object:  # lists and structs: the same values, missing as missing
            assert [None if v is None or v is pd.NA else repr(v) for v in g] == \
                   [None if v is None or v is pd.NA else repr(v) for v in e]
        else:
            pd.testing.assert_series_equal(g, e)


@pytest.mark.parametrize("arrow_min_rows", [0, db.ARROW_MIN_ROWS])  # through Arrow, through pandas
def test_register_frame_keeps_types_and_falls_back_on_mixed_columns(monkeypatch, arrow_min_rows):
    monkeypatch.setattr(db, "ARROW_MIN_ROWS", arrow_min_rows)
    con = db.connect(":memory:")
    frame = pd.DataFrame({"s": ["a", None], "none": [None, None], "n": pd.array([1, None], dtype="Int64"),
                          "ts": pd.to_datetime(["2020-01-01", None]), "b": [True, None], "f": [1.5, float("nan")]})
    db.register_frame(con, "_f", frame)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE _f)").fetchall())
    assert types == {"s": "VARCHAR", "none": "VARCHAR", "n": "BIGINT", "ts": "TIMESTAMP", "b": "BOOLEAN",
                     "f": "DOUBLE"}
    assert con.execute("SELECT count(*) FILTER (WHERE f IS NULL), count(*) FILTER (WHERE b IS NULL) FROM _f").fetchall()[0] == (1, 1)
    db.register_frame(con, "_m", pd.DataFrame({"x": ["a", 1]}, dtype=object))  # Arrow cannot type it
    assert con.execute("SELECT count(*) FROM _m").fetchall()[0][0] == 2


def test_arrow_text_turns_object_text_into_arrow_strings_and_leaves_the_rest():
    frame = pd.DataFrame({"s": ["a", None, "é"], "mixed": ["a", 1, None], "n": [1, 2, 3],
                          "ts": pd.to_datetime(["2020-01-01", None, "2021-01-01"]),
                          "cat": pd.Categorical(["x", "y", "x"])})
    frame["obj"] = pd.Series(["u", "v", None], dtype=object)
    out = db.arrow_text(frame)
    assert out["s"].dtype == "str" and out["obj"].dtype == "str"
    assert out["s"].isna().tolist() == [False, True, False] and out["s"].iloc[2] == "é"
    assert out["mixed"].dtype == object and out["mixed"].tolist()[:2] == ["a", 1]
    for col in ("n", "ts", "cat"):
        pd.testing.assert_series_equal(out[col], frame[col])
    assert frame["obj"].dtype == object  # the input frame is left as it was
    plain = pd.DataFrame({"n": [1]})
    assert db.arrow_text(plain) is plain


@pytest.mark.parametrize("text, expected", [("1.5 GiB", 1.5 * 2**30), ("600MiB", 600 * 2**20), ("4GB", 4e9),
                                            ("2500 mb", 2.5e9), ("12 B", 12.0), ("auto", None), ("", None)])
def test_size_bytes_reads_duckdb_sizes(text, expected):
    assert db.size_bytes(text) == expected


def test_memory_cap_lowers_the_cap_for_a_block_and_restores_it(tmp_path):
    con = db.connect(tmp_path / "b.duckdb")
    con.execute("SET memory_limit = '1GiB'")
    con.execute("BEGIN")  # inside a step's transaction
    con.execute("CREATE TEMP TABLE t AS SELECT 'customer number ' || (i * 7919 % 2500000) AS k, i "
                "FROM range(2500000) r(i)")  # about twice the cap below
    with db.memory_cap(con, "100MiB"):
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "100.0 MiB"
        rows = db.to_frame(con.sql("SELECT k, i FROM t ORDER BY k, i"))  # spills past the cap
    assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "1.0 GiB"
    assert len(rows) == 2500000 and rows["k"].is_monotonic_increasing
    with pytest.raises(ZeroDivisionError), db.memory_cap(con, "64MiB"):
        raise ZeroDivisionError
    assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "1.0 GiB"
    con.execute("SET memory_limit = '32MiB'")
    with db.memory_cap(con, "600MiB"):  # a lower cap already set is kept
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "32.0 MiB"
    con.execute("COMMIT")
