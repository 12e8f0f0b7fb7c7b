"""Contact history: every change of a contact field, a record rebuilt as of any date, roll-back.

Each change of a contact field (``email``, ``phone``, ``address`` …) or of a consent
(field ``consent_<channel>``, values ``'true'``/``'false'``) is one row of
``contact_history``: ``customer_id, field, old_value, new_value, channel, source,
changed_at, run_id, seq, item``. ``seq`` numbers the changes in the order they were
applied (a roll-back is itself a change, so nothing is ever erased); ``item`` says what
brought the change (an interaction, a source record).

:func:`apply_changes` writes the changes *and* applies them to ``customers`` /
``consents``; :func:`record_as_of` rebuilds what the base held for a customer at any
date; :func:`rollback` brings customers back to that state, as new history rows.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from crmlab.db import now, register_frame, require_columns, to_frame

#: Contact fields of ``customers`` traced in the history (text columns, plus birth_date).
CONTACT_FIELDS = ["first_name", "last_name", "email", "phone", "address", "postal_code", "city", "country",
                  "birth_date", "gender"]
CONSENT_PREFIX = "consent_"

CHANGE_COLUMNS = ["customer_id", "field", "old_value", "new_value", "channel", "source", "changed_at", "item"]


def is_consent(field: str) -> bool:
    """Whether a history field is a consent (``consent_<channel>``)."""
    return str(field).startswith(CONSENT_PREFIX) and len(str(field)) > len(CONSENT_PREFIX)


def current_consents(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Return the current consent per customer and channel: the most recent row, an opt-out winning ties.

    Returns
    -------
    DataFrame
        ``customer_id, channel, opted_in, updated_at, source`` (one row per pair).
    """
    return to_frame(con.sql(CURRENT_CONSENTS_SQL + " ORDER BY customer_id, channel"))


def current_consents_sql(table: str = "consents", where: str | None = None) -> str:
    """Build the SQL of the current consent state (one row per customer_id, channel) of ``table``.

    ``where``: an extra condition on the consent rows (e.g. some customers only).
    Columns ``customer_id, channel, opted_in, updated_at, source``.
    """
    extra = f"({where}) AND " if where else ""
    return f"""
    SELECT customer_id, channel,
           arg_max(opted_in, (coalesce(updated_at, TIMESTAMP '1900-01-01'), NOT opted_in)) AS opted_in,
           max(updated_at) AS updated_at,
           -- source as the last tie-break: two sources stating the same consent at the same
           -- time gave one or the other from run to run (the « rempli par canal » KPI moved)
           arg_max(source, (coalesce(updated_at, TIMESTAMP '1900-01-01'), NOT opted_in, source)) AS source
    FROM {table} WHERE {extra}customer_id IS NOT NULL AND channel IS NOT NULL AND opted_in IS NOT NULL
    GROUP BY customer_id, channel
"""


#: SQL of the current consent state (one row per customer_id, channel).
CURRENT_CONSENTS_SQL = current_consents_sql()


def _next_seq(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT coalesce(max(seq), 0) FROM contact_history").fetchall()[0][0])


def apply_changes(con: duckdb.DuckDBPyConnection, changes: pd.DataFrame, *, run_id: str,
                  consent_source_key: bool = False) -> int:
    """Write changes to ``contact_history`` and apply them to ``customers`` and ``consents``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection inside the step's transaction.
    changes : DataFrame
        ``customer_id, field, old_value, new_value, channel, source, changed_at, item``,
        at most one row per (customer_id, field); ``field`` is one of
        :data:`CONTACT_FIELDS` or ``consent_<channel>`` (values ``'true'``/``'false'``).
        Optional ``effective_at``: the ``updated_at`` of the consent row written
        (default ``changed_at``), so that an opt-out applied at once is the current state
        even when it is dated before a later opt-in.
    run_id : str
        Stored with each history row.

    Returns
    -------
    int
        Number of changes written. ``seq`` continues the existing numbering in the order
        ``changed_at, customer_id, field``; ``customers.updated_at`` becomes the latest of
        its value and the changes' ``changed_at``.
    """
    require_columns(changes, CHANGE_COLUMNS, "apply_changes")
    if changes.empty:
        return 0
    unknown = sorted({f for f in changes["field"] if f not in CONTACT_FIELDS and not is_consent(f)})
    if unknown:
        raise ValueError(f"apply_changes: unknown fields {unknown}")
    dup = changes.duplicated(["customer_id", "field"])
    if dup.any():
        raise ValueError("apply_changes: more than one change per (customer_id, field)")
    frame = changes.copy()
    if "effective_at" not in frame:
        frame["effective_at"] = frame["changed_at"]
    for c in ("old_value", "new_value", "channel", "source", "item"):
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    frame["changed_at"] = pd.to_datetime(frame["changed_at"])
    frame["effective_at"] = pd.to_datetime(frame["effective_at"]).fillna(frame["changed_at"])
    base = _next_seq(con)
    register_frame(con, "_hist_in", frame)
    try:
        con.execute("""
            INSERT INTO contact_history (customer_id, field, old_value, new_value, channel, source, changed_at,
                                         run_id, seq, item)
            SELECT customer_id, field, CAST(old_value AS VARCHAR), CAST(new_value AS VARCHAR), channel, source,
                   CAST(changed_at AS TIMESTAMP), ?, ? + row_number() OVER (ORDER BY changed_at, customer_id, field),
                   item
            FROM _hist_in
        """, [run_id, base])
        # one wide row per changed customer, applied by rowid in one UPDATE (an UPDATE
        # joined on the ids per field took 1 to 2 s each at scale 185)
        flags = ", ".join(f"bool_or(c.field = '{f}') AS has_{i}, any_value(c.new_value) FILTER (WHERE c.field = '{f}') AS v_{i}"
                          for i, f in enumerate(CONTACT_FIELDS))
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _hist_wide AS
            SELECT cu.rowid AS rid, {flags}, max(CAST(c.changed_at AS TIMESTAMP)) AS ts
            FROM customers cu JOIN _hist_in c ON c.customer_id = cu.customer_id
            GROUP BY cu.rowid
        """)
        sets = ", ".join(
            f"{f} = CASE WHEN w.has_{i} THEN "
            f"{'TRY_CAST(w.v_' + str(i) + ' AS DATE)' if f == 'birth_date' else 'CAST(w.v_' + str(i) + ' AS VARCHAR)'} "
            f"ELSE customers.{f} END" for i, f in enumerate(CONTACT_FIELDS))
        con.execute(f"""
            UPDATE customers SET {sets}, updated_at = greatest(coalesce(customers.updated_at, w.ts), w.ts)
            FROM _hist_wide w WHERE customers.rowid = w.rid
        """)
        con.execute("DROP TABLE _hist_wide")
        con.execute(f"""
            INSERT INTO consents (customer_id, channel, opted_in, updated_at, source, source_key, sha256)
            SELECT customer_id, substr(field, {len(CONSENT_PREFIX) + 1}),
                   CAST(new_value AS BOOLEAN), CAST(effective_at AS TIMESTAMP), source,
                   {"item" if consent_source_key else "NULL"}, NULL
            FROM _hist_in WHERE field LIKE '{CONSENT_PREFIX}%' AND new_value IS NOT NULL
        """)
    finally:
        con.unregister("_hist_in")
    return len(frame)


def history(con: duckdb.DuckDBPyConnection, customer_id: str | None = None) -> pd.DataFrame:
    """Return the history rows (all, or one customer's), in the order they were applied."""
    if customer_id is None:
        return to_frame(con.sql("SELECT * FROM contact_history ORDER BY seq"))
    return to_frame(con.sql("SELECT * FROM contact_history WHERE customer_id = ? ORDER BY seq", params=[customer_id]))


def current_values(con: duckdb.DuckDBPyConnection, customer_ids: list[str] | None = None) -> pd.DataFrame:
    """Return the current contact fields and consents in long form.

    Returns
    -------
    DataFrame
        ``customer_id, field, value`` (text; consents ``'true'``/``'false'``), blanks
        omitted, sorted.
    """
    # the customers asked for are selected in each part (filtering the union afterwards
    # computed the consent state of every customer: 3 s per call at scale 185)
    only = "" if customer_ids is None else "customer_id IN (SELECT customer_id FROM _cv_ids)"
    parts = [f"SELECT customer_id, '{f}' AS field, CAST({f} AS VARCHAR) AS value FROM customers WHERE {f} IS NOT NULL"
             + (f" AND {only}" if only else "") for f in CONTACT_FIELDS]
    parts.append(f"SELECT customer_id, '{CONSENT_PREFIX}' || channel, CAST(opted_in AS VARCHAR) "
                 f"FROM ({current_consents_sql(where=only or None)})")
    sql = " UNION ALL ".join(parts)
    if customer_ids is None:
        return to_frame(con.sql(f"SELECT * FROM ({sql}) ORDER BY customer_id, field"))
    register_frame(con, "_cv_ids", pd.DataFrame({"customer_id": list(customer_ids)}, dtype=object))
    try:
        return to_frame(con.sql(f"SELECT * FROM ({sql}) ORDER BY customer_id, field"))
    finally:
        con.unregister("_cv_ids")


def record_as_of(con: duckdb.DuckDBPyConnection, as_of: str | dt.datetime | pd.Timestamp,
                 customer_ids: list[str] | None = None) -> pd.DataFrame:
    """Rebuild the contact fields and consents of customers as the base held them at ``as_of``.

    For each customer and field: the new value of the last change (in the order
    applied) dated on or before ``as_of``; when every change is later, the old value of
    the first one; with no change at all, the current value.

    Parameters
    ----------
    as_of : date or timestamp
        A date means the end of that day (changes of that day included).
    customer_ids : list of str, optional
        Restrict to these customers (default all).

    Returns
    -------
    DataFrame
        ``customer_id, field, value`` (text, blanks omitted), sorted.
    """
    ts = pd.Timestamp(as_of)
    if isinstance(as_of, str) and len(as_of) <= 10 or (isinstance(as_of, dt.date) and not isinstance(as_of, dt.datetime)):
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    cur = current_values(con, customer_ids)
    register_frame(con, "_rao_cur", cur)
    ids = pd.DataFrame({"customer_id": list(customer_ids) if customer_ids is not None else []}, dtype=object)
    register_frame(con, "_rao_ids", ids)
    restrict = "" if customer_ids is None else "WHERE customer_id IN (SELECT customer_id FROM _rao_ids)"
    try:
        out = to_frame(con.sql(f"""
            WITH h AS (SELECT * FROM contact_history {restrict}),
            hist AS (
                SELECT customer_id, field,
                       arg_max(new_value, seq) FILTER (WHERE changed_at <= ?) AS before_value,
                       count(*) FILTER (WHERE changed_at <= ?) AS n_before,
                       arg_min(old_value, seq) AS first_old
                FROM h GROUP BY customer_id, field
            ),
            keys AS (SELECT customer_id, field FROM _rao_cur UNION SELECT customer_id, field FROM hist)
            SELECT k.customer_id, k.field,
                   CASE WHEN hist.customer_id IS NULL THEN c.value
                        WHEN hist.n_before > 0 THEN hist.before_value
                        ELSE hist.first_old END AS value
            FROM keys k
            LEFT JOIN hist USING (customer_id, field)
            LEFT JOIN _rao_cur c USING (customer_id, field)
        """, params=[ts.to_pydatetime(), ts.to_pydatetime()]))
    finally:
        con.unregister("_rao_cur")
        con.unregister("_rao_ids")
    out = out[out["value"].notna()].sort_values(["customer_id", "field"], kind="stable").reset_index(drop=True)
    return out


def rollback(con: duckdb.DuckDBPyConnection, as_of: str | dt.datetime | pd.Timestamp, *, run_id: str,
             customer_ids: list[str] | None = None, changed_at: dt.datetime | None = None) -> pd.DataFrame:
    """Bring customers back to their contact data as of ``as_of``; every undo is a new history row.

    Parameters
    ----------
    as_of : date or timestamp
        State to return to (see :func:`record_as_of`).
    run_id : str
        Run of the roll-back (stored in the history).
    customer_ids : list of str, optional
        Customers to roll back (default all).
    changed_at : datetime, optional
        Time stamp of the roll-back rows (default now).

    Returns
    -------
    DataFrame
        The changes applied (:data:`CHANGE_COLUMNS`), channel ``retour arrière``.
    """
    target = record_as_of(con, as_of, customer_ids)
    cur = current_values(con, customer_ids)
    m = cur.rename(columns={"value": "old_value"}).merge(
        target.rename(columns={"value": "new_value"}), on=["customer_id", "field"], how="outer")
    diff = m[m["old_value"].astype(object).fillna("\0") != m["new_value"].astype(object).fillna("\0")].copy()
    # a consent cannot be "un-recorded": when it did not exist yet, leave it as it is
    diff = diff[~(diff["field"].map(is_consent) & diff["new_value"].isna())]
    when = changed_at or now()
    diff = diff.assign(channel="retour arrière", source="rollback", changed_at=when,
                       item=f"retour au {pd.Timestamp(as_of).date().isoformat()}")
    diff = diff[CHANGE_COLUMNS].sort_values(["customer_id", "field"], kind="stable").reset_index(drop=True)
    for c in ("old_value", "new_value"):
        diff[c] = diff[c].astype(object).where(diff[c].notna(), None)
    apply_changes(con, diff, run_id=run_id)
    return diff
