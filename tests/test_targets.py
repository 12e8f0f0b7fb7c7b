import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from crmlab import db, rfm, targets
from crmlab.errors import InputError, ParamsError

LABELS = rfm.segment_order("rf_grid")


def customers():
    return pd.DataFrame({
        "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
        "rfm_segment": ["Champions", "Champions", "À risque", "À risque", "En hibernation", "Fidèles"],
        "cluster": ["Web", "Magasin", "Web", None, "Web", "Magasin"],
        "clv": [300.0, 120.0, 80.0, np.nan, 5.0, 200.0],
        "p_alive": [0.95, 0.9, 0.4, 0.2, 0.05, 0.7],
        "revenue": [500.0, 300.0, 100.0, 50.0, 0.0, 250.0],
    })


def test_check_targets_defaults():
    out = targets.check_targets([{"name": " Réveil ", "segments": "À risque", "offer": "bon"}], segments=LABELS)
    assert out == [{"name": "Réveil", "segments": ["À risque"], "clusters": [], "min_clv": None, "min_p_alive": None,
                    "max_p_alive": None, "offer": "bon", "channel": "", "control_share": 0.10, "cost_per_contact": None}]


@pytest.mark.parametrize("value, message", [
    ([{"name": "x", "segments": ["A risque"]}], r"segment inconnu « A risque ».*Vouliez-vous dire « À risque »"),
    ([{"name": "x", "segment": ["À risque"]}], r"clé inconnue « segment ».*Vouliez-vous dire « segments »"),
    ([{"segments": ["À risque"]}], "il faut un nom"),
    ([{"name": "x"}, {"name": "x"}], "déjà utilisé"),
    ([{"name": "x", "control_share": 0.95}], "control_share.*entre 0 et 0,9"),
    ([{"name": "x", "min_p_alive": 1.5}], "probabilité entre 0 et 1"),
    ([{"name": "x", "min_clv": "beaucoup"}], "doit être un nombre"),
    ({"name": "x"}, "doit être une liste"),
], ids=["unknown-segment", "unknown-key", "no-name", "duplicate", "share", "p-alive", "clv-type", "not-a-list"])
def test_check_targets_errors(value, message):
    with pytest.raises(ParamsError, match=message):
        targets.check_targets(value, segments=LABELS)


@pytest.mark.parametrize("target, expected", [
    ({"segments": ["Champions"]}, ["c1", "c2"]),
    ({"segments": ["Champions", "À risque"], "min_clv": 100}, ["c1", "c2"]),
    ({"clusters": ["Web"]}, ["c1", "c3", "c5"]),
    ({"min_p_alive": 0.3, "max_p_alive": 0.9}, ["c2", "c3", "c6"]),
    ({"min_clv": 80}, ["c1", "c2", "c3", "c6"]),  # missing CLV (c4) never passes a threshold
    ({}, ["c1", "c2", "c3", "c4", "c5", "c6"]),
], ids=["segments", "segments-and-clv", "cluster", "p-alive-range", "clv-nan", "all"])
def test_select_rules(target, expected):
    t = targets.check_targets([{"name": "t", **target}], segments=LABELS)[0]
    frame = customers()
    mask = targets.select(frame, t)
    assert frame.loc[mask, "customer_id"].tolist() == expected
    assert_frame_equal(frame, customers())


def test_select_unknown_cluster_and_missing_model():
    t = targets.check_targets([{"name": "t", "clusters": ["Webb"]}])[0]
    with pytest.raises(ParamsError, match="groupe de comportement inconnu « Webb ».*« Web »"):
        targets.select(customers(), t)
    t = targets.check_targets([{"name": "t", "min_clv": 10}])[0]
    with pytest.raises(InputError, match="filtre sur « clv », qui n'a pas été calculé"):
        targets.select(customers().drop(columns="clv"), t)


def big_frame():
    sizes = {"Champions": 200, "À risque": 57, "En hibernation": 1000, "Fidèles": 3}
    segs = [s for s, n in sizes.items() for _ in range(n)]
    return pd.DataFrame({"customer_id": [f"k{i:05d}" for i in range(len(segs))], "rfm_segment": segs}), sizes


def test_control_group_stratified_and_seeded():
    frame, sizes = big_frame()
    a = targets.assign_control(frame, 0.10, np.random.default_rng(1))
    got = a[a["grp"] == "control"].groupby("rfm_segment").size().to_dict()
    assert got == {"Champions": 20, "À risque": 6, "En hibernation": 100}  # floor(0.1 n + 0.5); Fidèles 3 -> 0
    b = targets.assign_control(frame.sample(frac=1, random_state=5), 0.10, np.random.default_rng(1))
    assert_frame_equal(a, b)  # same seed, same draw, whatever the row order
    c = targets.assign_control(frame, 0.10, np.random.default_rng(2))
    assert not a["grp"].equals(c["grp"])
    actual, share, tol = targets.control_tolerance(a, 0.10)
    assert abs(actual - share) <= tol


def test_target_seed_depends_on_name():
    x = targets.target_seed(42, "A").random(3)
    assert np.array_equal(x, targets.target_seed(42, "A").random(3))
    assert not np.array_equal(x, targets.target_seed(42, "B").random(3))


def test_plan_and_store_idempotent():
    con = db.connect(":memory:")
    frame, _ = big_frame()
    frame = frame.assign(revenue=1.0)
    tl = targets.check_targets([
        {"name": "Réveil des À risque", "segments": ["À risque", "En hibernation"], "offer": "bon", "control_share": 0.2},
        {"name": "Champions", "segments": ["Champions"], "offer": "merci"},
    ], segments=LABELS)
    camp, cont = targets.plan(frame, tl, seed=7, as_of="2024-06-30")
    assert camp["campaign_id"].tolist() == ["P20240630-reveil-des-a-risque", "P20240630-champions"]
    assert camp[["n_selected", "n_treatment", "n_control"]].to_numpy().tolist() == [[1057, 846, 211], [200, 180, 20]]  # 11 + 200 controls
    for _ in range(2):  # re-running the same run replaces, never duplicates
        targets.store(con, camp, cont, run_id="r1", as_of="2024-06-30")
    con.execute("INSERT INTO campaigns (campaign_id, name, status) VALUES ('old', 'passée', 'done')")
    assert con.execute("SELECT COUNT(*) FROM campaigns WHERE status = 'planned'").fetchall()[0][0] == 2
    assert con.execute("SELECT COUNT(*) FROM campaign_contacts").fetchall()[0][0] == 1257
    grp = con.execute("SELECT grp, COUNT(*) FROM campaign_contacts WHERE campaign_id = 'P20240630-champions' GROUP BY grp ORDER BY grp").fetchall()
    assert grp == [("control", 20), ("treatment", 180)]
    assert con.execute("SELECT target FROM campaigns WHERE name = 'Champions'").fetchall()[0][0] == "segments Champions"


def test_slug_and_describe():
    assert targets.slug("Réactiver les « À risque » !") == "reactiver-les-a-risque"
    t = targets.check_targets([{"name": "x", "segments": ["Champions"], "min_clv": 50, "max_p_alive": 0.5}])[0]
    assert targets.describe(t) == "segments Champions et CLV ≥ 50 et probabilité d'activité ≤ 0.5"
