"""Tests of crmlab.behaviour: SQL features, seeded k-means, French portraits."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("agg")

from crmlab import behaviour, db  # noqa: E402
from crmlab.errors import InputError  # noqa: E402


def load(frame: pd.DataFrame):
    con = db.connect(":memory:")
    con.register("_tx", frame)
    cols = ", ".join(frame.columns)
    con.execute(f"INSERT INTO transactions ({cols}) SELECT {cols} FROM _tx")
    con.unregister("_tx")
    return con


def test_features_exact_small():
    tx = pd.DataFrame({
        "transaction_id": ["1", "2", "3", "4", "5"],
        "order_id": ["o1", "o1", "o2", "o3", None],
        "customer_id": ["a", "a", "a", "b", "b"],
        "ts": pd.to_datetime(["2020-01-01", "2020-01-01", "2020-01-21", "2020-01-11", "2020-01-30"]),
        "amount": [10.0, 20.0, 30.0, 5.0, 7.0],
        "channel": ["web", "web", "magasin", "magasin", "magasin"],
        "payment_method": ["carte", "carte", "carte", "carte", "carte"],  # one value: no share feature
    })
    got = behaviour.features(load(tx), "2020-02-01")
    expected = pd.DataFrame({
        "customer_id": ["a", "b"],
        "orders": [2.0, 2.0],
        "basket": [30.0, 6.0],
        "tenure_days": [31.0, 21.0],
        "recency_days": [11.0, 2.0],
        "channel:magasin": [1 / 3, 1.0],  # most common value first
        "channel:web": [2 / 3, 0.0],
    })
    pd.testing.assert_frame_equal(got, expected, check_like=False)


def synthetic(seed: int = 0, n: int = 300) -> pd.DataFrame:
    """Three well separated behaviours: store big baskets, web frequent small baskets, lapsed."""
    rng = np.random.default_rng(seed)
    rows = []
    kinds = np.repeat([0, 1, 2], n // 3)
    start = pd.Timestamp("2022-01-01")
    for i, kind in enumerate(kinds):  # test data generator
        n_orders = {0: 2, 1: 12, 2: 1}[kind]
        for j in range(n_orders):
            day = {0: rng.integers(0, 700), 1: rng.integers(0, 700), 2: rng.integers(0, 100)}[kind]
            rows.append({
                "transaction_id": f"{i}-{j}", "customer_id": f"c{i:04d}", "ts": start + pd.Timedelta(days=int(day)),
                "amount": float({0: rng.normal(200, 20), 1: rng.normal(25, 3), 2: rng.normal(60, 6)}[kind]),
                "channel": {0: "magasin", 1: "web", 2: "téléphone"}[kind],
            })
    tx = pd.DataFrame(rows)
    return tx, pd.Series(kinds, index=[f"c{i:04d}" for i in range(len(kinds))])


def test_recovers_separated_clusters_and_describes_them():
    tx, truth = synthetic()
    feat = behaviour.features(load(tx), "2024-01-01")
    res = behaviour.cluster(feat, k=0, k_max=6, seed=7)
    assert res.k == 3
    lab = pd.Series(res.labels, index=feat["customer_id"])
    table = pd.crosstab(truth.reindex(lab.index), lab)
    # each true group maps to exactly one cluster
    assert ((table > 0).sum(axis=1) == 1).all() and ((table > 0).sum(axis=0) == 1).all()
    portraits = behaviour.describe(feat, res, currency="EUR")
    assert portraits["cluster"].is_unique
    by_truth = {t: portraits.set_index("cluster_id").loc[table.loc[t].idxmax()] for t in range(3)}
    # store big baskets: basket and store channel are the distinguishing features
    assert "basket" in by_truth[0]["traits"][:2]
    assert "plus gros que la moyenne" in by_truth[0]["description"]
    assert "orders" in by_truth[1]["traits"]
    assert "plus souvent que la moyenne" in by_truth[1]["description"]
    assert "recency_days" in by_truth[2]["traits"] or "tenure_days" in by_truth[2]["traits"]
    assert "jours" in by_truth[2]["description"] or "mois" in by_truth[2]["description"]
    clusters_df = behaviour.assign(feat, res, portraits)
    assert list(clusters_df.columns[:3]) == ["customer_id", "cluster", "cluster_id"]
    assert clusters_df["cluster"].notna().all()
    k = behaviour.kpis(portraits, res)
    assert k.loc[k["kpi"] == "cluster_part", "value"].sum() == pytest.approx(1.0)
    behaviour.chart_profiles(portraits, res)
    fig = behaviour.chart_silhouette(res)
    assert fig.axes[0].get_title().startswith("3 groupes")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_seeded_is_identical():
    tx, _ = synthetic(seed=3, n=150)
    feat = behaviour.features(load(tx), "2024-01-01")
    a = behaviour.cluster(feat, k=0, k_max=5, seed=11, sample=100)
    b = behaviour.cluster(feat, k=0, k_max=5, seed=11, sample=100)
    assert a.k == b.k
    np.testing.assert_array_equal(a.labels, b.labels)
    pd.testing.assert_frame_equal(a.silhouette, b.silhouette)
    pd.testing.assert_frame_equal(behaviour.describe(feat, a).drop(columns="traits"), behaviour.describe(feat, b).drop(columns="traits"))


def test_feature_groups_and_unknown_group():
    tx, _ = synthetic(n=30)
    feat = behaviour.features(load(tx), "2024-01-01")
    assert behaviour.select(feat, ["basket", "channel"]) == ["basket", "channel:web", "channel:magasin", "channel:téléphone"]
    with pytest.raises(InputError, match="Variable de comportement inconnue"):
        behaviour.select(feat, ["panier"])
    res = behaviour.cluster(feat, k=2, seed=1, groups=["basket"])
    assert list(res.z.columns) == ["basket"] and res.k == 2 and len(res.silhouette) == 0


@pytest.mark.parametrize("n, ks", [(40, (2, 3)), (300, (2, 4, 7))], ids=["tiny", "several-k"])
def test_silhouettes_equal_sklearn_exactly(n, ks):
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 4))
    label_sets = [rng.integers(0, k, size=n) for k in ks]
    label_sets.append(np.where(X[:, 0] > 0, 7, 3))  # labels need not be 0..k-1
    got = behaviour.silhouettes(X, label_sets)
    assert got == [float(silhouette_score(X, labels)) for labels in label_sets]


def test_silhouettes_reject_a_single_label():
    with pytest.raises(ValueError, match="Number of labels is 1"):
        behaviour.silhouettes(np.zeros((5, 2)), [np.zeros(5, dtype=int)])


def test_features_shares_count_only_lines_with_a_value():
    tx = pd.DataFrame({
        "transaction_id": ["1", "2", "3", "4", "5", "6"],
        "customer_id": ["a", "a", "a", "b", "c", "c"],
        "ts": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04", "2020-01-05", "2020-01-06"]),
        "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "category": ["x", None, "y", None, "x", "x"],  # b has no category: shares 0, not NaN
    })
    got = behaviour.features(load(tx), "2020-02-01")
    assert list(got.columns[-2:]) == ["category:x", "category:y"]
    assert got["category:x"].tolist() == [0.5, 0.0, 1.0]
    assert got["category:y"].tolist() == [0.5, 0.0, 0.0]
