"""Benchmark 2: BG/NBD + Gamma-Gamma fitting on 100 k and 1 M customers, grouped vs ungrouped.

The customers are a seeded sample of the per-customer summary (weeks, as in the chain) of
the 10 M-transaction synthetic file of benchmark 1 (BG/NBD r 0.8, alpha 6, a 0.6, b 4;
Gamma-Gamma p 6, q 4, v 15), computed once with :func:`crmlab.clv.summary` and cached.

Cases, each in its own subprocess with a timeout (a timed-out case is reported "> N s"):

* ``grouped``: :func:`crmlab.clv.fit_purchases` (BG/NBD) and :func:`crmlab.clv.fit_spend`
  with ``grouped=True`` – identical (frequency, recency, T) rows fitted once with lifetimes'
  ``weights``;
* ``ungrouped``: the same with ``grouped=False`` (one row per customer, weights 1).

Reported: wall time of each call (grouping included), number of fitted rows, the fitted
parameters (grouped and ungrouped must agree: same likelihood).

Usage: ``.venv/bin/python bench/bench_fit.py [--customers 100000 1000000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

AS_OF = common.SYNTH["as_of"]
SOURCE_TX = 10_000_000


def summary_file(work: Path, seed: int = 0, source_tx: int = SOURCE_TX) -> Path:
    """Cached per-customer summary (weeks) of the synthetic transactions file."""
    path = work / f"fit_summary_{source_tx}_s{seed}.parquet"
    if path.exists():
        return path
    import duckdb

    from crmlab import clv

    tx = common.synthetic_transactions(source_tx, seed=seed, path=work / f"tx_{source_tx}_s{seed}.parquet")
    con = duckdb.connect()
    quoted = str(tx).replace("'", "''")
    con.execute(f"CREATE VIEW transactions AS SELECT customer_id, ts, amount FROM read_parquet('{quoted}')")
    s = clv.summary(con, AS_OF, time_unit="week")
    tmp = path.with_suffix(".tmp")
    s.to_parquet(tmp)
    tmp.rename(path)
    return path


def sample_file(path: Path, n: int, seed: int = 0) -> Path:
    """Cached seeded sample of ``n`` customers of a summary file (so a case reads only its rows)."""
    import pandas as pd

    out = path.with_name(f"{path.stem}_n{n}.parquet")
    if not out.exists():
        data = pd.read_parquet(path, columns=["frequency", "recency", "T", "monetary"])
        data.sample(n=min(n, len(data)), random_state=seed).reset_index(drop=True).to_parquet(out)
    return out


def case_fit(path: str, n: int, grouped: bool, seed: int = 0) -> dict:
    """Fit BG/NBD then Gamma-Gamma on ``n`` sampled customers (child side)."""
    import pandas as pd

    from crmlab import clv

    data = pd.read_parquet(path, columns=["frequency", "recency", "T", "monetary"])
    if n < len(data):  # the driver passes a file of exactly n customers; this is for direct calls
        data = data.sample(n=n, random_state=seed).reset_index(drop=True)
    out: dict = {"customers": len(data)}
    clv._lifetimes()  # import outside the timings
    t0 = time.perf_counter()
    purchases = clv.fit_purchases(data, "bgnbd", grouped=grouped, time_unit="week")
    out["bgnbd_s"] = round(time.perf_counter() - t0, 3)
    out["bgnbd_fit_only_s"] = round(purchases.seconds, 3)
    out["bgnbd_rows"] = purchases.n_groups
    t1 = time.perf_counter()
    spend = clv.fit_spend(data, grouped=grouped)
    out["gamma_gamma_s"] = round(time.perf_counter() - t1, 3)
    out["gamma_gamma_rows"] = spend.n_groups
    out["repeat_customers"] = spend.n_customers
    out["total_s"] = round(time.perf_counter() - t0, 3)
    out["bgnbd_params"] = {k: round(v, 4) for k, v in purchases.params.items()}
    out["gamma_gamma_params"] = {k: round(v, 4) for k, v in spend.params.items()}
    out["bgnbd_loglik"] = round(purchases.loglik, 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="per ungrouped run, seconds")
    parser.add_argument("--ungrouped-runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-tx", type=int, default=SOURCE_TX)
    parser.add_argument("--work", default=str(common.WORK))
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        common.emit(case_fit(args.path, args.n, args.case == "grouped", args.seed))
        return {}
    work = Path(args.work)
    path = summary_file(work, args.seed, args.source_tx)
    out = {"source": str(path), "source_transactions": args.source_tx, "true_params": common.SYNTH, "sizes": {}}
    for n in args.customers:
        print(f"Ajustement BG/NBD + Gamma-Gamma – {n:,} clients", flush=True)
        sample = sample_file(path, n, args.seed)
        entry = {}
        for case, runs, timeout in (("grouped", args.runs, args.timeout), ("ungrouped", args.ungrouped_runs, args.timeout)):
            argv_case = [common.PY, __file__, "--case", case, "--path", str(sample), "--n", str(n), "--seed", str(args.seed)]
            entry[case] = common.repeat(argv_case, runs, timeout=timeout, label=case)
        g, u = entry["grouped"], entry["ungrouped"]
        if g["ok"] and u["ok"]:
            entry["speedup"] = round(u["result"]["total_s"] / g["result"]["total_s"], 1)
            gp, up = g["result"]["bgnbd_params"], u["result"]["bgnbd_params"]
            entry["max_param_rel_diff"] = round(max(abs(gp[k] - up[k]) / abs(up[k]) for k in up), 5)
        out["sizes"][str(n)] = entry
    if not args.no_save:
        common.save("fit", out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
