"""Tests of crmlab.history: change log, record as of any date, roll-back."""

import datetime as dt

import pandas as pd
import pytest

from crmlab import db, history


@pytest.fixture
def con():
    c = db.connect(":memory:")
    c.execute("""INSERT INTO customers (customer_id, email, phone, city, updated_at) VALUES
                 ('C1', 'old@mail.fr', '+33611111111', 'Lyon', '2024-01-01'),
                 ('C2', 'two@mail.fr', NULL, 'Nice', '2024-01-01')""")
    c.execute("INSERT INTO consents VALUES ('C1', 'email', TRUE, '2024-01-01', 'web', '1', NULL)")
    return c


def _changes(rows):
    return pd.DataFrame(rows, columns=history.CHANGE_COLUMNS)


def _apply_three(con):
    history.apply_changes(con, _changes([
        ("C1", "email", "old@mail.fr", "mid@mail.fr", "web", "web", dt.datetime(2025, 1, 10), "r1"),
        ("C1", "consent_email", "true", "false", "telephone", "appels", dt.datetime(2025, 2, 1), "i1"),
    ]), run_id="run1")
    history.apply_changes(con, _changes([
        ("C1", "email", "mid@mail.fr", "new@mail.fr", "magasin", "magasin", dt.datetime(2025, 6, 1), "r2"),
        ("C1", "phone", "+33611111111", None, "web", "web", dt.datetime(2025, 6, 1), "r2"),
    ]), run_id="run2")


def test_apply_changes_updates_customers_consents_and_numbers_history(con):
    _apply_three(con)
    row = con.execute("SELECT email, phone, updated_at FROM customers WHERE customer_id = 'C1'").fetchall()[0]
    assert row == ("new@mail.fr", None, dt.datetime(2025, 6, 1))
    h = history.history(con, "C1")
    assert h["seq"].tolist() == [1, 2, 3, 4]
    assert h["field"].tolist() == ["email", "consent_email", "email", "phone"]
    assert h["run_id"].tolist() == ["run1", "run1", "run2", "run2"]
    cons = history.current_consents(con)
    assert cons[["customer_id", "channel", "opted_in", "source"]].values.tolist() == [["C1", "email", False, "appels"]]


@pytest.mark.parametrize("as_of, expected", [
    ("2024-12-31", {"email": "old@mail.fr", "phone": "+33611111111", "consent_email": "true"}),
    ("2025-01-10", {"email": "mid@mail.fr", "phone": "+33611111111", "consent_email": "true"}),
    ("2025-03-01", {"email": "mid@mail.fr", "phone": "+33611111111", "consent_email": "false"}),
    ("2025-12-31", {"email": "new@mail.fr", "consent_email": "false"}),
], ids=["before-all", "same-day", "between", "after-all"])
def test_record_as_of_rebuilds_any_date(con, as_of, expected):
    _apply_three(con)
    rec = history.record_as_of(con, as_of, ["C1"])
    got = dict(zip(rec["field"], rec["value"], strict=True))
    assert got == {"city": "Lyon", **expected}


def test_record_as_of_other_customers_unchanged(con):
    _apply_three(con)
    rec = history.record_as_of(con, "2020-01-01", ["C2"])
    assert dict(zip(rec["field"], rec["value"], strict=True)) == {"email": "two@mail.fr", "city": "Nice"}


def test_rollback_restores_state_and_is_traced(con):
    _apply_three(con)
    undone = history.rollback(con, "2025-01-31", run_id="undo", changed_at=dt.datetime(2026, 1, 1))
    assert undone[["customer_id", "field", "old_value", "new_value"]].values.tolist() == [
        ["C1", "consent_email", "false", "true"],
        ["C1", "email", "new@mail.fr", "mid@mail.fr"],
        ["C1", "phone", None, "+33611111111"],
    ]
    row = con.execute("SELECT email, phone FROM customers WHERE customer_id = 'C1'").fetchall()[0]
    assert row == ("mid@mail.fr", "+33611111111")
    assert history.current_consents(con)["opted_in"].tolist() == [True]
    assert (history.history(con, "C1")["channel"] == "retour arrière").sum() == 3
    # nothing erased: the state before the roll-back can still be rebuilt
    rec = history.record_as_of(con, "2025-12-31", ["C1"])
    assert dict(zip(rec["field"], rec["value"], strict=True))["email"] == "new@mail.fr"


def test_apply_changes_refuses_two_changes_of_one_field(con):
    with pytest.raises(ValueError, match="more than one change"):
        history.apply_changes(con, _changes([
            ("C1", "email", None, "a@b.fr", "web", "web", dt.datetime(2025, 1, 1), "x"),
            ("C1", "email", None, "c@d.fr", "web", "web", dt.datetime(2025, 1, 2), "y"),
        ]), run_id="r")
