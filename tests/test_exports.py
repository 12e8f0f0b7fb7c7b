"""Tests of crmlab.exports: consent / control exclusion (property), minimisation, formula injection."""

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmlab import exports

PHONES = ["+33612345678", "06 12 34 56 78", "01 42 00 00 00", "12", None]
EMAILS = ["a.b@gmail.com", "=HYPERLINK(\"x\")@evil.com", "pas-un-email", None]
NAMES = ["Dupont", "=1+1", "+cmd", "-2", "@SUM(A1)", "\tTab", "Élodie", None]


@st.composite
def plans(draw):
    n = draw(st.integers(1, 25))
    rows, custs, cons = [], [], []
    for i in range(n):
        cid = f"C{i:03d}"
        custs.append({"customer_id": cid, "first_name": draw(st.sampled_from(NAMES)),
                      "last_name": draw(st.sampled_from(NAMES)), "email": draw(st.sampled_from(EMAILS)),
                      "phone": draw(st.sampled_from(PHONES)), "address": draw(st.sampled_from(["1 rue X", "=cmd", None])),
                      "postal_code": draw(st.sampled_from(["75011", None])), "city": draw(st.sampled_from(["Paris", None]))})
        for ch in exports.CHANNELS:
            for _ in range(draw(st.integers(0, 2))):  # 0, 1 or 2 consent records (latest wins)
                cons.append({"customer_id": cid, "channel": ch, "opted_in": draw(st.booleans()),
                             "updated_at": draw(st.sampled_from([pd.Timestamp("2024-01-01"), pd.Timestamp("2025-01-01"), pd.NaT]))})
        rows.append({"campaign_id": draw(st.sampled_from(["P1", "P2"])), "customer_id": cid,
                     "grp": draw(st.sampled_from(["treatment", "control"])),
                     "channel": draw(st.sampled_from(list(exports.CHANNELS))), "offer": "-10 %"})
    cons = pd.DataFrame(cons, columns=["customer_id", "channel", "opted_in", "updated_at"])
    return pd.DataFrame(rows), pd.DataFrame(custs), cons


def latest(cons: pd.DataFrame) -> pd.DataFrame:
    """Python mirror of exports.current_consents (latest date wins, opt-out wins ties)."""
    if cons.empty:
        return cons[["customer_id", "channel", "opted_in"]]
    c = cons.assign(_d=cons["updated_at"].fillna(pd.Timestamp.min)).sort_values(
        ["customer_id", "channel", "_d", "opted_in"], ascending=[True, True, False, True])
    return c.drop_duplicates(["customer_id", "channel"])[["customer_id", "channel", "opted_in"]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans())
def test_no_exported_row_is_control_or_without_consent(tmp_path_factory, plan):
    contacts, customers, cons = plan
    current = latest(cons)
    out = tmp_path_factory.mktemp("exp")
    files = exports.write_exports(contacts, customers, current, out, "csv")
    ctrl = set(contacts.loc[contacts["grp"] == "control", "customer_id"])
    for f in files.itertuples(index=False):
        rows = exports.read_export(out / f.file)
        ok = set(current[(current["channel"] == f.channel) & current["opted_in"]]["customer_id"])
        ids = set(rows["id_client"])
        assert not ids & ctrl
        assert ids <= ok
        # only the fields the channel needs
        assert list(rows.columns) == ["campagne", "offre", "id_client",
                                      *[exports.HEADERS[c] for c in exports.CHANNEL_FIELDS[f.channel]]]
        # no cell can start a formula
        for col in rows.columns:
            assert not rows[col].str.startswith(exports.FORMULA_START).any()
        assert len(rows) + f.excluded == f.planned


def test_current_consents_latest_wins_and_opt_out_wins_ties():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE consents (customer_id VARCHAR, channel VARCHAR, opted_in BOOLEAN, updated_at TIMESTAMP)")
    con.execute("""INSERT INTO consents VALUES ('A', 'email', true, '2024-01-01'), ('A', 'email', false, '2025-01-01'),
                   ('B', 'email', true, '2025-01-01'), ('B', 'email', false, '2025-01-01'),
                   ('C', 'sms', true, NULL), ('C', 'sms', false, '2023-01-01')""")
    got = exports.current_consents(con)
    assert got.values.tolist() == [["A", "email", False], ["B", "email", False], ["C", "sms", False]]


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+33612345678", "'+33612345678"), ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tcmd", "'\tcmd"), ("\rcmd", "'\rcmd"), ("Dupont", "Dupont"), ("a=b", "a=b"), ("", ""), (None, None), (12.5, 12.5),
], ids=["egal", "plus-telephone", "moins", "arobase", "tab", "cr", "texte", "egal-milieu", "vide", "none", "nombre"])
def test_neutralise(value, expected):
    assert exports.neutralise(value) == expected


def test_csv_file_is_bom_semicolon_and_neutralised(tmp_path):
    rows = pd.DataFrame({"campaign_id": ["P1"], "customer_id": ["C1"], "first_name": ["=HYPERLINK(\"http://x\")"],
                         "phone": ["+33612345678"]})
    path = exports.write_file(rows, tmp_path / "f.csv", "csv")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert text.splitlines()[0] == "campagne;id_client;prenom;telephone"
    assert "'+33612345678" in text and "'=HYPERLINK" in text


def test_xlsx_cells_are_typed_text(tmp_path):
    from openpyxl import load_workbook

    rows = pd.DataFrame({"campaign_id": ["P1"], "customer_id": ["C1"], "first_name": ["=1+1"], "phone": ["+33612345678"]})
    path = exports.write_file(rows, tmp_path / "f.xlsx", "xlsx")
    ws = load_workbook(path).active
    cells = list(ws.iter_rows(min_row=2, values_only=False))[0]
    assert [c.value for c in cells] == ["P1", "C1", "=1+1", "+33612345678"]
    assert all(c.data_type == "s" for c in cells)  # text, never a formula


def test_reachable_rules():
    c = pd.DataFrame({"email": ["a@b.fr", "x", None], "phone": ["06 12 34 56 78", "01 42 00 00 00", None],
                      "address": ["1 rue X", "1 rue X", None], "postal_code": ["75011", None, None], "city": ["Paris", "Paris", None]})
    assert exports.reachable(c, "email").tolist() == [True, False, False]
    assert exports.reachable(c, "sms").tolist() == [True, False, False]
    assert exports.reachable(c, "telephone").tolist() == [True, True, False]
    assert exports.reachable(c, "courrier").tolist() == [True, False, False]
