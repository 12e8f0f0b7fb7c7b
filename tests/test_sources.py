"""Tests of the source loader (crmlab.sources)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmlab import db, sources
from crmlab.errors import InputError, ParamsError

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CANONICAL = ["ingestions", "rejects", "source_customers", "transactions", "consents", "campaigns", "campaign_contacts"]


@pytest.fixture
def con():
    c = db.connect(":memory:")
    yield c
    c.close()


def snapshot(con) -> dict:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in CANONICAL}


def load(con, **src):
    src.setdefault("name", "src")
    src = sources.validate_sources([src], "constituer.sources")[0]
    return sources.load_source(con, src, run_id="run1", step="01")


def write_bytes(path: Path, text: str, encoding: str = "cp1252") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


FR_TX = (
    "N° client;Date achat;Montant TTC;Qté;Téléphone;Code postal;Catégorie\r\n"
    "00012;01/02/2024;12,50;1;0612345678;01000;Électroménager\r\n"
    "00013;15/03/2024 14:30;1 234,50;2;0698765432;75001;Vêtements\r\n"
    ";16/03/2024;3,00;1;;75002;Vêtements\r\n"
    "00014;31/13/2024;4,00;1;;75003;Vêtements\r\n"
    "00015;17/03/2024;abc;1;;75004;Vêtements\r\n"
    "00016;18/03/2024;5,25;;;75005;\r\n"
)
FR_MAP = {"customer_key": '"N° client"', "ts": '"Date achat"', "amount": '"Montant TTC"', "quantity": "Qté", "category": "Catégorie"}


# --------------------------------------------------------------------------- detection and typing


def test_french_cp1252_file_loads_without_hints(con, tmp_path):
    path = write_bytes(tmp_path / "ventes.csv", FR_TX)
    fmt = sources.detect_text_format(path)
    assert fmt == {"encoding": "cp1252", "sep": ";", "header": True, "decimal": ","}
    res = load(con, kind="transactions", path=str(path), columns=FR_MAP, max_unparsable_share=0.5)
    f = res.files[0]
    assert (f.rows_read, f.rows_kept, f.rows_rejected) == (6, 3, 3)
    assert f.rejected == {"clé client manquante": 1, "date illisible": 1, "montant non numérique": 1}
    assert f.format["date_formats"] == {"ts": "jj/mm/aaaa"}
    got = con.execute(
        "SELECT customer_key, ts, amount, quantity, category, customer_source, source, row_number "
        "FROM transactions ORDER BY row_number"
    ).fetchall()
    assert got == [
        ("00012", dt.datetime(2024, 2, 1), 12.5, 1.0, "Électroménager", "src", "src", 2),
        ("00013", dt.datetime(2024, 3, 15, 14, 30), 1234.5, 2.0, "Vêtements", "src", "src", 3),
        ("00016", dt.datetime(2024, 3, 18), 5.25, None, None, "src", "src", 7),
    ]
    ids = [r[0] for r in con.execute("SELECT transaction_id FROM transactions ORDER BY row_number").fetchall()]
    sha = sources.file_sha256(path)
    assert ids == [f"src:{sha[:12]}:2", f"src:{sha[:12]}:3", f"src:{sha[:12]}:7"]
    assert con.execute("SELECT count(*) FROM transactions WHERE order_id <> transaction_id").fetchall()[0][0] == 0
    rej = con.execute("SELECT row_number, reason, column_name, value, record FROM rejects ORDER BY row_number").fetchall()
    assert [r[:4] for r in rej] == [
        (4, "clé client manquante", '"N° client"', None),
        (5, "date illisible", '"Date achat"', "31/13/2024"),
        (6, "montant non numérique", '"Montant TTC"', "abc"),
    ]
    summary = sources.rejects_summary(con, "src")
    assert summary[["reason", "rows"]].to_dict("records") == [
        {"reason": "clé client manquante", "rows": 1}, {"reason": "date illisible", "rows": 1},
        {"reason": "montant non numérique", "rows": 1}]
    assert summary["example_rows"].map(list).tolist() == [[4], [5], [6]]
    assert json.loads(rej[1][4])["Téléphone"] is None
    assert json.loads(rej[2][4])["Montant TTC"] == "abc"
    assert res.columns_used == ["N° client", "Date achat", "Montant TTC", "Qté", "Catégorie"]
    assert res.columns_unused == ["Téléphone", "Code postal"]
    led = con.execute("SELECT rows_read, rows_kept, rows_rejected, rows_filtered, kind FROM ingestions").fetchall()
    assert led == [(6, 3, 3, 0, "transactions")]


def test_leading_zero_columns_stay_text_and_numbers_are_typed(con, tmp_path):
    path = write_bytes(tmp_path / "c.csv", FR_TX)
    # typed view: arithmetic works on decimal-comma columns; 0612… and 01000 stay text
    res = load(con, name="t2", kind="transactions", path=str(path), max_unparsable_share=0.5,
               columns={**FR_MAP, "amount": '"Montant TTC" * 2', "product": '"Code postal"', "channel": "Téléphone"})
    assert res.rows_kept == 3
    got = con.execute(
        "SELECT amount, product, channel FROM transactions WHERE source = 't2' ORDER BY row_number"
    ).fetchall()
    assert got == [(25.0, "01000", "0612345678"), (2469.0, "75001", "0698765432"), (10.5, "75005", None)]


def test_hints_override_detection(con, tmp_path):
    text = "id|when|amount\n1|02/01/2024|1,234\n2|12/31/2024|2\n"
    path = write_bytes(tmp_path / "us.txt", text, "utf-8")
    res = load(con, kind="transactions", path=str(path), sep="|", decimal=".", date_format="%m/%d/%Y",
               columns={"customer_key": "id", "ts": '"when"', "amount": "amount"})
    assert res.rows_kept == 2
    got = con.execute("SELECT customer_key, ts, amount FROM transactions ORDER BY row_number").fetchall()
    assert got == [("1", dt.datetime(2024, 2, 1), 1234.0), ("2", dt.datetime(2024, 12, 31), 2.0)]


def test_header_false_hint_and_encoding_hint(con, tmp_path):
    path = write_bytes(tmp_path / "noheader.csv", "Dupont;Zoé;15/06/2023\nMartin;Noël;01/01/2024\n", "latin-1")
    res = load(con, kind="customers", path=str(path), header=False, encoding="latin-1",
               columns={"source_key": "column0 || '-' || column1", "last_name": "column0", "first_name": "column1", "created_at": "column2"})
    assert res.rows_kept == 2
    got = con.execute("SELECT source_key, first_name, created_at, row_number FROM source_customers ORDER BY row_number").fetchall()
    assert got == [("Dupont-Zoé", "Zoé", dt.datetime(2023, 6, 15), 1), ("Martin-Noël", "Noël", dt.datetime(2024, 1, 1), 2)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20240131", dt.datetime(2024, 1, 31)), ("31.01.2024", dt.datetime(2024, 1, 31)),
     ("31-01-2024 08:15", dt.datetime(2024, 1, 31, 8, 15)), ("2024-01-31T08:15:30", dt.datetime(2024, 1, 31, 8, 15, 30))],
    ids=["yyyymmdd", "dotted", "dashed", "iso"],
)
def test_date_formats_detected(con, tmp_path, value, expected):
    path = write_bytes(tmp_path / "d.csv", f"k,d,a\nA,{value},1\n", "utf-8")
    load(con, kind="transactions", path=str(path), columns={"customer_key": "k", "ts": "d", "amount": "a"})
    assert con.execute("SELECT ts FROM transactions").fetchall()[0][0] == expected


def test_french_wins_ties_over_us(con, tmp_path):
    path = write_bytes(tmp_path / "d.csv", "k,d,a\nA,01/02/2024,1\nB,03/04/2024,1\n", "utf-8")
    load(con, kind="transactions", path=str(path), columns={"customer_key": "k", "ts": "d", "amount": "a"})
    assert [r[0] for r in con.execute("SELECT ts FROM transactions ORDER BY row_number").fetchall()] == [
        dt.datetime(2024, 2, 1), dt.datetime(2024, 4, 3)]


def test_utf8_bom_and_utf16(con, tmp_path):
    text = "code;nom\r\nA1;Élodie\r\n"
    p8 = tmp_path / "bom.csv"
    p8.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    p16 = tmp_path / "u16.csv"
    p16.write_bytes(text.encode("utf-16"))
    assert sources.detect_text_format(p8)["encoding"] == "utf-8-sig"
    assert sources.detect_text_format(p16)["encoding"] == "utf-16"
    load(con, name="a", kind="customers", path=str(p8), columns={"source_key": "code", "first_name": "nom"})
    load(con, name="b", kind="customers", path=str(p16), columns={"source_key": "code", "first_name": "nom"})
    assert con.execute("SELECT source, source_key, first_name FROM source_customers ORDER BY source").fetchall() == [
        ("a", "A1", "Élodie"), ("b", "A1", "Élodie")]


def test_whitespace_file_without_header(con, tmp_path):
    path = write_bytes(
        tmp_path / "cd.txt",
        "  00004 00001 19970101 2 29.33\r\n  00004 00001 19970118 2 29.73\r\n  00112 00002 19970101 1 11.77\r\n", "ascii")
    fmt = sources.detect_text_format(path)
    assert fmt == {"encoding": "utf-8", "sep": "whitespace", "header": False, "decimal": "."}
    res = load(con, kind="transactions", path=str(path),
               columns={"customer_key": "column0", "ts": "column2", "amount": "column4", "quantity": "column3"})
    assert res.columns_present == ["column0", "column1", "column2", "column3", "column4"]
    assert con.execute("SELECT customer_key, ts, amount, quantity, row_number FROM transactions ORDER BY row_number").fetchall() == [
        ("00004", dt.datetime(1997, 1, 1), 29.33, 2.0, 1),
        ("00004", dt.datetime(1997, 1, 18), 29.73, 2.0, 2),
        ("00112", dt.datetime(1997, 1, 1), 11.77, 1.0, 3),
    ]


def test_parquet_native_types_and_float_keys(con, tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({
        "CustomerID": [17850.0, None, 13047.0],
        "InvoiceDate": [dt.datetime(2011, 1, 2, 10), dt.datetime(2011, 1, 3), dt.datetime(2011, 1, 4)],
        "Quantity": [2, 3, 4],
        "UnitPrice": [1.5, 2.0, 2.5],
        "InvoiceNo": ["536365", "C536366", "536367"],
    }).to_parquet(path)
    res = load(con, kind="transactions", path=str(path),
               columns={"order_id": "InvoiceNo", "customer_key": "CustomerID", "ts": "InvoiceDate",
                        "amount": "Quantity * UnitPrice", "quantity": "Quantity"})
    assert res.rejected == {"clé client manquante": 1}
    assert con.execute("SELECT customer_key, order_id, ts, amount FROM transactions ORDER BY row_number").fetchall() == [
        ("17850", "536365", dt.datetime(2011, 1, 2, 10), 3.0), ("13047", "536367", dt.datetime(2011, 1, 4), 10.0)]
    assert con.execute("SELECT row_number FROM rejects").fetchall() == [(2,)]


def test_xlsx_with_sheet_hint(con, tmp_path):
    path = tmp_path / "clients.xlsx"
    with pd.ExcelWriter(path) as xw:
        pd.DataFrame({"a": [1]}).to_excel(xw, sheet_name="Notes", index=False)
        pd.DataFrame({
            "Code": [101.0, 102.0, None], "Nom": ["Durand", "Petit", "Sans clé"],
            "Naissance": pd.to_datetime(["1980-05-17", "1975-01-02", "1990-01-01"]),
            "Optin SMS": ["oui", "non", "oui"], "Optin email": ["x", None, "x"],
        }).to_excel(xw, sheet_name="Clients", index=False)
    res = load(con, kind="customers", path=str(path), sheet="Clients",
               columns={"source_key": "Code", "last_name": "Nom", "birth_date": "Naissance",
                        "consent_sms": '"Optin SMS"', "consent_email": '"Optin email"'})
    assert res.rejected == {"clé client manquante": 1}
    assert con.execute("SELECT source_key, last_name, birth_date, row_number FROM source_customers ORDER BY 1").fetchall() == [
        ("101", "Durand", dt.date(1980, 5, 17), 2), ("102", "Petit", dt.date(1975, 1, 2), 3)]
    assert con.execute("SELECT source_key, channel, opted_in, customer_id FROM consents ORDER BY 1, 2").fetchall() == [
        ("101", "email", True, None), ("101", "sms", True, None), ("102", "email", False, None), ("102", "sms", False, None)]
    assert con.execute("SELECT row_number FROM rejects").fetchall() == [(4,)]


def test_excel_sheet_not_found(con, tmp_path):
    path = tmp_path / "c.xlsx"
    pd.DataFrame({"Code": [1]}).to_excel(path, sheet_name="Feuil1", index=False)
    before = snapshot(con)
    with pytest.raises(InputError, match=r"Feuille « Clients » introuvable.*Feuil1"):
        load(con, kind="customers", path=str(path), sheet="Clients", columns={"source_key": "Code"})
    assert snapshot(con) == before



def test_excel_sheet_index_out_of_range_names_the_sheets(con, tmp_path):
    path = tmp_path / "c.xlsx"
    pd.DataFrame({"Code": [1]}).to_excel(path, sheet_name="Feuil1", index=False)
    before = snapshot(con)
    with pytest.raises(InputError, match=r"Feuille « 3 » introuvable.*Feuil1"):
        load(con, kind="customers", path=str(path), sheet=3, columns={"source_key": "Code"})
    assert snapshot(con) == before


def test_corrupt_workbook_is_a_french_error_and_changes_nothing(con, tmp_path):
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"PK\x03\x04 not a workbook")
    before = snapshot(con)
    with pytest.raises(InputError, match=r"Classeur Excel illisible") as err:
        load(con, kind="customers", path=str(path), columns={"source_key": "Code"})
    assert "c.xlsx" in str(err.value)
    assert snapshot(con) == before

def test_glob_of_two_files_and_idempotence(con, tmp_path):
    write_bytes(tmp_path / "ventes_2023.csv", "client;date;montant\nA;01/01/2023;10,00\nB;02/01/2023;20,00\n")
    write_bytes(tmp_path / "ventes_2024.csv", "client;date;montant\nA;01/01/2024;30,00\n")
    src = {"kind": "transactions", "path": str(tmp_path / "ventes_*.csv"),
           "columns": {"customer_key": "client", "ts": "date", "amount": "montant"}}
    res = load(con, **src)
    assert [Path(f.path).name for f in res.files] == ["ventes_2023.csv", "ventes_2024.csv"]
    assert res.rows_kept == 3
    assert con.execute("SELECT count(*) FROM ingestions").fetchall()[0][0] == 2
    assert con.execute(f"SELECT count(*) FROM {res.staged}").fetchall()[0][0] == 3
    before = snapshot(con)
    again = load(con, **src)
    assert [f.skipped for f in again.files] == [True, True]
    assert again.rows_kept == 0 and len(again.skipped) == 2
    assert snapshot(con) == before
    assert con.execute(f"SELECT count(*) FROM {again.staged}").fetchall()[0][0] == 0


def test_customers_reload_of_newer_export_replaces_records(con, tmp_path):
    p1 = write_bytes(tmp_path / "a.csv", "id;email\n1;a@x.fr\n2;b@x.fr\n2;doublon@x.fr\n", "utf-8")
    res = load(con, kind="customers", path=str(p1), columns={"source_key": "id", "email": "email"})
    assert res.rejected == {"clé client en double dans le fichier": 1}
    assert con.execute("SELECT row_number FROM rejects").fetchall() == [(4,)]
    p2 = write_bytes(tmp_path / "b.csv", "id;email\n2;new@x.fr\n", "utf-8")
    res2 = load(con, kind="customers", path=str(p2), columns={"source_key": "id", "email": "email"})
    assert res2.files[0].replaced == 1
    assert con.execute("SELECT source_key, email FROM source_customers ORDER BY 1").fetchall() == [
        ("1", "a@x.fr"), ("2", "new@x.fr")]


def test_where_and_exclude_counts(con, tmp_path):
    path = write_bytes(tmp_path / "f.csv", "inv,cust,amt,country\nC1,A,1,FR\n2,,1,FR\n3,B,1,UK\n4,C,1,FR\nC5,,1,FR\n", "utf-8")
    res = load(con, kind="transactions", path=str(path), where="country = 'FR'",
               exclude={"Annulations (factures C…)": "starts_with(inv, 'C')"},
               columns={"order_id": "inv", "customer_key": "cust", "amount": "amt", "ts": "'2024-01-01'"})
    f = res.files[0]
    assert f.excluded == {"Annulations (factures C…)": 2}
    assert (f.rows_filtered, f.rows_kept, f.rejected) == (1, 1, {"clé client manquante": 1})
    assert con.execute("SELECT rows_filtered FROM ingestions").fetchall()[0][0] == 3
    assert "country" in res.columns_used


def test_optional_parse_failures_are_warnings(con, tmp_path):
    path = write_bytes(tmp_path / "c.csv", "id;naissance\n" + "".join(f"{i};01/01/1980\n" for i in range(30)) + "99;jamais\n", "utf-8")
    res = load(con, kind="customers", path=str(path), columns={"source_key": "id", "birth_date": "naissance"})
    assert res.rows_kept == 31
    assert res.warnings == {"valeur ignorée : date illisible (birth_date)": 1}
    assert con.execute("SELECT birth_date FROM source_customers WHERE source_key = '99'").fetchall()[0][0] is None
    assert con.execute("SELECT row_number, reason, value FROM rejects").fetchall() == [
        (32, "valeur ignorée : date illisible", "jamais")]


def test_consents_campaigns_and_contacts(con, tmp_path):
    c = write_bytes(tmp_path / "consent.csv", "cli;canal;optin;maj\nA;email;Opt-in;2024-01-01\nB;sms;N;\nC;sms;peut-être;\n" + "".join(f"Z{i};sms;oui;\n" for i in range(20)), "utf-8")
    res = load(con, name="cons", kind="consents", path=str(c), customer_source="web",
               columns={"customer_key": "cli", "channel": "canal", "opted_in": "optin", "updated_at": "maj"})
    assert res.rejected == {"valeur oui/non illisible": 1}
    assert con.execute("SELECT source, source_key, channel, opted_in FROM consents WHERE source_key IN ('A','B') ORDER BY 2").fetchall() == [
        ("web", "A", "email", True), ("web", "B", "sms", False)]
    camp = write_bytes(tmp_path / "camp.csv", "id;nom;debut;cout\nK1;Printemps;01/03/2024;0,45\n", "utf-8")
    load(con, name="camp", kind="campaigns", path=str(camp),
         columns={"campaign_id": "id", "name": "nom", "start_date": "debut", "cost_per_contact": "cout"})
    assert con.execute("SELECT campaign_id, name, start_date, cost_per_contact FROM campaigns").fetchall() == [
        ("K1", "Printemps", dt.date(2024, 3, 1), 0.45)]
    cc = write_bytes(tmp_path / "cc.csv", "camp;cli;groupe\nK1;A;Cible\nK1;B;Témoin\nK1;C;CONTROLE\nK1;D;treatment\nK1;E;??\n" + "".join(f"K1;Z{i};test\n" for i in range(20)), "utf-8")
    res = load(con, name="cc", kind="campaign_contacts", path=str(cc), customer_source="web",
               columns={"campaign_id": "camp", "customer_key": "cli", "grp": "groupe"})
    assert res.rejected == {"groupe inconnu (ni cible ni témoin)": 1}
    assert con.execute("SELECT customer_key, grp, source FROM campaign_contacts WHERE customer_key < 'Z' ORDER BY 1").fetchall() == [
        ("A", "treatment", "web"), ("B", "control", "web"), ("C", "control", "web"), ("D", "treatment", "web")]


def test_interactions_are_only_staged(con, tmp_path):
    path = write_bytes(tmp_path / "i.csv", "canal;quand;note\nappel;01/02/2024 10:00;9\n", "utf-8")
    res = load(con, kind="interactions", path=str(path), columns={"channel": "canal", "ts": "quand", "score": "note"})
    assert con.execute(f"SELECT channel, ts, score, source, row_number FROM {res.staged}").fetchall() == [
        ("appel", dt.datetime(2024, 2, 1, 10), 9.0, "src", 2)]
    assert con.execute("SELECT count(*) FROM interactions").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM ingestions").fetchall()[0][0] == 1


# --------------------------------------------------------------------------- params validation


def test_validate_and_resolve_paths(tmp_path):
    (tmp_path / "exports").mkdir()
    write_bytes(tmp_path / "exports" / "v.csv", "a\n1\n", "utf-8")
    raw = [{"name": "v", "kind": "transactions", "path": "exports/v.csv",
            "columns": {"customer_key": "a", "ts": "a", "amount": "a"}}]
    out = sources.validate_sources(sources.resolve_source_paths(raw, tmp_path), "constituer.sources")
    assert out[0]["path"] == str(tmp_path / "exports" / "v.csv")
    assert raw[0]["path"] == "exports/v.csv"  # input not mutated


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"columns": {"customer_key": "a", "ts": "a", "amont": "a"}}, r"Colonne canonique inconnue « amont ».*« amount »"),
        ({"columns": {"customer_key": "a", "ts": "a"}}, r"colonnes obligatoires : amount"),
        ({"kind": "transaction"}, r"Type de source « transaction » inconnu.*« transactions »"),
        ({"wher": "x"}, r"Clé inconnue « wher ».*« where »"),
        ({"path": "absent.csv"}, r"Fichier introuvable pour la source « v ».*absent\.csv"),
        ({"path": "abs*.csv"}, r"Aucun fichier ne correspond"),
        ({"path": "v.json"}, r"Type de fichier non pris en charge.*v\.json"),
        ({"decimal": ";"}, r"Indication « decimal » invalide"),
        ({"max_unparsable_share": 2}, r"max_unparsable_share"),
    ],
    ids=["canonical", "required", "kind", "key", "missing-file", "glob", "extension", "decimal", "share"],
)
def test_validate_sources_errors(tmp_path, change, match):
    write_bytes(tmp_path / "v.csv", "a\n1\n", "utf-8")
    write_bytes(tmp_path / "v.json", "{}", "utf-8")
    src = {"name": "v", "kind": "transactions", "path": "v.csv", "columns": {"customer_key": "a", "ts": "a", "amount": "a"}}
    src.update(change)
    with pytest.raises(ParamsError, match=match):
        sources.validate_sources(sources.resolve_source_paths([src], tmp_path), "constituer.sources")


def test_validate_duplicate_names(tmp_path):
    write_bytes(tmp_path / "v.csv", "a\n1\n", "utf-8")
    src = {"name": "v", "kind": "customers", "path": str(tmp_path / "v.csv"), "columns": {"source_key": "a"}}
    with pytest.raises(ParamsError, match="Deux sources portent le nom « v »"):
        sources.validate_sources([src, dict(src)], "k")


# --------------------------------------------------------------------------- bad input, nothing written


def _bad(con, match, **src):
    before = snapshot(con)
    with pytest.raises(InputError, match=match) as info:
        load(con, **src)
    assert snapshot(con) == before
    return info.value


@pytest.fixture
def loaded(con, tmp_path):
    """A database that already holds one loaded file (to check nothing else is written)."""
    p = write_bytes(tmp_path / "base.csv", "k;d;a\nA;01/01/2024;1\n", "utf-8")
    load(con, name="base", kind="transactions", path=str(p), columns={"customer_key": "k", "ts": "d", "amount": "a"})
    return con


def test_empty_file(loaded, tmp_path):
    p = write_bytes(tmp_path / "vide.csv", "k;d;a\n", "utf-8")
    _bad(loaded, r"aucune ligne de données.*vide\.csv", kind="transactions", path=str(p),
         columns={"customer_key": "k", "ts": "d", "amount": "a"})


def test_unknown_column_lists_columns_and_suggests(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.csv", "CustomerID;InvoiceDate;Price\nA;01/01/2024;1\n", "utf-8")
    err = _bad(loaded, r"la colonne « CustomerId_ » .* n'existe pas.*Vouliez-vous dire « CustomerID ».*InvoiceDate, Price",
               kind="transactions", path=str(p), columns={"customer_key": "CustomerId_", "ts": "InvoiceDate", "amount": "Price"})
    assert err.column == "CustomerId_" and err.file == str(p)


def test_invalid_sql_expression(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.csv", "k;d;a\nA;01/01/2024;1\n", "utf-8")
    _bad(loaded, r"syntaxe SQL invalide pour la colonne « amount » \(« a \* »\)", kind="transactions", path=str(p),
         columns={"customer_key": "k", "ts": "d", "amount": "a *"})
    _bad(loaded, r"le filtre « where »", kind="transactions", path=str(p), where="k = = 1",
         columns={"customer_key": "k", "ts": "d", "amount": "a"})


def test_unparsable_dates_beyond_share(loaded, tmp_path):
    rows = "".join(f"A;{d};1\n" for d in ["01/01/2024"] * 8 + ["2024/31/01", "hier"])
    p = write_bytes(tmp_path / "x.csv", "k;d;a\n" + rows, "utf-8")
    err = _bad(loaded, r"2 valeur\(s\) sur 10 illisible\(s\) pour « ts ».*ligne 10 : « 2024/31/01 ».*ligne 11 : « hier ».*date_format",
               kind="transactions", path=str(p), columns={"customer_key": "k", "ts": "d", "amount": "a"})
    assert err.row == 10 and err.column == "d"


def test_non_numeric_amounts_beyond_share_suggest_decimal(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.csv", "k;d;a\nA;01/01/2024;1\nB;01/01/2024;douze\n", "utf-8")
    _bad(loaded, r"montant non numérique.*decimal", kind="transactions", path=str(p),
         columns={"customer_key": "k", "ts": "d", "amount": "a"})


def test_explicit_utf8_on_cp1252_names_line(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.csv", "k;d;a\nA;01/01/2024;1\nRené;01/01/2024;2\n", "cp1252")
    err = _bad(loaded, r"n'est pas en UTF-8.*0xe9.*ligne 3", kind="transactions", path=str(p), encoding="utf-8",
               columns={"customer_key": "k", "ts": "d", "amount": "a"})
    assert err.row == 3


def test_binary_file(loaded, tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"PK\x03\x04\x00\x00binary\x81\x8d")
    _bad(loaded, r"ni texte UTF-8 ni texte Windows-1252", kind="transactions", path=str(p),
         columns={"customer_key": "k", "ts": "d", "amount": "a"})


def test_unknown_file_type_at_load(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.json", "{}", "utf-8")
    with pytest.raises(ParamsError, match="Type de fichier non pris en charge"):
        sources.load_source(loaded, {"name": "j", "kind": "customers", "path": str(p), "columns": {"source_key": "a"}},
                            run_id="r", step="01")


def test_missing_file_at_load(loaded, tmp_path):
    with pytest.raises(ParamsError, match=r"Fichier introuvable pour la source « j »"):
        sources.load_source(loaded, {"name": "j", "kind": "customers", "path": str(tmp_path / "no.csv"),
                                     "columns": {"source_key": "a"}}, run_id="r", step="01")


def test_duplicate_transaction_ids_within_file(loaded, tmp_path):
    p = write_bytes(tmp_path / "x.csv", "id;k;d;a\nT1;A;01/01/2024;1\nT1;B;01/01/2024;2\nT2;B;01/01/2024;2\n", "utf-8")
    _bad(loaded, r"1 identifiant\(s\) de transaction en double \(ex\. T1\).*x\.csv.*order_id", kind="transactions", path=str(p),
         columns={"transaction_id": "id", "customer_key": "k", "ts": "d", "amount": "a"})


def test_duplicate_transaction_ids_across_files(con, tmp_path):
    cols = {"transaction_id": "id", "customer_key": "k", "ts": "d", "amount": "a"}
    p1 = write_bytes(tmp_path / "jan.csv", "id;k;d;a\nT1;A;01/01/2024;1\n", "utf-8")
    load(con, name="web", kind="transactions", path=str(p1), columns=cols)
    p2 = write_bytes(tmp_path / "copie.csv", "id;k;d;a\nT1;A;01/01/2024;1\nT9;A;02/01/2024;1\n", "utf-8")
    _bad(con, r"déjà présents dans la base \(ex\. T1\).*copie\.csv.*jan\.csv.*source « web »", name="magasin",
         kind="transactions", path=str(p2), columns=cols)
    # two files of one glob repeating an id
    d = tmp_path / "g"
    d.mkdir()
    write_bytes(d / "a.csv", "id;k;d;a\nT5;A;01/01/2024;1\n", "utf-8")
    write_bytes(d / "b.csv", "id;k;d;a\nT5;B;01/01/2024;1\n", "utf-8")
    _bad(con, r"en double \(ex\. T5\) dans .*a\.csv et .*b\.csv", name="glob", kind="transactions",
         path=str(d / "*.csv"), columns=cols)


def test_errors_inside_caller_transaction_roll_back(con, tmp_path):
    good = write_bytes(tmp_path / "good.csv", "k;d;a\nA;01/01/2024;1\n", "utf-8")
    bad = write_bytes(tmp_path / "bad.csv", "k;d;a\nA;01/01/2024;1\n", "utf-8")
    con.execute("BEGIN")
    load(con, name="g", kind="transactions", path=str(good), columns={"customer_key": "k", "ts": "d", "amount": "a"})
    with pytest.raises(InputError):
        load(con, name="b", kind="transactions", path=str(bad), columns={"customer_key": "k", "ts": "d", "amount": "nope"})
    con.execute("ROLLBACK")
    assert all(v == [] for v in snapshot(con).values())


# --------------------------------------------------------------------------- real data sets


def test_online_retail_counts(con):
    path = DATASETS / "online_retail" / "online_retail.parquet"
    if not path.exists():
        pytest.skip("jeu Online Retail absent")
    exclude = {"Annulations (factures C…)": "starts_with(InvoiceNo, 'C')"}
    res = load(con, name="online_retail", kind="transactions", path=str(path), exclude=exclude,
               columns={"order_id": "InvoiceNo", "customer_key": "CustomerID", "ts": "InvoiceDate",
                        "amount": "Quantity * UnitPrice", "quantity": "Quantity", "product": "StockCode", "category": "Country"})
    q = duckdb.connect()
    no_cust_cancel = q.execute(
        "SELECT count(*) FROM read_parquet(?) WHERE CustomerID IS NULL AND starts_with(InvoiceNo, 'C')", [str(path)]
    ).fetchall()[0][0]
    assert no_cust_cancel == 383
    f = res.files[0]
    assert f.rows_read == 541_909
    assert f.excluded == {"Annulations (factures C…)": 9_288}
    assert f.rejected == {"clé client manquante": 135_080 - 383}
    assert f.rows_kept == 541_909 - 9_288 - 134_697 == 397_924
    assert con.execute("SELECT count(*), count(DISTINCT customer_key), count(DISTINCT order_id) FROM transactions").fetchall()[0] == (
        397_924, 4_339, 18_536)
    assert con.execute("SELECT customer_key FROM transactions ORDER BY row_number LIMIT 1").fetchall()[0][0] == "17850"
    assert con.execute("SELECT count(*) FROM rejects WHERE reason = 'clé client manquante'").fetchall()[0][0] == 134_697
    assert res.columns_unused == ["Description"]


def test_cdnow_sample(con):
    path = DATASETS / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip("jeu CDNOW absent")
    cols = {"customer_key": "column0", "ts": "column2", "amount": "column4", "quantity": "column3"}
    res = load(con, name="cdnow", kind="transactions", path=str(path), columns=cols)
    assert res.files[0].format["date_formats"] == {"ts": "aaaammjj"}
    assert (res.rows_read, res.rows_kept, res.rows_rejected) == (6_919, 6_919, 0)
    got = con.execute(
        "SELECT count(DISTINCT customer_key), min(ts), max(ts), round(sum(amount), 2) FROM transactions"
    ).fetchall()[0]
    assert got[:3] == (2_357, dt.datetime(1997, 1, 1), dt.datetime(1998, 6, 30))
    res2 = load(con, name="cdnow2", kind="transactions", path=str(path), columns=cols, date_format="%Y%m%d")
    assert res2.rows_kept == 6_919
    zero = sum(1 for line in path.read_text().splitlines() if line.split() and float(line.split()[4]) == 0)
    assert zero == 8
    assert con.execute("SELECT count(*) FROM transactions WHERE amount = 0").fetchall()[0][0] == 2 * zero


def test_row_numbers_inside_an_open_transaction(tmp_path):
    """Row ids of tables created in a transaction start high: row numbers must not."""
    from crmlab import db
    from crmlab.sources import load_source

    f = tmp_path / "t.csv"
    f.write_text("id;cle;date;montant\n1;A;01/02/2024;12,5\n2;B;xx;3\n3;C;03/02/2024;4\n", encoding="cp1252")
    con = db.connect(":memory:")
    con.execute("BEGIN")
    src = {"name": "t", "kind": "transactions", "path": str(f), "max_unparsable_share": 0.9,
           "columns": {"transaction_id": "id", "customer_key": "cle", "ts": "date", "amount": "montant"}}
    load_source(con, src, run_id="r", step="01")
    assert con.execute("SELECT row_number, reason, value FROM rejects").fetchall() == [(3, "date illisible", "xx")]
    assert con.execute("SELECT transaction_id, row_number FROM transactions ORDER BY 1").fetchall() == [("1", 2), ("3", 4)]
    con.execute("ROLLBACK")


_NUMBER_TEXT = st.text(alphabet="0123456789.,+-e_ \t\u00a0\u202f€$£xi", max_size=10)


@settings(max_examples=500, deadline=None)
@given(_NUMBER_TEXT, st.sampled_from([None, ".", ","]))
def test_number_fast_path_reads_like_the_full_rules(text, decimal):
    con = duckdb.connect()
    fast = sources._number_parse_sql("v", decimal)
    full = sources._number_parse_sql("v", decimal, fast_path=False)
    got, want = con.execute(f"SELECT {fast}, {full} FROM (SELECT ?::VARCHAR AS v)", [text]).fetchall()[0]
    assert got == want or (got != got and want != want)  # NaN == NaN here


@given(st.binary(max_size=64) | st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\t", b"\x1b", b"\x00", b"\x7f", b"\xe9", b"\x0c"]),
                                         max_size=40).map(b"".join))
@settings(max_examples=300, deadline=None)
def test_binary_offset_finds_the_first_control_byte(chunk):
    import re

    m = re.search(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]", chunk)
    assert sources._binary_offset(chunk) == (m.start() if m else None)


def test_whitespace_only_dates_never_reach_strptime():
    # DuckDB 1.5.6's strptime skips leading whitespace past the end of a text made of tabs or
    # carriage returns only (duckdb#25082) and reads on into the following bytes. The guarded
    # expression gives NULL for such texts without calling it, and the same dates otherwise.
    expr = sources._date_parse_sql("x", ["%d/%m/%Y", "%d/%m/%Y %H:%M"])
    assert expr.startswith("CASE WHEN trim(x, ")
    con = duckdb.connect()
    got = con.execute(f"SELECT {expr} FROM (VALUES ('05/01/2020'), (chr(9) || '05/01/2020 10:00'), (chr(13)), "
                      f"(chr(9) || chr(10) || ' ' || chr(11) || chr(12)), (NULL)) v(x)").fetchall()
    assert got == [(dt.datetime(2020, 1, 5),), (dt.datetime(2020, 1, 5, 10, 0),), (None,), (None,), (None,)]
