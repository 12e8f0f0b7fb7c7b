"""Step 01 – constituer: library functions, the notebook, the chain on a tiny demo, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from crmlab import cli, constituer, db
from crmlab.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_constituer" / "constituer.ipynb"


# --------------------------------------------------------------------------- library


def _con_with(rows_sc: list[tuple], rows_tx: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = db.connect(":memory:")
    for source, key, email in rows_sc:
        con.execute("INSERT INTO source_customers (source, source_key, email) VALUES (?, ?, ?)", [source, key, email])
    for tid, csource, ckey, ts, amount in rows_tx:
        con.execute(
            "INSERT INTO transactions (transaction_id, customer_source, customer_key, ts, amount) VALUES (?, ?, ?, ?, ?)",
            [tid, csource, ckey, ts, amount],
        )
    return con


def test_transaction_keys_without_customer_record_become_customers():
    con = _con_with([("web", "A", "a@x.fr")], [("t1", "web", "A", "2024-01-02", 10.0), ("t2", "web", "B", "2024-01-03", 5.0),
                                                ("t3", "caisse", "9", "2024-01-04", 7.0)])
    created = constituer.add_key_only_records(con)
    assert created.to_dict("records") == [{"source": "caisse", "records": 1}, {"source": "web", "records": 1}]
    keys = con.execute("SELECT source, source_key FROM source_customers ORDER BY 1, 2").fetchall()
    assert keys == [("caisse", "9"), ("web", "A"), ("web", "B")]
    # a second call adds nothing
    assert constituer.add_key_only_records(con).empty


def test_as_of_is_settled_or_refused():
    con = _con_with([], [("t1", "s", "A", "2024-01-02 10:00", 10.0), ("t2", "s", "A", "2024-03-05 18:00", 5.0)])
    p = {"as_of": None}
    assert constituer.settle_as_of(con, p) == "2024-03-06"
    with pytest.raises(InputError, match="précède tous les achats"):
        constituer.settle_as_of(con, {"as_of": "2023-12-31"})


def test_minimisation_blanks_fields_not_kept():
    con = db.connect(":memory:")
    con.execute("INSERT INTO source_customers (source, source_key, email, phone, birth_date) "
                "VALUES ('web', '1', 'a@x.fr', '0612345678', DATE '1980-01-01')")
    removed = constituer.apply_minimisation(con, {"keep_fields": ["email"]})
    assert removed == 2
    assert con.execute("SELECT email, phone, birth_date FROM source_customers").fetchall() == [("a@x.fr", None, None)]


def test_completeness_counts_filled_fields():
    con = db.connect(":memory:")
    con.execute("INSERT INTO customers (customer_id, email, phone) VALUES ('C1', 'a@x.fr', NULL), ('C2', NULL, NULL), "
                "('C3', 'c@x.fr', '+33612345678'), ('C4', 'd@x.fr', NULL)")
    comp = constituer.completeness(con, {"keep_fields": ["phone", "email"]})
    assert comp[["field", "filled", "customers"]].to_dict("records") == [
        {"field": "email", "filled": 3, "customers": 4}, {"field": "phone", "filled": 1, "customers": 4}]
    assert comp.share.tolist() == [0.75, 0.25]
    assert "Téléphone" in constituer.completeness_sentence(comp)


def test_unknown_keep_field_suggests_closest():
    from crmlab.errors import ParamsError

    with pytest.raises(ParamsError, match="postal_code"):
        constituer.PARAMS["keep_fields"].check(["postal_cod"], "constituer.keep_fields")


# --------------------------------------------------------------------------- notebook and chain


def test_notebook_runs_under_nbval(tiny_demo, run_nbval, tmp_path):
    p = tiny_demo.load(database=tmp_path / "db.duckdb")
    res = run_nbval(NOTEBOOK, {**p.for_step("01"), "out_dir": str(tmp_path / "out")})
    assert res.returncode == 0, res.stdout[-3000:]


def _snapshot(database: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in db.TABLES}
    finally:
        con.close()


STABLE = ["source_customers", "customers", "customer_links", "transactions", "consents", "campaigns", "campaign_contacts"]


@pytest.fixture(scope="module")
def loaded(tiny_demo, tmp_path_factory):
    """Step 01 run once on the tiny demo with the CLI: (params file, database, run folder)."""
    work = tmp_path_factory.mktemp("step01")
    database = work / "crm.duckdb"
    params_file = tiny_demo.params(database)
    out = work / "run"
    code = cli.main(["run", str(params_file), "--steps", "01", "--out", str(out)])
    assert code == 0, (out / "index.html").read_text(encoding="utf-8")[-2000:]
    return params_file, database, out


def test_chain_writes_run_folder_and_tables(loaded, tiny_demo):
    params_file, database, out = loaded
    for name in ["01_constituer.ipynb", "html/01_constituer.html", "index.html", "run.json", "rejets_a_corriger.csv"]:
        assert (out / name).exists(), name
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "ok" and run["exit_code"] == 0
    page = (out / "html" / "01_constituer.html").read_text(encoding="utf-8")
    assert "Constituer la base clients" in page and "import crmlab" not in page and "<img" in page
    con = duckdb.connect(str(database), read_only=True)
    q = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
    files = len(list((tiny_demo.data_dir).glob("*.csv")))
    assert q("SELECT count(*) FROM ingestions") == files
    assert q("SELECT count(*) FROM customers") > 100
    assert q("SELECT count(*) - count(DISTINCT customer_id) FROM customers") == 0
    assert q("SELECT count(*) FROM transactions WHERE customer_id IS NULL") == 0
    assert q("SELECT count(*) FROM consents WHERE customer_id IS NULL") == 0
    # every bad row written by the demo world is in rejects, with the file's line number
    bad = pd.read_csv(tiny_demo.data_dir / "truth" / "bad_rows.csv")
    rejects = con.execute("SELECT path, row_number FROM rejects WHERE reason NOT LIKE 'valeur ignorée%'").df()
    got = {(Path(p).name, int(r)) for p, r in zip(rejects.path, rejects.row_number, strict=True)}
    assert {(f, int(line)) for f, line in zip(bad.file.map(lambda x: Path(x).name), bad.line, strict=True)} <= got
    kpis = dict(con.execute("SELECT kpi, value FROM kpis WHERE step = '01' AND dimension = ''").fetchall())
    assert kpis["clients uniques"] == q("SELECT count(*) FROM customers")
    assert kpis["rapprochement précision"] >= 0.95
    # no full e-mail in the report
    emails = con.execute("SELECT email FROM customers WHERE email IS NOT NULL LIMIT 200").df().email
    assert not any(e in page for e in emails)
    con.close()


def test_running_twice_changes_nothing(loaded, tmp_path):
    params_file, database, _ = loaded
    copy = tmp_path / "again.duckdb"
    shutil.copy(database, copy)
    before = _snapshot(copy)
    data = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    data["run"]["database"] = str(copy)
    again = params_file.with_name("again.yaml")
    again.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert cli.main(["run", str(again), "--steps", "01", "--out", str(tmp_path / "run2")]) == 0
    after = _snapshot(copy)
    assert len(after["ingestions"]) == len(before["ingestions"])  # every file: « déjà chargé »
    for table in STABLE:
        pd.testing.assert_frame_equal(after[table].drop(columns=["linked_at"], errors="ignore"),
                                      before[table].drop(columns=["linked_at"], errors="ignore"), obj=table)


# --------------------------------------------------------------------------- bad input


def _bad_file(folder: Path, case: str) -> tuple[dict | None, dict]:
    """(extra source, run overrides) for a bad-input case."""
    f = folder / f"{case}.csv"
    tx = {"customer_key": "client", "ts": "date", "amount": "montant"}
    if case == "empty":
        f.write_text("client;date;montant\n", encoding="utf-8")
    elif case == "missing_column":
        f.write_text("client;date;montant\nA;01/02/2024;12,5\n", encoding="utf-8")
        tx = {**tx, "amount": "montnt"}
    elif case == "bad_sql":
        f.write_text("client;date;montant\nA;01/02/2024;12,5\n", encoding="utf-8")
        tx = {**tx, "amount": "montant *"}
    elif case == "dates":
        lines = [f"A{i};{'32/13/2024' if i % 2 else '01/02/2024'};12,5" for i in range(40)]
        f.write_text("client;date;montant\n" + "\n".join(lines) + "\n", encoding="utf-8")
    elif case == "not_utf8":
        f.write_bytes("client;date;montant\nAndré;01/02/2024;12,5\n".encode("cp1252"))
        return {"name": case, "kind": "transactions", "path": str(f), "columns": tx, "encoding": "utf-8"}, {}
    elif case == "duplicate_ids":
        f.write_text("id;client;date;montant\nDUP1;A;01/02/2024;12,5\nDUP1;B;02/02/2024;3\n", encoding="utf-8")
        tx = {**tx, "transaction_id": "id"}
    elif case == "as_of":
        return None, {"as_of": "2000-01-01"}
    return {"name": case, "kind": "transactions", "path": str(f), "columns": tx}, {}


BAD_CASES = {
    "empty": "vide",
    "missing_column": "montnt",
    "bad_sql": "SQL invalide",
    "dates": "date",
    "not_utf8": "UTF-8",
    "duplicate_ids": "DUP1",
    "as_of": "précède tous les achats",
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_data_exits_2_and_changes_nothing(case, loaded, tmp_path, capsys):
    params_file, database, _ = loaded
    copy = tmp_path / "bad.duckdb"
    shutil.copy(database, copy)
    before = _snapshot(copy)
    source, run = _bad_file(tmp_path, case)
    data = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    data["run"].update({"database": str(copy), **run})
    if source:
        data["constituer"]["sources"].append(source)
    bad = params_file.with_name(f"bad-{case}.yaml")
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["run", str(bad), "--steps", "01", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "étape 01" in err and BAD_CASES[case] in err, err
    if source:
        assert Path(source["path"]).name in err
    index = (out / "index.html").read_text(encoding="utf-8")
    assert BAD_CASES[case] in index
    after = _snapshot(copy)
    for table in db.TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["constituer"]["sources"].append({"name": "x", "kind": "transactions", "path": "absent.csv",
                                                      "columns": {"customer_key": "a", "ts": "b", "amount": "c"}}), "absent.csv"),
        (lambda d: d["constituer"]["sources"].append({"name": "x", "kind": "transactions", "path": "demo.yaml",
                                                      "columns": {"customer_key": "a", "ts": "b", "amount": "c"}}), "demo.yaml"),
        (lambda d: d["constituer"].update({"keep_feilds": ["email"]}), "keep_fields"),
    ],
    ids=["missing_file", "unknown_file_type", "unknown_key"],
)
def test_bad_params_fail_before_any_step(change, expected, tiny_demo, tmp_path, capsys):
    database = tmp_path / "db.duckdb"
    data = yaml.safe_load(tiny_demo.params(database).read_text(encoding="utf-8"))
    change(data)
    bad = tiny_demo.params_file.with_name(f"bad-{tmp_path.name}.yaml")
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert expected in capsys.readouterr().err
    assert not database.exists()


# --------------------------------------------------------------------------- relinking: ids follow their person


def _cid(source: str, key: str, digits: int = 16) -> str:
    import hashlib

    return "C" + hashlib.md5(f"{source}|{key}".encode()).hexdigest()[:digits]


def _later_steps_rows(con: duckdb.DuckDBPyConnection, cid: str) -> None:
    """Rows as steps 02–05 write them for customer ``cid`` (none points to a source record)."""
    con.execute("INSERT INTO interactions (interaction_id, customer_id, source, source_key, channel) "
                "VALUES ('I1', ?, 'formulaires', 'I1', 'web')", [cid])
    con.execute("INSERT INTO contact_history (customer_id, field, old_value, new_value, channel, seq) "
                "VALUES (?, 'phone', NULL, '+33612345678', 'web', 1)", [cid])
    con.execute("INSERT INTO feed_items (item, kind, source, customer_id, outcome) VALUES ('lot|1', 'champ', 'lot', ?, 'applied')", [cid])
    con.execute("INSERT INTO consents (customer_id, channel, opted_in, source, source_key) VALUES (?, 'sms', FALSE, 'formulaires', NULL)", [cid])
    con.execute("INSERT INTO segments (as_of, customer_id, rfm_segment, run_id) VALUES (DATE '2024-01-01', ?, 'Fidèles', 'r0')", [cid])
    con.execute("INSERT INTO campaign_contacts (campaign_id, customer_id, grp, source) VALUES ('P1', ?, 'treatment', 'segmenter')", [cid])


CARRIED = ["interactions", "contact_history", "feed_items", "consents", "segments", "campaign_contacts"]


def test_relinking_carries_later_steps_rows_to_the_new_customer_id(tmp_path):
    con = db.connect(":memory:")
    con.execute("INSERT INTO source_customers (source, source_key, first_name, last_name, email) "
                "VALUES ('web', 'W1', 'Anne', 'Martin', 'anne.martin@exemple.fr')")
    p = {"sources": [], "default_region": "FR", "match_threshold": 0.9, "review_band": [0.5, 0.9], "out_dir": str(tmp_path)}
    view = constituer.build_customer_view(con, p)
    old = _cid("web", "W1")
    assert con.execute("SELECT customer_id FROM customers").fetchall() == [(old,)]
    assert view.carry_over.carried == 0 and constituer.carry_over_sentence(view.carry_over) is None
    _later_steps_rows(con, old)
    # a later record of the same person (e.g. a store card fed by step 05) sorts first: the cluster's id changes
    con.execute("INSERT INTO source_customers (source, source_key, first_name, last_name, email) "
                "VALUES ('magasin', 'M1', 'Anne', 'MARTIN', 'Anne.Martin@exemple.fr')")
    # inside the step's transaction: a failure rolls the carry-over back with the links
    con.execute("BEGIN TRANSACTION")
    constituer.build_customer_view(con, p)
    con.execute("ROLLBACK")
    for table in CARRIED:
        assert con.execute(f"SELECT DISTINCT customer_id FROM {table}").fetchall() == [(old,)], table
    view = constituer.build_customer_view(con, p)
    new = _cid("magasin", "M1")
    assert con.execute("SELECT customer_id, n_records FROM customers").fetchall() == [(new, 2)]
    for table in CARRIED:
        assert con.execute(f"SELECT DISTINCT customer_id FROM {table}").fetchall() == [(new,)], table
    carry = view.carry_over
    assert (carry.carried, carry.splits, carry.recovered) == (1, 0, 0)
    assert carry.mapping[["old_id", "new_id", "records"]].to_dict("records") == [{"old_id": old, "new_id": new, "records": 1}]
    assert carry.rows == {t: 1 for t in CARRIED}
    assert any(s.startswith("1 identifiant(s) client(s) changé(s)") for s in constituer.view_findings(view))
    constituer.check_output(con, p)
    # relinking again changes nothing
    view = constituer.build_customer_view(con, p)
    assert view.carry_over.carried == 0 and view.carry_over.rows == {}


def _relinked(order: int, digits: int = 16) -> duckdb.DuckDBPyConnection:
    """Links before / after a relinking, rows in a given order (0 or 1), and later steps' rows.

    Before: Cold (s1–s4), Cb (s5), Cd (s7, s8), Cc (s6). After: N1 (s1, s2, s9),
    N2 (s3, s4, s5, s7, s8), Cc (s6): Cold is split 2–2 (goes to N1, the smaller id), Cb
    and Cd are merged into N2 (Cd holds more records: its rows win).
    """
    con = db.connect(":memory:")
    before = [("Cold", 1), ("Cold", 2), ("Cold", 3), ("Cold", 4), ("Cb", 5), ("Cc", 6), ("Cd", 7), ("Cd", 8)]
    after = [("N1", 1), ("N1", 2), ("N2", 3), ("N2", 4), ("N2", 5), ("Cc", 6), ("N2", 7), ("N2", 8), ("N1", 9)]
    if order:
        before, after = before[::-1], after[::-1]
    con.execute("CREATE TEMP TABLE _links_before (source VARCHAR, source_key VARCHAR, customer_id VARCHAR)")
    for cid, k in before:
        con.execute("INSERT INTO _links_before VALUES ('s', ?, ?)", [f"s{k}", cid])
    for cid, k in after:
        con.execute("INSERT INTO customer_links (source, source_key, customer_id) VALUES ('s', ?, ?)", [f"s{k}", cid])
        con.execute("INSERT INTO source_customers (source, source_key) VALUES ('s', ?)", [f"s{k}"])
    for cid in sorted({c for c, _ in after}, reverse=bool(order)):
        con.execute("INSERT INTO customers (customer_id) VALUES (?)", [cid])
    segs = [("Cold", 10.0), ("Cb", 20.0), ("Cc", 30.0), ("Cd", 40.0), ("Cgone", 50.0)]
    for cid, monetary in segs[::-1] if order else segs:
        con.execute("INSERT INTO segments (as_of, customer_id, monetary) VALUES (DATE '2024-01-01', ?, ?)", [cid, monetary])
    con.execute("INSERT INTO campaign_contacts (campaign_id, customer_id, grp, source, customer_key) VALUES "
                "('P1', 'Cb', 'treatment', 'segmenter', NULL), ('P1', 'Cd', 'control', 'segmenter', NULL), "
                "('P1', 'Cgone', 'treatment', 'segmenter', NULL), ('H1', 'Cb', 'treatment', 's', 's5')")
    # an id older than the links (the id of s9's former cluster), and one nobody knows
    con.execute("INSERT INTO interactions (interaction_id, customer_id) VALUES ('I1', 'Cold'), ('I2', ?), ('I3', 'Cunknown0')",
                [_cid("s", "s9", digits)])
    con.execute("INSERT INTO contact_history (customer_id, field, new_value, seq) VALUES ('Cunknown0', 'email', 'x@y.fr', 1)")
    return con


@pytest.mark.parametrize("digits", [16, 10], ids=["id", "legacy_10_digit_id"])
@pytest.mark.parametrize("order", [0, 1], ids=["rows_in_order", "rows_reversed"])
def test_carry_over_is_deterministic_on_splits_and_merges(order, digits):
    con = _relinked(order, digits)
    carry = constituer.carry_over_ids(con)
    assert carry.mapping[["old_id", "new_id", "records", "targets", "rank"]].to_dict("records") == sorted([
        {"old_id": "Cb", "new_id": "N2", "records": 1, "targets": 1, "rank": 2},
        {"old_id": "Cd", "new_id": "N2", "records": 2, "targets": 1, "rank": 1},
        {"old_id": "Cold", "new_id": "N1", "records": 2, "targets": 2, "rank": 1},
        {"old_id": _cid("s", "s9", digits), "new_id": "N1", "records": 0, "targets": 1, "rank": 2},
    ], key=lambda r: r["old_id"])
    assert (carry.carried, carry.splits, carry.recovered) == (4, 1, 1)
    # one segment row per person and snapshot: the merged customer keeps Cd's row, the unknown id's row goes
    assert con.execute("SELECT customer_id, monetary FROM segments ORDER BY 1").fetchall() == [
        ("Cc", 30.0), ("N1", 10.0), ("N2", 40.0)]
    assert con.execute("SELECT campaign_id, customer_id, grp FROM campaign_contacts ORDER BY 1, 2").fetchall() == [
        ("H1", "N2", "treatment"), ("P1", "N2", "control")]
    assert con.execute("SELECT interaction_id, customer_id FROM interactions ORDER BY 1").fetchall() == [
        ("I1", "N1"), ("I2", "N1"), ("I3", None)]
    # history is kept as it was (no later step checks it against customers)
    assert con.execute("SELECT customer_id FROM contact_history").fetchall() == [("Cunknown0",)]
    assert carry.dropped == {"segments (doublons)": 1, "campaign_contacts (doublons)": 1, "interactions": 1,
                             "segments": 1, "campaign_contacts": 1}
    assert "1 client(s) aux fiches désormais réparties" in constituer.carry_over_sentence(carry)
