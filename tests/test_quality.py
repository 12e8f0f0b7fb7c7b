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


# --- vectorised fast paths: they may only settle values the libraries call valid

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_LOCAL = st.from_regex(r"[A-Za-z0-9_+.-]{1,20}", fullmatch=True)
_TLD = st.sampled_from(["fr", "com", "test", "local", "c", "museum", "x1", "COM"])


@settings(max_examples=400, deadline=None)
@given(local=_LOCAL, labels=st.lists(_LABEL, min_size=1, max_size=3), tld=_TLD,
       pad=st.sampled_from(["", " ", "\t"]))
def test_email_fast_path_only_settles_valid_addresses(local, labels, tld, pad):
    value = f"{pad}{local}@{'.'.join(labels)}.{tld}{pad}"
    fast = bool(quality.email_fast_valid(pd.Series([value])).iloc[0])
    if fast:
        assert quality.email_problem(value) is None, value


def test_email_fast_path_settles_the_plain_shapes():
    plain = pd.Series(["jean.dupont@gmail.com", "JEAN@Orange.FR", "a_b+promo@mail.example.co.uk"])
    assert quality.email_fast_valid(plain).all()
    odd = pd.Series(["a..b@x.fr", "x@a-.fr", "jean@x.test", "é@x.fr", "a@ab--c.fr", "a@b.c", None])
    assert not quality.email_fast_valid(odd).any()


_NATIONAL = st.from_regex(r"[0-9]{1,12}", fullmatch=True)


@settings(max_examples=600, deadline=None)
@given(nat=_NATIONAL, shape=st.sampled_from(["0{}", "+33{}", "0033{}", "+33 {}", "{}", "0{}.0"]),
       sep=st.sampled_from(["", " ", ".", "-"]))
def test_phone_fast_path_agrees_with_phonenumbers(nat, shape, sep):
    from crmlab import normalize

    value = shape.format(sep.join(nat[i:i + 2] for i in range(0, len(nat), 2)))
    e164 = normalize.phone_fast_e164(pd.Series([value]), None, "FR").iloc[0]
    if e164 is not None:
        assert normalize.phone(value, "FR") == e164, value
        assert quality.phone_problem(value, "FR") is None, value


def test_flag_values_fast_and_slow_paths_give_the_library_verdicts():
    import random

    rng = random.Random(3)
    values = []
    for _ in range(3000):
        nat = "".join(rng.choice("0123456789") for _ in range(rng.choice([8, 9, 10])))
        values.append(("phone", rng.choice(["0", "+33", "0033", ""]) + nat, rng.choice([None, "FR", "France", "BE"])))
        local = "".join(rng.choice("abc.-_é") for _ in range(rng.randint(1, 6)))
        values.append(("email", f"{local}@{rng.choice(['x.fr', 'ex-.com', 'test', 'a.test', 'b.c'])}", None))
    frame = pd.DataFrame(values, columns=["field", "value", "country"])
    flagged = quality.flag_values(frame, region="FR")
    country = frame["country"].where(frame["country"].notna(), "FR")
    expected = [quality.check_value(f, v, region=(c if f == "phone" and len(c) == 2 else "FR"), country=c)
                for f, v, c in zip(frame["field"], frame["value"], country, strict=True)]
    assert flagged["reason"].tolist() == expected
    assert flagged["valid"].tolist() == [r is None for r in expected]
