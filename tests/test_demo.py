"""Tests of the demo world generator (crmlab.demo)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1

from crmlab import demo

SCALE = 0.08  # about 480 buying persons: fast, yet every file has rows


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_a")
    summary = demo.generate(out, scale=SCALE, seed=7)
    return out, summary


def _store(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=";", encoding="cp1252", dtype=str, keep_default_na=False)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(world, tmp_path):
    out, summary = world
    again = demo.generate(tmp_path / "b", scale=SCALE, seed=7)
    first, second = _hashes(out), _hashes(tmp_path / "b")
    assert first == second
    assert summary == again
    # every expected file is there, nothing stray (no temporary files left behind)
    expected = {
        "web_accounts.csv", "store_cards.csv", "web_orders.csv", "store_receipts.csv", "consents.csv",
        "campaigns.csv", "campaign_contacts.csv",
        "interactions/appels.csv", "interactions/formulaires_web.csv", "interactions/emails.csv",
        "interactions/enquete_satisfaction.csv", "interactions/visites_magasin.csv",
        "interactions/formulaires_papier.xlsx", "interactions/sav_tickets.csv",
        "batch2/web_accounts.csv", "batch2/store_cards.csv", "batch2/consents.csv",
        "batch2/web_orders.csv", "batch2/store_receipts.csv",
        "truth/duplicates.csv", "truth/model.json", "truth/campaigns.csv", "truth/bad_rows.csv",
        "truth/interactions.csv", "truth/persons.csv", "truth/batch2_changes.csv",
        "truth/batch2_duplicates.csv", "truth/README.txt",
    }
    assert set(first) == expected


def test_other_seed_gives_other_world(world, tmp_path):
    out, _ = world
    demo.generate(tmp_path / "c", scale=SCALE, seed=8)
    a, c = _hashes(out), _hashes(tmp_path / "c")
    for name in ("web_accounts.csv", "store_cards.csv", "web_orders.csv", "store_receipts.csv",
                 "truth/duplicates.csv", "interactions/formulaires_papier.xlsx"):
        assert a[name] != c[name], name
    # the generating model does not depend on the seed, only the draws do
    ma = json.loads((out / "truth/model.json").read_text(encoding="utf-8"))
    mc = json.loads((tmp_path / "c/truth/model.json").read_text(encoding="utf-8"))
    assert ma["bgnbd"] == mc["bgnbd"] and ma["seed"] == 7 and mc["seed"] == 8


def test_scale_grows_the_world_linearly(world, tmp_path):
    _, small = world
    big = demo.generate(tmp_path / "d", scale=2 * SCALE, seed=7)
    ratio = big["transactions"] / small["transactions"]
    assert 1.6 < ratio < 2.4
    assert big["persons"] == pytest.approx(2 * small["persons"], rel=0.02)


def test_bad_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        demo.generate(tmp_path, scale=0)


# --------------------------------------------------------------------------- truth vs sources


def test_duplicates_cover_every_customer_record(world):
    out, summary = world
    dup = _csv(out / "truth/duplicates.csv")
    assert list(dup.columns) == ["source", "source_key", "person_id"]
    web = _csv(out / "web_accounts.csv")
    cards = _store(out / "store_cards.csv")
    assert set(dup.loc[dup.source == "web", "source_key"]) == set(web["account_id"])
    assert set(dup.loc[dup.source == "magasin", "source_key"]) == set(cards["N° carte"])
    assert len(dup) == len(web) + len(cards)
    assert not dup.duplicated(["source", "source_key"]).any()
    # 30-40 % of persons with records in both systems, a few with 2 records in one system
    per_person = dup.groupby("person_id")["source"].agg(lambda s: frozenset(s))
    both = per_person.map(lambda s: s == frozenset({"web", "magasin"})).mean()
    assert 0.25 < both < 0.45
    twice = dup.groupby(["person_id", "source"]).size()
    assert (twice == 2).sum() >= 1
    persons = _csv(out / "truth/persons.csv")
    assert set(dup["person_id"]) <= set(persons["person_id"])
    assert summary["persons"] == len(persons)


def test_customer_files_data_minimisation_columns(world):
    out, _ = world
    web = _csv(out / "web_accounts.csv")
    for col in ("account_id", "email", "first_name", "last_name", "phone", "street", "zip", "city",
                "birth_date", "created_at", "updated_at", "newsletter_optin", "sms_optin",
                "password_hash", "last_ip", "favorite_color"):
        assert col in web.columns
    assert web["created_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    assert (web["updated_at"] >= web["created_at"]).all()
    cards = _store(out / "store_cards.csv")
    assert list(cards.columns[:11]) == ["N° carte", "Civilité", "Nom", "Prénom", "Téléphone", "E-mail", "Adresse",
                                        "Code postal", "Ville", "Date de naissance", "Date d'adhésion"]
    assert cards["Date d'adhésion"].str.fullmatch(r"\d\d/\d\d/\d{4}").all()
    assert cards["Solde avoir"].str.fullmatch(r"\d+,\d\d").all()


def test_transactions_reference_existing_keys(world):
    out, _ = world
    web = _csv(out / "web_accounts.csv")
    cards = _store(out / "store_cards.csv")
    orders = _csv(out / "web_orders.csv")
    receipts = _store(out / "store_receipts.csv")
    assert set(orders["account_id"]) <= set(web["account_id"])
    carded = receipts[receipts["N° carte"] != ""]
    assert set(carded["N° carte"]) <= set(cards["N° carte"])
    anonymous = (receipts["N° carte"] == "").mean()
    assert 0.01 < anonymous < 0.08
    assert not orders["order_id"].duplicated().any()
    assert not receipts["N° ticket"].duplicated().any()


def test_bad_rows_are_really_bad_and_the_others_parse(world):
    out, _ = world
    bad = _csv(out / "truth/bad_rows.csv")
    assert set(bad.columns) == {"file", "line", "row", "reason"}
    assert (bad["line"].astype(int) == bad["row"].astype(int) + 1).all()
    for name, sep, enc, date_col, fmt, amount_col in (
        ("web_orders.csv", ",", "utf-8", "order_date", "%Y-%m-%dT%H:%M:%S", "total"),
        ("store_receipts.csv", ";", "cp1252", "Date", "%d/%m/%Y %H:%M", "Montant TTC"),
    ):
        df = pd.read_csv(out / name, sep=sep, encoding=enc, dtype=str, keep_default_na=False)
        ts = pd.to_datetime(df[date_col], format=fmt, errors="coerce")
        amount = pd.to_numeric(df[amount_col].str.replace(",", ".", regex=False), errors="coerce")
        broken = set(np.flatnonzero(ts.isna().to_numpy() | amount.isna().to_numpy()) + 1)  # data row numbers
        listed = bad.loc[bad["file"] == name, "row"].astype(int)
        assert broken == set(listed)
        assert len(listed) >= 3
        good = ts.notna()
        assert ts[good].min() >= pd.Timestamp("2023-01-01")
        assert ts[good].max() < pd.Timestamp("2026-01-01")


def test_store_receipts_are_a_french_excel_export(world):
    out, _ = world
    raw = (out / "store_receipts.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("cp1252")
    lines = text.split("\r\n")
    assert lines[-1] == ""  # CRLF everywhere, final newline
    assert "\n" not in text.replace("\r\n", "")
    assert lines[0] == "N° ticket;Date;Magasin;N° carte;Rayon;Nb articles;Montant TTC;Mode de paiement"
    assert {line.count(";") for line in lines[:-1]} == {7}
    body = [line.split(";") for line in lines[1:-1]]
    amounts = [r[6] for r in body]
    assert sum(bool(re.fullmatch(r"\d+,\d\d", a)) for a in amounts) >= len(amounts) - 5
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d", r[1]) for r in body[:50])
    assert {"CB", "Espèces"} <= {r[7] for r in body}
    assert "Beauté" in text or "Espèces" in text  # accented values written in cp1252


def test_campaign_contacts_and_control_groups(world):
    out, _ = world
    camp = _csv(out / "campaigns.csv")
    contacts = _csv(out / "campaign_contacts.csv")
    truth = _csv(out / "truth/campaigns.csv")
    assert 8 <= len(camp) <= 12
    assert set(camp["channel"]) == {"email", "sms", "courrier", "telephone"}
    assert set(camp["segment"]) <= set(demo.SEGMENTS)
    assert set(contacts["campaign_id"]) <= set(camp["campaign_id"])
    assert set(contacts["groupe"]) == {"cible", "temoin"}
    keys = {("web", k) for k in _csv(out / "web_accounts.csv")["account_id"]}
    keys |= {("magasin", k) for k in _store(out / "store_cards.csv")["N° carte"]}
    assert set(zip(contacts["source"], contacts["customer_key"], strict=True)) <= keys
    assert not contacts.duplicated(["campaign_id", "source", "customer_key"]).any()
    counts = contacts.groupby(["campaign_id", "groupe"]).size().unstack(fill_value=0)
    t = truth.set_index("campaign_id")
    assert (counts["cible"] == t["n_treated"].astype(int).reindex(counts.index)).all()
    assert (counts["temoin"] == t["n_control"].astype(int).reindex(counts.index)).all()
    share = counts["temoin"].sum() / counts.to_numpy().sum()
    assert 0.10 <= share <= 0.20
    # contacts happen within each campaign's dates
    merged = contacts.merge(camp, on="campaign_id")
    assert (merged["contacted_at"].str[:10] >= merged["start_date"]).all()
    assert (merged["contacted_at"].str[:10] <= merged["end_date"]).all()
    # truth: uplift_rate = p_extra * (1 - base_rate)
    p = t["p_extra"].astype(float)
    assert np.allclose(t["uplift_rate"].astype(float), p * (1 - t["base_rate"].astype(float)), atol=1e-6)


def test_consents_reference_existing_keys(world):
    out, _ = world
    cons = _csv(out / "consents.csv")
    assert list(cons.columns) == ["source", "customer_key", "channel", "opted_in", "updated_at"]
    assert set(cons["channel"]) == {"email", "sms", "courrier", "telephone"}
    assert set(cons["opted_in"]) == {"oui", "non"}
    keys = set(_csv(out / "truth/duplicates.csv")[["source", "source_key"]].itertuples(index=False, name=None))
    assert set(zip(cons["source"], cons["customer_key"], strict=True)) <= keys
    # the web file's opt-in columns agree with the consent file
    web = _csv(out / "web_accounts.csv").set_index("account_id")
    email = cons[(cons.source == "web") & (cons.channel == "email")].set_index("customer_key")["opted_in"]
    assert ((email == "oui") == (web.loc[email.index, "newsletter_optin"] == "true")).all()


def test_interactions_truth_matches_files(world):
    out, _ = world
    truth = _csv(out / "truth/interactions.csv")
    persons = set(_csv(out / "truth/persons.csv")["person_id"])
    keys = {
        "appels.csv": ("N° appel", ";", "utf-8-sig"), "formulaires_web.csv": ("id", ",", "utf-8"),
        "emails.csv": ("message_id", ",", "utf-8"), "enquete_satisfaction.csv": ("response_id", ",", "utf-8"),
        "visites_magasin.csv": ("N° visite", ";", "cp1252"), "sav_tickets.csv": ("ticket_id", ",", "utf-8"),
    }
    for name, (key, sep, enc) in keys.items():
        df = pd.read_csv(out / "interactions" / name, sep=sep, encoding=enc, dtype=str, keep_default_na=False)
        assert list(df[key]) == list(truth.loc[truth.file == name, "row_key"]), name
    paper = pd.read_excel(out / "interactions/formulaires_papier.xlsx", sheet_name="Saisie", dtype=str)
    assert list(paper["N° bulletin"]) == list(truth.loc[truth.file == "formulaires_papier.xlsx", "row_key"])
    known = truth["person_id"] != ""
    assert set(truth.loc[known, "person_id"]) <= persons
    assert ((truth["person_id"] == "") == (truth["prospect_id"] != "")).all()
    assert 0.05 < (~known).mean() < 0.15
    survey = _csv(out / "interactions/enquete_satisfaction.csv")
    assert survey["nps"].astype(int).between(0, 10).all()
    assert survey["csat"].astype(int).between(1, 5).all()
    sav = _csv(out / "interactions/sav_tickets.csv")
    assert set(sav["status"]) <= {"open", "closed"}
    assert ((sav["status"] == "open") == (sav["closed_at"] == "")).all()


def test_batch2_after_the_end_and_consistent(world):
    out, _ = world
    orders = _csv(out / "batch2/web_orders.csv")
    receipts = _store(out / "batch2/store_receipts.csv")
    assert (orders["order_date"] >= "2026-01-01").all() and (orders["order_date"] < "2026-02-01").all()
    ts = pd.to_datetime(receipts["Date"], format="%d/%m/%Y %H:%M")
    assert ts.min() >= pd.Timestamp("2026-01-01") and ts.max() < pd.Timestamp("2026-02-01")
    # ids continue the first batch's, no collision
    first = _csv(out / "web_orders.csv")
    assert orders["order_id"].astype(int).min() > first["order_id"].astype(int).max()
    assert not set(receipts["N° ticket"]) & set(_store(out / "store_receipts.csv")["N° ticket"])
    changes = _csv(out / "truth/batch2_changes.csv")
    new = _csv(out / "truth/batch2_duplicates.csv")
    web2 = _csv(out / "batch2/web_accounts.csv")
    cards2 = _store(out / "batch2/store_cards.csv")
    keys2 = {("web", k) for k in web2["account_id"]} | {("magasin", k) for k in cards2["N° carte"]}
    assert set(zip(changes["source"], changes["source_key"], strict=True)) <= keys2
    assert set(zip(new["source"], new["source_key"], strict=True)) <= keys2
    dup = _csv(out / "truth/duplicates.csv")
    assert not set(zip(new["source"], new["source_key"], strict=True)) & set(zip(dup["source"], dup["source_key"], strict=True))
    assert set(changes["field"]) <= {"email", "phone", "address"}
    assert (changes["old_value"] != changes["new_value"]).all()
    assert (web2["updated_at"] >= "2026-01-01").all()
    cons2 = _csv(out / "batch2/consents.csv")
    assert "non" in set(cons2["opted_in"])
    known = {("web", k) for k in _csv(out / "web_accounts.csv")["account_id"]} | keys2
    known |= {("magasin", k) for k in _store(out / "store_cards.csv")["N° carte"]}
    assert set(zip(orders.assign(s="web")["s"], orders["account_id"], strict=True)) <= known


def test_lookalikes_exist(world):
    """Distinct persons sharing an address and a landline, or a full name."""
    out, _ = world
    persons = _csv(out / "truth/persons.csv")
    assert (persons["household_of"] != "").sum() >= 5


# --------------------------------------------------------------------------- model


def test_model_json(world):
    out, _ = world
    model = json.loads((out / "truth/model.json").read_text(encoding="utf-8"))
    assert model["time_unit"] == "week"
    assert set(model["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(model["gamma_gamma"]) == {"p", "q", "v"}
    assert model["observation_start"] == "2023-01-01" and model["observation_end"] == "2025-12-31"


def test_bgnbd_draw_matches_the_model_expectation():
    """Mean repeat purchases equals E[X(T)] of BG/NBD (Fader et al. 2005, eq. 9).

    With 100,000 persons the standard error of the mean is about 0.04 purchase; we
    allow 5 standard errors (a false alarm once in millions of seeds) so the test is
    exact in spirit and never flaky.
    """
    rng = np.random.default_rng(123)
    n = 100_000
    d = demo._bgnbd_draw(rng, n, demo.SPAN_WEEKS, demo.ACQ_SKEW)
    m = demo.BGNBD
    r, alpha, a, b = m["r"], m["alpha"], m["a"], m["b"]
    T = d["T"]
    expected = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + T)) ** r * hyp2f1(r, b, a + b - 1, T / (alpha + T)))
    se = d["x"].std() / np.sqrt(n)
    assert abs(d["x"].mean() - expected.mean()) < 5 * se
    # P(no repeat purchase) = E[(alpha / (alpha + T)) ** r]
    p0 = ((alpha / (alpha + T)) ** r).mean()
    assert abs((d["x"] == 0).mean() - p0) < 5 * np.sqrt(p0 * (1 - p0) / n)
    # repeat purchase times lie in (t0, t0 + T], sorted per person
    t = d["t"]
    assert (t > d["t0"][d["owner"]]).all() and (t <= (d["t0"] + T)[d["owner"]] + 1e-9).all()
    same = d["owner"][1:] == d["owner"][:-1]
    assert (np.diff(t)[same] >= 0).all()


def test_amounts_follow_gamma_gamma(world):
    """Mean spend per transaction is p * v / (q - 1) = 60 EUR (within 10 % at this size)."""
    out, _ = world
    orders = _csv(out / "web_orders.csv")
    amount = pd.to_numeric(orders["total"], errors="coerce").dropna()
    gg = demo.GAMMA_GAMMA
    assert amount.mean() == pytest.approx(gg["p"] * gg["v"] / (gg["q"] - 1), rel=0.10)


def test_first_order_stats_are_uniform_order_statistics():
    rng = np.random.default_rng(5)
    n = np.full(40_000, 4)
    x = np.full(40_000, 2)
    owner, t = demo._first_order_stats(rng, x, n, np.ones(40_000))
    first, second = t[0::2], t[1::2]
    # smallest and second smallest of 4 uniforms: means 1/5 and 2/5
    assert first.mean() == pytest.approx(0.2, abs=0.005)
    assert second.mean() == pytest.approx(0.4, abs=0.005)
    assert (owner[0::2] == np.arange(40_000)).all()


# --------------------------------------------------------------------------- segments


def test_rf_scores_average_rank_rule():
    # 10 customers, values 1..10: two per score
    assert demo.rf_scores(np.arange(1, 11)).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # recency: smallest is best
    assert demo.rf_scores(np.arange(1, 11), higher_is_better=False).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    # ties share the average rank: four 1s (rank 2.5 -> ceil(5*2.5/10)=2)
    assert demo.rf_scores(np.array([1, 1, 1, 1, 2, 3, 4, 5, 6, 7])).tolist() == [2, 2, 2, 2, 3, 3, 4, 4, 5, 5]
    assert demo.rf_scores(np.array([])).tolist() == []


@pytest.mark.parametrize(
    ("r", "f", "label"),
    [(5, 5, "Champions"), (5, 4, "Champions"), (4, 5, "Fidèles"), (3, 4, "Fidèles"),
     (5, 2, "Fidèles potentiels"), (4, 3, "Fidèles potentiels"), (5, 1, "Nouveaux clients"),
     (4, 1, "Prometteurs"), (3, 3, "À surveiller"), (3, 1, "Sur le point de s'endormir"),
     (3, 2, "Sur le point de s'endormir"), (2, 3, "À risque"), (1, 4, "À risque"),
     (1, 5, "À ne pas perdre"), (2, 2, "En hibernation"), (1, 1, "En hibernation")],
    ids=lambda v: str(v),
)
def test_segment_grid(r, f, label):
    assert demo._segment_label(r, f) == label


def test_rf_segment_labels_every_customer():
    rec = np.array([0, 1, 2, 3, 4, 50, 60, 70, 80, 90])
    freq = np.array([9, 1, 5, 2, 7, 9, 1, 3, 8, 1])
    r, f, seg = demo.rf_segment(rec, freq)
    assert r.tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert f.tolist() == [5, 1, 3, 2, 4, 5, 1, 3, 4, 1]
    assert seg.tolist() == ["Champions", "Nouveaux clients", "Fidèles potentiels", "Fidèles potentiels", "Fidèles",
                            "Fidèles", "En hibernation", "À risque", "À risque", "En hibernation"]


def test_strip_accents():
    assert demo.strip_accents("Hélène Lefèvre-Noël") == "Helene Lefevre-Noel"
