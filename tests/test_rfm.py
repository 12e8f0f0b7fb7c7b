import itertools

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from crmlab import db, rfm
from crmlab.errors import ParamsError

AS_OF = "2024-01-11"

# customer, order, day, amount
ROWS = [
    ("A", "a1", "2024-01-10", 100.0), ("A", "a2", "2024-01-05", 50.0),
    ("B", "b1", "2024-01-10", 30.0),
    ("C", "c1", "2024-01-01", 20.0), ("C", "c2", "2024-01-01", 40.0), ("C", "c3", "2023-12-01", 60.0),
    ("D", "d1", "2023-12-01", 75.0), ("D", "d2", "2023-11-01", 75.0), ("D", "d3", "2023-11-15", -25.0),  # a return
    ("E", "e1", "2023-06-01", 10.0),
    ("F", "f1", "2024-01-11", 500.0),  # on as_of: excluded
    ("F", "f2", "2023-06-01", 30.0),
    (None, "x1", "2024-01-02", 999.0),  # no customer: ignored
]


@pytest.fixture
def con():
    c = db.connect(":memory:")
    frame = pd.DataFrame(ROWS, columns=["customer_id", "order_id", "day", "amount"])
    frame["transaction_id"] = [f"t{i}" for i in range(len(frame))]
    c.register("rows_in", frame)
    c.execute("""INSERT INTO transactions (transaction_id, order_id, customer_id, ts, amount)
                 SELECT transaction_id, order_id, customer_id, CAST(day AS TIMESTAMP), amount FROM rows_in""")
    c.unregister("rows_in")
    yield c
    c.close()


def test_scores_with_ties_orders_mean(con):
    out = rfm.compute_rfm(con, AS_OF, bins=5, revenue_months=1).set_index("customer_id")
    assert list(out.index) == ["A", "B", "C", "D", "E", "F"]
    assert out["recency_days"].tolist() == [1, 1, 10, 41, 224, 224]
    assert out["frequency"].tolist() == [2, 1, 3, 2, 1, 1]
    assert out["monetary"].tolist() == [75.0, 30.0, 40.0, 62.5, 10.0, 30.0]
    # recency ranked by decreasing days: E, F rank 1; D 3; C 4; A, B 5 -> 1 + floor(5 (rank - 1) / 6)
    assert out["r_score"].tolist() == [4, 4, 3, 2, 1, 1]
    # frequency: B, E, F rank 1 -> 1; A, D rank 4 -> 3; C rank 6 -> 5
    assert out["f_score"].tolist() == [3, 1, 5, 3, 1, 1]
    # monetary: E 1 -> 1; B, F rank 2 -> 1; C 4 -> 3; D 5 -> 4; A 6 -> 5
    assert out["m_score"].tolist() == [5, 1, 3, 4, 1, 1]
    # revenue of the last month (from 2023-12-11)
    assert out["revenue"].tolist() == [150.0, 30.0, 60.0, 0.0, 0.0, 0.0]
    assert out["total_spend"].tolist() == [150.0, 30.0, 120.0, 125.0, 10.0, 30.0]


def test_days_and_total_basis(con):
    out = rfm.compute_rfm(con, AS_OF, bins=5, frequency_basis="days", monetary_basis="total").set_index("customer_id")
    assert out["frequency"].tolist() == [2, 1, 2, 2, 1, 1]  # C: two orders on the same day count once
    assert out["f_score"].tolist() == [3, 1, 3, 3, 1, 1]
    assert out["monetary"].tolist() == [150.0, 30.0, 120.0, 125.0, 10.0, 30.0]
    assert out["m_score"].tolist() == [5, 1, 3, 4, 1, 1]


def test_equal_spends_tie_whatever_the_summation_order():
    # 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit; DuckDB's threads add rows in
    # any order, so without rounding equal spends could rank apart and change from run to run
    c = db.connect(":memory:")
    rows = [("P", 0.1), ("P", 0.2), ("P", 0.3), ("Q", 0.3), ("Q", 0.2), ("Q", 0.1), ("R", 0.5), ("R", 0.2), ("R", 0.1)]
    frame = pd.DataFrame(rows, columns=["customer_id", "amount"]).assign(
        transaction_id=[f"t{i}" for i in range(len(rows))], day="2024-01-02")
    c.register("rows_in", frame)
    c.execute("""INSERT INTO transactions (transaction_id, customer_id, ts, amount)
                 SELECT transaction_id, customer_id, CAST(day AS TIMESTAMP), amount FROM rows_in""")
    out = rfm.compute_rfm(c, AS_OF, bins=3, monetary_basis="total").set_index("customer_id")
    assert out.loc["P", "monetary"] == out.loc["Q", "monetary"] == 0.6
    assert out.loc["P", "m_score"] == out.loc["Q", "m_score"] == 1
    assert out.loc["R", "m_score"] == 3


def test_sql_and_pandas_scores_agree(con):
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame({
        "customer_id": [f"c{i % 180:03d}" for i in range(n)],
        "order_id": [f"o{i}" for i in range(n)],
        "transaction_id": [f"t{i}" for i in range(n)],
        "ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 360, n), unit="D"),
        "amount": rng.choice([10.0, 20.0, 35.5, 50.0], n),
    })
    c = db.connect(":memory:")
    c.register("f", frame)
    c.execute("INSERT INTO transactions (transaction_id, order_id, customer_id, ts, amount) SELECT transaction_id, order_id, customer_id, ts, amount FROM f")
    for bins in (3, 5, 7, 10):
        sql = rfm.compute_rfm(c, "2024-01-01", bins=bins)
        pdv = rfm.rescore(sql, bins)
        assert_frame_equal(sql[["r_score", "f_score", "m_score"]].astype("int64"),
                           pdv[["r_score", "f_score", "m_score"]].astype("int64"))
        # equal values always share a score
        for value, score in (("recency_days", "r_score"), ("frequency", "f_score"), ("monetary", "m_score")):
            assert (sql.groupby(value)[score].nunique() == 1).all()


def test_quantile_scores_ties_and_direction():
    s = pd.Series([5.0, 5.0, 1.0, 9.0])
    assert rfm.quantile_scores(s, 4).tolist() == [2, 2, 1, 4]
    assert rfm.quantile_scores(s, 4, higher_is_better=False).tolist() == [2, 2, 4, 1]


@pytest.mark.parametrize("r, f, expected", [
    (5, 5, "Champions"), (5, 4, "Champions"), (4, 5, "Fidèles"), (3, 4, "Fidèles"),
    (5, 2, "Fidèles potentiels"), (4, 3, "Fidèles potentiels"), (5, 1, "Nouveaux clients"),
    (4, 1, "Prometteurs"), (3, 3, "À surveiller"), (3, 1, "Sur le point de s'endormir"),
    (3, 2, "Sur le point de s'endormir"), (2, 3, "À risque"), (1, 4, "À risque"),
    (1, 5, "À ne pas perdre"), (2, 5, "À ne pas perdre"), (1, 1, "En hibernation"), (2, 2, "En hibernation"),
], ids=lambda v: str(v))
def test_rf_grid_segment(r, f, expected):
    assert rfm.rf_grid_segment(r, f) == expected


def test_rf_grid_other_bins_scaled():
    assert [rfm.to_five(s, 3) for s in (1, 2, 3)] == [1, 3, 5]
    assert [rfm.to_five(s, 10) for s in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert rfm.rf_grid_segment(3, 3, bins=3) == "Champions"
    assert rfm.rf_grid_segment(10, 1, bins=10) == "Nouveaux clients"
    with pytest.raises(ValueError):
        rfm.rf_grid_segment(6, 1)


@pytest.mark.parametrize("scheme", ["rf_grid", "rfm_11"])
@pytest.mark.parametrize("bins", [3, 4, 5, 6, 10])
def test_builtin_schemes_are_partitions(scheme, bins):
    table = rfm.scheme_table(scheme, bins)
    assert len(table) == bins ** 3
    assert table["rfm_segment"].notna().all()


def test_rf_grid_table_matches_pure_function():
    table = rfm.scheme_table("rf_grid", 5)
    for row in table.itertuples():
        assert row.rfm_segment == rfm.rf_grid_segment(row.r_score, row.f_score)


def test_naive_11_segment_table_is_rejected():
    assert rfm.first_match_unreachable(rfm.NAIVE_RFM_11) == ["Recent Customers", "Promising", "Can't Lose Them", "Lost"]
    with pytest.raises(ParamsError, match=r"sans segment : R1 F1 M3.*plusieurs segments : R1 F1 M1 \(Hibernating / Lost\)"
                                          r".*n'atteindrait jamais : Recent Customers, Promising, Can't Lose Them, Lost"):
        rfm.validate_scheme(rfm.NAIVE_RFM_11, 5)


def test_rfm_11_uses_monetary():
    table = rfm.scheme_table("rfm_11", 5).set_index(["r_score", "f_score", "m_score"])["rfm_segment"]
    assert table[(1, 1, 1)] == "Perdus"
    assert table[(1, 1, 5)] == "En hibernation"
    assert table[(5, 5, 1)] == "Champions"
    assert set(table) == set(rfm.segment_order("rfm_11"))


def test_custom_scheme_gaps_and_overlaps_listed():
    rules = [
        {"segment": "Haut", "r": [2, 3], "f": [1, 3]},
        {"segment": "Bas", "r": [1, 2], "f": [1, 2]},
    ]
    with pytest.raises(ParamsError, match=r"1 combinaison\(s\) sans segment : R1 F3 ; 2 combinaison\(s\) dans plusieurs "
                                          r"segments : R2 F1 \(Haut / Bas\), R2 F2 \(Haut / Bas\)"):
        rfm.validate_scheme(rules, 3)
    ok = [{"segment": "Haut", "r": [2, 3], "f": [1, 3]}, {"segment": "Bas", "r": 1, "f": [1, 3]}]
    assert rfm.validate_scheme(ok, 3)[1] == {"segment": "Bas", "r": [1, 1], "f": [1, 3]}


@pytest.mark.parametrize("rules, message", [
    ([{"segment": "X", "r": [1, 4], "f": [1, 3]}], r"« r » = \[1, 4\] n'est pas un intervalle"),
    ([{"segment": "X", "f": [1, 3]}], "intervalle « r » manquant"),
    ([{"segment": "X", "r": [1, 3], "f": [1, 3], "z": 1}], "clé\\(s\\) inconnue\\(s\\)"),
    ([{"r": [1, 3], "f": [1, 3]}], "il faut un nom de segment"),
    ([], "liste non vide"),
], ids=["out-of-range", "missing-r", "unknown-key", "no-name", "empty"])
def test_custom_scheme_shape_errors(rules, message):
    with pytest.raises(ParamsError, match=message):
        rfm.validate_scheme(rules, 3)


def test_assign_segments_does_not_mutate(con):
    scores = rfm.compute_rfm(con, AS_OF)
    before = scores.copy()
    out = rfm.assign_segments(scores)
    assert_frame_equal(scores, before)
    assert out.set_index("customer_id")["rfm_segment"].to_dict() == {
        "A": "Fidèles potentiels", "B": "Prometteurs", "C": "Fidèles", "D": "À risque",
        "E": "En hibernation", "F": "En hibernation"}


def test_every_combination_enumerated():
    combos = set(itertools.product(range(1, 5), repeat=3))
    table = rfm.scheme_table("rf_grid", 4)
    assert set(map(tuple, table[["r_score", "f_score", "m_score"]].to_numpy().tolist())) == combos


def _per_date_segments(c, dates, bins, basis):
    """Reference: compute_rfm + assign_segments date by date."""
    parts = []
    for d in dates:
        s = rfm.compute_rfm(c, d, bins=bins, frequency_basis=basis)
        if len(s):
            s = rfm.assign_segments(s, "rf_grid", bins)
            parts.append(s.assign(as_of=d)[["as_of", "customer_id", "recency_days", "frequency", "r_score", "f_score",
                                            "rfm_segment"]])
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("n_dates", [1, 6], ids=["one-date", "six-dates"])
@pytest.mark.parametrize("basis", ["orders", "days"])
@pytest.mark.parametrize("bins", [3, 5, 10])
def test_rf_grid_at_equals_per_date_rfm(basis, bins, n_dates):
    """One pass over all dates gives, date by date, the scores and segments of compute_rfm."""
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame({
        "customer_id": [f"c{i:03d}" for i in rng.integers(0, 400, n)],
        # shared orders (several lines), empty or missing order ids, refunds, null amounts, same-day purchases
        "order_id": rng.choice(["", None, *[f"o{i}" for i in range(1500)]], n),
        "transaction_id": [f"t{i}" for i in range(n)],
        "ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 720 * 24, n), unit="h"),
        "amount": rng.choice([10.0, 20.0, -15.0, 0.0, np.nan, 35.5], n),
    })
    c = db.connect(":memory:")
    c.register("f", frame)
    c.execute("INSERT INTO transactions (transaction_id, order_id, customer_id, ts, amount) "
              "SELECT transaction_id, order_id, customer_id, ts, amount FROM f")
    dates = ["2023-01-02", "2023-03-15", "2023-09-01", "2024-02-29", "2024-12-31", "2025-06-01"]
    dates = dates if n_dates > 1 else ["2024-02-29"]  # one date: orders counted without the orders pass
    got = rfm.rf_grid_at(c, [*dates[::-1], dates[-1], None], bins=bins, frequency_basis=basis)  # duplicates, nulls ignored
    cols = ["as_of", "customer_id", "recency_days", "frequency", "r_score", "f_score", "rfm_segment"]
    want = _per_date_segments(c, dates, bins, basis).sort_values(["as_of", "customer_id"]).reset_index(drop=True)
    assert got.columns.tolist() == cols
    assert got.equals(got.sort_values(["as_of", "customer_id"]).reset_index(drop=True))
    assert len(want) > (1000 if n_dates > 1 else 300) and want["rfm_segment"].nunique() >= 5
    assert_frame_equal(got.astype({"r_score": "int64", "f_score": "int64", "rfm_segment": object}),
                       want.astype({"r_score": "int64", "f_score": "int64", "rfm_segment": object}),
                       check_dtype=False)
    # only some (date, customer) pairs: same values, scores still ranked over every customer
    keys = want.sample(200, random_state=1)[["as_of", "customer_id"]]
    keys = pd.concat([keys, pd.DataFrame({"as_of": [dates[0]], "customer_id": ["nobody"]})])
    part = rfm.rf_grid_at(c, keys["as_of"].unique(), bins=bins, frequency_basis=basis, keys=keys)
    merged = keys.merge(part, on=["as_of", "customer_id"], how="left").merge(
        want, on=["as_of", "customer_id"], how="left", suffixes=("", "_want"))
    assert len(part) == 200 and merged["rfm_segment"].isna().sum() == 1
    done = merged.dropna(subset=["rfm_segment"])
    assert (done["rfm_segment"] == done["rfm_segment_want"]).all()
    assert (done["r_score"] == done["r_score_want"]).all() and (done["f_score"] == done["f_score_want"]).all()


def test_rf_grid_at_rejects_unknown_basis_and_handles_nothing(con):
    with pytest.raises(ParamsError, match="orders, days"):
        rfm.rf_grid_at(con, ["2024-01-01"], frequency_basis="weeks")
    assert rfm.rf_grid_at(con, []).empty
    assert rfm.rf_grid_at(con, ["2024-01-01"], keys=pd.DataFrame(columns=["as_of", "customer_id"])).empty
    # a date before any purchase gives no row
    assert rfm.rf_grid_at(con, ["2020-01-01"]).empty
