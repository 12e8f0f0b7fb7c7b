"""Benchmark of identity resolution: link N synthetic source records, report time and peak memory.

Usage: ``.venv/bin/python bench/bench_identity.py [--records 1000000] [--seed 0]``

Records come from :func:`crmlab.identity.synthetic_source_customers` (vectorised: one
web account per person, a store card for ~30 % of them with realistic variations,
households sharing last name and address). Peak memory is the process's maximum
resident set size (``ru_maxrss``), which includes DuckDB's native allocations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

from crmlab import db, identity


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="approximate number of source records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dup-rate", type=float, default=0.3)
    parser.add_argument("--database", default=":memory:")
    parser.add_argument("--grid", action="store_true", help="also compute the threshold table (one clustering per threshold)")
    args = parser.parse_args(argv)
    n_people = int(args.records / (1 + args.dup_rate))
    t0 = time.perf_counter()
    records, truth = identity.synthetic_source_customers(n_people, dup_rate=args.dup_rate, seed=args.seed)
    t_gen = time.perf_counter() - t0
    truth_path = Path("/tmp") / f"bench_identity_truth_{args.seed}.csv"
    truth.to_csv(truth_path, index=False)
    con = db.connect(args.database)
    con.register("_bench", records)
    con.execute("DELETE FROM source_customers")
    con.execute("INSERT INTO source_customers BY NAME SELECT * FROM _bench")
    con.unregister("_bench")
    del records
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    con.execute("BEGIN TRANSACTION")
    t1 = time.perf_counter()
    result = identity.link(con, threshold=identity.DEFAULT_THRESHOLD,
                           threshold_grid=identity.DEFAULT_GRID if args.grid else (),
                           truth=str(truth_path), now=dt.datetime(2026, 1, 1))
    t_link = time.perf_counter() - t1
    con.execute("ROLLBACK")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "records": result.counts["records"], "customers": result.counts["customers"],
        "candidate_pairs": result.counts["candidate_pairs"], "pairs_accepted": result.counts["pairs_accepted"],
        "generate_s": round(t_gen, 1), "link_s": round(t_link, 1),
        "peak_rss_mib_before_link": round(rss_before), "peak_rss_mib": round(peak),
        "precision": round(result.metrics["precision"], 4), "recall": round(result.metrics["recall"], 4),
        "f1": round(result.metrics["f1"], 4),
        "timings_s": result.timings,
    }
    for key, value in out.items():
        print(f"{key:>26}: {value}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
