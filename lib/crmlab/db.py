"""The customer database: one DuckDB file, canonical tables, one transaction per step.

A step opens the database with :func:`open_step`, which starts a transaction; every
write of the step happens inside it, and :func:`commit_step` commits at the very end,
after the step checked its own output. If anything fails before (an exception in a
cell, a killed kernel), the transaction is rolled back and the database stays as it
was before the step.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pandas as pd

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

#: ``memory_limit: auto``: half the machine's memory, between 1 and 3 GiB. DuckDB's own
#: default (80 % of the RAM) lets one step take the whole laptop; past the cap, joins,
#: aggregations and sorts spill to ``<base>.tmp/`` next to the database instead.
AUTO_MEMORY_CAP_GIB = 3.0


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


def open_step(database: str | os.PathLike, step: str, run_id: str, as_of: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the database for a step and start the step's transaction.

    Parameters
    ----------
    database : path
        DuckDB file.
    step : str
        Step code such as ``"01"``.
    run_id : str
        Identifier of the run, stored with every KPI.
    as_of : str, optional
        Reference date of the run (``YYYY-MM-DD``).

    Returns
    -------
    duckdb.DuckDBPyConnection
        Connection inside an open transaction. Call :func:`commit_step` at the end.
    """
    con = connect(database)
    con.execute("BEGIN TRANSACTION")
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, NULL, 'running')",
        [run_id, str(Path(str(database)).stem), step, as_of, now()],
    )
    return con


def commit_step(con: duckdb.DuckDBPyConnection, step: str, run_id: str) -> None:
    """Mark the step done, commit its transaction and checkpoint the database.

    The checkpoint writes the step's changes from the write-ahead log into the database
    file now: otherwise the next step (another kernel) replays the log when it opens
    the base (39 s after ten million transactions loaded by step 01).
    """
    con.execute(
        "UPDATE runs SET finished_at = ?, status = 'ok' WHERE run_id = ? AND step = ?",
        [now(), run_id, step],
    )
    con.execute("COMMIT")
    con.execute("CHECKPOINT")


def now() -> dt.datetime:
    """Current local time without microseconds (stored timestamps)."""
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


def register_frame(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """Register a pandas frame as a view, its text columns typed VARCHAR even when empty or all null.

    DuckDB infers an object column's type from its values: an empty or all-null one
    would come out INTEGER and break string functions and unions downstream.
    """
    out = frame
    text = [c for c in frame.columns
            if frame[c].dtype == object and all(isinstance(v, str) for v in frame[c].dropna())]
    if text:
        out = frame.copy()
        for col in text:
            out[col] = out[col].astype("string")
    con.register(name, out)


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
        example = con.execute(f"SELECT * FROM ({sql}) LIMIT 3").df()
        raise CheckError(f"Contrôle échoué : {message} ({bad} ligne(s), ex. {example.to_dict('records')})")
