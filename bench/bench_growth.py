"""Benchmark 4: growth of time and memory with the data size (log scale).

Two series, each size in its own subprocess:

* ``summary+fit``: synthetic transactions (10^5, 10^6, 10^7 by default) ->
  :func:`crmlab.clv.summary` (DuckDB over the Parquet file, weeks) ->
  :func:`crmlab.clv.fit_purchases` (BG/NBD, grouped) + :func:`crmlab.clv.fit_spend`;
* ``identity``: ``bench/bench_identity.py`` (identity linking of N synthetic source
  records; 10^4, 10^5, 10^6 by default) – generation excluded, linking timed.

For each series the log-log slope between successive sizes is reported (1 = linear,
2 = quadratic). A chart ``bench/growth.png`` shows time and peak memory against size.

Usage: ``.venv/bin/python bench/bench_growth.py [--tx 100000 1000000 10000000] [--records 10000 100000 1000000]``
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

AS_OF = common.SYNTH["as_of"]


def case_summary_fit(path: str) -> dict:
    """Summary then grouped fits on one transactions file (child side)."""
    import duckdb

    from crmlab import clv

    clv._lifetimes()
    ph = common.Phases()
    con = duckdb.connect()
    quoted = str(path).replace("'", "''")
    con.execute(f"CREATE VIEW transactions AS SELECT customer_id, ts, amount FROM read_parquet('{quoted}')")
    with ph("summary"):
        s = clv.summary(con, AS_OF, time_unit="week")
    with ph("fit"):
        clv.fit_purchases(s, "bgnbd", grouped=True)
        clv.fit_spend(s, grouped=True)
    ph.out["total_s"] = round(ph.out["summary_s"] + ph.out["fit_s"], 4)
    ph.out["customers"] = len(s)
    return ph.out


def case_identity(records: int, seed: int = 0) -> dict:
    """bench_identity.main for ``records`` records (child side); its link time is ``total_s``."""
    import contextlib
    import io

    import bench_identity

    with contextlib.redirect_stdout(io.StringIO()):
        res = bench_identity.main(["--records", str(records), "--seed", str(seed)])
    out = {k: v for k, v in res.items() if isinstance(v, (int, float))}
    out["total_s"] = res["link_s"]
    return out


def slopes(sizes: list[int], values: list[float | None]) -> list[float | None]:
    """Log-log slopes between successive (size, value) points."""
    out = []
    for (n0, v0), (n1, v1) in zip(zip(sizes, values, strict=True), zip(sizes[1:], values[1:], strict=True), strict=False):
        out.append(round(math.log(v1 / v0) / math.log(n1 / n0), 2) if v0 and v1 else None)
    return out


def chart(series: dict, path: Path) -> Path:
    """Log-log chart of time and peak memory against size for each series."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for s in series.values():
        pts = [(p["size"], p["seconds"], p["peak_mib"]) for p in s["points"] if p["seconds"]]
        if not pts:
            continue
        x = [p[0] for p in pts]
        axes[0].plot(x, [p[1] for p in pts], "o-", label=s["label"])
        axes[1].plot(x, [p[2] for p in pts], "o-", label=s["label"])
        ref = pts[-1]
        axes[0].plot(x, [ref[1] * xi / ref[0] for xi in x], ":", color="grey", lw=1)
    for ax, ylabel in zip(axes, ("temps de calcul (s)", "mémoire de pointe du processus (Mio)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("taille (transactions ou fiches)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Le temps croît comme les données (pointillé : pente 1)")
    axes[1].set_title("La mémoire croît moins vite que les données")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tx", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--records", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--identity-runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(common.WORK))
    parser.add_argument("--chart", default=str(common.BENCH / "growth.png"))
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case == "summary_fit":
        common.emit(case_summary_fit(args.path))
        return {}
    if args.case == "identity":
        common.emit(case_identity(args.n, args.seed))
        return {}
    work = Path(args.work)
    series = {"summary_fit": {"label": "résumé SQL + ajustement BG/NBD + Gamma-Gamma", "unit": "transactions", "points": []},
              "identity": {"label": "rapprochement d'identités", "unit": "fiches", "points": []}}
    for n in args.tx:
        path = common.synthetic_transactions(n, seed=args.seed, path=work / f"tx_{n}_s{args.seed}.parquet")
        print(f"Croissance – résumé + ajustement, {n:,} transactions", flush=True)
        r = common.repeat([common.PY, __file__, "--case", "summary_fit", "--path", str(path)], args.runs,
                          timeout=args.timeout, label=f"summary_fit {n}", warm=[path])
        series["summary_fit"]["points"].append(_point(n, r))
    for n in args.records:
        print(f"Croissance – rapprochement d'identités, {n:,} fiches", flush=True)
        r = common.repeat([common.PY, __file__, "--case", "identity", "--n", str(n), "--seed", str(args.seed)],
                          args.identity_runs, timeout=args.timeout, label=f"identity {n}")
        series["identity"]["points"].append(_point(n, r))
    for s in series.values():
        sizes = [p["size"] for p in s["points"]]
        s["time_slopes"] = slopes(sizes, [p["seconds"] for p in s["points"]])
        s["cpu_slopes"] = slopes(sizes, [p["cpu_s"] for p in s["points"]])
        s["memory_slopes"] = slopes(sizes, [p["peak_mib"] for p in s["points"]])
    out = {"series": series}
    if args.chart and any(s["points"] for s in series.values()):
        out["chart"] = str(chart(series, Path(args.chart)))
    if not args.no_save:
        common.save("growth", out)
    return out


def _point(n: int, r: dict) -> dict:
    return {"size": n, "ok": r["ok"], "timed_out": r["timed_out"], "timeout_s": r["timeout_s"],
            "seconds": r["result"].get("total_s") if r["ok"] else None,
            "cpu_s": r["cpu_s"], "wall_s": r["wall_s"], "peak_mib": r["peak_mib"], "load": r["load"],
            "result": r["result"], "n_runs": r["n"]}


if __name__ == "__main__":
    main(sys.argv[1:])
