"""Tests of crmlab.quality: e-mail, phone and postal code checks, freshness."""

import pandas as pd
import pytest

from crmlab import db, quality


@pytest.mark.parametrize("value, expected", [
    ("jean.dupont@gmail.com", None),
    ("JEAN@Orange.FR", None),
    ("jean.dupont@@gmail.com", "e-mail : syntaxe invalide"),
    ("jean.dupont.gmail.com", "e-mail sans @"),
    ("jean@gmail", "e-mail : domaine invalide"),
], ids=["ok", "upper", "double-at", "no-at", "no-tld"])
def test_email_problem(value, expected):
    assert quality.email_problem(value) == expected


@pytest.mark.parametrize("value, region, expected", [
    ("06 12 34 56 78", "FR", None),
    ("+33 1 42 68 53 00", "FR", None),
    ("06 12 34", "FR", "téléphone : nombre de chiffres impossible"),
    ("abc", "FR", "téléphone illisible"),
    ("+32 470 12 34 56", "FR", None),
], ids=["mobile", "landline", "short", "letters", "belgian"])
def test_phone_problem(value, region, expected):
    assert quality.phone_problem(value, region) == expected


@pytest.mark.parametrize("value, country, expected", [
    ("75011", "FR", None),
    ("7501", "FR", "code postal au format invalide pour FR"),
    ("1000", "BE", None),
    ("SW1A 1AA", "GB", None),
    ("ABCDE", "FR", "code postal au format invalide pour FR"),
], ids=["fr", "fr-short", "be", "gb", "fr-letters"])
def test_postal_code_problem(value, country, expected):
    assert quality.postal_code_problem(value, country) == expected


def test_flag_values_keeps_rows_and_lists_reasons():
    values = pd.DataFrame({
        "customer_id": ["A", "B", "C", "D"],
        "field": ["email", "phone", "postal_code", "city"],
        "value": ["a@b", "0612345678", "750", "Paris"],
    })
    before = values.copy()
    out = quality.flag_values(values)
    pd.testing.assert_frame_equal(values, before)  # input untouched
    assert out["customer_id"].tolist() == ["A", "B", "C", "D"]
    assert out["valid"].tolist() == [False, True, False, True]
    assert out["reason"].tolist() == ["e-mail : domaine invalide", None, "code postal au format invalide pour FR", None]


def test_audit_customers_and_summary():
    con = db.connect(":memory:")
    con.execute("""INSERT INTO customers (customer_id, email, phone, postal_code, country) VALUES
                   ('C1', 'ok@mail.fr', '+33612345678', '75011', 'FR'),
                   ('C2', 'bad@@mail.fr', '+3361', '123', 'FR'),
                   ('C3', NULL, NULL, '1000', 'BE')""")
    flags = quality.audit_customers(con)
    assert flags[["customer_id", "field"]].values.tolist() == [["C2", "email"], ["C2", "phone"], ["C2", "postal_code"]]
    summary = quality.quality_summary(flags, {"email": 2, "phone": 2, "postal_code": 3})
    assert summary["values"].tolist() == [1, 1, 1]
    assert summary["share"].tolist() == pytest.approx([0.5, 0.5, 1 / 3])


def test_freshness_share_and_stale_list():
    confirmed = pd.DataFrame({
        "customer_id": ["A", "B", "C", "D"],
        "last_confirmed": pd.to_datetime(["2025-12-01", "2023-01-01", None, "2024-02-01"]),
    })
    share, stale = quality.freshness(confirmed, "2026-01-31", 24)
    assert share == 0.5
    assert stale["customer_id"].tolist() == ["C", "B"]  # never confirmed first, then the oldest
    assert stale["months_since"].iloc[1] == pytest.approx(37.0, abs=0.05)


def test_last_confirmed_uses_records_history_and_interactions():
    con = db.connect(":memory:")
    con.execute("INSERT INTO customers (customer_id, updated_at) VALUES ('C1', '2022-01-01'), ('C2', NULL), ('C3', NULL)")
    con.execute("INSERT INTO source_customers (source, source_key, created_at, updated_at) VALUES "
                "('web', '1', '2021-01-01', '2023-05-01'), ('web', '2', '2020-01-01', NULL)")
    con.execute("INSERT INTO customer_links (source, source_key, customer_id) VALUES ('web', '1', 'C1'), ('web', '2', 'C2')")
    con.execute("INSERT INTO contact_history (customer_id, field, changed_at, seq) VALUES ('C2', 'email', '2025-03-01', 1)")
    con.execute("INSERT INTO interactions (interaction_id, customer_id, ts, phone) VALUES ('i1', 'C3', '2024-07-01', '0612345678')")
    out = quality.last_confirmed(con).set_index("customer_id")["last_confirmed"]
    assert out.to_dict() == {"C1": pd.Timestamp("2023-05-01"), "C2": pd.Timestamp("2025-03-01"),
                             "C3": pd.Timestamp("2024-07-01")}
