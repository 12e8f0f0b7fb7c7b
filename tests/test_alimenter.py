"""Tests of crmlab.alimenter: incremental idempotent feed, update rules, opt-out precedence, refused batches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from crmlab import alimenter, db, history
from crmlab.errors import InputError
from crmlab.sources import validate_sources

CUSTOMER_COLUMNS = {"source_key": "key", "email": "email", "phone": "phone", "city": "city",
                    "updated_at": "updated_at", "consent_email": "optin_email"}
TX_COLUMNS = {"transaction_id": "tid", "customer_key": "key", "ts": "ts", "amount": "amount"}
CONSENT_COLUMNS = {"customer_source": "source", "customer_key": "key", "channel": "channel", "opted_in": "opted_in",
                   "updated_at": "updated_at"}


def make_world() -> duckdb.DuckDBPyConnection:  # noqa: F821
    """Two customers: C1 (web 1 + magasin 10), C2 (web 2); consents and one purchase each."""
    con = db.connect(":memory:")
    con.execute("""INSERT INTO source_customers (source, source_key, email, phone, city, created_at, updated_at) VALUES
        ('web', '1', 'a@x.fr', '+33612345678', 'Lyon', '2023-01-01', '2024-01-01'),
        ('magasin', '10', NULL, '06 12 34 56 78', 'Lyon', '2023-01-01', NULL),
        ('web', '2', 'two@x.fr', NULL, 'Nice', '2023-01-01', '2024-01-01')""")
    con.execute("""INSERT INTO customer_links (source, source_key, customer_id, rule) VALUES
        ('web', '1', 'C1', 'phone_name'), ('magasin', '10', 'C1', 'phone_name'), ('web', '2', 'C2', 'unique')""")
    con.execute("""INSERT INTO customers (customer_id, email, phone, city, is_prospect, n_records, sources, created_at, updated_at)
        VALUES ('C1', 'a@x.fr', '+33612345678', 'Lyon', FALSE, 2, 'magasin,web', '2023-01-01', '2024-01-01'),
               ('C2', 'two@x.fr', NULL, 'Nice', FALSE, 1, 'web', '2023-01-01', '2024-01-01')""")
    con.execute("""INSERT INTO consents VALUES ('C1', 'email', TRUE, '2024-01-01', 'web', '1', NULL),
                                               ('C2', 'email', TRUE, '2024-01-01', 'web', '2', NULL)""")
    con.execute("""INSERT INTO transactions (transaction_id, customer_id, customer_source, customer_key, ts, amount) VALUES
        ('t1', 'C1', 'web', '1', '2024-05-01', 20.0), ('t2', 'C2', 'web', '2', '2024-06-01', 30.0)""")
    return con


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> str:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return str(path)


def customer_source(path: str, name: str = "web") -> dict:
    return {"name": name, "kind": "customers", "path": path, "columns": dict(CUSTOMER_COLUMNS)}


def params(sources: list[dict], **extra) -> dict:
    p = {"run_id": "r1", "as_of": "2025-01-01", "sources": validate_sources(sources, "alimenter.sources"),
         "apply_interactions": True, "source_priority": {}, "keep_fields": ["email", "phone", "city", "postal_code",
                                                                              "address", "first_name", "last_name"],
         "default_region": "FR", "freshness_months": 24, "max_unparsable_share": 0.5, "list_size": 10}
    p.update(extra)
    return p


def customers(con) -> dict:
    return {r[0]: r[1:] for r in con.execute(
        "SELECT customer_id, email, phone, city FROM customers ORDER BY 1").fetchall()}


def consent(con, cid: str, channel: str = "email"):
    c = history.current_consents(con)
    row = c[(c["customer_id"] == cid) & (c["channel"] == channel)]
    return None if row.empty else bool(row["opted_in"].iloc[0])


CUST_COLS = ["key", "email", "phone", "city", "updated_at", "optin_email"]


# --------------------------------------------------------------------------- update rules


def test_newer_value_wins_and_is_written_to_history(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [{"key": "1", "email": "B@X.fr", "city": "Lyon", "updated_at": "2025-03-01"}], CUST_COLS)
    res = alimenter.feed(con, params([customer_source(f)]))
    assert customers(con)["C1"] == ("b@x.fr", "+33612345678", "Lyon")
    h = history.history(con, "C1")
    assert h[["field", "old_value", "new_value", "channel", "source"]].values.tolist() == [
        ["email", "a@x.fr", "b@x.fr", "web", "web"]]
    assert h["changed_at"].iloc[0] == pd.Timestamp("2025-03-01")
    d = res.decisions.set_index("field")["outcome"].to_dict()
    assert d == {"email": "applied", "city": "confirmed"}


def test_older_value_is_ignored(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [{"key": "1", "email": "old@x.fr", "updated_at": "2023-06-01"}], CUST_COLS)
    res = alimenter.feed(con, params([customer_source(f)]))
    assert customers(con)["C1"][0] == "a@x.fr"
    assert res.decisions["outcome"].tolist() == ["older"]
    assert history.history(con).empty


def test_more_trusted_source_keeps_its_value(tmp_path):
    con = make_world()
    prio = {"magasin": 1, "web": 2}
    f1 = write_csv(tmp_path / "m.csv", [{"key": "10", "city": "Lille", "updated_at": "2025-01-01"}], CUST_COLS)
    alimenter.feed(con, params([customer_source(f1, "magasin")], source_priority=prio))
    assert customers(con)["C1"][2] == "Lille"
    f2 = write_csv(tmp_path / "w.csv", [{"key": "1", "city": "Paris", "updated_at": "2025-06-01"}], CUST_COLS)
    res = alimenter.feed(con, params([customer_source(f2)], source_priority=prio, run_id="r2"))
    assert customers(con)["C1"][2] == "Lille"
    assert res.decisions["outcome"].tolist() == ["less_trusted"]


def test_invalid_values_are_listed_not_applied(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [{"key": "2", "email": "bad@@x.fr", "phone": "0612", "updated_at": "2025-03-01"}],
                  CUST_COLS)
    res = alimenter.feed(con, params([customer_source(f)]))
    assert customers(con)["C2"] == ("two@x.fr", None, "Nice")
    q = alimenter.quality_report(res)
    assert sorted(zip(q["field"], q["reason"], strict=True)) == [("email", "e-mail : syntaxe invalide"),
                                                     ("phone", "téléphone : nombre de chiffres impossible")]


def test_new_records_link_by_email_or_become_customers(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [
        {"key": "3", "email": "Two@x.fr", "updated_at": "2025-02-01"},
        {"key": "4", "email": "new@x.fr", "phone": "06 98 76 54 31", "city": "Brest", "updated_at": "2025-02-01"},
    ], CUST_COLS)
    t = write_csv(tmp_path / "tx.csv", [{"tid": "t9", "key": "99", "ts": "2025-02-02", "amount": 5.0}], list(TX_COLUMNS.values()))
    res = alimenter.feed(con, params([customer_source(f), {"name": "tx", "kind": "transactions", "path": t,
                                                             "customer_source": "web", "columns": dict(TX_COLUMNS)}]))
    links = res.links.set_index("source_key")
    assert links.loc["3", "customer_id"] == "C2" and links.loc["3", "rule"] == "email"
    new_id = links.loc["4", "customer_id"]
    assert links.loc["4", "rule"] == "unique" and bool(links.loc["4", "new"])
    assert customers(con)[new_id] == ("new@x.fr", "+33698765431", "Brest")
    assert res.new_customers == 2  # key 4 and the key-only buyer 99
    assert con.execute("SELECT count(*) FROM transactions WHERE customer_id IS NULL").fetchall()[0][0] == 0
    alimenter.check_output(con)


# --------------------------------------------------------------------------- consents


def consent_source(path: str, name: str = "consents") -> dict:
    return {"name": name, "kind": "consents", "path": path, "columns": dict(CONSENT_COLUMNS)}


CONS_COLS = ["source", "key", "channel", "opted_in", "updated_at"]


def test_opt_out_wins_over_newer_opt_in_of_the_same_batch(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "c.csv", [
        {"source": "web", "key": "1", "channel": "email", "opted_in": "non", "updated_at": "2025-01-05"},
        {"source": "web", "key": "1", "channel": "email", "opted_in": "oui", "updated_at": "2025-02-01"},
    ], CONS_COLS)
    res = alimenter.feed(con, params([consent_source(f)]))
    assert consent(con, "C1") is False
    assert sorted(res.decisions["outcome"]) == ["applied", "optout_wins"]


def test_opt_out_wins_at_once_over_a_later_current_opt_in_and_any_source(tmp_path):
    con = make_world()
    con.execute("INSERT INTO consents VALUES ('C2', 'email', TRUE, '2025-06-01', 'web', '2', NULL)")
    f = write_csv(tmp_path / "c.csv", [
        {"source": "web", "key": "2", "channel": "email", "opted_in": "non", "updated_at": "2025-03-01"}], CONS_COLS)
    alimenter.feed(con, params([consent_source(f, "papier")], source_priority={"web": 1, "papier": 9}))
    assert consent(con, "C2") is False
    h = history.history(con, "C2")
    assert h[["field", "old_value", "new_value"]].values.tolist() == [["consent_email", "true", "false"]]
    # an older opt-in afterwards does not undo it; a later one is a new subscription
    f2 = write_csv(tmp_path / "c2.csv", [
        {"source": "web", "key": "2", "channel": "email", "opted_in": "oui", "updated_at": "2025-04-01"}], CONS_COLS)
    res = alimenter.feed(con, params([consent_source(f2)], run_id="r2"))
    assert consent(con, "C2") is False and res.decisions["outcome"].tolist() == ["optout_newer"]
    f3 = write_csv(tmp_path / "c3.csv", [
        {"source": "web", "key": "2", "channel": "email", "opted_in": "oui", "updated_at": "2025-09-01"}], CONS_COLS)
    alimenter.feed(con, params([consent_source(f3)], run_id="r3"))
    assert consent(con, "C2") is True


def test_consent_column_of_a_customer_file_follows_the_rules(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [{"key": "1", "optin_email": "false", "updated_at": "2023-02-01"}], CUST_COLS)
    alimenter.feed(con, params([customer_source(f)]))
    assert consent(con, "C1") is False  # an old opt-out still wins at once


# --------------------------------------------------------------------------- interactions


def test_interactions_are_applied_once(tmp_path):
    con = make_world()
    con.execute("""INSERT INTO interactions (interaction_id, customer_id, source, channel, ts, phone, consent_channel,
                   consent_opted_in) VALUES
                   ('i1', 'C2', 'appels', 'telephone', '2025-04-01', '06 98 76 54 32', 'sms', FALSE),
                   ('i2', NULL, 'appels', 'telephone', '2025-04-02', '06 11 11 11 11', NULL, NULL)""")
    res = alimenter.feed(con, params([]))
    assert customers(con)["C2"][1] == "+33698765432"
    assert consent(con, "C2", "sms") is False
    assert res.pending_interactions == 1
    assert res.items[["item", "kind", "outcome"]].values.tolist() == [["interaction|i1", "interactions", "appliqué"]]
    before = history.history(con)
    res2 = alimenter.feed(con, params([], run_id="r2"))
    assert res2.changes.empty and res2.items.empty
    pd.testing.assert_frame_equal(history.history(con), before)


def test_interaction_values_stay_arrow_strings_when_no_customer_file_comes(tmp_path, monkeypatch):
    # concatenated with the empty frame of customer-file values, the interaction values used
    # to become Python objects (1.5 GB instead of 0.4 at ten million purchases)
    con = make_world()
    con.execute("""INSERT INTO interactions (interaction_id, customer_id, source, channel, ts, phone, email) VALUES
                   ('i1', 'C2', 'appels', 'telephone', '2025-04-01', '06 98 76 54 32', NULL),
                   ('i2', 'C1', 'formulaires', 'web', '2025-04-02', NULL, 'new@x.fr')""")
    seen = []
    prepare = alimenter._prepare
    monkeypatch.setattr(alimenter, "_prepare", lambda long, *a: seen.append(long.dtypes.to_dict()) or prepare(long, *a))
    res = alimenter.feed(con, params([]))
    assert customers(con)["C2"][1] == "+33698765432" and customers(con)["C1"][0] == "new@x.fr"
    assert seen and not any(pd.api.types.is_object_dtype(t) for c, t in seen[0].items() if c != "country"), seen
    assert seen[0]["ts"].kind == "M"
    assert all(res.changes[c].dtype == "str" for c in ("customer_id", "field", "new_value", "channel", "source", "item"))


def test_restore_from_history_after_a_rebuild(tmp_path):
    con = make_world()
    con.execute("""INSERT INTO interactions (interaction_id, customer_id, source, channel, ts, city)
                   VALUES ('i1', 'C1', 'web_form', 'web', '2025-04-01', 'Rennes')""")
    alimenter.feed(con, params([]))
    # step 01 rebuilds the golden record from the source records: the update is lost …
    con.execute("UPDATE customers SET city = 'Lyon', updated_at = '2024-01-01' WHERE customer_id = 'C1'")
    res = alimenter.feed(con, params([], run_id="r2"))
    # … and the history brings it back, without a new change
    assert res.restored == 1 and customers(con)["C1"][2] == "Rennes"
    assert len(history.history(con)) == 1


# --------------------------------------------------------------------------- refused batch


def snapshot(con) -> dict:
    return {t: con.execute(f"SELECT * FROM {t}").df() for t in db.TABLES if t != "runs"}


def test_bad_batch_is_refused_and_nothing_applied(tmp_path):
    con = make_world()
    good = write_csv(tmp_path / "web.csv", [{"key": "1", "email": "b@x.fr", "updated_at": "2025-03-01"}], CUST_COLS)
    bad = write_csv(tmp_path / "tx.csv", [{"tid": "t5", "key": "1", "ts": "2025-02-02"}], ["tid", "key", "ts"])  # no amount
    before = snapshot(con)
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(InputError, match=r"Lot refusé, rien n'a été appliqué – source « tx »"):
        alimenter.feed(con, params([customer_source(good), {"name": "tx", "kind": "transactions", "path": bad,
                                                             "customer_source": "web", "columns": dict(TX_COLUMNS)}]))
    con.execute("ROLLBACK")
    after = snapshot(con)
    for t in before:
        pd.testing.assert_frame_equal(after[t], before[t], obj=t)


# --------------------------------------------------------------------------- property: idempotent, nothing lost

EMAILS = ["a@x.fr", "b@x.fr", "C@X.FR", "bad@@x.fr", "", "z@y.com"]
PHONES = ["06 12 34 56 78", "+33 7 11 22 33 44", "0612", "", "01 42 68 53 00"]
CITIES = ["Lyon", "lyon", "Paris", "", "Saint-Étienne"]
KEYS = ["1", "2", "3", "4", "10"]

row_strategy = st.fixed_dictionaries({
    "key": st.sampled_from(KEYS),
    "email": st.sampled_from(EMAILS),
    "phone": st.sampled_from(PHONES),
    "city": st.sampled_from(CITIES),
    "updated_at": st.sampled_from(["2023-01-01", "2024-06-01", "2025-03-01", "", "pas une date"]),
    "optin_email": st.sampled_from(["oui", "non", ""]),
})
tx_strategy = st.fixed_dictionaries({
    "key": st.sampled_from(KEYS + ["77"]),
    "ts": st.sampled_from(["2025-01-02", "2025-02-03 10:00", "jamais"]),
    "amount": st.sampled_from(["12.5", "0", "abc", "99"]),
})


def state(con) -> dict:
    out = {}
    for t, cols in {"customers": "customer_id, email, phone, city, n_records, sources, is_prospect",
                    "customer_links": "source, source_key, customer_id, rule",
                    "contact_history": "customer_id, field, old_value, new_value, channel, changed_at, seq",
                    "consents": "customer_id, channel, opted_in, updated_at, source",
                    "transactions": "transaction_id, customer_id, amount", "feed_items": "item, outcome",
                    "source_customers": "source, source_key, email", "rejects": "row_number, reason"}.items():
        out[t] = con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").df()
    return out


_SAME_ROW = {"key": "1", "email": "C@X.FR", "phone": "0612", "city": "Lyon", "optin_email": "non", "updated_at": "2024-06-01"}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(batch=st.lists(row_strategy, min_size=1, max_size=8), txs=st.lists(tx_strategy, min_size=0, max_size=5),
       split=st.booleans())
# the web and store files of this batch are byte-identical (same SHA-256): both are fed, under their own source
@example(batch=[dict(_SAME_ROW)] * 2, txs=[], split=True)
def test_feed_twice_equals_once_and_nothing_is_lost(tmp_path_factory, batch, txs, split):
    folder = tmp_path_factory.mktemp("batch")
    rows = [{**r, "key": r["key"]} for r in batch]
    parts = [rows[: len(rows) // 2], rows[len(rows) // 2:]] if split and len(rows) > 1 else [rows]
    sources = [customer_source(write_csv(folder / f"web{i}.csv", part, CUST_COLS), "web")
               for i, part in enumerate(parts) if part][:1]
    if split and len(parts) == 2 and parts[1]:
        sources.append(customer_source(write_csv(folder / "mag.csv", parts[1], CUST_COLS), "magasin"))
    txrows = [{"tid": f"n{i}", **t} for i, t in enumerate(txs)]
    if txrows:
        sources.append({"name": "tx", "kind": "transactions", "customer_source": "web", "columns": dict(TX_COLUMNS),
                        "path": write_csv(folder / "tx.csv", txrows, ["tid", "key", "ts", "amount"])})
    p = params(sources, max_unparsable_share=1.0)  # unreadable values are rejected row by row
    con = make_world()
    con.execute("""INSERT INTO interactions (interaction_id, customer_id, source, channel, ts, email, consent_channel,
                   consent_opted_in) VALUES ('i1', 'C1', 'appels', 'telephone', '2025-02-15', 'z@y.com', 'email', FALSE)""")
    initial = state(con)
    con.execute("BEGIN TRANSACTION")
    try:
        res = alimenter.feed(con, p)
    except InputError as exc:
        # a batch that breaks the schema (here: too many unreadable values) is refused as a whole
        assert "Lot refusé, rien n'a été appliqué" in str(exc)
        con.execute("ROLLBACK")
        refused = state(con)
        for t in initial:
            pd.testing.assert_frame_equal(refused[t], initial[t], obj=t)
        return
    con.execute("COMMIT")
    once = state(con)
    res2 = alimenter.feed(con, {**p, "run_id": "r2"})
    twice = state(con)
    for t in once:
        pd.testing.assert_frame_equal(twice[t], once[t], obj=t)
    assert res2.changes.empty and res2.items.empty
    # nothing lost: every data row of every file is either in feed_items or in rejects
    for ld_file in res.files.itertuples():
        sha = con.execute("SELECT sha256 FROM ingestions WHERE path LIKE ?", ["%" + ld_file.file]).fetchall()[0][0]
        # items are '<source>|<sha prefix>|…': two sources may send byte-identical files
        fed = con.execute("SELECT count(*) FROM feed_items WHERE item LIKE ?", [f"{ld_file.source}|{sha[:16]}|%"]).fetchall()[0][0]
        rejected = con.execute("SELECT count(DISTINCT row_number) FROM rejects WHERE sha256 = ? AND reason NOT LIKE 'valeur ignorée%'",
                               [sha]).fetchall()[0][0]
        assert fed + rejected == ld_file.rows_read, ld_file
    # and every decision ended in one of the known outcomes
    assert set(res.decisions["outcome"]) <= set(alimenter.OUTCOMES)
    alimenter.check_output(con)


def test_provenance_counts_and_subsets_agree_with_the_per_value_rows(tmp_path):
    con = make_world()
    f = write_csv(tmp_path / "web.csv", [{"key": "1", "email": "B@X.fr", "city": "Lyon", "updated_at": "2025-03-01"}], CUST_COLS)
    alimenter.feed(con, params([customer_source(f)]))
    rows = alimenter.provenance(con)
    # C1's new e-mail came from the web feed, its phone from its records; C2 holds only web values
    assert {(r.customer_id, r.field): r.channel for r in rows.itertuples()}[("C1", "email")] == "web"
    counts = alimenter.provenance(con, counts=True)
    expected = rows.groupby(["field", "channel"]).size().rename("customers").reset_index()
    assert counts.astype({"customers": "int64"}).equals(expected.astype({"customers": "int64"}))
    only_c2 = alimenter.provenance(con, customer_ids=["C2"])
    assert only_c2.reset_index(drop=True).equals(rows[rows["customer_id"] == "C2"].reset_index(drop=True))
    by_channel = alimenter.fill_by_channel(con)
    assert by_channel["customers"].sum() == len(rows)
    assert (by_channel["share"] == by_channel["customers"] / 2).all()
