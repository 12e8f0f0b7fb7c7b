from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pandas.testing import assert_frame_equal

from crmlab import db, params, rfm, segmenter
from crmlab.errors import CheckError, ParamsError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_segmenter" / "segmenter.ipynb"


def block(**overrides):
    return params.validate_block(overrides, segmenter.PARAMS, "segmenter", ROOT, None)


def run_params(**overrides):
    p = params.NotebookParams({**params.validate_block({}, params.RUN_PARAMS, "run", ROOT, None), **block()})
    p.update(overrides)
    return p


# --------------------------------------------------------------------------- params


def test_defaults_are_valid():
    b = segmenter.check_block(block())
    assert b["rfm_bins"] == 5 and b["rfm_scheme"] == "rf_grid" and b["targets"] == []
    assert b["clv_model"] == "bgnbd" and b["time_unit"] == "week" and b["holdout_days"] == 180
    assert b["calibration_end"] is None and b["clusters_k"] == 0 and b["merge_same_day"] is True


def test_target_segment_checked_against_scheme():
    with pytest.raises(ParamsError, match="segment inconnu « Champion ».*Vouliez-vous dire « Champions »"):
        segmenter.check_block(block(targets=[{"name": "x", "segments": ["Champion"]}]))
    # "Perdus" exists only in rfm_11
    with pytest.raises(ParamsError, match="segment inconnu « Perdus »"):
        segmenter.check_block(block(targets=[{"name": "x", "segments": ["Perdus"]}]))
    segmenter.check_block(block(rfm_scheme="rfm_11", targets=[{"name": "x", "segments": ["Perdus"]}]))


def test_custom_scheme_checked_against_bins():
    custom = [{"segment": "Haut", "r": [3, 4], "f": [1, 4]}, {"segment": "Bas", "r": [1, 2], "f": [1, 4]}]
    segmenter.check_block(block(rfm_scheme="custom", rfm_bins=4, rfm_custom_scheme=custom,
                                targets=[{"name": "x", "segments": ["Haut"]}]))
    with pytest.raises(ParamsError, match="9 combinaison\\(s\\) sans segment : R1 F5, R2 F5"):
        segmenter.check_block(block(rfm_scheme="custom", rfm_bins=5, rfm_custom_scheme=custom))
    with pytest.raises(ParamsError, match="rfm_scheme » vaut « rf_grid »"):
        segmenter.check_block(block(rfm_custom_scheme=custom))


def test_params_file_is_checked_on_load(tmp_path):
    data = {"run": {"database": str(tmp_path / "x.duckdb")},
            "segmenter": {"targets": [{"name": "x", "segments": ["A risque"], "offer": "bon"}]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ParamsError, match="Vouliez-vous dire « À risque »"):
        params.load(path)


def test_notebook_parameter_docs_parse():
    # papermill reads the parameters cell: no quote nor "=" in the comments of this block
    for key, spec in segmenter.PARAMS.items():
        assert "'" not in spec.doc and "=" not in spec.doc, key


# --------------------------------------------------------------------------- tables


def test_transition_matrix_tiny():
    before = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "segment": ["Champions", "Champions", "À risque", "À risque"]})
    after = pd.DataFrame({"customer_id": ["a", "b", "c", "d", "e"],
                          "segment": ["Champions", "À risque", "À risque", "En hibernation", "Nouveaux clients"]})
    counts, pct = segmenter.transition_matrix(before, after, rfm.segment_order("rf_grid"))
    assert counts.index.tolist() == ["Champions", "À risque", segmenter.NEW_LABEL]
    assert counts.columns.tolist() == ["Champions", "Nouveaux clients", "À risque", "En hibernation"]
    assert counts.to_numpy().tolist() == [[1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0]]
    assert pct.to_numpy().tolist() == [[0.5, 0, 0.5, 0], [0, 0, 0.5, 0.5], [0, 1, 0, 0]]


def tiny_customers():
    return pd.DataFrame({
        "customer_id": ["a", "b", "c", "d"],
        "rfm_segment": pd.Categorical(["Champions", "Champions", "À risque", "En hibernation"],
                                      categories=rfm.segment_order("rf_grid"), ordered=True),
        "revenue": [600.0, 200.0, 150.0, 50.0],
        "total_spend": [900.0, 300.0, 400.0, 50.0],
        "n_orders": [6, 2, 4, 1],
        "frequency": [6.0, 2.0, 4.0, 1.0],
        "recency_days": [3.0, 10.0, 300.0, 500.0],
        "p_alive": [0.9, 0.7, 0.3, np.nan],
        "clv": [100.0, 50.0, 20.0, np.nan],
    })


def test_ranking_exact():
    c = tiny_customers()
    t = segmenter.ranking(c)
    assert_frame_equal(c, tiny_customers())
    assert t["segment"].tolist() == ["Champions", "À risque", "En hibernation"]
    assert t["customers"].tolist() == [2, 1, 1]
    assert t["revenue_share"].tolist() == [0.8, 0.15, 0.05]
    assert t["customer_share"].tolist() == [0.5, 0.25, 0.25]
    assert t["basket"].tolist() == [150.0, 100.0, 50.0]
    assert t["repeat_rate"].tolist() == [1.0, 1.0, 0.0]
    assert t["p_alive"].iloc[0] == pytest.approx(0.8) and t["clv"].iloc[0] == 75.0
    assert np.isnan(t["clv"].iloc[2])


def test_concentration_exact():
    curve, top20 = segmenter.concentration(pd.DataFrame({"revenue": [10.0, 0.0, 30.0, 60.0, 0.0]}))
    assert curve["customer_share"].tolist() == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert curve["value_share"].tolist() == pytest.approx([0, 0.6, 0.9, 1.0, 1.0, 1.0])
    assert top20 == pytest.approx(0.6)


def test_findings_are_computed():
    c = tiny_customers()
    t = segmenter.ranking(c)
    curve, top20 = segmenter.concentration(c)
    text = segmenter.findings(c, t, top20, as_of="2024-06-30")
    assert text[0] == "Au 30/06/2024, **4 clients** ont déjà acheté ; 4 (100\u00a0%) ont acheté au cours des 12 derniers mois."
    assert text[1].startswith("Le segment « **Champions** » (50\u00a0% des clients) fait **80\u00a0% du chiffre d'affaires**")
    assert "Les 20 % de meilleurs clients font **48\u00a0%**" in text[2]  # 0.8 x 60 %: interpolated at 20 % of 4 customers
    assert "1 clients « À risque » ou « À ne pas perdre »" in text[3] and "300 jours" in text[3]
    assert "57\u00a0€ par client" in text[4]  # (100 + 50 + 20) / 3


# --------------------------------------------------------------------------- database


def make_db(path, n_customers=120, seed=1):
    """Synthetic transactions: a few hundred orders over two years."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_customers):
        first = pd.Timestamp("2022-01-01") + pd.Timedelta(days=int(rng.integers(0, 500)))
        rate = rng.gamma(2.0, 0.02)  # purchases per day
        life = rng.exponential(400)
        mean_spend = rng.gamma(4.0, 12.0)  # customers differ in spend (as Gamma-Gamma assumes)
        t = first
        k = 0
        while t < pd.Timestamp("2023-12-31") and (t - first).days <= life:
            rows.append((f"C{i:04d}", f"O{i:04d}-{k}", t, float(rng.gamma(6.0, mean_spend / 6.0)), ("web", "magasin")[i % 2]))
            k += 1
            t = t + pd.Timedelta(days=int(rng.exponential(1 / rate)) + 1)
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "ts", "amount", "channel"])
    frame["transaction_id"] = frame["order_id"]
    frame["category"] = np.where(frame["amount"] > 45, "maison", "mode")
    frame["payment_method"] = "carte"
    con = db.connect(path)
    con.register("f", frame)
    con.execute("""INSERT INTO transactions (transaction_id, order_id, customer_id, ts, amount, quantity, channel, category, payment_method)
                   SELECT transaction_id, order_id, customer_id, ts, amount, 1, channel, category, payment_method FROM f""")
    con.unregister("f")
    con.close()
    return frame


def test_snapshot_checks_and_kpis(tmp_path):
    path = tmp_path / "db.duckdb"
    make_db(path)
    p = run_params(as_of="2024-01-01", run_id="r1", database=str(path),
                   targets=[{"name": "Réveil", "segments": ["À risque", "En hibernation"], "offer": "bon"}])
    con = db.open_step(path, "02", "r1", p.as_of)
    c = segmenter.attach_models(segmenter.customers_rfm(con, p))
    t = segmenter.ranking(c)
    mig = segmenter.migration(con, p, c)
    assert mig["counts"].to_numpy().sum() == len(c)
    # the notebook passes the earlier segments computed at the start of the step: same result
    early = segmenter.migration(con, p, c, segmenter.segments_before(con, p))
    pd.testing.assert_frame_equal(early["counts"], mig["counts"])
    pd.testing.assert_frame_equal(early["flows"], mig["flows"])
    camp, cont = segmenter.plan_targets(con, p, c)
    for _ in range(2):  # replacing the snapshot of the same as_of
        assert segmenter.write_snapshot(con, c, as_of=p.as_of, run_id="r1") == len(c)
    curve, top20 = segmenter.concentration(c)
    k = segmenter.kpi_frame(c, t, top20, mig, camp, fits=pd.DataFrame({"model": ["bgnbd"], "param": ["r"], "value": [0.5]}),
                            extra=[pd.DataFrame({"kpi": ["clv_total"], "value": [1.0], "unit": ["EUR"], "dimension": [""]})])
    segmenter.write_kpis(con, k, run_id="r1", as_of=p.as_of)
    done = segmenter.run_checks(con, p, t, cont, camp)
    db.commit_step(con, "02", "r1")
    assert len(done) == 3
    assert con.execute("SELECT COUNT(*) FROM segments").fetchall()[0][0] == len(c)
    head = con.execute("SELECT kpi FROM kpis WHERE dimension = '' ORDER BY kpi").df()["kpi"].tolist()
    assert set(segmenter.HEADLINE_KPIS) - {"CLV moyenne"} <= set(head) and "clv_total" in head
    assert con.execute("SELECT value FROM kpis WHERE kpi = 'ajustement du modèle' AND dimension = 'bgnbd.r'").fetchall()[0][0] == 0.5
    # a broken snapshot is caught
    con.execute("DELETE FROM segments WHERE customer_id = (SELECT MIN(customer_id) FROM segments)")
    with pytest.raises(CheckError, match="exactement un segment"):
        segmenter.run_checks(con, p, t, cont, camp)
    con.close()


@pytest.mark.slow
def test_notebook_end_to_end(tmp_path, kernel_name):
    import papermill as pm

    if not NOTEBOOK.exists():
        pytest.skip("carnet 02 non construit (python tools/build_notebooks.py 02)")
    path = tmp_path / "db.duckdb"
    make_db(path, n_customers=150)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK), str(out), kernel_name=kernel_name, cwd=str(NOTEBOOK.parent), progress_bar=False,
        parameters={"database": str(path), "as_of": "2024-01-01", "name": "essai", "run_id": "nb-1",
                    "truth_dir": None, "clusters_k": 3, "holdout_days": 120,
                    "targets": [{"name": "Réveil", "segments": ["À risque", "En hibernation"], "offer": "bon"},
                                {"name": "Merci", "segments": ["Champions", "Fidèles"], "offer": "cadeau", "control_share": 0.2}]},
    )
    con = db.connect(path, read_only=True)
    n_buyers = con.execute("SELECT COUNT(DISTINCT customer_id) FROM transactions WHERE ts < DATE '2024-01-01'").fetchall()[0][0]
    assert con.execute("SELECT COUNT(*) FROM segments WHERE as_of = DATE '2024-01-01'").fetchall()[0][0] == n_buyers
    assert con.execute("SELECT COUNT(*) FROM campaigns WHERE status = 'planned'").fetchall()[0][0] == 2
    assert con.execute("SELECT status FROM runs WHERE run_id = 'nb-1' AND step = '02'").fetchall()[0][0] == "ok"
    heads = con.execute("SELECT kpi FROM kpis WHERE run_id = 'nb-1' AND dimension = ''").df()["kpi"].tolist()
    assert "clients actifs" in heads and "part du CA des 20 % meilleurs clients" in heads
    con.close()
    import nbformat

    nb = nbformat.read(str(out), as_version=4)
    top = next(c for c in nb.cells if c.cell_type == "code" and "constats = display(" in c.source)
    html = top.outputs[0]["data"]["text/html"]
    assert "Les constats s'affichent ici" not in html  # replaced by the computed findings
    assert "ont déjà acheté" in html and "cible(s) préparée(s)" in html


def test_write_snapshot_round_trip(tmp_path):
    """Segments, clusters (some missing) and models are stored as they are in the frame."""
    path = tmp_path / "db.duckdb"
    make_db(path, n_customers=40)
    p = run_params(as_of="2024-01-01", run_id="r1", database=str(path))
    con = db.open_step(path, "02", "r1", p.as_of)
    c = segmenter.customers_rfm(con, p)
    ids = c["customer_id"].tolist()
    clusters = pd.DataFrame({"customer_id": ids[:30], "cluster": ["Gros paniers", "Surtout web"] * 15})
    clv_df = pd.DataFrame({"customer_id": ids, "p_alive": np.linspace(0, 1, len(ids)), "clv": np.arange(len(ids), dtype=float),
                           "expected_purchases": 1.0})
    full = segmenter.attach_models(c, clv_df, clusters)
    assert segmenter.write_snapshot(con, full, as_of=p.as_of, run_id="r1") == len(c)
    got = con.execute("""SELECT customer_id, rfm_segment, cluster, p_alive, clv, run_id, as_of FROM segments
                         ORDER BY customer_id""").df()
    assert got["customer_id"].tolist() == sorted(ids)
    exp = full.set_index("customer_id").loc[got["customer_id"]]
    assert got["rfm_segment"].tolist() == exp["rfm_segment"].astype(str).tolist()
    assert [None if pd.isna(v) else v for v in got["cluster"]] == [None if pd.isna(v) else v for v in exp["cluster"]]
    assert got["cluster"].isna().sum() == len(c) - 30
    assert got["p_alive"].tolist() == exp["p_alive"].tolist() and got["clv"].tolist() == exp["clv"].tolist()
    assert set(got["run_id"]) == {"r1"} and set(got["as_of"].astype(str)) == {"2024-01-01"}
    none = segmenter.attach_models(c)  # without models: NULL cluster, p_alive and clv
    segmenter.write_snapshot(con, none, as_of=p.as_of, run_id="r1")
    row = con.execute("SELECT count(*), count(cluster), count(p_alive), count(clv) FROM segments").fetchall()[0]
    assert row == (len(c), 0, 0, 0)
    con.close()
