"""Tests of crmlab.collecter: matching, prospects, measures, bad inputs, minimisation."""

from pathlib import Path

import pandas as pd
import pytest

from crmlab import collecter, db
from crmlab.errors import InputError

HEADER = "id,date,canal,email,prenom,nom,tel,note,type_note,message,carte\n"


def _params(path: Path, **over) -> dict:
    p = {k: v.default for k, v in collecter.PARAMS.items()}
    cols = {"interaction_id": "id", "ts": "date", "channel": "canal", "email": "email", "first_name": "prenom",
            "last_name": "nom", "phone": "tel", "score": "note", "score_type": "type_note", "text": "message",
            "customer_key": "carte", "operation": "'Test'"}
    p.update(sources=[{"name": "entrants", "kind": "interactions", "path": str(path), "columns": cols,
                       "customer_source": "magasin"}],
             run_id="t04", as_of="2025-06-01", database=str(path.parent / "db.duckdb"))
    p.update(over)
    return p


def _base(tmp_path: Path):
    con = db.connect(tmp_path / "db.duckdb")
    con.execute("""INSERT INTO source_customers (source, source_key, first_name, last_name, email, phone) VALUES
        ('web', 'W1', 'Marie', 'Dupont', 'marie.dupont@gmail.com', '0612345678'),
        ('magasin', 'M1', 'Jean', 'Martin', NULL, '06 98 76 54 32'),
        ('magasin', 'M2', 'Paul', 'Durand', NULL, NULL)""")
    con.execute("""INSERT INTO customer_links VALUES ('web', 'W1', 'C1', 'single', NULL, NULL),
                   ('magasin', 'M1', 'C2', 'single', NULL, NULL), ('magasin', 'M2', 'C3', 'single', NULL, NULL)""")
    con.execute("""INSERT INTO customers (customer_id, first_name, last_name, email, phone, is_prospect) VALUES
        ('C1', 'Marie', 'Dupont', 'marie.dupont@gmail.com', '+33612345678', FALSE),
        ('C2', 'Jean', 'Martin', NULL, '+33698765432', FALSE), ('C3', 'Paul', 'Durand', NULL, NULL, FALSE)""")
    return con


GOOD = (
    "I1,2025-05-01 10:00,web,Marie.Dupont@gmail.com,Marie,Dupont,,9,nps,Très bien,\n"   # known by e-mail
    "I2,2025-05-02 11:00,telephone,,Jean,MARTIN,+33698765432,,,,\n"                     # known by phone + name
    "I3,2025-05-03 12:00,magasin,,,,,,,,M2\n"                                          # known by card number
    "I4,2025-05-04 13:00,web,zoe.inconnue@proton.me,Zoé,Inconnue,0611111111,3,nps,Nul,\n"  # unknown: prospect
    "I5,2025-05-05 14:00,email,zoe.inconnue@proton.me,Zoé,Inconnue,,,,,\n"              # same prospect again
    "I6,2025-05-06 15:00,telephone,,Anne,Nom,Masqué,,,,\n"                              # anonymous (name only)
    "I7,2025-05-07 16:00,magasin,,Jean,Martin,06 00 00 00 01,4,csat,,\n"                # new phone brought by C2? no: unmatched
)


def test_collect_matches_creates_prospects_and_measures(tmp_path):
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + GOOD, encoding="utf-8")
    con = _base(tmp_path)
    p = _params(path)
    con.execute("BEGIN")
    files, rejected = collecter.collect(con, p)
    got = con.execute("SELECT interaction_id, customer_id, channel, score_type, text FROM interactions ORDER BY 1").df()
    ids = dict(zip(got["interaction_id"], got["customer_id"], strict=True))
    assert ids["I1"] == "C1" and ids["I2"] == "C2" and ids["I3"] == "C3"
    assert ids["I4"] == ids["I5"] and ids["I4"] not in ("C1", "C2", "C3")  # one prospect for two contacts
    assert pd.isna(ids["I6"])  # a name alone is neither a match nor a prospect
    prospects = con.execute("SELECT customer_id, is_prospect, email, phone FROM customers WHERE is_prospect").df()
    assert set(prospects["customer_id"]) == {ids["I4"], ids["I7"]}
    assert prospects.set_index("customer_id").loc[ids["I4"], "email"] == "zoe.inconnue@proton.me"
    rec = con.execute("SELECT source, source_key FROM source_customers WHERE source = 'entrants' ORDER BY 2").df()
    assert rec.values.tolist() == [["entrants", "I4"], ["entrants", "I7"]]
    link = con.execute("SELECT rule FROM customer_links WHERE source = 'entrants'").df()
    assert set(link["rule"]) == {"prospect"}
    assert got["text"].isna().all()  # keep_text: false (minimisation)
    m = collecter.collect_measures(con, rejected)
    assert int(m["collected"].sum()) == 7
    assert m.set_index("channel")["new_prospects"].to_dict() == {"email": 1, "magasin": 1, "telephone": 0, "web": 1}
    assert int(m["matched"].sum()) == 3
    tot = collecter.collect_totals(con)
    assert (tot["collected"], tot["matched"], tot["new_prospects"]) == (7, 3, 2)
    # C2 had no e-mail; C3 nothing: I2 brings nothing new (same phone) ; prospects' fields are items too
    items = con.execute("SELECT interaction_id, field, change FROM _col_items ORDER BY 1, 2").df()
    assert ["I2", "phone"] not in items[["interaction_id", "field"]].values.tolist()
    assert ["I4", "email"] in items[["interaction_id", "field"]].values.tolist()
    collecter.check_output(con, p)
    # a second run on the same file changes nothing (ledger)
    files2, _ = collecter.collect(con, p)
    assert (files2["status"] == "déjà chargé").all()
    assert con.execute("SELECT count(*) FROM interactions").fetchall()[0][0] == 7
    con.execute("ROLLBACK")



def test_prospect_record_comes_from_the_file_of_its_key_contact(tmp_path):
    """A prospect seen in two files keeps the file of the contact whose id is its key (the smallest)."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + "I9,2025-05-09 10:00,web,zoe.inconnue@proton.me,Zoé,Inconnue,,,,,\n", encoding="utf-8")
    second.write_text(HEADER + "I1,2025-05-01 10:00,email,zoe.inconnue@proton.me,Zoé,Inconnue,,,,,\n", encoding="utf-8")
    con = _base(tmp_path)
    p = _params(first)
    p["sources"] = [{**p["sources"][0], "path": str(first)}, {**p["sources"][0], "name": "autres", "path": str(second)}]
    con.execute("BEGIN")
    collecter.collect(con, p)
    rec = con.execute("SELECT source, source_key, sha256 FROM source_customers WHERE source IN ('entrants', 'autres')").df()
    assert rec[["source", "source_key"]].values.tolist() == [["autres", "I1"]]
    sha_i1 = con.execute("SELECT sha256 FROM interactions WHERE interaction_id = 'I1'").fetchall()[0][0]
    assert rec["sha256"].iloc[0] == sha_i1
    con.execute("ROLLBACK")


def test_items_new_changed_and_known_values(tmp_path):
    """A field the customer's records lack is new, another value is changed, a known value is no item."""
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + "I1,2025-05-01 10:00,web,marie.dupont@gmail.com,Marie,Dupont,0699999999,,,,\n"
                    "I2,2025-05-02 11:00,telephone,jean@exemple.fr,Jean,MARTIN,+33698765432,,,,\n", encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    collecter.collect(con, _params(path))
    items = con.execute("SELECT interaction_id, customer_id, field, new_value, change FROM _col_items ORDER BY 1, 3").df()
    assert items.values.tolist() == [["I1", "C1", "phone", "+33699999999", "changed"],
                                     ["I2", "C2", "email", "jean@exemple.fr", "new"]]
    con.execute("ROLLBACK")


def test_items_compare_with_every_record_of_the_customer(tmp_path):
    """A value held by any record of the customer is no item; a field held by another record makes a change."""
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + "I1,2025-05-01 10:00,web,marie.d@exemple.fr,Marie,Dupont,0612345678,,,,\n"
                    "I2,2025-05-02 11:00,web,marie.dupont@gmail.com,Marie,Dupont,0677777777,,,,\n", encoding="utf-8")
    con = _base(tmp_path)
    con.execute("""INSERT INTO source_customers (source, source_key, first_name, last_name, email, phone) VALUES
        ('magasin', 'M9', 'Marie', 'Dupont', 'marie.d@exemple.fr', NULL)""")
    con.execute("INSERT INTO customer_links VALUES ('magasin', 'M9', 'C1', 'single', NULL, NULL)")
    con.execute("BEGIN")
    collecter.collect(con, _params(path))
    items = con.execute("SELECT interaction_id, customer_id, field, new_value, change FROM _col_items ORDER BY 1, 3").df()
    assert items.values.tolist() == [["I2", "C1", "phone", "+33677777777", "changed"]]
    con.execute("ROLLBACK")


def test_unknown_contacts_chained_by_email_and_phone_are_one_prospect(tmp_path):
    """Same e-mail, then same phone and last name: the three contacts are one person, keyed by the smallest id."""
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + "K3,2025-05-03 10:00,web,luc.morel@exemple.fr,Luc,Morel,,,,,\n"
                    "K2,2025-05-02 10:00,email,luc.morel@exemple.fr,Luc,Morel,0655555555,,,,\n"
                    "K5,2025-05-05 10:00,telephone,,Luc,MOREL,06 55 55 55 55,,,,\n"
                    "K4,2025-05-04 10:00,telephone,,Lea,Petit,0655555555,,,,\n", encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    collecter.collect(con, _params(path))
    ids = con.execute("SELECT interaction_id, customer_id FROM interactions").df().set_index("interaction_id")["customer_id"]
    assert ids["K2"] == ids["K3"] == ids["K5"] != ids["K4"]  # another last name on the same phone: another person
    rec = con.execute("SELECT source_key FROM source_customers WHERE source = 'entrants' ORDER BY 1").df()
    assert rec["source_key"].tolist() == ["K2", "K4"]
    con.execute("ROLLBACK")


def test_keep_text_true_keeps_the_message(tmp_path):
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + GOOD, encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    collecter.collect(con, _params(path, keep_text=True))
    assert con.execute("SELECT text FROM interactions WHERE interaction_id = 'I1'").fetchall()[0][0] == "Très bien"
    con.execute("ROLLBACK")


def _snapshot(con) -> dict:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in db.TABLES if t != "runs"}


@pytest.mark.parametrize(("bad_line", "message", "column", "row"), [
    ("B1,2025-05-01 10:00,pigeon,a@b.fr,,,,,,,\n", "canal inconnu « pigeon »", "canal", 3),
    ("B1,2025-05-01 10:00,web,a@b.fr,,,,11,nps,,\n", "note 11.0 hors de l'échelle nps", "note", 3),
    ("B1,,web,a@b.fr,,,,,,,\n", "date manquante", "date", 3),
    ("B1,2025-05-01 10:00,web,a@b.fr,,,,4,,,\n", "note sans type", "type_note", 3),
], ids=["canal-inconnu", "nps-11", "date-manquante", "note-sans-type"])
def test_bad_rows_raise_french_error_and_change_nothing(tmp_path, bad_line, message, column, row):
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + GOOD.splitlines(keepends=True)[0] + bad_line, encoding="utf-8")
    con = _base(tmp_path)
    before = _snapshot(con)
    con.execute("BEGIN")
    with pytest.raises(InputError, match=message) as err:
        collecter.collect(con, _params(path))
    con.execute("ROLLBACK")
    assert err.value.file == str(path)
    assert err.value.column == column
    assert err.value.row == row
    assert "fichier" in str(err.value) and "ligne 3" in str(err.value)
    after = _snapshot(con)
    for t, frame in before.items():
        pd.testing.assert_frame_equal(after[t], frame, obj=t)


def test_bad_rows_rejeter_counts_them(tmp_path):
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + GOOD + "B1,2025-05-01 10:00,web,a@b.fr,,,,11,nps,,\nB2,2025-05-01 10:00,pigeon,,,,,,,,\n",
                    encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    _, rejected = collecter.collect(con, _params(path, bad_rows="rejeter"))
    assert con.execute("SELECT count(*) FROM interactions").fetchall()[0][0] == 7
    assert int(rejected["rows"].sum()) == 2
    assert set(rejected["reason"]) == {"note 11.0 hors de l'échelle nps", "canal inconnu « pigeon »"}
    con.execute("ROLLBACK")


def test_only_interaction_sources_are_accepted(tmp_path):
    from crmlab.errors import ParamsError

    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="ne lit que des sources de type interactions"):
        collecter._check_sources([{"name": "x", "kind": "consents", "path": str(path),
                                   "columns": {"customer_key": "a", "channel": "b", "opted_in": "b"}}], "collecter.sources")


def test_nps_interval_known_value():
    # 50 promoters, 20 detractors out of 100: NPS 0.30, var = (0.5 + 0.2 - 0.09) / 100
    v, lo, hi = collecter.nps_interval(50, 20, 100)
    half = 1.959964 * (0.61 / 100) ** 0.5
    assert (v, lo, hi) == pytest.approx((0.30, 0.30 - half, 0.30 + half), abs=1e-5)


def test_satisfaction_by_segment(tmp_path):
    path = tmp_path / "entrants.csv"
    path.write_text(HEADER + GOOD, encoding="utf-8")
    con = _base(tmp_path)
    con.execute("INSERT INTO segments (as_of, customer_id, rfm_segment) VALUES ('2025-05-31', 'C1', 'Champions')")
    con.execute("BEGIN")
    p = _params(path)
    collecter.collect(con, p)
    sat = collecter.satisfaction(con, p, "segment").set_index("group")
    assert sat.loc["Champions", "nps_n"] == 1 and sat.loc["Champions", "nps"] == pytest.approx(1.0)
    assert sat.loc["Prospects", "nps"] == pytest.approx(-1.0)
    assert sat.loc["Ensemble", "nps_n"] == 2 and sat.loc["Ensemble", "csat_n"] == 1
    con.execute("ROLLBACK")


# --------------------------------------------------------------------------- several scores per row (scores:)

SURVEY_HEADER = "rid,date,canal,email,nps,csat\n"
SURVEY = (
    "R1,2025-05-01,web,marie.dupont@gmail.com,9,5\n"      # known customer C1, two scores
    "R2,2025-05-02,magasin,zoe.inconnue@proton.me,3,2\n"  # unknown: prospect, two scores
    "R3,2025-05-03,web,marie.dupont@gmail.com,10,\n"      # C1 again, NPS only
    "R4,2025-05-04,web,,,4\n"                              # anonymous, CSAT only
)
SURVEY_COLUMNS = {"interaction_id": "rid", "ts": "date", "channel": "canal", "email": "email", "operation": "'Enquête'"}


def _survey_params(path: Path, sources: list | None = None, **over) -> dict:
    p = {k: v.default for k, v in collecter.PARAMS.items()}
    sources = sources or [{"name": "enquete", "kind": "interactions", "path": str(path), "columns": SURVEY_COLUMNS,
                           "scores": {"nps": "nps", "csat": "csat"}}]
    p.update(sources=collecter._check_sources(sources, "collecter.sources"), run_id="t04", as_of="2025-06-01")
    p.update(over)
    return p


def _two_sources(path: Path) -> list:
    """The old workaround: the same file declared once per score."""
    return [{"name": f"enquete_{t}", "kind": "interactions", "path": str(path),
             "columns": {**SURVEY_COLUMNS, "interaction_id": f"'{t}-' || rid", "score": t, "score_type": f"'{t}'"}}
            for t in ("nps", "csat")]


def test_scores_one_contact_per_answer_every_score_kept(tmp_path):
    path = tmp_path / "enquete.csv"
    path.write_text(SURVEY_HEADER + SURVEY, encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    p = _survey_params(path)
    collecter.collect(con, p)
    got = con.execute("SELECT interaction_id, customer_id, score, score_type FROM interactions ORDER BY 1").df()
    assert got["interaction_id"].tolist() == ["R1", "R2", "R3", "R4"]  # one contact per answer
    # the single-score columns hold the score of a contact that has exactly one
    assert got["score"].tolist()[2:] == [10.0, 4.0] and got["score_type"].tolist()[2:] == ["nps", "csat"]
    assert got[["score", "score_type"]].iloc[:2].isna().all().all()
    scores = con.execute("SELECT interaction_id, score_type, score FROM interaction_scores ORDER BY 1, 2").fetchall()
    assert scores == [("R1", "csat", 5.0), ("R1", "nps", 9.0), ("R2", "csat", 2.0), ("R2", "nps", 3.0),
                      ("R3", "nps", 10.0), ("R4", "csat", 4.0)]
    tot = collecter.collect_totals(con)
    assert (tot["collected"], tot["matched"], tot["new_prospects"], tot["customers"]) == (4, 2, 1, 2)
    m = collecter.collect_measures(con)
    assert int(m["collected"].sum()) == 4
    sat = collecter.satisfaction(con, p, "segment").set_index("group").loc["Ensemble"]
    assert (sat["nps_n"], sat["promoters"], sat["detractors"]) == (3, 2, 1)
    assert sat["nps"] == pytest.approx(1 / 3)
    assert sat["csat_n"] == 3 and sat["csat"] == pytest.approx(2 / 3)
    k = collecter.kpis(m, tot, collecter.satisfaction(con, p, "segment"), collecter.satisfaction(con, p, "channel"))
    head = k[k["dimension"] == ""].set_index("kpi")
    assert head.loc["NPS", "value"] == pytest.approx(100 / 3) and head.loc["NPS", "unit"] == collecter.NPS_UNIT
    assert head.loc["contacts collectés", "value"] == 4
    collecter.check_output(con, p)
    # loading the same file again adds neither contacts nor scores
    collecter.collect(con, p)
    assert con.execute("SELECT count(*) FROM interaction_scores").fetchall()[0][0] == 6
    con.execute("ROLLBACK")


def test_scores_count_the_survey_once_with_the_same_satisfaction_as_two_sources(tmp_path):
    path = tmp_path / "enquete.csv"
    path.write_text(SURVEY_HEADER + SURVEY, encoding="utf-8")
    results = {}
    for label, sources in (("scores", None), ("two_sources", _two_sources(path))):
        folder = tmp_path / label
        folder.mkdir()
        con = _base(folder)
        con.execute("BEGIN")
        p = _survey_params(path, sources)
        collecter.collect(con, p)
        results[label] = (collecter.collect_totals(con), collecter.satisfaction(con, p, "segment"))
        con.execute("ROLLBACK")
    assert results["two_sources"][0]["collected"] == 8   # every answer counted once per source
    assert results["scores"][0]["collected"] == 4         # once
    cols = ["group", "nps_n", "promoters", "detractors", "nps", "csat_n", "csat"]
    pd.testing.assert_frame_equal(results["scores"][1][cols], results["two_sources"][1][cols])


@pytest.mark.parametrize(("bad_line", "message", "column", "over"), [
    ("R5,2025-05-05,web,a@b.fr,11,3\n", "note 11.0 hors de l'échelle nps", "nps", {}),
    ("R5,2025-05-05,web,a@b.fr,7,0\n", "note 0.0 hors de l'échelle csat", "csat", {}),
    ("R5,2025-05-05,web,a@b.fr,7,6\n", "note 6.0 hors de l'échelle csat", "csat", {}),
    ("R5,2025-05-05,web,a@b.fr,-1,3\n", "note -1.0 hors de l'échelle nps", "nps", {}),
    ("R5,2025-05-05,web,a@b.fr,7,bof\n", "score CSAT non numérique", "csat", {"collect_max_unparsable_share": 0.5}),
    ("R5,2025-05-05,web,a@b.fr,7,bof\n", r"illisible\(s\) pour « scores\.csat »", "csat", {}),
], ids=["nps-11", "csat-0", "csat-6", "nps-negatif", "csat-illisible", "csat-illisible-trop"])
def test_scores_bad_values_name_file_column_and_row(tmp_path, bad_line, message, column, over):
    path = tmp_path / "enquete.csv"
    path.write_text(SURVEY_HEADER + SURVEY + bad_line, encoding="utf-8")
    con = _base(tmp_path)
    before = _snapshot(con)
    con.execute("BEGIN")
    with pytest.raises(InputError, match=message) as err:
        collecter.collect(con, _survey_params(path, **over))
    con.execute("ROLLBACK")
    assert err.value.file == str(path)
    assert err.value.column == column
    assert err.value.row == 6  # header = line 1, R5 = line 6
    assert "ligne 6" in str(err.value)
    after = _snapshot(con)
    for t, frame in before.items():
        pd.testing.assert_frame_equal(after[t], frame, obj=t)


def test_scores_bad_rows_rejeter_leaves_the_whole_answer_out(tmp_path):
    path = tmp_path / "enquete.csv"
    path.write_text(SURVEY_HEADER + SURVEY + "R5,2025-05-05,web,a@b.fr,11,3\nR6,2025-05-06,web,c@d.fr,7,bof\n",
                    encoding="utf-8")
    con = _base(tmp_path)
    con.execute("BEGIN")
    _, rejected = collecter.collect(con, _survey_params(path, bad_rows="rejeter", collect_max_unparsable_share=0.5))
    ids = [r[0] for r in con.execute("SELECT interaction_id FROM interactions ORDER BY 1").fetchall()]
    assert ids == ["R1", "R2", "R3", "R4"]
    assert con.execute("SELECT count(*) FROM interaction_scores WHERE interaction_id IN ('R5', 'R6')").fetchall()[0][0] == 0
    assert dict(zip(rejected["reason"], rejected["rows"], strict=True)) == {
        "note 11.0 hors de l'échelle nps": 1, "valeur ignorée : score CSAT non numérique": 1}
    con.execute("ROLLBACK")


def _source(path: Path, columns: dict, **extra) -> dict:
    return {"name": "enquete", "kind": "interactions", "path": str(path), "columns": columns, **extra}


@pytest.mark.parametrize(("columns", "extra", "message"), [
    ({**SURVEY_COLUMNS, "score": "nps"}, {"scores": {"csat": "csat"}}, "notes sous deux formes : « scores » et « score »"),
    ({**SURVEY_COLUMNS, "score_type": "'nps'"}, {"scores": {"nps": "nps"}}, "deux formes : « scores » et « score_type »"),
    (SURVEY_COLUMNS, {"scores": {"nsp": "nps"}}, "Type de note inconnu « nsp »"),
    (SURVEY_COLUMNS, {"scores": {}}, "doit être un dictionnaire non vide"),
    (SURVEY_COLUMNS, {"scores": {"nps": ""}}, "doit être un texte non vide"),
    ({**SURVEY_COLUMNS, "score_nps": "nps"}, {}, "Colonne canonique inconnue « score_nps »"),
], ids=["score-and-scores", "score_type-and-scores", "unknown-type", "empty", "empty-expression", "internal-name"])
def test_scores_declaration_is_checked(tmp_path, columns, extra, message):
    from crmlab.errors import ParamsError

    path = tmp_path / "enquete.csv"
    path.write_text(SURVEY_HEADER + SURVEY, encoding="utf-8")
    with pytest.raises(ParamsError, match=message) as err:
        collecter._check_sources([_source(path, columns, **extra)], "collecter.sources")
    if "deux formes" in message:
        assert "Gardez une seule forme" in str(err.value)
    if "nsp" in message:
        assert "nps" in err.value.hint


def test_scores_only_for_interaction_sources(tmp_path):
    from crmlab.errors import ParamsError
    from crmlab.sources import validate_sources

    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="réservé aux sources de contacts entrants"):
        validate_sources([{"name": "x", "kind": "consents", "path": str(path), "scores": {"nps": "a"},
                           "columns": {"customer_key": "a", "channel": "b", "opted_in": "b"}}], "alimenter.sources")


@pytest.mark.parametrize(("points", "text"), [(-10.3, "-10"), (33.3, "+33"), (0.4, "0"), (-0.4, "0"), (100.0, "+100"),
                                              (float("nan"), "–")],
                         ids=["negative", "positive", "small-positive", "small-negative", "max", "missing"])
def test_fr_nps_whole_signed_points(points, text):
    assert collecter.fr_nps(points) == text


def test_demo_survey_counted_once_and_satisfaction_matches_the_files(tiny_demo, tmp_path):
    """The demo survey (NPS + CSAT per answer) is declared once: one contact per answer, scores as in the file."""
    rp = tiny_demo.load(database=tmp_path / "db.duckdb")
    p = dict(rp.for_step("04"), run_id="t04")
    survey_src = [s for s in p["sources"] if s.get("scores")]
    assert [s["name"] for s in survey_src] == ["enquete_satisfaction"]  # one source, both scores
    assert set(survey_src[0]["scores"]) == {"nps", "csat"}
    survey = pd.read_csv(tiny_demo.data_dir / "interactions" / "enquete_satisfaction.csv")
    sav = pd.read_csv(tiny_demo.data_dir / "interactions" / "sav_tickets.csv")
    con = db.connect(p["database"])
    con.execute("BEGIN")
    _, rejected = collecter.collect(con, p)
    measures = collecter.collect_measures(con, rejected)
    got = measures[measures["source"] == "enquete_satisfaction"]
    assert int(got["collected"].sum()) == survey["response_id"].nunique() == len(survey)
    n_all = con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
    assert collecter.collect_totals(con)["collected"] == n_all
    assert con.execute("SELECT count(*) FROM interactions WHERE source = 'enquete_satisfaction'").fetchall()[0][0] == len(survey)
    # truth: the scores of the files, in the survey window before as_of
    as_of = pd.Timestamp(p["as_of"])
    start = as_of - pd.Timedelta(days=p["survey_recent_days"])
    s = survey[(pd.to_datetime(survey["date"]) >= start) & (pd.to_datetime(survey["date"]) < as_of)]
    t = sav[(pd.to_datetime(sav["opened_at"]) >= start) & (pd.to_datetime(sav["opened_at"]) < as_of)]
    csat = pd.concat([s["csat"], t["satisfaction"]]).dropna()
    sat = collecter.satisfaction(con, p, "segment").set_index("group").loc["Ensemble"]
    assert sat["nps_n"] == len(s)
    assert sat["nps"] == pytest.approx(((s["nps"] >= 9).sum() - (s["nps"] <= 6).sum()) / len(s))
    assert sat["csat_n"] == len(csat)
    assert sat["csat"] == pytest.approx((csat >= 4).mean())
    collecter.check_output(con, p)
    con.execute("ROLLBACK")
