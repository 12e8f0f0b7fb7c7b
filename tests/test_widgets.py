import numpy as np
import pandas as pd
import pytest

from crmlab import rfm, widgets


def frame():
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame({
        "customer_id": [f"c{i:03d}" for i in range(n)],
        "recency_days": rng.integers(1, 400, n).astype(float),
        "frequency": rng.integers(1, 8, n).astype(float),
        "monetary": rng.integers(10, 200, n).astype(float),
        "revenue": rng.integers(0, 500, n).astype(float),
        "clv": rng.gamma(2.0, 20.0, n),
        "p_alive": rng.uniform(0, 1, n),
        "cluster": rng.choice(["Web", "Magasin"], n),
    })


def test_rfm_summary_matches_scores_and_sums():
    f = frame()
    out = widgets.rfm_summary(f, 5)
    assert out["segment"].tolist() == rfm.segment_order("rf_grid")
    assert out["customers"].sum() == len(f)
    assert out["customer_share"].sum() == pytest.approx(1.0)
    assert out["revenue_share"].sum() == pytest.approx(1.0)
    expected = rfm.assign_segments(rfm.rescore(f, 5)).groupby("rfm_segment")["revenue"].sum()
    got = out.set_index("segment")["revenue"]
    for seg, value in expected.items():
        assert got[seg] == pytest.approx(value)
    champions = rfm.assign_segments(rfm.rescore(f, 5)).query("rfm_segment == 'Champions'")
    assert out.set_index("segment").loc["Champions", "clv"] == pytest.approx(champions["clv"].mean())


def test_rfm_summary_other_bins_and_scheme():
    f = frame()
    out = widgets.rfm_summary(f, 3, "rfm_11")
    assert "Perdus" in out["segment"].tolist()
    assert out["customers"].sum() == len(f)
    # 3 bins map to the 5-bin grid as 1, 3, 5: R4 never exists, so no "Prometteurs"
    assert out.set_index("segment").loc["Prometteurs", "customers"] == 0


def test_changed_segments():
    f = frame()
    assert widgets.changed_segments(f, "rf_grid", 5, 5) == 0
    a = rfm.assign_segments(rfm.rescore(f, 5))["rfm_segment"]
    b = rfm.assign_segments(rfm.rescore(f, 4), bins=4)["rfm_segment"]
    assert widgets.changed_segments(f, "rf_grid", 5, 4) == int((a != b).sum()) > 0


def segmented():
    return pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(12)],
        "rfm_segment": ["Champions"] * 5 + ["À risque"] * 7,
        "revenue": [100.0] * 5 + [10.0] * 7,
        "clv": [50.0, 40.0, 30.0, 20.0, 10.0, 5.0, 5.0, 5.0, 5.0, 5.0, np.nan, 1.0],
        "p_alive": [0.9] * 5 + [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    })


@pytest.mark.parametrize("kwargs, n, revenue, n_control", [
    ({"segments": ["Champions"]}, 5, 500.0, 1),   # floor(0.1 * 5 + 0.5) = 1
    ({"segments": ["Champions", "À risque"], "min_clv": 20}, 4, 400.0, 0),
    ({"p_alive_range": (0.3, 0.6)}, 4, 40.0, 0),
    ({"p_alive_range": (0.0, 1.0)}, 12, 570.0, 2),  # full range = no filter; 1 + 1 controls
    ({"segments": ["À risque"], "control_share": 0.5}, 7, 70.0, 4),
], ids=["segment", "clv", "p-alive", "no-filter", "share"])
def test_target_summary(kwargs, n, revenue, n_control):
    res = widgets.target_summary(segmented(), **kwargs)
    assert res["customers"] == n
    assert res["revenue"] == revenue
    assert res["revenue_share"] == pytest.approx(revenue / 570.0)
    assert res["n_control"] == n_control
    assert res["n_treatment"] == n - n_control


def test_target_summary_clv_and_sentence():
    res = widgets.target_summary(segmented(), segments=["Champions"])
    assert res["clv_mean"] == 30.0 and res["clv_total"] == 150.0
    assert widgets.target_sentence(res) == (
        "La cible compte **5 clients** (41,7\u00a0% de la base) qui ont fait 500\u00a0€ de CA (87,7\u00a0%) ; "
        "1 seraient gardés en groupe témoin, CLV moyenne 30\u00a0€.")
    empty = widgets.target_summary(segmented(), segments=["Fidèles"])
    assert widgets.target_sentence(empty) == "Aucun client ne correspond à ces critères."


def test_widgets_build():
    pytest.importorskip("ipywidgets")
    f = frame()
    seg = rfm.assign_segments(rfm.rescore(f, 5))
    box = widgets.rfm_explorer(f)
    assert len(box.children) == 2
    builder = widgets.target_builder(seg)
    # segments, clusters, CLV, p_alive, control share, output
    assert len(builder.children) == 6
    builder.children[0].value = ("Champions",)  # observers recompute without error


def test_show_rfm_explorer_static_part(monkeypatch):
    """The report shows the run's table and the number of customers another bin count would move."""
    pytest.importorskip("ipywidgets")
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    f = frame()
    widgets.show_rfm_explorer(f, {"rfm_bins": 5, "rfm_scheme": "rf_grid", "rfm_custom_scheme": None})
    pd.testing.assert_frame_equal(shown[1].data, widgets.show_table(widgets.rfm_summary(f, 5)).data)
    moved = widgets.changed_segments(f, "rf_grid", 5, 4)
    assert f"environ {moved} clients" in shown[2].markup
    pd.testing.assert_frame_equal(shown[3].data, shown[1].data)  # the widget opens on the same table
    assert type(shown[-1]).__name__ == "VBox"
