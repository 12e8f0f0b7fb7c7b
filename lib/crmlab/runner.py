"""The chain runner: execute the step notebooks in order with papermill, write the run folder.

A run folder holds, for the steps of this run:

- ``NN_<name>.ipynb``: the executed notebooks (sources are never modified);
- ``html/NN_<name>.html``: the reports (code hidden, images embedded, no script);
- ``index.html``: status, duration and headline KPIs of each step, links, and – when a
  step failed – which one and why, in French;
- ``run.json``: validated params, package versions, run id, timings, status, exit code.

The first failing step stops the chain; the next steps are marked ``not_run``. Exit
codes: 0 success, 2 bad input (``InputError`` / ``ParamsError`` in a step), 1 otherwise.

:func:`run_chain` takes the steps explicitly (tests use tiny notebooks); :func:`run`
loads a params file and runs the available steps of :data:`crmlab.params.STEPS`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crmlab import __version__, errors, params, report
from crmlab.charts import fr_number
from crmlab.errors import CrmlabError, ParamsError

Echo = Callable[..., None]

#: Packages whose versions are written in run.json.
VERSIONED = ("crmlab", "duckdb", "pandas", "numpy", "scipy", "lifetimes", "papermill", "nbclient",
             "nbconvert", "nbformat", "ipykernel", "matplotlib", "seaborn", "scikit-learn", "pyarrow")

#: Number of headline KPIs shown per step in index.html.
N_HEADLINE = 3


@dataclass(frozen=True)
class Step:
    """One step of the chain.

    Attributes
    ----------
    code : str
        Two-digit code (``"02"``).
    name : str
        Block name in the params file (``"segmenter"``).
    title : str
        French title (``"Segmenter et cibler"``).
    notebook : Path
        Source notebook (absolute path); it is executed with its folder as working folder.
    module : str, optional
        Step module (``crmlab.segmenter``), read for ``HEADLINE_KPIS``, ``KPI_LABELS`` and
        ``not_applicable(block)``.
    """

    code: str
    name: str
    title: str
    notebook: Path
    module: str | None = None

    @property
    def stem(self) -> str:
        """File stem of the step's outputs: ``02_segmenter``."""
        return f"{self.code}_{self.name}"


@dataclass
class StepResult:
    """What happened to one step in a run.

    ``status`` is ``ok``, ``failed``, ``not_applicable`` (nothing to do with these
    params, ``error`` says why), ``not_run`` (after a failure) or ``skipped`` (not
    requested with ``--steps``). ``timings`` (seconds): ``kernel_start`` (papermill
    start-up until the kernel is ready), ``execute`` (cells), ``html`` (report), ``total``.
    ``error_kind``: ``input`` (exit 2), ``check`` or ``other``.
    """

    code: str
    name: str
    title: str
    status: str = "not_run"
    seconds: float | None = None
    timings: dict = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    error_kind: str | None = None
    notebook: str | None = None
    html: str | None = None
    kpis: list = field(default_factory=list)
    retried: str | None = None
    restored: bool = False


@dataclass
class RunResult:
    """Outcome of a run: status, exit code, step results and the run folder's files."""

    name: str
    run_id: str
    out_dir: Path
    status: str
    exit_code: int
    steps: list[StepResult]
    seconds: float
    index: Path
    run_json: Path

    @property
    def failed(self) -> StepResult | None:
        """The failed step, if any."""
        return next((s for s in self.steps if s.status == "failed"), None)


def chain_steps(root: Path | None = None) -> list[Step]:
    """Return the available steps of the chain (module and notebook exist), in order."""
    root = root or params.project_root()
    available = set(params.available_steps(root))
    return [
        Step(code, name, params.STEP_TITLES[code], (root / nb).resolve(), module)
        for code, name, module, nb in params.STEPS
        if code in available
    ]


def select_steps(spec: str | None, steps: Sequence[Step]) -> list[Step]:
    """Return the steps chosen by a ``--steps`` value, in chain order.

    Parameters
    ----------
    spec : str or None
        Comma-separated codes, numbers, names or inclusive ranges: ``"01,03-06"``,
        ``"2"``, ``"segmenter"``, ``"constituer-segmenter"``. ``None`` or empty: all.
    steps : sequence of Step
        Available steps.

    Raises
    ------
    ParamsError
        Unknown step, step not available yet, malformed range.
    """
    if spec is None or not str(spec).strip():
        return list(steps)
    order = [c for c, *_ in params.STEPS]
    have = {s.code: s for s in steps}
    chosen: set[str] = set()
    for token in str(spec).split(","):
        token = token.strip()
        if not token:
            continue
        if "-" in token:
            left, _, right = token.partition("-")
            lo, hi = order.index(_code(left, token)), order.index(_code(right, token))
            if lo > hi:
                raise ParamsError(f"Intervalle d'étapes « {token} » à l'envers", hint="Écrivez par exemple --steps 03-06")
            span = [c for c in order[lo : hi + 1] if c in have]
            if not span:
                raise ParamsError(f"Aucune étape disponible dans l'intervalle « {token} »", hint=_available_hint(steps))
            chosen.update(span)
        else:
            code = _code(token, token)
            if code not in have:
                raise ParamsError(
                    f"L'étape {code} ({params.STEP_TITLES.get(code, '?')}) n'est pas disponible dans cette version",
                    hint=_available_hint(steps),
                )
            chosen.add(code)
    return [s for s in steps if s.code in chosen]


def _code(text: str, token: str) -> str:
    text = text.strip()
    try:
        return params.step_code(text.zfill(2) if text.isdigit() else text)
    except ParamsError:
        raise ParamsError(f"Étape inconnue « {text} » dans --steps « {token} »",
                          hint="Donnez des codes (01,03-06), des numéros (2) ou des noms (segmenter)") from None


def _available_hint(steps: Sequence[Step]) -> str:
    return "Étapes disponibles : " + (", ".join(f"{s.code} {s.name}" for s in steps) or "aucune")


# --------------------------------------------------------------------------- running


def run(
    params_file: str | Path,
    *,
    steps: str | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    kernel_name: str = "crmlab",
    echo: Echo = print,
    root: Path | None = None,
) -> RunResult:
    """Validate a params file, then run the available steps of the chain.

    Parameters
    ----------
    params_file : path
        Params YAML (``params/demo.yaml``).
    steps : str, optional
        ``--steps`` selection (see :func:`select_steps`).
    out : path, optional
        Run folder; default ``run.out_dir`` if set, else ``runs/<run.name>/`` under the
        current folder. Steps receive it as ``run.out_dir``.
    overrides : list of str
        ``block.key=value`` overrides (``-p``).
    kernel_name : str
        Jupyter kernel executing the notebooks.
    echo : callable
        ``print``-like function receiving the French progress lines.
    root : Path, optional
        Project root holding ``notebooks/`` (default: :func:`crmlab.params.project_root`).

    Raises
    ------
    ParamsError
        Invalid params or ``--steps``: nothing has run (exit code 2).
    """
    run_params = params.load(params_file, list(overrides or []))
    chain = chain_steps(root)
    if not chain:
        raise CrmlabError("Aucune étape disponible : les notebooks ou modules des étapes sont absents")
    selected = select_steps(steps, chain)
    out_dir = Path(out) if out else Path(run_params.run.get("out_dir") or Path("runs") / run_params.run["name"])
    missing = [f"{c} {params.STEP_TITLES[c]}" for c, *_ in params.STEPS if c not in {s.code for s in chain}]
    return run_chain(run_params, chain, out_dir, selected=selected, kernel_name=kernel_name, echo=echo,
                     missing=missing)


def run_chain(
    run_params: params.RunParams,
    steps: Sequence[Step],
    out_dir: str | Path,
    *,
    selected: Sequence[Step] | None = None,
    kernel_name: str = "crmlab",
    echo: Echo = print,
    missing: Sequence[str] = (),
    run_id: str | None = None,
) -> RunResult:
    """Run ``selected`` steps (default: all ``steps``) in order and write the run folder.

    Parameters
    ----------
    run_params : RunParams
        Validated parameters; each step receives ``run_params.for_step(code)`` with the
        run's ``run_id``.
    steps : sequence of Step
        The chain, in order (steps not selected are listed as ``skipped``).
    out_dir : path
        Run folder (created).
    selected : sequence of Step, optional
        Steps to execute.
    missing : sequence of str
        Steps not built yet, named in index.html.
    run_id : str, optional
        Identifier passed to every step; default ``run.run_id`` or a new one.

    Returns
    -------
    RunResult
        Status, exit code (0, 1 or 2) and step results; ``index.html`` and ``run.json``
        are written even when a step fails.
    """
    started_at = dt.datetime.now()
    t_run = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    (out_dir / "html").mkdir(parents=True, exist_ok=True)
    selected_codes = [s.code for s in (selected if selected is not None else steps)]
    run_block = dict(run_params.run)
    run_id = run_id or run_block.get("run_id") or params.new_run_id(run_block.get("name", "run"))
    run_block["run_id"] = run_id
    if "out_dir" in params.RUN_PARAMS:  # steps write their exports into the run folder
        run_block["out_dir"] = str(out_dir)
    rp = params.RunParams(file=run_params.file, run=run_block, steps=run_params.steps, raw=run_params.raw)

    results = {s.code: StepResult(s.code, s.name, s.title, status="not_run" if s.code in selected_codes else "skipped")
               for s in steps}
    todo = [s for s in steps if s.code in selected_codes]
    for s in todo:  # no stale output of a previous run for the steps of this one
        for old in (out_dir / f"{s.stem}.ipynb", out_dir / "html" / f"{s.stem}.html"):
            old.unlink(missing_ok=True)
    exit_code = 0
    for step in todo:
        echo(f"[{step.code}/{steps[-1].code}] {step.title} … ", end="", flush=True)
        res = results[step.code]
        reason = _not_applicable(step, rp)
        if reason:
            res.status, res.error, res.seconds = "not_applicable", reason, 0.0
            echo(f"sans objet : {reason}")
            continue
        _run_step(step, rp, out_dir, res, kernel_name)
        echo(f"{'✓' if res.status == 'ok' else '✗'} {fr_number(res.seconds, 1)} s")
        if res.status != "ok":
            exit_code = 2 if res.error_kind == "input" else 1
            echo(f"Erreur à l'étape {step.code} ({step.title}) : {res.error}", file=sys.stderr)
            res.restored = _restore_base(rp)
            if res.restored:
                echo(f"La base a été remise dans son état d'avant l'étape {step.code}.", file=sys.stderr)
            break
    status = "ok" if exit_code == 0 else "failed"
    produced = [s for s in steps if results[s.code].html]
    for s in produced:  # navigation links only to pages that exist
        page = out_dir / results[s.code].html
        page.write_text(report.replace_nav(page.read_text(encoding="utf-8"), _nav(s, produced)), encoding="utf-8")
    _attach_kpis(rp, steps, results)
    seconds = time.perf_counter() - t_run
    info = {
        "name": rp.run.get("name", ""),
        "run_id": run_id,
        "as_of": rp.run.get("as_of") or _kpi_as_of(rp),
        "started_at": started_at,
        "seconds": seconds,
        "params_file": str(Path(rp.file).resolve()) if rp.file else None,
        "status": status,
        "exit_code": exit_code,
        "missing": list(missing),
        "version": __version__,
        "error": None,
        "steps": [],
    }
    failed = next((r for r in results.values() if r.status == "failed"), None)
    if failed:
        info["error"] = {"code": failed.code, "title": failed.title, "kind": failed.error_kind, "message": failed.error}
    info["steps"] = [asdict(results[s.code]) for s in steps]
    index = out_dir / "index.html"
    index.write_text(report.index_html(info), encoding="utf-8")
    run_json = out_dir / "run.json"
    run_json.write_text(json.dumps(_run_record(rp, info, out_dir), ensure_ascii=False, indent=2, default=str),
                        encoding="utf-8")
    return RunResult(info["name"], run_id, out_dir, status, exit_code, [results[s.code] for s in steps],
                     seconds, index, run_json)


#: a kernel using no CPU for this long while papermill waits on one of its cells: last
#: resort if a message is lost anyway (:func:`slice_socket_waits` removes the known cause);
#: every cell of the notebooks computes, none waits
STALL_SECONDS = 90.0


class StallWatch:
    """Kill a Jupyter kernel started by this process that sits idle while a cell should run.

    Use as a context manager around ``papermill.execute_notebook``: kernels already running
    when it starts are ignored; a kernel whose CPU time does not grow for ``stall_s``
    seconds is killed (papermill then raises ``DeadKernelError``) and ``stalled`` is set.
    """

    def __init__(self, stall_s: float = STALL_SECONDS, poll_s: float = 2.0, marker: str = "ipykernel_launcher") -> None:
        import threading

        self.stall_s, self.poll_s, self.marker = stall_s, poll_s, marker
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._ignored: set[int] = set()

    def _kernels(self) -> list:
        import psutil

        out = []
        for c in psutil.Process().children(recursive=True):
            try:
                if (c.pid not in self._ignored and c.status() != psutil.STATUS_ZOMBIE
                        and self.marker in " ".join(c.cmdline())):
                    out.append(c)
            except psutil.Error:
                continue
        return out

    def _watch(self) -> None:
        import psutil

        seen: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, when it last grew)
        while not self._stop.wait(self.poll_s):
            for k in self._kernels():
                try:
                    t = sum(k.cpu_times()[:2])
                except psutil.Error:
                    continue
                now = time.monotonic()
                cpu, since = seen.get(k.pid, (-1.0, now))
                if t > cpu + 0.01:
                    seen[k.pid] = (t, now)
                elif now - since > self.stall_s:
                    self.stalled = True
                    with contextlib.suppress(psutil.Error):
                        k.kill()
                    return

    def __enter__(self) -> StallWatch:
        self._ignored = {k.pid for k in self._kernels()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


#: longest single wait of a notebook client on a kernel socket (see :func:`slice_socket_waits`)
WAIT_SLICE_SECONDS = 1.0


def slice_socket_waits() -> None:
    """Make the notebook client's waits on kernel messages end every second and look again.

    nbclient waits for a cell's reply with one ``poll`` as long as the cell timeout.
    pyzmq's asyncio poll only looks at the socket again when its file descriptor
    signals, and that edge can be missed (nbclient#312: a widget cell, the kernel has
    answered and sits idle, the client waits forever – seen here in step 02 at scale
    and in its notebook test: the kernel answered a second client at once and had
    nothing queued). A poll that ends reads the socket's real state, so cutting every
    wait into slices of :data:`WAIT_SLICE_SECONDS` turns the hang into a delay of at
    most one slice. Idempotent; patches ``AsyncZMQSocketChannel.get_msg``.
    """
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    original = AsyncZMQSocketChannel.get_msg
    if getattr(original, "_crmlab_sliced", False):
        return

    async def get_msg(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_SLICE_SECONDS if deadline is None else max(0.0, min(WAIT_SLICE_SECONDS, deadline - time.monotonic()))
            try:
                return await original(self, timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_msg._crmlab_sliced = True
    get_msg.__doc__ = original.__doc__
    AsyncZMQSocketChannel.get_msg = get_msg


#: Environment of the step kernels (each kept when already set), read by glibc's allocator
#: when the kernel starts. ``MALLOC_MMAP_THRESHOLD_``: by default glibc raises its threshold
#: for giving a large block its own mapping up to 32 MB as soon as one is freed; later frames
#: then land in the shared heap, where a few live rows keep the memory of released frames
#: from going back to the system. ``MALLOC_TRIM_THRESHOLD_``: with a fixed mmap threshold
#: glibc would give the heap's top back at every 128 KiB free, and take it again. Step 05 at
#: ten million purchases (its cells in one process, ``MPLBACKEND=agg``): peak 3 781-3 797 MiB
#: by default, 3 452-3 487 MiB with the first setting alone (feed 10-15 % slower), 3 445 MiB
#: with both (feed as fast as by default).
KERNEL_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "67108864"}


def _execute(pm, step: Step, rp: params.RunParams, out_nb: Path, kernel_name: str, marks: dict) -> None:
    slice_socket_waits()
    # the kernel inherits this process's environment when it starts; set only meanwhile
    added = {k: v for k, v in KERNEL_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        pm.execute_notebook(
            str(step.notebook),
            str(out_nb),
            parameters=rp.for_step(step.code),
            cwd=str(step.notebook.parent),
            kernel_name=kernel_name,
            start_timeout=180,  # a kernel that never answers fails the step instead of hanging
            execution_timeout=3600,  # per cell
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            on_notebook_start=lambda **_: marks.setdefault("kernel_ready", time.perf_counter()),
            extra_arguments=["--IPKernelApp.log_level=CRITICAL", "--HistoryManager.enabled=False"],  # no kernel start-up chatter
        )
    finally:
        for key in added:
            os.environ.pop(key, None)


def _run_step(step: Step, rp: params.RunParams, out_dir: Path, res: StepResult, kernel_name: str) -> None:
    """Execute one notebook and render its report; fill ``res`` (never raises)."""
    import papermill as pm

    out_nb = out_dir / f"{step.stem}.ipynb"
    page = out_dir / "html" / f"{step.stem}.html"
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        try:
            for attempt in (1, 2):
                watch = StallWatch()
                try:
                    with _kernel_env(), watch:
                        _execute(pm, step, rp, out_nb, kernel_name, marks)
                    break
                except Exception as exc:
                    # a kernel that died (e.g. the intermittent segmentation fault of DuckDB
                    # 1.5.6 in StrpTimeFormat::Parse, seen once in about ten loads) gets the
                    # same single retry as a stalled one
                    died = type(exc).__name__ == "DeadKernelError"
                    if not (watch.stalled or died) or attempt == 2:
                        raise
                    # the step died with its kernel: the next open_step puts the base back first
                    res.retried = (f"noyau resté inactif {STALL_SECONDS:.0f} s pendant une cellule : "
                                   "étape relancée une fois") if watch.stalled else \
                        "noyau arrêté brutalement pendant une cellule : étape relancée une fois"
                    logging.getLogger("crmlab").warning("étape %s : %s", step.code, res.retried)
                    marks.clear()
                    t0 = time.perf_counter()
            res.status = "ok"
        except pm.PapermillExecutionError as exc:
            res.status = "failed"
            res.error_type = exc.ename
            res.error_kind, res.error = _classify(exc.ename, exc.evalue, exc.traceback, step)
        except KeyboardInterrupt:
            res.status, res.error_type, res.error_kind = "failed", "KeyboardInterrupt", "other"
            res.error = "exécution interrompue par l'utilisateur (Ctrl-C)"
        except Exception as exc:  # kernel died, kernel missing, unreadable notebook …
            res.status, res.error_type, res.error_kind = "failed", type(exc).__name__, "other"
            res.error = f"{type(exc).__name__} : {_one_line(str(exc))}"
            if type(exc).__name__ == "NoSuchKernel":
                res.error = (f"noyau Jupyter « {kernel_name} » introuvable ; installez-le avec "
                             f"« python -m ipykernel install --sys-prefix --name {kernel_name} » (make run le fait)")
        t_exec = time.perf_counter()
        if out_nb.exists():
            res.notebook = out_nb.name
            ready = marks.get("kernel_ready", t0)
            res.timings["kernel_start"] = round(ready - t0, 3)
            res.timings["execute"] = round(t_exec - ready, 3)
            t_html = time.perf_counter()
            title = f"Étape {step.code} – {step.title}"
            header = report.header_html(title, rp.run.get("name", ""), rp.run.get("as_of"),
                                        [report.Link("← Sommaire de l'exécution", "../index.html")],
                                        failed=res.error if res.status == "failed" else None)
            report.write_step_report(out_nb, page, header, f"{title} · {rp.run.get('name', '')}")
            res.html = f"html/{page.name}"
            res.timings["html"] = round(time.perf_counter() - t_html, 3)
    except Exception as exc:  # the report itself could not be written
        res.status, res.error_type, res.error_kind = "failed", type(exc).__name__, "other"
        res.error = f"rapport HTML non produit : {type(exc).__name__} : {_one_line(str(exc))}"
    res.seconds = time.perf_counter() - t0
    res.timings["total"] = round(res.seconds, 3)


def _restore_base(rp: params.RunParams) -> bool:
    """Put the base back in its state before a failed step (its kernel has stopped); True if done."""
    from crmlab import db

    database = rp.run.get("database")
    if not database or str(database) == ":memory:":
        return False
    try:
        return db.restore_unfinished(database, wait_s=30.0) is not None
    except CrmlabError as exc:  # still in use: the next open_step will do it
        logging.getLogger("crmlab").warning("base non remise en état : %s", exc)
        return False


def _not_applicable(step: Step, rp: params.RunParams) -> str | None:
    """French reason why a step has nothing to do with these params, else None.

    Asks the step module's ``not_applicable(block)``: e.g. step 04 without any inbound source.
    """
    module = _module(step.module)
    check = getattr(module, "not_applicable", None) if module else None
    return check(rp.steps.get(step.code, {})) if callable(check) else None


@contextlib.contextmanager
def _kernel_env():
    """Kernels show figures inline (``make test`` exports ``MPLBACKEND=agg``); papermill is quiet.

    Papermill warns about parameters its regex does not recognise in the ``parameters``
    cell (``as_of: str | None``); they are validated by :mod:`crmlab.params` already.
    """
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved


def _classify(ename: str, evalue: str, traceback: Sequence[str], step: Step) -> tuple[str, str]:
    """Kind (``input``, ``check``, ``other``) and French message of a notebook exception."""
    cls = getattr(errors, ename, None)
    if cls is None and step.module:
        try:
            cls = getattr(importlib.import_module(step.module), ename, None)
        except Exception:  # noqa: BLE001 - a broken module must not hide the step's error
            cls = None
    if isinstance(cls, type) and issubclass(cls, CrmlabError):
        kind = "input" if issubclass(cls, errors.InputError) else ("check" if issubclass(cls, errors.CheckError) else "other")
        return kind, _one_line(evalue)
    message = next((ln for ln in _strip_ansi(evalue or "").splitlines() if ln.strip()), "")
    if not message:
        lines = [ln for ln in _strip_ansi("\n".join(traceback or [])).splitlines() if ln.strip()]
        message = lines[-1] if lines else ""
    return "other", _one_line(f"{ename}: {message}" if message else ename)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _one_line(text: str) -> str:
    return " ".join(_strip_ansi(text).split())


def _nav(step: Step, produced: Sequence[Step]) -> list[report.Link]:
    links = [report.Link("← Sommaire de l'exécution", "../index.html")]
    i = [s.code for s in produced].index(step.code)
    if i > 0:
        p = produced[i - 1]
        links.append(report.Link(f"‹ Étape {p.code} – {p.title}", f"{p.stem}.html"))
    if i + 1 < len(produced):
        n = produced[i + 1]
        links.append(report.Link(f"Étape {n.code} – {n.title} ›", f"{n.stem}.html"))
    return links


# --------------------------------------------------------------------------- KPIs and records


def _query_kpis(database: str, sql: str, args: list):
    """Run a read-only query on the run's database; ``None`` if it cannot be read."""
    import duckdb

    if not database or not Path(database).exists():
        return None
    try:
        con = duckdb.connect(database, read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute(sql, args).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()


def _attach_kpis(rp: params.RunParams, steps: Sequence[Step], results: dict[str, StepResult]) -> None:
    """Fill each successful step's headline KPIs from the ``kpis`` table of this run.

    Headline KPIs are the step module's ``HEADLINE_KPIS`` (list of KPI names) when it
    declares one, otherwise the first :data:`N_HEADLINE` KPIs the step wrote without a
    dimension (``dimension = ''``). Labels come from the module's ``KPI_LABELS``.
    """
    rows = _query_kpis(
        rp.run.get("database"),
        "SELECT step, kpi, value, unit FROM kpis WHERE run_id = ? AND coalesce(dimension, '') = '' ORDER BY rowid",
        [rp.run["run_id"]],
    )
    if not rows:
        return
    currency = rp.run.get("currency", "EUR")
    for step in steps:
        res = results[step.code]
        if res.status != "ok":
            continue
        mine = [r for r in rows if r[0] in (step.code, step.name, step.code.lstrip("0"))]
        module = _module(step.module)
        wanted = list(getattr(module, "HEADLINE_KPIS", None) or [])
        labels = getattr(module, "KPI_LABELS", None) or {}
        if wanted:
            by_name = {r[1]: r for r in mine}
            mine = [by_name[k] for k in wanted if k in by_name]
        res.kpis = [(report.kpi_label(r[1], labels), report.format_kpi(r[2], r[3], currency)) for r in mine[:N_HEADLINE if not wanted else len(wanted)]]


def _kpi_as_of(rp: params.RunParams) -> str | None:
    rows = _query_kpis(rp.run.get("database"), "SELECT max(as_of) FROM kpis WHERE run_id = ?", [rp.run["run_id"]])
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _module(name: str | None):
    if not name:
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - headline KPIs are optional
        return None


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages of :data:`VERSIONED`."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _run_record(rp: params.RunParams, info: dict, out_dir: Path) -> dict:
    """Content of run.json."""
    names = {c: n for c, n, *_ in params.STEPS}
    return {
        "name": info["name"],
        "run_id": info["run_id"],
        "status": info["status"],
        "exit_code": info["exit_code"],
        "started_at": info["started_at"].isoformat(timespec="seconds"),
        "seconds": round(info["seconds"], 3),
        "as_of": info["as_of"],
        "params_file": info["params_file"],
        "out_dir": str(out_dir),
        "error": info["error"],
        "params": {"run": rp.run, **{names.get(code, code): block for code, block in rp.steps.items()}},
        "versions": versions(),
        "steps": [
            {k: v for k, v in s.items() if k != "kpis"} | {"kpis": [list(k) for k in s["kpis"]]}
            for s in info["steps"]
        ],
    }

