"""Benchmark 3: the whole chain (``crmlab run``): wall time, CPU time, peak memory, time split.

Cases (``--cases``):

* ``demo``: ``params/demo.yaml`` on the demo world at default scale (``data/demo``);
* ``demo_large``: the same params on a larger demo world (``--large-scale``, default 185
  ≈ 10 M transactions), generated into ``bench/work/demo_s<scale>`` if absent (the
  generator needs about 0.04 GB of RAM per scale unit);
* ``online_retail``: ``params/online_retail.yaml`` (UCI Online Retail, ~400 k lines).

Every run starts from an empty database (``-p run.database=bench/work/chain_<case>.duckdb``,
deleted first) and writes into ``bench/work/runs/<case>``. The measured process tree is
the ``crmlab run`` command with its Jupyter kernels. The split comes from ``run.json``
(per step: ``kernel_start``, ``execute``, ``html``).

``--profile`` then re-executes the code cells of the executed notebooks in one Python
process under pyinstrument (no kernel, no HTML) and splits the time by what the frames
belong to: ``models`` (lifetimes, scikit-learn, scipy.optimize), ``charts`` (matplotlib,
seaborn), ``sql`` (self time of crmlab/duckdb frames: DuckDB's C calls made from crmlab),
``pandas`` (pandas/numpy), ``imports`` and ``other``; the top library functions by
cumulated time are listed, and the HTML profile is saved in ``bench/work/``.

Usage: ``.venv/bin/python bench/bench_chain.py [--cases demo online_retail] [--runs 3] [--profile]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CRMLAB = str(Path(common.PY).parent / "crmlab")
DATASETS = common.ROOT.parent / "shared" / "datasets"


def large_demo(scale: float) -> Path:
    """Demo world at ``scale`` in bench/work (generated once)."""
    data = common.WORK / f"demo_s{scale:g}"
    if not (data / "truth" / "model.json").exists():
        print(f"  génération du monde de démo à l'échelle {scale:g} dans {data} …", flush=True)
        t0 = time.perf_counter()
        subprocess.run([CRMLAB, "demo-data", "--scale", f"{scale:g}", "--out", str(data)], check=True)
        print(f"  généré en {time.perf_counter() - t0:.0f} s", flush=True)
    return data


def demo_params_for(data: Path, work: Path) -> Path:
    """A copy of params/demo.yaml whose ../data/demo paths point at ``data``."""
    text = (common.ROOT / "params" / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace("../data/demo", str(data))
    out = work / f"params_{data.name}.yaml"
    out.write_text(text, encoding="utf-8")
    return out


def case_chain(params_file: str, database: str, out: str, overrides: list[str]) -> dict:
    """Run ``crmlab run`` on a fresh database (child side); report run.json timings."""
    db = Path(database)
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, MPLBACKEND="agg")
    argv = [CRMLAB, "run", params_file, "--out", out, "-p", f"run.database={database}"]
    for o in overrides:
        argv += ["-p", o]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res: dict = {"total_s": round(wall, 3), "exit_code": proc.returncode}
    run_json = Path(out) / "run.json"
    if run_json.exists():
        info = json.loads(run_json.read_text())
        res["run_seconds"] = info.get("seconds")
        res["status"] = info.get("status")
        steps = [s for s in info.get("steps", []) if s.get("status") not in ("skipped",)]
        for key in ("kernel_start", "execute", "html"):
            res[f"{key}_s"] = round(sum((s.get("timings") or {}).get(key, 0) for s in steps), 3)
        for s in steps:
            for key, v in (s.get("timings") or {}).items():
                res[f"step{s['code']}_{key}_s"] = v
        res["steps"] = " ".join(f"{s['code']}:{s['status']}" for s in steps)
        if info.get("error"):
            res["error"] = str(info["error"])[:500]
    if proc.returncode:
        res["stderr"] = proc.stderr[-1500:]
    tx = _count(database, "transactions")
    if tx is not None:
        res["transactions"] = tx
        res["customers"] = _count(database, "customers")
    return res


def _count(database: str, table: str) -> int | None:
    import duckdb

    try:
        con = duckdb.connect(database, read_only=True)
        try:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
        finally:
            con.close()
    except Exception:  # noqa: BLE001 - a failed run may leave no database
        return None


# statements that say nothing of a cell's cost (the set-up of every step's first cell)
_SETUP = ("import ", "from ", "charts.setup(", "p = params.for_notebook(", "con = db.open_step(")
_BRANCHES = ("else:", "elif ", "try:", "except", "finally:")


def cell_label(source: str, width: int = 110) -> str:
    """Name a cell by its first statements that do work (set-up lines skipped), joined by `` ; ``."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.startswith((" ", "#", ")", "]", "}"))]
    work = [ln.strip() for ln in lines if not ln.startswith(_SETUP) and not ln.startswith(_BRANCHES)] or [
        ln.strip() for ln in lines[:1]]
    label = " ; ".join(work[:3])
    return label if len(label) <= width else label[: width - 1] + "…"


def memory_by_cell(run_dir: Path, trace: list) -> list[dict]:
    """Peak tree RSS during each executed cell (papermill start/end times), largest first."""
    import datetime as dt

    import nbformat

    if not trace:
        return []
    out = []
    for nb_path in sorted(Path(run_dir).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            meta = cell.get("metadata", {}).get("papermill", {})
            if not meta.get("start_time") or not meta.get("end_time"):
                continue
            t0 = dt.datetime.fromisoformat(meta["start_time"].replace("Z", "+00:00")).timestamp()
            t1 = dt.datetime.fromisoformat(meta["end_time"].replace("Z", "+00:00")).timestamp()
            inside = [m for t, m in trace if t0 - 0.5 <= t <= t1 + 0.5]
            if inside:
                out.append({"notebook": nb_path.stem, "cell": i + 1, "seconds": round(t1 - t0, 2),
                            "peak_mib": max(inside), "source": cell_label(cell.source)})
    return sorted(out, key=lambda m: -m["peak_mib"])


# --------------------------------------------------------------------------- profile

CATEGORIES = (
    ("imports", ("<frozen importlib", "importlib/")),
    ("models", ("/lifetimes/", "/sklearn/", "/scipy/optimize/", "/autograd/")),
    ("charts", ("/matplotlib/", "/seaborn/")),
    ("widgets", ("/ipywidgets/",)),
)


def _category(stack: list[str]) -> str:
    for name, keys in CATEGORIES:
        if any(k in f for f in stack for k in keys):
            return name
    leaf = stack[-1] if stack else ""
    if "/crmlab/" in leaf or "/duckdb/" in leaf:
        return "sql"
    if "/pandas/" in leaf or "/numpy/" in leaf or "/pyarrow/" in leaf:
        return "pandas"
    return "other"


def split_profile(root) -> tuple[dict, list]:
    """Self time by category and top crmlab functions (cumulated) of a pyinstrument frame tree."""
    cats: dict[str, float] = {}
    crm: dict[str, float] = {}

    def walk(frame, stack, seen):
        path = frame.file_path or frame.identifier or ""
        stack = [*stack, path]
        children = [c for c in frame.children]
        self_time = frame.time - sum(c.time for c in children if not c.identifier.startswith("[self]"))
        if frame.identifier.startswith("[self]"):
            self_time = frame.time
            stack = stack[:-1]
            children = []
        elif any(c.identifier.startswith("[self]") for c in frame.children):
            self_time = 0.0  # counted by the [self] child
        if self_time > 0:
            cat = _category(stack)
            cats[cat] = cats.get(cat, 0.0) + self_time
        if "/crmlab/" in path and frame.function:
            key = f"crmlab.{Path(path).stem}.{frame.function}"
            if key not in seen:  # cumulated time, recursion counted once
                crm[key] = crm.get(key, 0.0) + frame.time
                seen = seen | {key}
        for c in children:
            walk(c, stack, seen)

    walk(root, [], frozenset())
    top = sorted(crm.items(), key=lambda kv: -kv[1])[:15]
    return {k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}, [(k, round(v, 2)) for k, v in top]


def case_profile(run_dir: str, database: str, html_out: str) -> dict:
    """Re-execute the executed notebooks' code cells of ``run_dir`` under pyinstrument (child side)."""
    import matplotlib

    matplotlib.use("agg")
    import nbformat
    from pyinstrument import Profiler

    db = Path(database)
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    notebooks = sorted(Path(run_dir).glob("[0-9][0-9]_*.ipynb"))
    out: dict = {}
    profiler = Profiler(interval=0.005)
    t0 = time.perf_counter()
    profiler.start()
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()  # display(..., display_id=True) needs a shell
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        prev = os.getcwd()
        os.chdir(_source_dir(nb_path.stem))
        shell.reset(new_session=False)
        t = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                for cell in (c for c in nb.cells if c.cell_type == "code"):
                    shell.run_cell(cell.source, silent=True).raise_error()
        except Exception as exc:  # noqa: BLE001 - a step that fails here is reported, the others profiled
            out[f"{nb_path.stem}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            out[f"{nb_path.stem}_s"] = round(time.perf_counter() - t, 3)
            os.chdir(prev)
            import matplotlib.pyplot as plt

            plt.close("all")
    profiler.stop()
    out["total_s"] = round(time.perf_counter() - t0, 3)
    session = profiler.last_session
    cats, top = split_profile(session.root_frame())
    out["split"] = cats
    out["top_crmlab"] = top
    Path(html_out).write_text(profiler.output_html(), encoding="utf-8")
    out["html"] = html_out
    return out


def _source_dir(stem: str) -> Path:
    code, _, name = stem.partition("_")
    folder = next(common.ROOT.glob(f"notebooks/{code}_*"), None)
    return folder if folder else common.ROOT


# --------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["demo", "demo_large", "online_retail"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large-runs", type=int, default=1)
    parser.add_argument("--large-scale", type=float, default=185)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--profile", action="store_true", help="profile the chain's library calls")
    parser.add_argument("--profile-cases", nargs="+", help="cases to profile (default: all measured cases)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--html", help=argparse.SUPPRESS)
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case == "chain":
        common.emit(case_chain(args.params, args.database, args.out, args.override))
        return {}
    if args.case == "profile":
        common.emit(case_profile(args.out, args.database, args.html))
        return {}
    work = common.WORK
    work.mkdir(parents=True, exist_ok=True)
    previous = common.load_saved("chain") or {}
    out = {"cases": dict(previous.get("cases", {})), "profiles": dict(previous.get("profiles", {}))}
    for case in args.cases:
        if case == "online_retail" and not (DATASETS / "online_retail" / "online_retail.parquet").exists():
            print("  Online Retail absent : cas ignoré", flush=True)
            out["cases"][case] = {"skipped": "jeu de données absent"}
            continue
        overrides: list[str] = []
        params_file = common.ROOT / "params" / ("online_retail.yaml" if case == "online_retail" else "demo.yaml")
        scale = 1.0
        inputs = [DATASETS / "online_retail"] if case == "online_retail" else [common.ROOT / "data" / "demo"]
        if case == "demo_large":
            data = large_demo(args.large_scale)
            params_file = demo_params_for(data, work)
            scale = args.large_scale
            inputs = [data]
        database = work / f"chain_{case}.duckdb"
        run_dir = work / "runs" / case
        argv_case = [common.PY, __file__, "--case", "chain", "--params", str(params_file),
                     "--database", str(database), "--out", str(run_dir)]
        for o in overrides:
            argv_case += ["--override", o]
        n = args.large_runs if case == "demo_large" else args.runs
        print(f"Chaîne complète – {case}", flush=True)
        r = common.repeat(argv_case, n, timeout=args.timeout, label=case, trace=True,
                          warm=[p for p in inputs if p.exists()])
        r["memory_by_cell"] = memory_by_cell(run_dir, r["runs"][-1].get("trace") or [])
        for run in r["runs"]:
            run.pop("trace", None)
        for m in r["memory_by_cell"][:3]:
            print(f"  mémoire : {m['peak_mib']:.0f} Mio pendant {m['notebook']} cellule {m['cell']} : {m['source']}", flush=True)
        r["scale"] = scale
        r["params_file"] = str(params_file)
        r["command"] = f"crmlab run {params_file.relative_to(common.ROOT) if params_file.is_relative_to(common.ROOT) else params_file} -p run.database={database.relative_to(common.ROOT)}"
        out["cases"][case] = r
        if args.profile and (not args.profile_cases or case in args.profile_cases) and r["runs"] and r["runs"][-1]["result"] and (run_dir / "run.json").exists():
            print(f"Profil (pyinstrument) – {case}", flush=True)
            p = common.run_case([common.PY, __file__, "--case", "profile", "--out", str(run_dir),
                                 "--database", str(database), "--html", str(work / f"profile_{case}.html")],
                                timeout=args.timeout)
            if p["result"]:
                print(f"  {p['result']['split']}", flush=True)
            else:
                print(f"  profil en échec : {p['stderr_tail'][-800:]}", flush=True)
            out["profiles"][case] = p
    if not args.no_save:
        common.save("chain", out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
