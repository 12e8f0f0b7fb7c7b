"""Shared machinery of the benchmarks: machine description, measured subprocess runs, medians.

Every measured case runs in its own subprocess so that its peak memory is its own:

* ``peak_tree_mib``: the largest *sum* of resident set sizes over the whole process tree
  (the case and all its descendants, e.g. Jupyter kernels), sampled with psutil every
  ``SAMPLE_S`` seconds;
* ``maxrss_mib``: the kernel's exact high-water mark of the largest single process of the
  tree (``ru_maxrss`` from ``wait4``, which folds in reaped descendants); 0 when it does
  not exceed the measuring process's size at fork, which Linux passes on to its children
  (``make bench`` runs each benchmark's driver in its own small process for that reason);
* ``peak_mib`` = max of the two (sampling may miss a short spike, ``ru_maxrss`` cannot see
  two processes at once).

Times: ``wall_s`` (process wall time, includes interpreter start and imports),
``cpu_s`` (``ru_utime + ru_stime`` of the case and its reaped descendants) and the
phase timings the case reports itself (``result``), e.g. ``read_s`` / ``compute_s``.
The machine is shared with other jobs: the 1-minute load average before and after each
run is recorded with it.

A case is a command that prints one line ``BENCH_RESULT {json}`` on stdout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
RESULTS_DIR = WORK / "results"
PY = sys.executable
SAMPLE_S = 0.05
MARK = "BENCH_RESULT "
PACKAGES = ("crmlab", "duckdb", "pandas", "numpy", "pyarrow", "scipy", "lifetimes", "papermill", "nbconvert", "psutil")


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> dict:
    """Cores, RAM, CPU model, OS, Python and package versions, date."""
    out = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "ram_available_gib": round(psutil.virtual_memory().available / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def load1() -> float:
    """1-minute load average."""
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------- child side


def emit(result: dict) -> None:
    """Print the case's result line (child side)."""
    print(MARK + json.dumps(result, default=str), flush=True)


class Phases:
    """Wall and CPU time of named phases inside a case (child side).

    Examples
    --------
    >>> ph = Phases()
    >>> with ph("read"):
    ...     pass
    >>> sorted(ph.out)
    ['read_cpu_s', 'read_s']
    """

    def __init__(self) -> None:
        self.out: dict[str, float] = {}

    def __call__(self, name: str):
        return _Phase(self, name)


class _Phase:
    def __init__(self, owner: Phases, name: str) -> None:
        self.owner, self.name = owner, name

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.owner.out[f"{self.name}_s"] = round(time.perf_counter() - self.t0, 4)
        self.owner.out[f"{self.name}_cpu_s"] = round(time.process_time() - self.c0, 4)
        return False


# --------------------------------------------------------------------------- parent side


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_case(argv: list[str], *, timeout: float | None = None, cwd: str | Path | None = None,
             env: dict | None = None, trace: bool = False) -> dict:
    """Run one measured case in a subprocess.

    Parameters
    ----------
    argv : list of str
        Command; it should print ``BENCH_RESULT {json}``.
    timeout : float, optional
        Seconds; the whole process group is killed after it (``timed_out`` True).
    trace : bool
        Also return ``trace``: (epoch seconds, tree RSS MiB) about every 0.5 s.

    Returns
    -------
    dict
        ``wall_s, cpu_s, peak_tree_mib, maxrss_mib, peak_mib, load_before, load_after,
        returncode, timed_out, result`` (the case's JSON or None), ``stderr_tail``.
    """
    load_before = load1()
    own_mib = psutil.Process().memory_info().rss / 2**20  # see the ru_maxrss note below
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        timed_out = False
        samples: list[tuple[float, float]] = []
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _tree_rss(ps)
            peak = max(peak, rss)
            if trace and (not samples or time.time() - samples[-1][0] >= 0.5):
                samples.append((round(time.time(), 2), round(rss / 2**20, 1)))
            if timeout is not None and time.perf_counter() - t0 > timeout:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = None
    for line in stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
    maxrss = ru.ru_maxrss / 1024
    # Linux carries the pre-exec image's high-water mark into the child (signal->maxrss), i.e.
    # the driver's size when it forked: a child of a large driver reports at least that.
    # ru_maxrss is only believed when it clearly exceeds it.
    if maxrss <= own_mib + 16:
        maxrss = 0.0
    extra = {"trace": samples} if trace else {}
    return extra | {
        "wall_s": round(wall, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "peak_tree_mib": round(peak / 2**20, 1),
        "maxrss_mib": round(maxrss, 1),
        "peak_mib": round(max(peak / 2**20, maxrss), 1),
        "load_before": load_before,
        "load_after": load1(),
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "result": result,
        "stdout_tail": stdout[-1500:] if result is None else "",
        "stderr_tail": stderr[-3000:] if (proc.returncode or result is None) else "",
    }


def warm_files(paths) -> float:
    """Read files (or every file under folders) once so that the next reader finds them in the page cache.

    This machine pages out file cache that has not been used for some seconds (DAMON
    ``pageout`` scheme), and a cold read runs at 15–120 MB/s: without this, which case
    of a comparison pays for reading the shared input from disk depends on timing.
    Returns the seconds spent.
    """
    t0 = time.perf_counter()
    for p in paths or []:
        p = Path(p)
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            with open(f, "rb") as fh:
                while fh.read(1 << 23):
                    pass
    return time.perf_counter() - t0


def repeat(argv: list[str], n: int, *, timeout: float | None = None, label: str = "", warm=None, **kw) -> dict:
    """Run a case ``n`` times; return the runs and their medians.

    A failed or timed-out run stops the repetition (no point waiting again). ``warm``:
    input files read just before each run (see :func:`warm_files`).

    Returns
    -------
    dict
        ``runs`` (list of :func:`run_case` dicts), ``ok`` (all runs succeeded), and the
        medians ``wall_s, cpu_s, peak_mib, load`` plus the median of every numeric key of
        the cases' results (``result``).
    """
    runs = []
    for i in range(n):
        warm_files(warm)
        r = run_case(argv, timeout=timeout, **kw)
        runs.append(r)
        # a case may report a failure of what it measured (e.g. ``crmlab run`` exit code)
        failed_inside = bool(r["result"]) and r["result"].get("exit_code", 0) != 0
        if failed_inside:
            r["returncode"] = r["returncode"] or 1
            r["stderr_tail"] = (r.get("stderr_tail") or "") + str(r["result"].get("error") or r["result"].get("stderr") or "")
        state = "timeout" if r["timed_out"] else ("ok" if r["returncode"] == 0 and r["result"] is not None else "FAILED")
        inner = ""
        if r["result"]:
            inner = " ".join(f"{k}={v}" for k, v in r["result"].items() if k.endswith("_s") and not k.endswith("cpu_s"))
        print(f"  {label} run {i + 1}/{n}: {state} wall {r['wall_s']:.2f} s cpu {r['cpu_s']:.2f} s "
              f"peak {r['peak_mib']:.0f} MiB load {r['load_before']} {inner}", flush=True)
        if state != "ok":
            if r["stderr_tail"]:
                print("    stderr:", r["stderr_tail"][-800:], flush=True)
            break
    ok = all(r["returncode"] == 0 and r["result"] is not None and not r["timed_out"] for r in runs)
    return {"label": label, "n": len(runs), "ok": ok, "timed_out": any(r["timed_out"] for r in runs),
            "timeout_s": timeout, "runs": runs, **medians(runs)}


def medians(runs: list[dict]) -> dict:
    """Medians of the process measures and of the numeric result keys over successful runs."""
    good = [r for r in runs if r["result"] is not None and not r["timed_out"]]
    if not good:
        return {"wall_s": None, "cpu_s": None, "peak_mib": None, "load": None, "result": {}}
    med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    res_keys = [k for k, v in good[0]["result"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {
        "wall_s": med([r["wall_s"] for r in good]),
        "cpu_s": med([r["cpu_s"] for r in good]),
        "peak_mib": med([r["peak_mib"] for r in good]),
        "load": med([r["load_before"] for r in good]),
        "result": {k: med([r["result"][k] for r in good if k in r["result"]]) for k in res_keys}
        | {k: v for k, v in good[0]["result"].items() if not isinstance(v, (int, float)) or isinstance(v, bool)},
    }


def save(name: str, payload: dict) -> Path:
    """Write ``bench/work/results/<name>.json`` (with the machine description)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    return path


def load_saved(name: str) -> dict | None:
    """Read ``bench/work/results/<name>.json`` if present."""
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fr(x: float, decimals: int = 1) -> str:
    """French number: narrow no-break space for thousands, decimal comma (``12 345,6``)."""
    return f"{x:,.{decimals}f}".replace(",", "\u202f").replace(".", ",")


def fmt_s(x: float | None, timeout: float | None = None) -> str:
    """Seconds for a table: 2 decimals below 10 s, 1 above; ``> N s`` for a timeout."""
    if x is None:
        return f"> {timeout:.0f} s" if timeout else "–"
    return f"{fr(x, 2 if x < 10 else 1)} s"


def fmt_mib(x: float | None) -> str:
    """MiB for a table (French: Mio)."""
    return "–" if x is None else f"{fr(x, 0)} Mio"


# --------------------------------------------------------------------------- synthetic data

#: Generating process of the synthetic transactions (weekly rates, as in the demo truth).
SYNTH = {"r": 0.8, "alpha": 6.0, "a": 0.6, "b": 4.0, "p": 6.0, "q": 4.0, "v": 15.0,
         "start": "2023-01-01", "as_of": "2026-01-01"}


def _simulate(n_customers: int, rng) -> tuple:
    """BG/NBD purchase times and Gamma-Gamma amounts of ``n_customers`` (vectorised over customers).

    Returns (customer index, seconds since ``SYNTH['start']``, amount) arrays, one entry per
    transaction. Customers arrive uniformly over the observation span; after each repeat
    purchase a customer drops out with probability p_i (Fader, Hardie & Lee 2005).
    """
    import numpy as np

    s = SYNTH
    span_w = (np.datetime64(s["as_of"]) - np.datetime64(s["start"])).astype(int) / 7.0
    start = rng.uniform(0, span_w, n_customers)
    horizon = span_w - start
    lam = rng.gamma(s["r"], 1.0 / s["alpha"], n_customers)
    p = rng.beta(s["a"], s["b"], n_customers)
    nu = rng.gamma(s["q"], 1.0 / s["v"], n_customers)
    custs = [np.arange(n_customers)]
    times = [start.copy()]
    active = np.arange(n_customers)
    t = np.zeros(n_customers)
    while active.size:
        t = t + rng.exponential(1.0 / lam[active])
        keep = t <= horizon[active]
        active, t = active[keep], t[keep]
        custs.append(active)
        times.append(start[active] + t)
        alive = rng.random(active.size) >= p[active]
        active, t = active[alive], t[alive]
    cust = np.concatenate(custs)
    weeks = np.concatenate(times)
    amount = np.round(rng.gamma(s["p"], 1.0 / nu[cust]), 2) + 0.01
    return cust, np.floor(weeks * 7 * 86400).astype("int64"), amount


def synthetic_transactions(n_transactions: int, *, seed: int = 0, path: str | Path | None = None) -> Path:
    """Write a Parquet file of about ``n_transactions`` synthetic transactions (cached).

    Columns: ``customer_id`` (string ``C0000001``), ``ts`` (timestamp, second precision,
    2023-01-01 → 2025-12-31), ``amount`` (double, > 0), rows in time order like an export.
    Customers follow BG/NBD (r 0.8, alpha 6, a 0.6, b 4 per week) and Gamma-Gamma (p 6,
    q 4, v 15) – about 6.5 transactions per customer. The number of customers is set from a
    pilot draw so that the total is within about 1 % of ``n_transactions``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path) if path else WORK / f"tx_{n_transactions}_s{seed}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pilot = _simulate(50_000, np.random.default_rng(10_000 + seed))[0].size / 50_000
    n_customers = max(1, round(n_transactions / pilot))
    rng = np.random.default_rng(seed)
    cust, secs, amount = _simulate(n_customers, rng)
    order = np.argsort(secs, kind="stable")
    cust, secs, amount = cust[order], secs[order], amount[order]
    ids = pa.array([f"C{i:07d}" for i in range(n_customers)], pa.string())
    base = np.datetime64(SYNTH["start"], "s").astype("int64")
    table = pa.table({
        "customer_id": ids.take(pa.array(cust)),
        "ts": pa.array(secs + base, pa.timestamp("s")),
        "amount": pa.array(amount, pa.float64()),
    })
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=1_000_000)
    tmp.rename(path)
    return path
