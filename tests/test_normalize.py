import random

import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmlab import normalize as nz


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jean-Éric  DUPONT", "jean eric dupont"),
        ("jean eric dupont", "jean eric dupont"),
        ("D'Artagnan", "d artagnan"),
        ("  Œdipe ", "oedipe"),
        ("Müller", "muller"),
        ("---", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
    ids=["accents-hyphen", "plain", "apostrophe", "ligature", "umlaut", "punct-only", "empty", "none", "nan"],
)
def test_name(raw, expected):
    assert nz.name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rules", "expected"),
    [
        ("Jean.Dupont+promo@GMail.com", True, "jeandupont@gmail.com"),
        ("jeandupont@gmail.com", True, "jeandupont@gmail.com"),
        ("jean.dupont@googlemail.com", True, "jeandupont@gmail.com"),
        ("Jean.Dupont+promo@GMail.com", False, "jean.dupont+promo@gmail.com"),
        ("marie+news@outlook.fr", True, "marie@outlook.fr"),
        ("marie+news@orange.fr", True, "marie+news@orange.fr"),
        ("jean.dupont@orange.fr", True, "jean.dupont@orange.fr"),
        (" MAILTO:Paul@Free.FR ", True, "paul@free.fr"),
        ("jean@@gmail.com", True, None),
        ("jean dupont@gmail.com", True, None),
        ("jean@localhost", True, None),
        ("+promo@gmail.com", True, None),
        ("", True, None),
    ],
    ids=["gmail-dots-tag", "gmail-plain", "googlemail", "no-rules", "outlook-tag", "orange-keeps-plus",
         "other-dots-kept", "mailto", "double-at", "space", "no-dot-domain", "empty-local", "empty"],
)
def test_email(raw, rules, expected):
    assert nz.email(raw, provider_rules=rules) == expected


def test_email_keep_dots():
    assert nz.email("Jean.Dupont+x@gmail.com", ignore_dots=False) == "jean.dupont@gmail.com"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33612345678", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "FR", "+33612345678"),
        ("0033612345678", "FR", "+33612345678"),
        ("06.12.34.56.78", "FR", "+33612345678"),
        (612345678.0, "FR", "+33612345678"),
        ("01 23 45 67 89", "FR", "+33123456789"),
        ("+32 470 12 34 56", "FR", "+32470123456"),
        ("0470 12 34 56", "BE", "+32470123456"),
        ("0612", "FR", None),
        ("abc", "FR", None),
        ("", "FR", None),
    ],
    ids=["fr-spaces", "e164", "intl-spaces", "00", "dots", "float", "landline", "belgian-intl",
         "belgian-region", "short", "letters", "empty"],
)
def test_phone(raw, region, expected):
    assert nz.phone(raw, region) == expected


def test_phone_is_mobile():
    assert nz.phone_is_mobile("06 12 34 56 78") is True
    assert nz.phone_is_mobile("01 23 45 67 89") is False
    assert nz.phone_is_mobile("0612") is None


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [("75001", "FR", "75001"), ("75 001", "FR", "75001"), ("1000", "FR", "01000"), (1000.0, "France", "01000"),
     ("7500", None, "07500"), ("abc", "FR", None), ("1050", "Belgique", "1050"), ("sw1a 1aa", "GB", "SW1A1AA")],
    ids=["plain", "space", "lost-zero", "float", "no-country", "letters", "belgium", "uk"],
)
def test_postal_code(raw, country, expected):
    assert nz.postal_code(raw, country) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("12 av. Victor Hugo", "12 avenue Victor-Hugo"),
        ("3bis, Bd St-Michel", "3 bis boulevard saint michel"),
        ("3 B BD SAINT MICHEL", "3 bis boulevard saint michel"),
        ("N° 5 r. de la Paix", "5 rue de la paix"),
        ("8 all. des Roses", "8 allée des roses"),
        ("2 imp. du Moulin", "2 impasse du moulin"),
        ("4 chem. des Vignes", "4 chemin des vignes"),
        ("7 rte de Lyon", "7 route de lyon"),
        ("9 fbg St-Antoine", "9 faubourg saint antoine"),
        ("1 pl. Ste-Anne", "1 place sainte anne"),
    ],
    ids=["avenue", "bis-attached", "bis-letter", "number-sign", "allee", "impasse", "chemin", "route",
         "faubourg", "place-sainte"],
)
def test_address_variants_are_equal(a, b):
    assert nz.address(a) == nz.address(b)


def test_address_exact_form():
    assert nz.address("12 av. Victor-Hugo") == "12 avenue victor hugo"
    assert nz.address("12 rue A") != nz.address("14 rue A")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ST-DENIS CEDEX 01", "saint denis"), ("Paris 15e", "paris"), ("Lyon 3e arrondissement", "lyon"),
     ("Boulogne s/ Mer", "boulogne sur mer"), ("Châlons-en-Champagne", "chalons en champagne"),
     ("STE-MAXIME", "sainte maxime"), ("Marseille", "marseille")],
    ids=["cedex", "arrondissement-e", "arrondissement-word", "sur", "accents", "sainte", "plain"],
)
def test_city(raw, expected):
    assert nz.city(raw) == expected


@pytest.mark.parametrize(("a", "b"), [("Dupont", "Dupond"), ("Philippe", "Filipe"), ("Rousseau", "Roussau"),
                                      ("Mathieu", "Matthieu"), ("Giraud", "Jirau")])
def test_phonetic_merges_spellings(a, b):
    assert nz.phonetic(a) == nz.phonetic(b)


def test_phonetic_separates_names():
    assert nz.phonetic("Martin") != nz.phonetic("Bernard")


def test_country():
    assert nz.country("France") == "FR"
    assert nz.country(" belgique ") == "BE"
    assert nz.country(None) == "FR"
    assert nz.country("xx") == "XX"


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(text)
def test_text_normalisers_are_idempotent(value):
    for func in (nz.name, nz.address, nz.city, nz.email):
        once = func(value)
        assert func(once) == once, func.__name__


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"(\+33|0033|0)?[1-9]( ?\d){8}", fullmatch=True))
def test_phone_is_idempotent(value):
    once = nz.phone(value)
    assert nz.phone(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789 ", max_size=8), st.sampled_from(["FR", "BE", None]))
def test_postal_code_is_idempotent(value, country):
    once = nz.postal_code(value, country)
    assert nz.postal_code(once, country) == once


def _table(frame):
    con = duckdb.connect()
    con.register("_in", frame)
    con.execute("CREATE TABLE source_customers AS SELECT * FROM _in")
    return con


def test_normalize_customers_columns_and_values():
    frame = pd.DataFrame({
        "source": ["web", "web", "magasin"], "source_key": ["2", "1", "A"],
        "first_name": ["Jean-Éric", "Marie", None], "last_name": ["DUPONT", "Curie", "Noël"],
        "email": ["Jean.Dupont+x@GMail.com", None, "bad"], "phone": ["06 12 34 56 78", "+33 1 23 45 67 89", "12"],
        "address": ["12 av. Victor-Hugo", None, "1 r. X"], "postal_code": ["7500", "75001", None],
        "city": ["PARIS CEDEX 15", "Paris", None], "country": [None, "France", None],
        "birth_date": pd.to_datetime(["1980-01-02", None, None]), "gender": ["M.", "Mme", None],
        "created_at": pd.to_datetime(["2024-01-01"] * 3), "updated_at": pd.to_datetime(["2024-02-01"] * 3),
    })
    con = _table(frame)
    name = nz.normalize_customers(con)
    out = con.execute(f"SELECT * FROM {name} ORDER BY rid").df()
    assert out["source_key"].tolist() == ["A", "1", "2"]  # rid follows (source, source_key)
    row = out.iloc[2]
    assert (row.fn, row.ln, row.email_norm, row.email_strict, row.email_clean) == (
        "jean eric", "dupont", "jeandupont@gmail.com", "jean.dupont@gmail.com", "jean.dupont+x@gmail.com")
    assert (row.phone_e164, bool(row.phone_mobile), row.address_norm, row.postal_code, row.city_norm, row.gender) == (
        "+33612345678", True, "12 avenue victor hugo", "07500", "paris", "M")
    assert out.iloc[1].phone_e164 == "+33123456789" and out.iloc[1].gender == "F"
    assert pd.isna(out.iloc[0].email_norm) and pd.isna(out.iloc[0].phone_e164) and pd.isna(out.iloc[0].fn)
    assert out.iloc[0].ln == "noel" and out.iloc[0].country == "FR"


def test_fast_phone_path_agrees_with_phonenumbers():
    rnd = random.Random(3)
    values = []
    for _ in range(3000):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.choice([8, 9, 10, 11])))
        values.append(rnd.choice(["0" + digits[1:], "+33" + digits, "0033" + digits, digits,
                                  " ".join(digits[i:i + 2] for i in range(0, len(digits), 2)), "+33 (0)" + digits]))
    frame = pd.DataFrame({"source": "x", "source_key": [f"{i:05d}" for i in range(len(values))], "phone": values})
    con = _table(frame)
    out = con.execute(f"SELECT phone, phone_e164, phone_mobile FROM {nz.normalize_customers(con)}").df()
    expected = [nz.phone(v) for v in out["phone"]]
    got = [None if pd.isna(v) else v for v in out["phone_e164"]]
    assert got == expected
    assert sum(v is not None for v in got) > 300
    mobile = [None if pd.isna(v) else bool(v) for v in out["phone_mobile"]]
    assert mobile == [nz.phone_is_mobile(v) for v in out["phone"]]


# SQL twins of the Python normalisers (printable ASCII values): same results on inputs
# built from the characters and tokens the rules look at
_EMAIL_PARTS = st.lists(st.sampled_from(["a", "B", "z9", ".", "..", "+", "++", "@", " ", "-", "_", "mailto:", "MailTo:",
                                         "gmail.com", "googlemail.com", "GMail.Com", "hotmail.fr", "free.fr", "x.y",
                                         ".com", "!", "'"]), max_size=8)
_ADDRESS_PARTS = st.lists(st.sampled_from(["12", "3", "n", "no", "num", "N°", "bis", "b", "B", "ter", "quater",
                                           "av", "av.", "Bd", "r", "r.", "st", "nd", "rue", "de", "la", "Victor-Hugo",
                                           " ", "  ", "-", ",", "'", "12bis", "4b", "5 b", "App", "res", "x"]),
                          max_size=8)
_SQL_CON = duckdb.connect()


@settings(max_examples=400, deadline=None)
@given(_EMAIL_PARTS, st.booleans(), st.booleans())
def test_email_sql_equals_email(parts, rules, dots):
    value = "".join(parts)
    sql = nz.email_sql("v", rules, ignore_dots=dots)
    got = _SQL_CON.execute(f"SELECT {sql} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchall()[0][0]
    assert got == nz.email(value, rules, ignore_dots=dots)


@settings(max_examples=400, deadline=None)
@given(_ADDRESS_PARTS, st.sampled_from(["", " ", "-"]))
def test_address_sql_equals_address(parts, sep):
    value = sep.join(parts)
    if not all(" " <= c <= "~" for c in value):  # the SQL form is used on printable ASCII only
        return
    got = _SQL_CON.execute(f"SELECT {nz.address_sql('v')} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchall()[0][0]
    assert got == nz.address(value)


def test_normalize_customers_mixes_sql_and_python_values():
    frame = pd.DataFrame({"source": "x", "source_key": ["1", "2", "3"],
                          "email": ["Jean.Dupont+x@GMail.com", "élodie@exemple.fr", "a\u00a0b@x.fr"],
                          "address": ["12 av. Victor-Hugo", "3 bd de l'Église", "n° 4bis r. du Moulin"]})
    con = _table(frame)
    out = con.execute(f"SELECT email_norm, email_strict, email_clean, address_norm FROM {nz.normalize_customers(con)} "
                      "ORDER BY rid").fetchall()
    assert out == [(nz.email(e), nz.email(e, ignore_dots=False), nz.email(e, False), nz.address(a))
                   for e, a in zip(frame["email"], frame["address"], strict=True)]
    assert out[0][0] == "jeandupont@gmail.com" and out[2][0] is None and out[1][3] == "3 boulevard de l eglise"
