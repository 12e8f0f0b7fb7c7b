"""Benchmark 1: transactions -> per-customer RFM/CLV summary (frequency, recency, T, monetary).

Compares, on the same synthetic Parquet file (``common.synthetic_transactions``):

* ``crmlab``: :func:`crmlab.clv.summary` on a DuckDB view over the Parquet file (read +
  SQL + conversion to a typed pandas frame, one call);
* ``crmlab_loaded``: the same after loading the file into a DuckDB table (the chain's
  situation: step 01 has loaded ``transactions``); ``load_s`` and ``compute_s`` apart;
* ``crmlab_rfm``: :func:`crmlab.rfm.compute_rfm` (RFM scores in SQL) on the view;
* ``lifetimes``: ``pd.read_parquet`` + ``lifetimes.utils.summary_data_from_transaction_data``
  (``freq="D"``, monetary on);
* ``pandas``: ``pd.read_parquet`` + a plain groupby computing the same columns;

Each case runs in its own subprocess (peak memory of its own); the checksums of the
three summaries are compared so that the race is between equal results.

Usage: ``.venv/bin/python bench/bench_summary.py [--sizes 1000000 10000000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

AS_OF = common.SYNTH["as_of"]
LAST_DAY = "2025-12-31"  # lifetimes' observation_period_end (inclusive) = AS_OF - 1 day
CASES = ("crmlab", "crmlab_loaded", "crmlab_rfm", "lifetimes", "pandas")
COMPARED = ("crmlab", "lifetimes", "pandas")


# --------------------------------------------------------------------------- cases (child side)


def _checksum(n: int, frequency, recency, T, monetary) -> dict:
    return {
        "customers": int(n),
        "sum_frequency": int(round(float(frequency.sum()))),
        "sum_recency": int(round(float(recency.sum()))),
        "sum_T": int(round(float(T.sum()))),
        "sum_monetary": round(float(monetary.sum()), 2),
    }


def case_crmlab(path: str, loaded: bool = False) -> dict:
    import duckdb

    from crmlab import clv

    ph = common.Phases()
    con = duckdb.connect()
    quoted = str(path).replace("'", "''")  # our own file path, not data
    with ph("load"):
        kind = "TABLE" if loaded else "VIEW"
        con.execute(f"CREATE {kind} transactions AS SELECT customer_id, ts, amount FROM read_parquet('{quoted}')")
    with ph("compute"):
        s = clv.summary(con, AS_OF, time_unit="day", merge_same_day=True)
    ph.out["total_s"] = round(ph.out["load_s"] + ph.out["compute_s"], 4)
    return ph.out | _checksum(len(s), s["frequency"], s["recency"], s["T"], s["monetary"])


def case_crmlab_rfm(path: str) -> dict:
    import duckdb

    from crmlab import rfm

    ph = common.Phases()
    con = duckdb.connect()
    quoted = str(path).replace("'", "''")
    with ph("load"):
        con.execute(
            "CREATE VIEW transactions AS SELECT customer_id, ts, amount, CAST(NULL AS VARCHAR) AS order_id, "
            f"customer_id || '-' || CAST(epoch(ts) AS VARCHAR) AS transaction_id FROM read_parquet('{quoted}')"
        )
    with ph("compute"):
        out = rfm.compute_rfm(con, AS_OF, bins=5, frequency_basis="days", monetary_basis="mean")
    ph.out["total_s"] = round(ph.out["load_s"] + ph.out["compute_s"], 4)
    ph.out["customers"] = len(out)
    ph.out["sum_frequency"] = int(out["frequency"].sum()) - len(out)  # days - 1 = lifetimes' frequency
    return ph.out


def case_lifetimes(path: str) -> dict:
    import pandas as pd

    ph = common.Phases()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes.utils import summary_data_from_transaction_data
    with ph("load"):
        df = pd.read_parquet(path)
    with ph("compute"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summary_data_from_transaction_data(df, "customer_id", "ts", monetary_value_col="amount",
                                               observation_period_end=LAST_DAY, freq="D")
    ph.out["total_s"] = round(ph.out["load_s"] + ph.out["compute_s"], 4)
    return ph.out | _checksum(len(s), s["frequency"], s["recency"], s["T"], s["monetary_value"])


def pandas_summary(df, as_of: str = AS_OF):
    """Plain pandas: per-customer frequency, recency, T (days), monetary (mean repeat day value).

    ``df``: ``customer_id, ts, amount``. Same definitions as :func:`crmlab.clv.summary`
    with ``time_unit="day"``, ``merge_same_day=True``.
    """
    import numpy as np
    import pandas as pd

    end = pd.Timestamp(as_of)
    tx = df.loc[df["ts"] < end, ["customer_id", "ts", "amount"]]
    daily = (tx.assign(day=tx["ts"].dt.floor("D"))
             .groupby(["customer_id", "day"], as_index=False, sort=True)["amount"].sum())
    per = daily.groupby("customer_id", sort=True).agg(
        n=("day", "size"), first=("day", "min"), last=("day", "max"),
        total=("amount", "sum"), first_amount=("amount", "first"))
    out = pd.DataFrame({
        "frequency": per["n"] - 1,
        "recency": (per["last"] - per["first"]).dt.days.astype(float),
        "T": ((end - pd.Timedelta(days=1)) - per["first"]).dt.days.astype(float),
    })
    out["monetary"] = np.where(per["n"] > 1, (per["total"] - per["first_amount"]) / (per["n"] - 1).clip(lower=1), 0.0)
    return out


def case_pandas(path: str) -> dict:
    import pandas as pd

    ph = common.Phases()
    with ph("load"):
        df = pd.read_parquet(path)
    with ph("compute"):
        s = pandas_summary(df)
    ph.out["total_s"] = round(ph.out["load_s"] + ph.out["compute_s"], 4)
    return ph.out | _checksum(len(s), s["frequency"], s["recency"], s["T"], s["monetary"])


def run_one(case: str, path: str) -> dict:
    """Run one case in this process (child side)."""
    if case == "crmlab":
        return case_crmlab(path)
    if case == "crmlab_loaded":
        return case_crmlab(path, loaded=True)
    if case == "crmlab_rfm":
        return case_crmlab_rfm(path)
    if case == "lifetimes":
        return case_lifetimes(path)
    if case == "pandas":
        return case_pandas(path)
    raise ValueError(case)


# --------------------------------------------------------------------------- driver (parent side)


def consistent(cases: dict) -> bool | None:
    """True when crmlab, lifetimes and pandas agree (customers, sums; monetary to 1e-6 relative)."""
    sums = [c["result"] for name, c in cases.items() if name in COMPARED and c["ok"]]
    if len(sums) < 2:
        return None
    ref = sums[0]
    for s in sums[1:]:
        for k in ("customers", "sum_frequency", "sum_recency", "sum_T"):
            if s[k] != ref[k]:
                return False
        if abs(s["sum_monetary"] - ref["sum_monetary"]) > 1e-6 * max(1.0, abs(ref["sum_monetary"])):
            return False
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(common.WORK))
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # child
        common.emit(run_one(args.case, args.path))
        return {}
    out = {"sizes": {}}
    for n in args.sizes:
        path = common.synthetic_transactions(n, seed=args.seed, path=Path(args.work) / f"tx_{n}_s{args.seed}.parquet")
        print(f"Résumé par client – {n:,} transactions ({path.name})", flush=True)
        cases = {}
        for case in args.cases:
            cases[case] = common.repeat([common.PY, __file__, "--case", case, "--path", str(path)], args.runs,
                                        timeout=args.timeout, label=case, warm=[path])
        rows = cases[next(iter(cases))]["result"].get("customers")
        entry = {"transactions": _rows(path), "customers": rows, "path": str(path), "cases": cases,
                 "consistent": consistent(cases)}
        if "crmlab" in cases and cases["crmlab"]["ok"]:
            ref = cases["crmlab"]
            entry["ratios"] = {
                other: {
                    "total": _ratio(cases[other]["result"].get("total_s"), ref["result"]["total_s"]),
                    "cpu": _ratio(cases[other]["cpu_s"], ref["cpu_s"]),
                    "memory": _ratio(cases[other]["peak_mib"], ref["peak_mib"]),
                }
                for other in ("lifetimes", "pandas") if other in cases and cases[other]["ok"]
            }
        out["sizes"][str(n)] = entry
        print(json.dumps({k: v for k, v in entry.items() if k in ("consistent", "ratios")}), flush=True)
    if not args.no_save:
        common.save("summary", out)
    return out


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


if __name__ == "__main__":
    main(sys.argv[1:])
