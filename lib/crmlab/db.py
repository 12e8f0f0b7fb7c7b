"""The customer database: one DuckDB file, canonical tables, all or nothing per step.

A step opens the database with :func:`open_step` and ends with :func:`commit_step`,
after it checked its own output. If anything fails in between (an exception in a cell,
a killed kernel, a stopped run), the database goes back to the state it had before the
step: the runner puts it back as soon as the step fails, and :func:`open_step` does it
anyway before the next step starts (a notebook run by hand, a crash).

How: :func:`open_step` keeps a copy of the database file (``<base>.avant-etape``) and a
marker (``<base>.etape-en-cours.json``: step, run, process) while the step runs, and
:func:`commit_step` removes them; :func:`restore_unfinished` puts the copy back. The step
itself writes in autocommit mode. One DuckDB transaction around the whole step was the
first design; at ten million transactions it cost twice the time of every query over a
table the step had created (DuckDB scans the uncommitted, transaction-local rows of a
table much more slowly – scoring 7.3 million candidate pairs: 48 s instead of 23 s) and
29 s to commit step 01. An in-memory base (``":memory:"``, tests) has no file to copy:
there the step still runs in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crmlab.errors import CheckError, InputError

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR, name VARCHAR, step VARCHAR, as_of DATE,
    started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR
);
CREATE TABLE IF NOT EXISTS ingestions (
    sha256 VARCHAR, source VARCHAR, kind VARCHAR, path VARCHAR,
    rows_read BIGINT, rows_kept BIGINT, rows_rejected BIGINT, rows_filtered BIGINT,
    loaded_at TIMESTAMP, run_id VARCHAR, step VARCHAR
);
CREATE TABLE IF NOT EXISTS rejects (
    sha256 VARCHAR, source VARCHAR, path VARCHAR, row_number BIGINT,
    reason VARCHAR, column_name VARCHAR, value VARCHAR, record VARCHAR,
    run_id VARCHAR, step VARCHAR
);
CREATE TABLE IF NOT EXISTS source_customers (
    source VARCHAR, source_key VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR,
    address VARCHAR, postal_code VARCHAR, city VARCHAR, country VARCHAR,
    birth_date DATE, gender VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP,
    sha256 VARCHAR, row_number BIGINT
);
CREATE TABLE IF NOT EXISTS customers (
    customer_id VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR,
    address VARCHAR, postal_code VARCHAR, city VARCHAR, country VARCHAR,
    birth_date DATE, gender VARCHAR,
    is_prospect BOOLEAN, n_records INTEGER, sources VARCHAR,
    created_at TIMESTAMP, updated_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS customer_links (
    source VARCHAR, source_key VARCHAR, customer_id VARCHAR,
    rule VARCHAR, score DOUBLE, linked_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id VARCHAR, order_id VARCHAR, customer_id VARCHAR,
    source VARCHAR, customer_source VARCHAR, customer_key VARCHAR,
    ts TIMESTAMP, amount DOUBLE, quantity DOUBLE,
    channel VARCHAR, payment_method VARCHAR, category VARCHAR, product VARCHAR,
    sha256 VARCHAR, row_number BIGINT
);
CREATE TABLE IF NOT EXISTS consents (
    customer_id VARCHAR, channel VARCHAR, opted_in BOOLEAN, updated_at TIMESTAMP,
    source VARCHAR, source_key VARCHAR, sha256 VARCHAR
);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id VARCHAR, name VARCHAR, channel VARCHAR, target VARCHAR, segment VARCHAR,
    offer VARCHAR, start_date DATE, end_date DATE, cost_per_contact DOUBLE,
    status VARCHAR, source VARCHAR, run_id VARCHAR, created_at TIMESTAMP, parent_id VARCHAR
);
CREATE TABLE IF NOT EXISTS campaign_contacts (
    campaign_id VARCHAR, customer_id VARCHAR, grp VARCHAR, contacted_at TIMESTAMP,
    source VARCHAR, customer_key VARCHAR
);
CREATE TABLE IF NOT EXISTS interactions (
    interaction_id VARCHAR, customer_id VARCHAR, source VARCHAR, source_key VARCHAR,
    channel VARCHAR, kind VARCHAR, ts TIMESTAMP, operation VARCHAR,
    score DOUBLE, score_type VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR,
    address VARCHAR, postal_code VARCHAR, city VARCHAR,
    consent_channel VARCHAR, consent_opted_in BOOLEAN,
    status VARCHAR, text VARCHAR, sha256 VARCHAR, row_number BIGINT
);
CREATE TABLE IF NOT EXISTS interaction_scores (
    interaction_id VARCHAR, score_type VARCHAR, score DOUBLE
);
CREATE TABLE IF NOT EXISTS contact_history (
    customer_id VARCHAR, field VARCHAR, old_value VARCHAR, new_value VARCHAR,
    channel VARCHAR, source VARCHAR, changed_at TIMESTAMP, run_id VARCHAR, seq BIGINT, item VARCHAR
);
CREATE TABLE IF NOT EXISTS feed_items (item VARCHAR, kind VARCHAR, source VARCHAR, customer_id VARCHAR, outcome VARCHAR, reason VARCHAR, run_id VARCHAR, applied_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS segments (
    as_of DATE, customer_id VARCHAR,
    recency_days DOUBLE, frequency DOUBLE, monetary DOUBLE,
    r_score INTEGER, f_score INTEGER, m_score INTEGER, rfm_segment VARCHAR,
    cluster VARCHAR, p_alive DOUBLE, clv DOUBLE, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS model_fits (
    run_id VARCHAR, as_of DATE, model VARCHAR, param VARCHAR, value DOUBLE
);
CREATE TABLE IF NOT EXISTS campaign_results (
    run_id VARCHAR, campaign_id VARCHAR, n_treated BIGINT, n_control BIGINT,
    rate_treated DOUBLE, rate_control DOUBLE, uplift DOUBLE, uplift_low DOUBLE,
    uplift_high DOUBLE, significant BOOLEAN, incremental_revenue DOUBLE,
    cost DOUBLE, incremental_roi DOUBLE
);
CREATE TABLE IF NOT EXISTS kpis (
    run_id VARCHAR, step VARCHAR, kpi VARCHAR, dimension VARCHAR,
    value DOUBLE, unit VARCHAR, as_of DATE, recorded_at TIMESTAMP
);
"""

TABLES = [
    line.split()[5]
    for line in SCHEMA_SQL.splitlines()
    if line.startswith("CREATE TABLE IF NOT EXISTS")
]


#: DuckDB memory cap applied by :func:`connect`; set from ``run.memory_limit`` by
#: :func:`configure` (``params.for_notebook`` calls it before a step opens the base).
_SETTINGS: dict[str, str] = {"memory_limit": "auto"}

#: ``memory_limit: auto``: half the machine's memory, between 1 and 1.5 GiB. DuckDB's own
#: default (80 % of the RAM) lets one step take the whole laptop; past the cap, joins,
#: aggregations and sorts spill to ``<base>.tmp/`` next to the database instead. At ten
#: million purchases (scale 185): step 01 used the same CPU time under 1.5, 2 and 3 GiB
#: (193, 201, 201 s) with a peak of 2.4, 3.0 and 3.9 GB; step 02's RFM query took 11.4 s
#: instead of 10.8 s under 1.5 GiB (peak 1.8 instead of 2.3 GB); step 05's process tree
#: peaked at 3 957 MiB instead of 4 282 MiB. 1.5 GiB leaves room for the notebook's own
#: frames within a 4 GB budget.
AUTO_MEMORY_CAP_GIB = 1.5


def configure(*, memory_limit: str | None = None) -> None:
    """Set the resource settings applied by :func:`connect` (``None`` keeps the current one)."""
    if memory_limit is not None:
        _SETTINGS["memory_limit"] = str(memory_limit)


def memory_limit_setting(value: str | None = None) -> str:
    """DuckDB ``memory_limit`` text for a ``run.memory_limit`` value (``auto`` or e.g. ``4GB``)."""
    value = (value or _SETTINGS["memory_limit"] or "auto").strip()
    if value.lower() != "auto":
        return value
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8.0
    return f"{max(1.0, min(total / 2, AUTO_MEMORY_CAP_GIB)):.1f}GiB"


_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_bytes(text: str) -> float | None:
    """Bytes of a DuckDB size text (``'1.5 GiB'``, ``'600MB'``); None when unreadable."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?I?B)\s*", str(text), flags=re.IGNORECASE)
    return float(m.group(1)) * _UNITS[m.group(2).upper()] if m else None


@contextmanager
def memory_cap(con: duckdb.DuckDBPyConnection, limit: str) -> Iterator[None]:
    """Run a block under a lower DuckDB memory cap, the connection's own cap restored after.

    For a large result fetched into pandas: the frame and DuckDB's working memory are both
    alive while it is built, and a sort spills to disk past the cap instead (step 05's
    3.1 M decisions sorted under 100 MiB took the same time as under 1.5 GiB). Only for
    queries whose operators spill: a hash aggregate over temp tables pinned in memory can
    fail under a cap, and an error inside the step's transaction ends the step. A cap
    already lower than ``limit`` is kept.
    """
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    lower = size_bytes(limit) or 0
    if not lower or (size_bytes(before) or float("inf")) <= lower:
        yield
        return
    con.execute(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        con.execute(f"SET memory_limit = '{before}'")


def connect(database: str | os.PathLike, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and create if needed) the customer database with its canonical tables.

    Parameters
    ----------
    database : path
        DuckDB file. Its folder is created if missing. ``":memory:"`` works for tests.
    read_only : bool
        Open without write access (reports, notebooks that only read).

    Notes
    -----
    The connection gets the memory cap of :func:`memory_limit_setting`.
    """
    path = str(database)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(path, read_only=read_only and Path(path).exists())
    except duckdb.IOException as exc:
        raise InputError(
            f"Impossible d'ouvrir la base clients : {exc}",
            file=path,
            hint="Vérifiez qu'aucun autre programme (JupyterLab, une autre exécution) ne l'utilise",
        ) from exc
    # no progress bar: in a kernel DuckDB draws it as ipywidgets outputs (over a hundred
    # per step on ten million transactions, kept in the executed notebooks)
    con.execute("SET enable_progress_bar = false")
    limit = memory_limit_setting()
    try:
        con.execute(f"SET memory_limit = '{limit}'")
    except duckdb.Error as exc:
        con.close()
        raise InputError(
            f"Limite de mémoire illisible : « {limit} »", column="memory_limit",
            hint="Indiquez run.memory_limit sous la forme « 4GB », « 2500MB » ou « auto »",
        ) from exc
    if not read_only:
        ensure_schema(con)
    return con


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the canonical tables that do not exist yet (idempotent)."""
    con.execute(SCHEMA_SQL)


#: Copy of the database taken when a step starts, removed when the step commits.
STEP_BACKUP_SUFFIX = ".avant-etape"
#: Marker of a step in progress (JSON: step, run_id, pid, process start, started_at, existed).
STEP_MARKER_SUFFIX = ".etape-en-cours.json"

#: Connections opened by :func:`open_step` in this process, by resolved database path.
_OPEN_STEPS: dict[str, duckdb.DuckDBPyConnection] = {}


def _step_files(database: str | os.PathLike) -> tuple[Path, Path, Path]:
    path = Path(database).resolve()
    return path, path.with_name(path.name + STEP_BACKUP_SUFFIX), path.with_name(path.name + STEP_MARKER_SUFFIX)


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - no such process (or psutil missing): unknown
        return None


def _owner_alive(marker: dict) -> bool:
    """Whether the process that started the step still runs (same pid and start time)."""
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    start = _process_start(pid)
    return start is not None and abs(start - float(marker.get("process_start") or 0)) < 1.0


def restore_unfinished(database: str | os.PathLike, *, wait_s: float = 0.0) -> dict | None:
    """Put the database back in its state before a step that started and did not commit.

    Parameters
    ----------
    database : path
        DuckDB file.
    wait_s : float
        Seconds to wait for the process of that step to end (the runner calls this right
        after a failed step, while its kernel shuts down).

    Returns
    -------
    dict or None
        The marker of the step undone (``step, run_id, started_at``…), or None when no
        step was left unfinished.

    Raises
    ------
    InputError
        The step is still running in another process, or this process still holds a
        connection to the base that :func:`open_step` did not open.
    """
    import time

    path, backup, marker_path = _step_files(database)
    if not marker_path.exists():
        if backup.exists():  # a commit stopped between removing the marker and the copy
            backup.unlink()
        return None
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = {}
    deadline = time.monotonic() + wait_s
    while _owner_alive(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _owner_alive(marker):
        raise InputError(
            f"La base est en cours d'utilisation par l'étape {marker.get('step', '?')} "
            f"(exécution {marker.get('run_id', '?')}, processus {marker.get('pid')})",
            file=str(path), hint="Attendez la fin de cette étape, ou arrêtez-la avant de relancer",
        )
    own = _OPEN_STEPS.pop(str(path), None)
    if own is not None:
        try:
            own.close()
        except duckdb.Error:
            pass
    if path.exists():
        try:  # an instance still open in this process would keep writing the old file
            duckdb.connect(str(path), read_only=True).close()
        except duckdb.Error as exc:
            if "different configuration" in str(exc) or "same database file" in str(exc):
                raise InputError(
                    "Une autre connexion de ce processus utilise encore la base : impossible de la remettre "
                    "dans son état d'avant l'étape inachevée", file=str(path),
                    hint="Fermez cette connexion (con.close()) ou redémarrez le noyau, puis relancez l'étape",
                ) from exc
    if marker.get("existed", True) and backup.exists():
        os.replace(backup, path)
    elif not marker.get("existed", True):
        path.unlink(missing_ok=True)
    Path(str(path) + ".wal").unlink(missing_ok=True)
    shutil.rmtree(str(path) + ".tmp", ignore_errors=True)  # DuckDB's spill folder
    marker_path.unlink(missing_ok=True)
    backup.unlink(missing_ok=True)
    return marker


def open_step(database: str | os.PathLike, step: str, run_id: str, as_of: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the database for a step, after putting it back if an earlier step did not finish.

    Parameters
    ----------
    database : path
        DuckDB file (``":memory:"``: the step runs in one transaction instead).
    step : str
        Step code such as ``"01"``.
    run_id : str
        Identifier of the run, stored with every KPI.
    as_of : str, optional
        Reference date of the run (``YYYY-MM-DD``).

    Returns
    -------
    duckdb.DuckDBPyConnection
        Connection of the step (autocommit; a copy of the base is kept until
        :func:`commit_step`). Opening the same base again in this process starts the step
        over: the earlier connection is closed and the base put back.
    """
    if str(database) == ":memory:":
        con = connect(database)
        con.execute("BEGIN TRANSACTION")
    else:
        path, backup, marker_path = _step_files(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        undone = restore_unfinished(path)
        if undone:
            print(f"L'étape {undone.get('step', '?')} (exécution {undone.get('run_id', '?')}) ne s'était pas "
                  "terminée : la base a été remise dans son état d'avant cette étape.")
        existed = path.exists()
        if existed:
            if Path(str(path) + ".wal").exists():  # fold committed changes into the file first
                connect(path).close()
            tmp = backup.with_name(backup.name + ".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, backup)
        marker = {"step": step, "run_id": run_id, "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                  "started_at": now().isoformat(), "existed": existed}
        tmp = marker_path.with_name(marker_path.name + ".tmp")
        tmp.write_text(json.dumps(marker), encoding="utf-8")
        os.replace(tmp, marker_path)
        con = connect(path)
        _OPEN_STEPS[str(path)] = con
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, NULL, 'running')",
        [run_id, str(Path(str(database)).stem), step, as_of, now()],
    )
    return con


def _database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    for path, open_con in _OPEN_STEPS.items():
        if open_con is con:
            return Path(path)
    return None


def commit_step(con: duckdb.DuckDBPyConnection, step: str, run_id: str) -> None:
    """Mark the step done, make its changes durable and drop the copy taken at its start.

    The checkpoint writes the step's changes from the write-ahead log into the database
    file now: otherwise the next step (another kernel) replays the log when it opens
    the base (39 s after ten million transactions loaded by step 01). Removing the step
    marker is the commit: a failure before it undoes the step.
    """
    con.execute(
        "UPDATE runs SET finished_at = ?, status = 'ok' WHERE run_id = ? AND step = ?",
        [now(), run_id, step],
    )
    path = _database_path(con)
    if path is None:  # an in-memory base, or a connection that began its own transaction
        try:
            con.execute("COMMIT")
        except duckdb.TransactionException:  # autocommit: nothing to commit
            pass
    con.execute("CHECKPOINT")
    if path is not None:
        _, backup, marker_path = _step_files(path)
        marker_path.unlink(missing_ok=True)
        backup.unlink(missing_ok=True)
        _OPEN_STEPS.pop(str(path), None)


def now() -> dt.datetime:
    """Return the current local time without microseconds (stored timestamps)."""
    return dt.datetime.now().replace(microsecond=0)


def write_kpis(
    con: duckdb.DuckDBPyConnection,
    kpis: pd.DataFrame,
    *,
    run_id: str,
    step: str,
    as_of: str | None,
) -> None:
    """Replace this run's KPIs of a step.

    Parameters
    ----------
    kpis : DataFrame
        Columns ``kpi`` (str), ``value`` (float), optional ``dimension`` (str, default
        ``""``) and ``unit`` (str, default ``""``).
    """
    require_columns(kpis, ["kpi", "value"], "kpis")
    frame = kpis.copy()
    if "dimension" not in frame:
        frame["dimension"] = ""
    if "unit" not in frame:
        frame["unit"] = ""
    frame = frame.assign(
        run_id=run_id, step=step, as_of=pd.to_datetime(as_of) if as_of else pd.NaT, recorded_at=now()
    )
    frame["dimension"] = frame["dimension"].fillna("").astype(str)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    frame = frame[["run_id", "step", "kpi", "dimension", "value", "unit", "as_of", "recorded_at"]]
    con.execute("DELETE FROM kpis WHERE run_id = ? AND step = ?", [run_id, step])
    register_frame(con, "_kpis_in", frame)
    try:
        con.execute("INSERT INTO kpis SELECT run_id, step, kpi, dimension, value, unit, CAST(as_of AS DATE), recorded_at FROM _kpis_in")
    finally:
        con.unregister("_kpis_in")


def update_by_rowid(con: duckdb.DuckDBPyConnection, table: str, column: str | list[str], rows_sql: str,
                    params: list | None = None) -> int:
    """Set ``table.column`` (or several columns) for the rows listed by ``rows_sql``; return the number of rows set.

    ``rows_sql`` selects ``rid`` (the ``rowid`` of a row of ``table``) and ``value`` (with
    several columns: one column of the same name per column set). The
    rows are found first, then updated by rowid in storage order. An ``UPDATE … FROM``
    joined on other keys updates the rows in the order of the join's output, scattered
    over the table, which DuckDB does slowly: 633 k campaign contacts took 20 s joined on
    their customer key, 0.7 s this way. For a table scanned in storage order by the join
    (the larger side), the plain ``UPDATE … FROM`` is faster (ten million purchases: 6.5 s,
    12 s this way).
    """
    columns = [column] if isinstance(column, str) else list(column)
    values = ["value"] if isinstance(column, str) else columns
    con.execute(f"CREATE OR REPLACE TEMP TABLE _upd_rows AS SELECT rid, {', '.join(values)} FROM ({rows_sql}) ORDER BY rid",
                params or [])
    try:
        sets = ", ".join(f"{c} = u.{v}" for c, v in zip(columns, values, strict=True))
        n = con.execute(f"UPDATE {table} SET {sets} FROM _upd_rows u WHERE {table}.rowid = u.rid").fetchall()[0][0]
    finally:
        con.execute("DROP TABLE IF EXISTS _upd_rows")
    return int(n)


# nullable pandas types of the integer and boolean columns that hold NULLs (as ``.df()`` gives them)
_NULLABLE = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
             pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
             pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}


# result types :func:`to_frame` fetches through Arrow (the others as ``.df()`` does)
_FLAT_TYPE = re.compile(r"VARCHAR|U?(BIG|SMALL|TINY|HUGE)?INT(EGER)?|BOOLEAN|DOUBLE|FLOAT|DECIMAL\(\d+,\s*\d+\)"
                        r"|DATE|TIMESTAMP(_NS|_MS|_S)?")


def to_frame(result: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    """Return the rows of a query as a pandas frame, typed as DuckDB's ``.df()`` types them.

    ``result`` is a relation, ``con.sql(query, params=...)``: on the result of
    ``con.execute`` DuckDB 2 copies the rows once more before handing them to Arrow
    (3.5 million rows of three text columns: 1.1 s and 1.1 GiB against 0.6 s and 0.8 GiB).
    Fetched through Arrow: ``.df()`` builds a Python object per text value and pandas
    turns them back into Arrow strings (4.2 s for the same rows). Types as ``.df()``:
    DECIMAL and HUGEINT as float64, DATE as ``datetime64[us]``, integers and booleans
    nullable (``Int64``, ``boolean``) only when the column holds a NULL. Results with
    other types (lists, structs, intervals…) or with twice the same column name go
    through ``.df()``.
    """
    desc = result.description or []
    names = [d[0] for d in desc]
    if len(set(names)) < len(names) or not all(_FLAT_TYPE.fullmatch(str(d[1])) for d in desc):
        return result.df()
    table = result.to_arrow_table()
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.float64()))
        elif pa.types.is_date(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.timestamp("us")))
    frame = table.to_pandas(types_mapper=_NULLABLE.get)
    for i, field in enumerate(table.schema):
        if field.type in _NULLABLE and table.column(i).null_count == 0:
            frame.isetitem(i, frame.iloc[:, i].to_numpy(dtype=_NULLABLE[field.type].numpy_dtype))
    return frame


def _text_columns(frame: pd.DataFrame) -> list:
    """Object columns of ``frame`` holding only texts and missing values (or nothing)."""
    return [c for c in frame.columns if frame[c].dtype == object
            and pd.api.types.infer_dtype(frame[c], skipna=True) in ("string", "empty")]


def arrow_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with its Python-object text columns as Arrow strings (``str``), other columns as they are.

    A few Python strings that outlive a large object frame (a selection of its rows) are
    scattered over the whole of its memory and keep it from being given back. At ten
    million purchases, with a batch of inbound contacts only, the 137 k changes step 05
    keeps (taken from 2.4 M candidate values held as Python objects) held 1.7 GiB of the
    kernel after the candidates were released. As Arrow strings they take one buffer per
    column.
    """
    text = _text_columns(frame)
    if not text:
        return frame
    out = frame.copy(deep=False)
    for col in text:
        out[col] = out[col].astype("str")
    return out


#: frames registered through Arrow from this size on (below, the copy costs little: 0.2 s for
#: 200 k rows of three text columns)
ARROW_MIN_ROWS = 200_000


def register_frame(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """Register a pandas frame as a view, its text columns typed VARCHAR even when empty or all null.

    DuckDB infers an object column's type from its values: an empty or all-null one
    would come out INTEGER and break string functions and unions downstream. The frame
    goes through Arrow: DuckDB reading pandas text columns directly takes each value out
    as a Python object (2.9 s for 3.5 million rows of three text columns, 0.6 s this way).
    A frame Arrow cannot type (an object column mixing numbers and texts) is registered as is,
    and so is a frame of fewer than :data:`ARROW_MIN_ROWS` rows: DuckDB plans joins on a pandas
    frame with its exact size but not on an Arrow table, and an empty decisions frame joined
    to two copies of 7 700 records was planned as their cross product (30 s instead of 0.01 s).
    """
    out = arrow_text(frame)
    if len(out) < ARROW_MIN_ROWS:
        con.register(name, out)
        return
    try:
        table = pa.Table.from_pandas(out, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        con.register(name, out)
        return
    con.register(name, table)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`CheckError` if ``frame`` lacks one of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CheckError(f"{what} : colonnes manquantes {missing} (présentes : {list(frame.columns)})")


def check(con: duckdb.DuckDBPyConnection, sql: str, message: str) -> None:
    """Run a check query that returns offending rows; raise :class:`CheckError` if any.

    Parameters
    ----------
    sql : str
        Query returning the rows that violate the rule (zero rows = check passed).
    message : str
        French description of the rule.
    """
    bad = con.execute(f"SELECT COUNT(*) FROM ({sql})").fetchall()[0][0]
    if bad:
        example = to_frame(con.sql(f"SELECT * FROM ({sql}) LIMIT 3"))
        raise CheckError(f"Contrôle échoué : {message} ({bad} ligne(s), ex. {example.to_dict('records')})")
