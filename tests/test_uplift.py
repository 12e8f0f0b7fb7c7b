"""Tests of crmlab.uplift: intervals with known answers and the per-cell table."""

import math

import numpy as np
import pandas as pd
import pytest

from crmlab import uplift


def test_wilson_interval_known_values():
    # Newcombe (1998) example: 81/263 -> Wilson 95 % interval [0.2553, 0.3662]
    lo, hi = uplift.wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4)
    assert hi == pytest.approx(0.3662, abs=1e-4)


def test_newcombe_difference_known_values():
    # Newcombe (1998), Table II example (e): 56/70 vs 48/80 -> d = 0.2, method 10 [0.0524, 0.3339]
    d, lo, hi = uplift.diff_interval(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=1e-4)
    assert hi == pytest.approx(0.3339, abs=1e-4)


def test_wald_difference_matches_formula():
    d, lo, hi = uplift.diff_interval(30, 100, 20, 100, method="wald")
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 100 + 0.2 * 0.8 / 100)
    assert (d, lo, hi) == pytest.approx((0.1, 0.1 - half, 0.1 + half), abs=1e-6)


def test_empty_group_gives_nan():
    assert all(math.isnan(v) for v in uplift.diff_interval(1, 10, 0, 0))


def _campaign(n_t, x_t, n_c, x_c, segment="A", channel="email", basket=50.0):
    grp = ["treatment"] * n_t + ["control"] * n_c
    resp = [True] * x_t + [False] * (n_t - x_t) + [True] * x_c + [False] * (n_c - x_c)
    return pd.DataFrame({"segment": segment, "channel": channel, "grp": grp, "responded": resp,
                         "revenue": [basket if r else 0.0 for r in resp]})


def test_uplift_table_hand_built_campaign():
    # 200 treated with 60 buyers, 100 control with 20 buyers, each buyer spends 50
    contacts = _campaign(200, 60, 100, 20)
    t = uplift.uplift_table(contacts, ["segment", "channel"], min_cell_size=100)
    assert len(t) == 1
    r = t.iloc[0]
    assert (r.n_treated, r.n_control, r.responders_treated, r.responders_control) == (200, 100, 60, 20)
    assert r.rate_treated == pytest.approx(0.30)
    assert r.rate_control == pytest.approx(0.20)
    assert r.uplift == pytest.approx(0.10)
    d, lo, hi = uplift.diff_interval(60, 200, 20, 100)
    assert (r.uplift_low, r.uplift_high) == pytest.approx((lo, hi))
    assert lo < 0.10 < hi
    assert bool(r.significant) is (lo > 0)
    # incremental revenue per contact: 0.30 * 50 - 0.20 * 50 = 5
    assert r.incremental_revenue == pytest.approx(5.0)
    var_t = np.var([50.0] * 60 + [0.0] * 140, ddof=1)
    var_c = np.var([50.0] * 20 + [0.0] * 80, ddof=1)
    half = 1.959964 * math.sqrt(var_t / 200 + var_c / 100)
    assert r.incremental_revenue_low == pytest.approx(5.0 - half, abs=1e-4)
    assert r.incremental_revenue_high == pytest.approx(5.0 + half, abs=1e-4)
    assert not r.thin


def test_thin_cells_flagged_and_best_channel():
    contacts = pd.concat([
        _campaign(400, 120, 400, 40, channel="email"),   # +20 pt, large
        _campaign(400, 60, 400, 40, channel="sms"),      # +5 pt, large
        _campaign(50, 40, 10, 0, channel="courrier"),    # +80 pt but thin
    ], ignore_index=True)
    t = uplift.uplift_table(contacts, ["segment", "channel"], min_cell_size=100)
    assert t.set_index("channel")["thin"].to_dict() == {"courrier": True, "email": False, "sms": False}
    best = uplift.best_by(t, "segment", "channel")
    assert best.iloc[0]["channel"] == "email"  # the thin courrier cell is not over-read
    assert best.iloc[0]["runner_up"] == "sms"
    assert bool(best.iloc[0]["confirmed"])


def test_uplift_table_ignores_other_groups_and_does_not_mutate():
    contacts = _campaign(10, 5, 10, 2)
    contacts.loc[0, "grp"] = "autre"
    before = contacts.copy()
    t = uplift.uplift_table(contacts, [], min_cell_size=1)
    pd.testing.assert_frame_equal(contacts, before)
    assert t.iloc[0]["n_treated"] == 9
