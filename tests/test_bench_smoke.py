"""Smoke version of the benchmarks (tiny sizes, no timing assertions) so that they don't rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_chain  # noqa: E402
import bench_fit  # noqa: E402
import bench_growth  # noqa: E402
import bench_summary  # noqa: E402
import common  # noqa: E402
import run_all  # noqa: E402


@pytest.fixture(scope="module")
def tiny_tx(tmp_path_factory) -> Path:
    return common.synthetic_transactions(3000, seed=1, path=tmp_path_factory.mktemp("bench") / "tx.parquet")


def test_synthetic_transactions_shape(tiny_tx):
    t = pq.read_table(tiny_tx)
    assert t.column_names == ["customer_id", "ts", "amount"]
    assert 2000 < t.num_rows < 4500
    df = t.to_pandas()
    assert df["amount"].min() > 0
    assert df["ts"].is_monotonic_increasing
    assert df["ts"].min() >= pd.Timestamp("2023-01-01") and df["ts"].max() < pd.Timestamp("2026-01-01")
    # cached: a second call returns the same file untouched
    mtime = tiny_tx.stat().st_mtime_ns
    assert common.synthetic_transactions(3000, seed=1, path=tiny_tx) == tiny_tx
    assert tiny_tx.stat().st_mtime_ns == mtime


def test_three_summary_paths_agree(tiny_tx):
    crm = bench_summary.case_crmlab(str(tiny_tx))
    loaded = bench_summary.case_crmlab(str(tiny_tx), loaded=True)
    pdx = bench_summary.case_pandas(str(tiny_tx))
    lt = bench_summary.case_lifetimes(str(tiny_tx))
    keys = ["customers", "sum_frequency", "sum_recency", "sum_T"]
    assert [crm[k] for k in keys] == [pdx[k] for k in keys] == [lt[k] for k in keys] == [loaded[k] for k in keys]
    assert crm["sum_monetary"] == pytest.approx(pdx["sum_monetary"], rel=1e-9)
    assert crm["sum_monetary"] == pytest.approx(lt["sum_monetary"], rel=1e-9)
    rfm = bench_summary.case_crmlab_rfm(str(tiny_tx))
    assert rfm["customers"] == crm["customers"]
    assert rfm["sum_frequency"] == crm["sum_frequency"]  # purchase days - 1 = repeat purchases


def test_summary_driver_and_rendering(tiny_tx, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "tx_3000_s1.parquet").symlink_to(tiny_tx)
    out = bench_summary.main(["--sizes", "3000", "--seed", "1", "--runs", "1", "--cases", "crmlab", "pandas",
                              "--work", str(work), "--no-save"])
    entry = out["sizes"]["3000"]
    assert entry["consistent"] is True
    assert all(c["ok"] and c["peak_mib"] > 0 and c["cpu_s"] > 0 for c in entry["cases"].values())
    assert set(entry["ratios"]) == {"pandas"}
    lines, verdict = run_all.render_summary(out)
    text = "\n".join(lines)
    assert "Résultats identiques entre crmlab, lifetimes et pandas" in text and ": oui" in text
    assert "mem_below_pandas_3000" in verdict


def test_fit_grouped_equals_ungrouped(tmp_path, tiny_tx):
    (tmp_path / "tx_3000_s1.parquet").symlink_to(tiny_tx)
    path = bench_fit.summary_file(tmp_path, seed=1, source_tx=3000)
    g = bench_fit.case_fit(str(path), 10_000, grouped=True)
    u = bench_fit.case_fit(str(path), 10_000, grouped=False)
    assert g["customers"] == u["customers"] == len(pd.read_parquet(path))
    assert g["bgnbd_rows"] < u["bgnbd_rows"] == u["customers"]
    for k, v in u["bgnbd_params"].items():
        assert g["bgnbd_params"][k] == pytest.approx(v, rel=0.05)
    assert g["bgnbd_loglik"] == pytest.approx(u["bgnbd_loglik"], rel=1e-4)


def test_run_case_measures_and_times_out():
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import common; x = bytearray(50 * 2**20); common.emit({{'total_s': 0.5, 'ok': True}})"
    # measured from a small driver process, as make bench does: a child reports at least its
    # driver's size (Linux), so the pytest worker itself would hide a 50 MiB child
    driver = (f"import sys, json; sys.path.insert(0, {str(BENCH)!r}); import common; "
              f"print(json.dumps(common.run_case([common.PY, '-c', {code!r}])))")
    r = json.loads(subprocess.run([common.PY, "-c", driver], capture_output=True, text=True, check=True).stdout)
    assert r["returncode"] == 0 and not r["timed_out"]
    assert r["result"] == {"total_s": 0.5, "ok": True}
    assert r["maxrss_mib"] >= 50 and r["peak_mib"] >= r["maxrss_mib"]
    slow = common.repeat([common.PY, "-c", "import time; time.sleep(30)"], 3, timeout=0.5, label="slow")
    assert slow["timed_out"] and not slow["ok"] and slow["n"] == 1
    assert slow["wall_s"] is None and common.fmt_s(slow["wall_s"], 40) == "> 40 s"


def test_growth_slopes_and_chart(tmp_path):
    assert bench_growth.slopes([10, 100, 1000], [1.0, 10.0, 1000.0]) == [1.0, 2.0]
    assert bench_growth.slopes([10, 100], [None, 3.0]) == [None]
    series = {"a": {"label": "a", "points": [{"size": 10, "seconds": 1.0, "peak_mib": 100.0},
                                             {"size": 100, "seconds": 9.0, "peak_mib": 120.0}]}}
    png = bench_growth.chart(series, tmp_path / "g.png")
    assert png.stat().st_size > 1000


def test_profile_categories():
    assert bench_chain._category(["/x/runpy.py", "/v/site-packages/lifetimes/fitters/x.py", "/v/numpy/a.py"]) == "models"
    assert bench_chain._category(["/v/seaborn/a.py", "/v/matplotlib/b.py"]) == "charts"
    assert bench_chain._category(["/w/lib/crmlab/clv.py"]) == "sql"
    assert bench_chain._category(["/w/lib/crmlab/clv.py", "/v/pandas/core/frame.py"]) == "pandas"
    assert bench_chain._category(["<frozen importlib._bootstrap>", "/v/seaborn/a.py"]) == "imports"
    assert bench_chain._category(["/w/other.py"]) == "other"


def test_warm_files_reads_files_and_folders(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_bytes(b"x" * 100)
    (tmp_path / "b.parquet").write_bytes(b"y" * 10)
    assert common.warm_files([tmp_path / "d", tmp_path / "b.parquet"]) >= 0
    assert common.warm_files(None) >= 0


def test_cell_label_names_the_work_not_the_set_up():
    source = ("from crmlab import charts, db\n\ncharts.setup()\np = params.for_notebook(globals(), '06')\n"
              "con = db.open_step(p.database, '06', p.run_id, p.as_of)\n# comment\n"
              "responses = mesurer.campaign_responses(con,\n    window_days=7)\nif len(responses):\n    x = 1\n"
              "else:\n    x = 2\n")
    assert bench_chain.cell_label(source) == "responses = mesurer.campaign_responses(con, ; if len(responses):"
    assert bench_chain.cell_label("charts.setup()\n") == "charts.setup()"
    assert bench_chain.cell_label("a = 1\n" * 80, width=20) == "a = 1 ; a = 1 ; a =…"
