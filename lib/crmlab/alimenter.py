"""Step 05 – alimenter: take new data in, keep contact data up to date, measure the fill per channel.

:func:`feed` runs the whole feed inside the step's transaction (never commits):

1. :func:`restore_from_history` – values that a later rebuild of the single customer
   view (step 01) lost are restored from ``contact_history`` (the history is the memory
   of every update applied by this step).
2. :func:`load_batches` – the files of ``alimenter.sources`` (new transactions, customer
   files, consents…) through :func:`crmlab.sources.load_source`: a file already loaded
   is skipped (ledger ``ingestions``); a batch that breaks the schema is refused with a
   French message and nothing of it is applied (the step's transaction is rolled back).
3. :func:`link_new_records` – each new source record is attached to its customer (known
   key, same e-mail, same phone and last name) or becomes a new customer; purchases,
   consents and campaign contacts of the batch are attached.
4. Contact updates brought by the new records and by the inbound contacts of step 04
   (``interactions`` not applied yet) are checked (:mod:`crmlab.quality`) and decided by
   explicit rules (:func:`decide_fields`, :func:`decide_consents`): an invalid value is
   listed, never applied; the more trusted source wins (``source_priority``), then the
   newer value; a blank never erases a value; an opt-out always wins at once. Every
   change goes to ``contact_history`` (:func:`crmlab.history.apply_changes`).
5. Every fed item (source row, interaction) gets one row in ``feed_items`` with its
   outcome, so nothing is lost silently and nothing is applied twice.

The measures: fill rates before / after, the share of each field filled by each channel
(the « Alimenter » measure), invalid values, freshness of contact data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from crmlab import history, identity, normalize, quality
from crmlab.db import arrow_text, check, memory_cap, now, register_frame, to_frame, update_by_rowid
from crmlab.errors import InputError, ParamsError
from crmlab.params import Param
from crmlab.sources import resolve_source_paths, validate_sources

#: Contact fields updated by the feed (golden record columns).
UPDATE_FIELDS = ["first_name", "last_name", "email", "phone", "address", "postal_code", "city", "country"]
#: Fields of a new customer taken from its first record.
NEW_FIELDS = UPDATE_FIELDS + ["birth_date", "gender"]
#: Fields measured by the « Alimenter » indicator (plus one ``consent_<channel>`` per consent channel).
MEASURED_FIELDS = ["email", "phone", "address", "postal_code", "city"]
#: Contact fields an interaction can bring.
INTERACTION_FIELDS = ["first_name", "last_name", "email", "phone", "address", "postal_code", "city"]

FIELD_LABELS = {
    "first_name": "Prénom", "last_name": "Nom", "email": "E-mail", "phone": "Téléphone", "address": "Adresse",
    "postal_code": "Code postal", "city": "Ville", "country": "Pays", "birth_date": "Date de naissance",
    "gender": "Civilité",
}
DEFAULT_RANK = 100

OUTCOMES = {
    "applied": "appliqué", "confirmed": "confirmé (valeur identique)", "invalid": "invalide (non appliqué)",
    "older": "ignoré : valeur plus ancienne", "less_trusted": "ignoré : source moins fiable",
    "superseded": "ignoré : une autre valeur du lot l'emporte", "optout_wins": "ignoré : la désinscription l'emporte",
    "optout_newer": "ignoré : désinscription plus récente",
}


def field_label(f: str) -> str:
    """French label of a contact field or ``consent_<channel>``."""
    if history.is_consent(f):
        return f"Consentement {f[len(history.CONSENT_PREFIX):]}"
    return FIELD_LABELS.get(f, f)


# --------------------------------------------------------------------------- params


def _check_priority(value, key):
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamsError(f"« {key}.{k} » doit être un nombre (rang : 1 = source la plus fiable)",
                              hint="Par exemple source_priority: {magasin: 1, web: 2, appels: 3}")
    return {str(k): float(v) for k, v in value.items()}


def _check_fields(value, key):
    from crmlab.constituer import _check_fields as check_fields

    return check_fields(value, key)


PARAMS: dict[str, Param] = {
    "sources": Param("list", [], "nouveaux fichiers à intégrer (achats, fiches clients, consentements) : nom, type, chemin, colonnes",
                     check=validate_sources, paths_in=resolve_source_paths),
    "apply_interactions": Param("bool", True, "appliquer les coordonnées et consentements collectés à l'étape 04"),
    "source_priority": Param("dict", {}, "rang de fiabilité par source ou canal (1 = le plus fiable) ; absent = même rang, la valeur la plus récente l'emporte",
                             check=_check_priority),
    "keep_fields": Param("list", ["first_name", "last_name", "email", "phone", "address", "postal_code", "city", "birth_date"],
                         "champs clients conservés (minimisation, comme à l'étape 01)", check=_check_fields),
    "default_region": Param("str", "FR", "pays par défaut des numéros de téléphone et codes postaux (code ISO à 2 lettres)"),
    "freshness_months": Param("int", 24, "fraîcheur : coordonnées confirmées depuis moins de N mois", min=1, max=240),
    "max_unparsable_share": Param("float", 0.05, "part maximale de valeurs illisibles tolérée par colonne", min=0.0, max=1.0),
    "list_size": Param("int", 15, "nombre de lignes montrées dans les listes (valeurs invalides, clients à relancer)", min=1, max=1000),
}

#: DuckDB memory cap while the sorted decisions are fetched (:func:`crmlab.db.memory_cap`)
DECISIONS_FETCH_CAP = "600MiB"

HEADLINE_KPIS = ["valeurs mises à jour", "nouveaux clients", "fraîcheur des coordonnées", "valeurs invalides signalées"]
KPI_LABELS = {"fraîcheur des coordonnées": "Coordonnées à jour"}


# --------------------------------------------------------------------------- result


@dataclass
class FeedResult:
    """What one feed did.

    Attributes
    ----------
    files : DataFrame
        ``source, kind, file, status, rows_read, rows_kept, rows_rejected``.
    items : DataFrame
        The ``feed_items`` rows written now: ``item, kind, source, customer_id, outcome, reason``.
    decisions : DataFrame
        One row per candidate value: ``item, customer_id, field, value, channel, source,
        ts, outcome, reason`` (raw values: mask before display).
    changes : DataFrame
        Changes applied (``history.CHANGE_COLUMNS``).
    new_customers : int
        Customers created.
    links : DataFrame
        New source records: ``source, source_key, customer_id, rule``.
    restored : int
        Values restored from the history.
    pending_interactions : int
        Interactions with contact data not matched to a customer (left for later).
    before, after : DataFrame
        Fill rates (:func:`fill_rates`).
    """

    files: pd.DataFrame
    items: pd.DataFrame
    decisions: pd.DataFrame
    changes: pd.DataFrame
    new_customers: int
    links: pd.DataFrame
    restored: int = 0
    pending_interactions: int = 0
    before: pd.DataFrame = field(default_factory=pd.DataFrame)
    after: pd.DataFrame = field(default_factory=pd.DataFrame)


# --------------------------------------------------------------------------- measures


def consent_channels(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Consent channels present in ``consents`` (sorted)."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT channel FROM consents WHERE channel IS NOT NULL ORDER BY 1").fetchall()]


def fill_rates(con: duckdb.DuckDBPyConnection, fields: list[str] | None = None,
               channels: list[str] | None = None) -> pd.DataFrame:
    """Share of customers with each contact field filled, and with a known consent per channel.

    Returns
    -------
    DataFrame
        ``field, label, filled, customers, share`` (consents as ``consent_<channel>``).
    """
    fields = fields or MEASURED_FIELDS
    channels = consent_channels(con) if channels is None else channels
    total = con.execute("SELECT count(*) FROM customers").fetchall()[0][0]
    row = con.execute("SELECT " + ", ".join(f"count({f})" for f in fields) + " FROM customers").fetchall()[0]
    rows = list(zip(fields, row, strict=True))
    if channels:
        # one current consent per (customer, channel) with a known answer: count the pairs
        # (the current state itself is not needed, 5 to 8 s per call at scale)
        cons = dict(con.execute("SELECT channel, count(DISTINCT customer_id) FROM consents "
                                "WHERE customer_id IS NOT NULL AND channel IS NOT NULL AND opted_in IS NOT NULL "
                                "AND customer_id IN (SELECT customer_id FROM customers) GROUP BY channel").fetchall())
        rows += [(history.CONSENT_PREFIX + ch, cons.get(ch, 0)) for ch in channels]
    out = pd.DataFrame(rows, columns=["field", "filled"])
    out.insert(1, "label", out["field"].map(field_label))
    out["customers"] = total
    out["share"] = out["filled"] / total if total else 0.0
    return out


def provenance(
    con: duckdb.DuckDBPyConnection,
    fields: list[str] | None = None,
    *,
    customer_ids: list[str] | None = None,
    counts: bool = False,
    consents: bool = True,
) -> pd.DataFrame:
    """Channel that filled each customer's current value of each field.

    The channel of the last change in ``contact_history`` when there is one; otherwise
    the source system of a record of the customer holding that value (the step-01
    golden record), else the first of the customer's sources. Consents: the source of
    the current consent row, or the channel of its last change.

    Parameters
    ----------
    customer_ids : list of str, optional
        Only these customers (default: every customer).
    counts : bool
        Return the number of customers per field and channel instead of one row per
        value (computed in DuckDB: on a base of a million customers the per-value frame
        would hold ten million rows).
    consents : bool
        Include the consents (``consent_<channel>`` rows); :func:`current_field_meta`
        needs the contact fields only.

    Returns
    -------
    DataFrame
        ``customer_id, field, channel``, one row per filled value; with ``counts``:
        ``field, channel, customers``.
    """
    if customer_ids is not None:
        register_frame(con, "_prov_ids", pd.DataFrame({"customer_id": sorted(set(customer_ids))}, dtype=object))
    try:
        union = _provenance_sql(con, fields or MEASURED_FIELDS, subset=customer_ids is not None, consents=consents)
        if counts:
            return to_frame(con.sql(f"SELECT field, channel, count(*) AS customers FROM ({union}) GROUP BY 1, 2 ORDER BY 1, 2"))
        return to_frame(con.sql(union + " ORDER BY 1, 2"))
    finally:
        _provenance_drop(con)
        if customer_ids is not None:
            con.unregister("_prov_ids")


def _provenance_sql(con: duckdb.DuckDBPyConnection, fields: list[str], *, subset: bool, consents: bool) -> str:
    """Build the temp tables of :func:`provenance` and return the SQL of its rows.

    ``subset``: only the customers of the registered ``_prov_ids``. The rows are
    ``customer_id, field, channel``; drop the tables with :func:`_provenance_drop`.
    """
    match = {
        "email": "lower(trim(r.email)) = c.email",
        "phone": "right(regexp_replace(CAST(r.phone AS VARCHAR), '[^0-9]', '', 'g'), 9) = right(c.phone, 9)",
    }
    # only the customers asked for (step 05 asks for the ~10 % its batch touches)
    mine = " WHERE customer_id IN (SELECT customer_id FROM _prov_ids)" if subset else ""
    only = " AND c.customer_id IN (SELECT customer_id FROM _prov_ids)" if subset else ""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _prov_last AS
                   SELECT customer_id, field, arg_max(channel, seq) AS channel FROM contact_history{mine}
                   GROUP BY 1, 2""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _prov_rec AS
                   SELECT l.customer_id, s.source, {', '.join('s.' + f for f in fields)},
                          -epoch(coalesce(s.updated_at, s.created_at, TIMESTAMP '1900-01-01')) AS ord
                   FROM customer_links l JOIN source_customers s ON s.source = l.source AND s.source_key = l.source_key
                   {mine.replace('customer_id IN', 'l.customer_id IN')}""")
    # one pass over the records and one over the customers for every field (a pass per
    # field scanned the customers ten times): per customer and field, the first record
    # (by date, then source) holding the current value, and the channel of the last change
    conds = [match.get(f, f"lower(trim(CAST(r.{f} AS VARCHAR))) = lower(trim(CAST(c.{f} AS VARCHAR)))") for f in fields]
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _prov_m AS
                   SELECT r.customer_id,
                          {', '.join(f"arg_min(r.source, (r.ord, r.source)) FILTER (WHERE {cond}) AS m{i}" for i, cond in enumerate(conds))}
                   FROM _prov_rec r JOIN customers c USING (customer_id) GROUP BY r.customer_id""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _prov_w AS
                   SELECT c.customer_id, split_part(c.sources, ',', 1) AS first_source,
                          {', '.join(f"c.{f} IS NOT NULL AS v{i}" for i, f in enumerate(fields))},
                          {', '.join(f"m.m{i}" for i in range(len(fields)))},
                          {', '.join(f"h.h{i}" for i in range(len(fields)))}
                   FROM customers c
                   LEFT JOIN _prov_m m ON m.customer_id = c.customer_id
                   LEFT JOIN (SELECT customer_id,
                                     {', '.join(f"max(channel) FILTER (WHERE field = '{f}') AS h{i}" for i, f in enumerate(fields))}
                              FROM _prov_last GROUP BY customer_id) h ON h.customer_id = c.customer_id
                   WHERE ({' OR '.join(f"c.{f} IS NOT NULL" for f in fields)}){only}""")
    parts = [f"""SELECT customer_id, '{f}' AS field, coalesce(h{i}, m{i}, first_source, 'inconnu') AS channel
                 FROM _prov_w WHERE v{i}""" for i, f in enumerate(fields)]
    if consents:
        parts.append(f"""
            SELECT s.customer_id, '{history.CONSENT_PREFIX}' || s.channel, coalesce(h.channel, s.source, 'inconnu')
            FROM ({history.CURRENT_CONSENTS_SQL}) s
            LEFT JOIN _prov_last h ON h.customer_id = s.customer_id AND h.field = '{history.CONSENT_PREFIX}' || s.channel
            WHERE s.customer_id IN (SELECT customer_id FROM customers){only.replace("c.customer_id", "s.customer_id")}""")
    return " UNION ALL ".join(parts)


def _provenance_drop(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS _prov_last; DROP TABLE IF EXISTS _prov_rec; DROP TABLE IF EXISTS _prov_m; "
                "DROP TABLE IF EXISTS _prov_w")


def fill_by_channel(con: duckdb.DuckDBPyConnection, fields: list[str] | None = None) -> pd.DataFrame:
    """Compute the « Alimenter » measure: share of customers whose current value was filled by each channel.

    Returns
    -------
    DataFrame
        ``field, label, channel, customers, share`` (share of all customers, 0–1); per
        field the shares add up to its fill rate.
    """
    out = provenance(con, fields, counts=True)
    total = con.execute("SELECT count(*) FROM customers").fetchall()[0][0]
    out["customers"] = out["customers"].astype("int64")
    out.insert(1, "label", out["field"].map(field_label))
    out["share"] = out["customers"] / total if total else 0.0
    return out.sort_values(["field", "customers"], ascending=[True, False], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- step pieces


def restore_from_history(con: duckdb.DuckDBPyConnection) -> int:
    """Restore values that a rebuild of ``customers`` (step 01 run again) lost.

    For each customer and contact field, the last change of the history (in the order
    applied) is put back when it is more recent than the customer's ``updated_at`` and
    differs from the current value. No history row is written (nothing changes for the
    customer: the base only remembers it again).

    Returns
    -------
    int
        Values restored.
    """
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _restore AS
        SELECT h.customer_id, h.field, arg_max(h.new_value, h.seq) AS value, max(h.changed_at) AS ts
        FROM contact_history h GROUP BY 1, 2
    """)
    n = 0
    for f in history.CONTACT_FIELDS:
        cast = "TRY_CAST(r.value AS DATE)" if f == "birth_date" else "r.value"
        n += con.execute(f"""
            UPDATE customers SET {f} = {cast}
            FROM _restore r
            WHERE r.customer_id = customers.customer_id AND r.field = '{f}'
              AND r.ts > coalesce(customers.updated_at, TIMESTAMP '1900-01-01')
              AND CAST(customers.{f} AS VARCHAR) IS DISTINCT FROM r.value
        """).fetchall()[0][0]
    con.execute("""
        UPDATE customers SET updated_at = r.ts
        FROM (SELECT customer_id, max(ts) AS ts FROM _restore GROUP BY 1) r
        WHERE r.customer_id = customers.customer_id AND r.ts > coalesce(customers.updated_at, TIMESTAMP '1900-01-01')
    """)
    con.execute("DROP TABLE _restore")
    return int(n)


def load_batches(con: duckdb.DuckDBPyConnection, p: dict) -> list:
    """Load every source of ``p["sources"]`` (files already loaded are skipped).

    Returns
    -------
    list of crmlab.sources.SourceLoad

    Raises
    ------
    InputError
        « Lot refusé » when a file breaks the schema (missing column, unreadable values
        beyond the tolerated share, duplicate ids…): the message says what to fix; the
        caller must not commit (nothing of the batch is then applied).
    """
    from crmlab.sources import load_source

    loads = []
    for source in p.get("sources") or []:
        source = {"max_unparsable_share": p.get("max_unparsable_share", 0.05), **source}
        try:
            loads.append(load_source(con, source, run_id=p["run_id"], step="05"))
        except InputError as exc:
            raise InputError(
                f"Lot refusé, rien n'a été appliqué – source « {source['name']} » : {exc.message}",
                file=exc.file, column=exc.column, row=exc.row,
                hint=exc.hint or "Corrigez le fichier (ou la correspondance des colonnes) puis relancez l'étape",
            ) from exc
    return loads


def files_table(loads: list) -> pd.DataFrame:
    """One row per file: ``source, kind, file, status, rows_read, rows_kept, rows_rejected``."""
    import os

    rows = [{"source": ld.name, "kind": ld.kind, "file": os.path.basename(f.path),
             "status": "déjà intégré" if f.skipped else "intégré",
             "rows_read": f.rows_read, "rows_kept": f.rows_kept, "rows_rejected": f.rows_rejected}
            for ld in loads for f in ld.files]
    return pd.DataFrame(rows, columns=["source", "kind", "file", "status", "rows_read", "rows_kept", "rows_rejected"])


def _staged(con: duckdb.DuckDBPyConnection, loads: list, kind: str) -> pd.DataFrame:
    frames = [to_frame(con.sql(f"SELECT * FROM {ld.staged}")) for ld in loads if ld.kind == kind]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _item(source: str, sha: str, row: int) -> str:
    return f"{source}|{sha[:16]}|{row}"


def _items(frame: pd.DataFrame, source_col: str = "source") -> pd.Series:
    return pd.Series([_item(s, h, int(r)) for s, h, r in zip(frame[source_col], frame["sha256"], frame["row_number"], strict=True)],
                     index=frame.index, dtype=object)


def _norm_value(f: str, value: object, region: str, country: object = None) -> object:
    """Canonical form of a contact value as the golden record holds it (None when unusable)."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    text = str(value).strip()
    if not text:
        return None
    if f == "email":
        return normalize.email(text, provider_rules=False) or text.lower()
    if f == "phone":
        return normalize.phone(text, region) or text
    if f == "postal_code":
        return normalize.postal_code(text, country if isinstance(country, str) and country else region) or text
    if f == "country":
        return normalize.country(text, None) or text
    return text


def _per_distinct(frame: pd.DataFrame, func) -> np.ndarray:
    """``func`` applied once per distinct row of ``frame``, spread back to every row.

    ``func`` receives the distinct rows (a frame, 0-based index, first-appearance order)
    and returns one value per row. Contact values repeat a lot (the same e-mail in a
    record and in several inbound contacts): at 10 M transactions this turned two
    million Python calls into a few hundred thousand.
    """
    if frame.empty:
        return np.empty(0, dtype=object)
    # codes of the distinct rows by factorising column by column (a groupby and a
    # drop_duplicates over 3.5 M rows took 8 s per call at scale 185); every kind of null
    # is one value (code 0); factorize numbers the values in order of first appearance,
    # so code k is the k-th distinct row
    codes = np.zeros(len(frame), dtype=np.int64)
    for col in frame.columns:
        c, u = pd.factorize(frame[col], use_na_sentinel=True)
        codes, _ = pd.factorize(codes * (len(u) + 1) + (c + 1))
    # first row of each code: where the running maximum of the codes grows
    top = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.r_[True, top[1:] > top[:-1]])
    uniq = frame.iloc[first].reset_index(drop=True)
    uniq = uniq.astype(object).where(uniq.notna(), None)
    values = np.empty(len(uniq), dtype=object)
    values[:] = list(func(uniq))
    return values[codes]


def _norm_values(uniq: pd.DataFrame, region: str) -> list:
    """:func:`_norm_value` of distinct ``field, raw, country`` rows; plain phones vectorised."""
    out = [None] * len(uniq)
    ph = (uniq["field"] == "phone").to_numpy()
    fast = pd.Series(None, index=uniq.index, dtype=object)
    if ph.any():  # _norm_value reads phones in the default region, whatever the country
        fast[ph] = normalize.phone_fast_e164(uniq.loc[ph, "raw"].astype(object), None, region).to_numpy()
    for i, (f, v, c, e164) in enumerate(zip(uniq["field"], uniq["raw"], uniq["country"], fast, strict=True)):
        out[i] = e164 if isinstance(e164, str) else _norm_value(f, v, region, c)
    return out


def _cmp_value(f: str, value: object) -> object:
    """Comparison key: two values with the same key are the same information."""
    if value is None:
        return None
    if f in ("first_name", "last_name"):
        return normalize.name(value)
    if f == "address":
        return normalize.address(value)
    if f == "city":
        return normalize.city(value)
    return str(value).strip().lower()


def link_new_records(con: duckdb.DuckDBPyConnection, p: dict, records: pd.DataFrame, when=None) -> pd.DataFrame:
    """Attach new source records to customers; create the customers of unknown people.

    Parameters
    ----------
    records : DataFrame
        Staged customer rows of the batch (``source, source_key, email, phone, last_name,
        created_at, updated_at``…).

    Returns
    -------
    DataFrame
        ``source, source_key, customer_id, rule, new`` for every record not linked
        before (``rule``: ``email``, ``phone_name`` or ``unique``; ``new``: a customer
        was created). ``customer_links`` and ``customers`` (empty new customers) are
        written; their fields are filled by the update rules afterwards.
    """
    cols = ["source", "source_key", "customer_id", "rule", "new"]
    if records.empty:
        return pd.DataFrame(columns=cols)
    region = p.get("default_region", "FR")
    recs = records[["source", "source_key", "email", "phone", "last_name"]].drop_duplicates(["source", "source_key"]).copy()
    register_frame(con, "_ln_recs", recs[["source", "source_key"]])
    try:
        known = to_frame(con.sql("SELECT r.source, r.source_key FROM _ln_recs r JOIN customer_links l USING (source, source_key)"))
    finally:
        con.unregister("_ln_recs")
    known_keys = set(zip(known["source"], known["source_key"], strict=True))
    new = recs[[(s, k) not in known_keys for s, k in zip(recs["source"], recs["source_key"], strict=True)]].copy()
    if new.empty:
        return pd.DataFrame(columns=cols)
    new["email_n"] = [normalize.email(v, provider_rules=False) for v in new["email"]]
    new["phone_n"] = [normalize.phone(v, region) for v in new["phone"]]
    new["ln_n"] = [normalize.name(v) for v in new["last_name"]]
    register_frame(con, "_ln_new", new[["source", "source_key", "email_n", "phone_n", "ln_n"]].astype(object))
    try:
        cand = to_frame(con.sql("""
            SELECT n.source, n.source_key,
                   (SELECT min(c.customer_id) FROM customers c WHERE n.email_n IS NOT NULL AND c.email = n.email_n) AS by_email,
                   (SELECT min(c.customer_id) FROM customers c WHERE n.phone_n IS NOT NULL AND c.phone = n.phone_n
                        AND n.ln_n IS NOT NULL AND c.last_name IS NOT NULL
                        AND lower(strip_accents(c.last_name)) = n.ln_n) AS by_phone
            FROM _ln_new n
        """))
    finally:
        con.unregister("_ln_new")
    new = new.merge(cand, on=["source", "source_key"], how="left")
    # last names are normalised in Python: refine the phone match with the same rule
    new["customer_id"] = new["by_email"].where(new["by_email"].notna(), new["by_phone"])
    new["rule"] = np.where(new["by_email"].notna(), "email", np.where(new["by_phone"].notna(), "phone_name", "unique"))
    # unknown people: records of the same new person (same e-mail, or same phone + last name) share a customer
    unk = new["customer_id"].isna()
    group = [e if isinstance(e, str) else (f"{ph}|{ln}" if isinstance(ph, str) and isinstance(ln, str) else f"{s}|{k}")
             for e, ph, ln, s, k in zip(new["email_n"], new["phone_n"], new["ln_n"], new["source"], new["source_key"], strict=True)]
    new["group"] = group
    first = (new[unk].assign(sk=new["source"] + "|" + new["source_key"]).sort_values("sk", kind="stable")
             .groupby("group")["sk"].first())
    gid = {g: identity.customer_id(*sk.split("|", 1)) for g, sk in first.items()}
    new.loc[unk, "customer_id"] = new.loc[unk, "group"].map(gid)
    # size of each group over all new records (a count per record was quadratic in the unknown people)
    shared = (new.groupby("group", sort=False)["group"].transform("size") > 1).to_numpy()
    has_email = np.array([isinstance(e, str) for e in new["email_n"]], dtype=bool)
    rule = np.where(shared, np.where(has_email, "email", "phone_name"), "unique").astype(object)
    new.loc[unk, "rule"] = rule[unk.to_numpy()]
    new["new"] = unk
    out = new[cols].sort_values(["source", "source_key"], kind="stable").reset_index(drop=True)
    when = when or now()
    register_frame(con, "_ln_out", out.astype(object))
    try:
        con.execute("""INSERT INTO customer_links (source, source_key, customer_id, rule, score, linked_at)
                       SELECT source, source_key, customer_id, rule, NULL, ? FROM _ln_out""", [when])
        con.execute("""
            INSERT INTO customers (customer_id, is_prospect, n_records, sources, created_at, updated_at)
            SELECT o.customer_id, TRUE, 0, NULL, min(coalesce(s.created_at, s.updated_at)), NULL
            FROM _ln_out o LEFT JOIN source_customers s USING (source, source_key)
            WHERE o.new AND o.customer_id NOT IN (SELECT customer_id FROM customers)
            GROUP BY o.customer_id
        """)
    finally:
        con.unregister("_ln_out")
    return out


def attach_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Attach purchases, consents and campaign contacts still without customer; create key-only customers.

    Keys used by the batch but absent from every customer file become an empty source
    record and a new customer (as in step 01), so no purchase is left unattached.

    Returns
    -------
    DataFrame
        ``source, source_key, customer_id`` of the key-only customers created.
    """
    from crmlab.constituer import KEY_REFERENCES

    union = " UNION ".join(
        f"SELECT DISTINCT {s} AS source, {k} AS source_key FROM {t} WHERE customer_id IS NULL AND {k} IS NOT NULL"
        for t, s, k in KEY_REFERENCES)
    missing = to_frame(con.sql(f"SELECT u.*, {identity.customer_id_sql('u.source', 'u.source_key')} AS customer_id "
                                   f"FROM ({union}) u ANTI JOIN customer_links l USING (source, source_key) ORDER BY 1, 2"))
    if len(missing):
        register_frame(con, "_ak", missing)
        try:
            con.execute("""INSERT INTO source_customers (source, source_key)
                           SELECT m.source, m.source_key FROM _ak m
                           ANTI JOIN source_customers s USING (source, source_key)""")
            con.execute("INSERT INTO customer_links SELECT source, source_key, customer_id, 'unique', NULL, ? FROM _ak", [now()])
            con.execute("""INSERT INTO customers (customer_id, is_prospect, n_records, sources)
                           SELECT customer_id, TRUE, 1, source FROM _ak
                           WHERE customer_id NOT IN (SELECT customer_id FROM customers)""")
        finally:
            con.unregister("_ak")
    # the rows to attach are found first, then updated by rowid: an UPDATE joined on the
    # keys took 16 s on ten million transactions, by rowid 0.4 s
    for table, s, k in KEY_REFERENCES:
        update_by_rowid(con, table, "customer_id", f"""
            SELECT t.rowid AS rid, l.customer_id AS value FROM {table} t
            JOIN customer_links l ON l.source = t.{s} AND l.source_key = t.{k}
            WHERE t.customer_id IS NULL""")
    return missing


def _rank(priority: dict, source: object, channel: object) -> float:
    if isinstance(source, str) and source in priority:
        return float(priority[source])
    if isinstance(channel, str) and channel in priority:
        return float(priority[channel])
    return float(DEFAULT_RANK)


def current_field_meta(con: duckdb.DuckDBPyConnection, customer_ids: list[str], priority: dict,
                       pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the current value, date and trust rank of the contact fields of some customers.

    Date and source of a value: its last change in ``contact_history``, else the
    customer's ``updated_at`` and the source holding it (:func:`provenance`). With
    ``pairs`` (``customer_id, field``), only those fields of those customers (step 05 asks
    for the pairs its candidates touch: about half of the touched customers' filled
    fields at scale 185, the frame being the step's memory peak).

    Returns
    -------
    DataFrame
        ``customer_id, field, cur_value, cur_ts, cur_rank`` (one row per filled field).
    """
    # built in DuckDB (a frame per step and pandas merges took 35 s at scale 185); the
    # trust rank is computed in Python once per distinct (source, channel, provenance)
    ids = pd.DataFrame({"customer_id": pd.unique(pd.Series(list(customer_ids), dtype=object))}, dtype=object)
    register_frame(con, "_prov_ids", ids)
    wanted = "_prov_ids"
    if pairs is not None:
        # copied into DuckDB once (each field's filter scanning the pandas frame again took
        # several GB of memory at scale 185)
        register_frame(con, "_cfm_pairs_df", pairs[["customer_id", "field"]].astype(object))
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE _cfm_pairs AS SELECT DISTINCT customer_id, field FROM _cfm_pairs_df")
        finally:
            con.unregister("_cfm_pairs_df")
        wanted = "_cfm_pairs"
    try:
        parts = " UNION ALL ".join(
            f"SELECT customer_id, '{f}' AS field, CAST({f} AS VARCHAR) AS cur_value, updated_at FROM customers "
            f"WHERE {f} IS NOT NULL AND customer_id IN (SELECT customer_id FROM {wanted}"
            + (f" WHERE field = '{f}')" if pairs is not None else ")") for f in UPDATE_FIELDS)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cfm_cur AS
            WITH cur AS ({parts}),
            h AS (SELECT customer_id, field, max(changed_at) AS ts, arg_max(source, seq) AS source,
                         arg_max(channel, seq) AS channel
                  FROM contact_history WHERE customer_id IN (SELECT customer_id FROM _prov_ids) GROUP BY 1, 2)
            SELECT cur.customer_id, cur.field, cur.cur_value, coalesce(h.ts, cur.updated_at) AS cur_ts,
                   h.source AS h_source, h.channel AS h_channel
            FROM cur LEFT JOIN h USING (customer_id, field)
        """)
        need_prov = con.execute("SELECT count(*) FROM _cfm_cur WHERE h_source IS NULL").fetchall()[0][0] > 0
        prov = "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS field, NULL::VARCHAR AS channel WHERE false"
        if need_prov:
            prov = _provenance_sql(con, UPDATE_FIELDS, subset=True, consents=False)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _cfm_full AS
                        SELECT c.*, p.channel AS p_source FROM _cfm_cur c
                        LEFT JOIN ({prov}) p ON p.customer_id = c.customer_id AND p.field = c.field""")
        _provenance_drop(con)
        keys = to_frame(con.sql("SELECT DISTINCT h_source, h_channel, p_source FROM _cfm_full")).astype(object)
        keys = keys.where(keys.notna(), None)
        keys["cur_rank"] = np.array([
            _rank(priority, hs, hc) if isinstance(hs, str) or isinstance(hc, str) else _rank(priority, ps, None)
            for hs, hc, ps in zip(keys["h_source"], keys["h_channel"], keys["p_source"], strict=True)], dtype=float)
        register_frame(con, "_cfm_rank", keys)
        try:
            return to_frame(con.sql("""
                SELECT c.customer_id, c.field, c.cur_value, c.cur_ts, CAST(r.cur_rank AS DOUBLE) AS cur_rank
                FROM _cfm_full c JOIN _cfm_rank r ON r.h_source IS NOT DISTINCT FROM c.h_source
                    AND r.h_channel IS NOT DISTINCT FROM c.h_channel AND r.p_source IS NOT DISTINCT FROM c.p_source
            """))
        finally:
            con.unregister("_cfm_rank")
    finally:
        con.unregister("_prov_ids")
        con.execute("DROP TABLE IF EXISTS _cfm_cur; DROP TABLE IF EXISTS _cfm_full; DROP TABLE IF EXISTS _cfm_pairs")


def decide_fields(candidates: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Apply the update rules to candidate contact values (pure function).

    Rules, for each customer and field: an invalid value is never applied; a value equal
    to the current one (same comparison key) confirms it; otherwise a candidate may
    replace the current value when it comes from a more trusted source (lower rank), or
    from an equally trusted one and is at least as recent; among several eligible
    candidates the most trusted, then the most recent, wins. A blank never erases.

    Parameters
    ----------
    candidates : DataFrame
        ``item, customer_id, field, value, cmp, ts, channel, source, rank, valid, reason``.
    current : DataFrame
        ``customer_id, field, cur_value, cur_ts, cur_rank``.

    Returns
    -------
    DataFrame
        ``candidates`` with ``outcome`` (key of :data:`OUTCOMES`), ``old_value`` and
        ``winner`` (bool: the value applied for its customer and field).
    """
    c = candidates.merge(current, on=["customer_id", "field"], how="left")
    c["cur_cmp"] = _per_distinct(c[["field", "cur_value"]], lambda u: [
        _cmp_value(f, v) if isinstance(v, str) else None for f, v in zip(u["field"], u["cur_value"], strict=True)])
    c["ts"] = pd.to_datetime(c["ts"])
    c["cur_ts"] = pd.to_datetime(c["cur_ts"])
    has_cur = c["cur_value"].notna()
    same = has_cur & (c["cmp"].astype(object) == c["cur_cmp"].astype(object))
    more_trusted = c["rank"] < c["cur_rank"]
    equal_rank = c["rank"] == c["cur_rank"]
    newer = c["cur_ts"].isna() | (c["ts"].notna() & (c["ts"] >= c["cur_ts"]))
    eligible = c["valid"] & ~same & (~has_cur | more_trusted | (equal_rank & newer))
    outcome = np.select(
        [~c["valid"], same, eligible, c["rank"] > c["cur_rank"]],
        ["invalid", "confirmed", "applied", "less_trusted"], default="older").astype(object)
    c["outcome"] = outcome
    elig = c[eligible].assign(_ts=c.loc[eligible, "ts"].fillna(pd.Timestamp("1900-01-01")))
    elig = elig.sort_values(["customer_id", "field", "rank", "_ts", "item"], ascending=[True, True, True, False, False],
                            kind="stable")
    win_idx = elig.drop_duplicates(["customer_id", "field"]).index
    c["winner"] = False
    c.loc[win_idx, "winner"] = True
    # a winner equal to another eligible value of the same key: both fine, only one change
    c.loc[eligible & ~c["winner"], "outcome"] = "superseded"
    c["old_value"] = c["cur_value"]
    return c.drop(columns=["cur_cmp"])


def decide_consents(candidates: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Apply the consent rules (pure function).

    Rules, for each customer and channel: an **opt-out always wins at once** – over the
    opt-ins of the same batch and over the current state, whatever their dates and
    sources; it becomes the current state even when dated before the current opt-in
    (``effective_at`` = the later of both). An opt-in applies when there is no known
    consent, or when it is strictly more recent than a current opt-out (the person
    subscribed again); an opt-in over an opt-in confirms it.

    Parameters
    ----------
    candidates : DataFrame
        ``item, customer_id, channel_name, opted_in, ts, channel, source``.
    current : DataFrame
        ``customer_id, channel_name, cur_opted_in, cur_ts``.

    Returns
    -------
    DataFrame
        ``candidates`` with ``outcome`` (key of :data:`OUTCOMES`), ``winner`` (bool),
        ``old_value`` and ``effective_at``.
    """
    c = candidates.merge(current, on=["customer_id", "channel_name"], how="left")
    c["ts"] = pd.to_datetime(c["ts"])
    c["cur_ts"] = pd.to_datetime(c["cur_ts"])
    c["opted_in"] = c["opted_in"].astype(bool)
    key = ["customer_id", "channel_name"]
    # vectorised "any opt-out in the group" (a lambda per group took 35 s on 300 k consents)
    any_out = (~c["opted_in"]).astype("int8").groupby([c[k] for k in key], dropna=False).transform("max").astype(bool)
    cur_known = c["cur_opted_in"].notna()
    cur_out = cur_known & (c["cur_opted_in"] == False)  # noqa: E712 - nullable column
    cur_in = cur_known & (c["cur_opted_in"] == True)  # noqa: E712
    is_out = ~c["opted_in"]
    newer_than_cur = c["cur_ts"].isna() | (c["ts"].notna() & (c["ts"] > c["cur_ts"]))
    outcome = np.select(
        [is_out & cur_out, is_out, any_out, cur_in, cur_out & ~newer_than_cur],
        ["confirmed", "applied", "optout_wins", "confirmed", "optout_newer"], default="applied").astype(object)
    c["outcome"] = outcome
    app = c[c["outcome"] == "applied"].assign(_ts=lambda d: d["ts"].fillna(pd.Timestamp("1900-01-01")))
    app = app.sort_values(key + ["_ts", "item"], ascending=[True, True, False, False], kind="stable")
    win_idx = app.drop_duplicates(key).index
    c["winner"] = False
    c.loc[win_idx, "winner"] = True
    c.loc[(c["outcome"] == "applied") & ~c["winner"], "outcome"] = "superseded"
    c["old_value"] = c["cur_opted_in"].map(lambda v: None if v is None or v is pd.NA or v != v else ("true" if v else "false"))
    c["effective_at"] = c[["ts", "cur_ts"]].max(axis=1)
    return c


def batch_date(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """Date of a batch record that carries no ``updated_at``: the last purchase of the base (after loading)."""
    last = con.execute("SELECT max(ts) FROM transactions").fetchall()[0][0]
    return pd.Timestamp(last) if last is not None else None


def _text(v: object) -> str:
    """Text of a staged value (dates as ``YYYY-MM-DD`` when they have no time)."""
    if isinstance(v, pd.Timestamp) or hasattr(v, "isoformat"):
        ts = pd.Timestamp(v)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    return str(v)


def _record_candidates(records: pd.DataFrame, p: dict, priority: dict, default_ts=None) -> pd.DataFrame:
    """Long frame of candidate values brought by staged customer records.

    The date of a value is the record's ``updated_at``, else ``default_ts`` (the batch
    date: an export without update dates is as recent as the batch), else ``created_at``.
    """
    cols = ["item", "customer_id", "field", "raw", "country", "ts", "channel", "source"]
    if records.empty:
        return pd.DataFrame(columns=cols)
    keep = set(p.get("keep_fields") or NEW_FIELDS)
    fields = [f for f in NEW_FIELDS if f in records.columns and (f in keep or f == "country")]
    ts = pd.to_datetime(records["updated_at"])
    if default_ts is not None:
        ts = ts.fillna(pd.Timestamp(default_ts))
    ts = ts.fillna(pd.to_datetime(records["created_at"]))
    base = records.assign(item=_items(records), ts=ts,
                          channel=records["source"])
    long = base.melt(id_vars=["item", "customer_id", "ts", "channel", "source"], value_vars=fields,
                     var_name="field", value_name="raw")
    long = long[long["raw"].notna() & (long["raw"].astype(str).str.strip() != "")]
    long["raw"] = long["raw"].map(_text)
    country = records.assign(item=_items(records)).set_index("item")["country"] if "country" in records else None
    long["country"] = long["item"].map(country) if country is not None else None
    return long[cols]


def _interaction_candidates(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Candidate values and consents of interactions not applied yet (matched to a customer)."""
    # interactions already fed and the matched customer are settled in SQL (pandas isin
    # over a million strings took 8 s)
    rows = to_frame(con.sql(f"""
        WITH r AS (
            SELECT 'interaction|' || coalesce(i.interaction_id, i.source || '|' || CAST(i.row_number AS VARCHAR)) AS item,
                   i.customer_id, i.ts, i.channel, i.source, {', '.join('i.' + f for f in INTERACTION_FIELDS)},
                   i.consent_channel, i.consent_opted_in
            FROM interactions i
            WHERE ({' OR '.join(f'i.{f} IS NOT NULL' for f in INTERACTION_FIELDS)}
                   OR (i.consent_channel IS NOT NULL AND i.consent_opted_in IS NOT NULL))
        )
        SELECT r.*, coalesce(r.customer_id IN (SELECT customer_id FROM customers), false) AS _linked
        FROM r ANTI JOIN (SELECT item FROM feed_items WHERE kind = 'interactions') f USING (item)
    """))
    linked = rows.pop("_linked").astype(bool)
    pending = int((~linked).sum())
    rows = rows[linked.to_numpy()]
    long = rows.melt(id_vars=["item", "customer_id", "ts", "channel", "source"], value_vars=INTERACTION_FIELDS,
                     var_name="field", value_name="raw")
    long = long[long["raw"].notna() & (long["raw"].astype(str).str.strip() != "")].assign(country=None)
    cons = rows[rows["consent_channel"].notna() & rows["consent_opted_in"].notna()]
    cons = cons.rename(columns={"consent_channel": "channel_name", "consent_opted_in": "opted_in"})[
        ["item", "customer_id", "channel_name", "opted_in", "ts", "channel", "source"]]
    return long[["item", "customer_id", "field", "raw", "country", "ts", "channel", "source"]], cons, pending


def _prepare(long: pd.DataFrame, region: str, priority: dict) -> pd.DataFrame:
    """Quality check and canonical form of candidate values."""
    if long.empty:
        return long.assign(value=None, cmp=None, valid=True, reason=None, rank=float(DEFAULT_RANK))
    flagged = quality.flag_values(long.rename(columns={"raw": "value"}).assign(
        country=long["country"].astype(object).where(long["country"].notna(), region)), region=region)
    out = long.copy()
    out["valid"] = flagged["valid"].to_numpy()
    out["reason"] = flagged["reason"].to_numpy()
    out["value"] = _per_distinct(out[["field", "raw", "country"]], lambda u: _norm_values(u, region))
    out["cmp"] = _per_distinct(out[["field", "value"]], lambda u: [
        _cmp_value(f, v) for f, v in zip(u["field"], u["value"], strict=True)])
    out["rank"] = _per_distinct(out[["source", "channel"]], lambda u: [
        _rank(priority, s, ch) for s, ch in zip(u["source"], u["channel"], strict=True)]).astype(float)
    return out


def feed(con: duckdb.DuckDBPyConnection, p: dict, *, when=None) -> FeedResult:
    """Run the whole feed (see the module docstring) inside the caller's transaction.

    Parameters
    ----------
    p : dict
        Validated parameters of the step (``run`` + ``alimenter`` blocks): ``sources``,
        ``apply_interactions``, ``source_priority``, ``keep_fields``, ``default_region``,
        ``max_unparsable_share``, ``run_id``.
    when : datetime, optional
        Time stamp of ``feed_items`` and links (default now).

    Returns
    -------
    FeedResult
    """
    when = when or now()
    region = p.get("default_region") or "FR"
    priority = dict(p.get("source_priority") or {})
    for s in p.get("sources") or []:
        if s.get("priority") is not None and s["name"] not in priority:
            priority[s["name"]] = float(s["priority"])
    restored = restore_from_history(con)
    before = fill_rates(con)
    con.execute("CREATE OR REPLACE TEMP TABLE _consents_before AS SELECT * FROM consents")

    loads = load_batches(con, p)
    new_sha = sorted({f.sha256 for ld in loads for f in ld.files if not f.skipped})
    register_frame(con, "_new_sha", pd.DataFrame({"sha256": new_sha}, dtype=object))
    # consent rows of customer files replace older rows of the same key: keep those (the rules decide)
    # a plain anti join (hash join): NOT EXISTS was planned as a delim join, 3 times slower
    con.execute("""INSERT INTO consents SELECT b.* FROM (SELECT * FROM _consents_before WHERE source_key IS NOT NULL) b
                   ANTI JOIN consents c ON c.source IS NOT DISTINCT FROM b.source
                       AND c.source_key IS NOT DISTINCT FROM b.source_key AND c.channel IS NOT DISTINCT FROM b.channel
                       AND c.sha256 IS NOT DISTINCT FROM b.sha256""")
    dropped = [f for f in NEW_FIELDS if f not in (p.get("keep_fields") or NEW_FIELDS) and f != "country"]
    if dropped and new_sha:
        con.execute("UPDATE source_customers SET " + ", ".join(f"{f} = NULL" for f in dropped)
                    + " WHERE sha256 IN (SELECT sha256 FROM _new_sha)")

    records = _staged(con, loads, "customers")
    links = link_new_records(con, p, records, when=when)
    key_only = attach_keys(con)
    if len(records):
        register_frame(con, "_rec_keys", records[["source", "source_key"]].astype(object))
        try:
            ids = to_frame(con.sql("SELECT r.source, r.source_key, l.customer_id FROM _rec_keys r "
                                       "JOIN customer_links l USING (source, source_key)"))
        finally:
            con.unregister("_rec_keys")
        records = records.merge(ids, on=["source", "source_key"], how="left")

    # ---- candidate values
    rec_long = _record_candidates(records, p, priority, batch_date(con))
    int_long, int_cons, pending = (_interaction_candidates(con) if p.get("apply_interactions", True)
                                   else (rec_long.iloc[0:0], pd.DataFrame(), 0))
    # empty parts left out: concatenated with the empty object frame of a batch without
    # customer files, the 2.4 M inbound-contact values at scale 185 became Python objects
    # (1.5 GiB instead of 0.4; 4.0 GiB instead of 2.7 while the current values were read) and
    # their dates Timestamp objects; the text stays Arrow strings whatever the parts hold
    filled = [x for x in (rec_long, int_long) if len(x)]
    long = arrow_text(pd.concat(filled, ignore_index=True)) if filled else rec_long
    del rec_long, int_long, filled
    cand = _prepare(long, region, priority)
    del long
    # only the (customer, field) pairs of the candidates: decide_fields joins on them
    current = current_field_meta(con, cand["customer_id"].dropna().unique().tolist(), priority,
                                 pairs=cand.loc[cand["customer_id"].notna(), ["customer_id", "field"]]) if len(cand) else \
        pd.DataFrame(columns=["customer_id", "field", "cur_value", "cur_ts", "cur_rank"])
    dec = decide_fields(cand, current) if len(cand) else cand.assign(outcome=None, winner=False, old_value=None)
    # the frames of 3.5 M candidate values at scale 185 are released as soon as decided,
    # and ``dec`` keeps only the columns read below (the step's memory peak came after)
    dec = dec[["item", "customer_id", "field", "raw", "value", "channel", "source", "ts", "outcome", "reason",
               "old_value", "winner"]]
    del records, cand, current

    # ---- consents: batch rows (consent files, consent_<channel> columns) and interactions
    con.execute("CREATE OR REPLACE TEMP TABLE _new_consents AS SELECT * FROM consents WHERE sha256 IN (SELECT sha256 FROM _new_sha)")
    batch_cons = to_frame(con.sql("""
        SELECT c.source || '|' || substr(c.sha256, 1, 16) || '|' || c.channel || '|' || c.source_key AS item,
               c.customer_id, c.channel AS channel_name, c.opted_in, c.updated_at AS ts, c.source AS channel, c.source
        FROM _new_consents c WHERE c.customer_id IS NOT NULL"""))
    con.execute("DROP TABLE _new_consents")
    con.execute("DELETE FROM consents WHERE sha256 IN (SELECT sha256 FROM _new_sha)")
    ccand = pd.concat([x for x in (batch_cons, int_cons) if len(x)], ignore_index=True) if (len(batch_cons) or len(int_cons)) \
        else pd.DataFrame(columns=["item", "customer_id", "channel_name", "opted_in", "ts", "channel", "source"])
    bdate = batch_date(con)
    if len(ccand) and bdate is not None:
        ccand["ts"] = pd.to_datetime(ccand["ts"]).fillna(bdate)
    # the current state of the customers concerned only (all of it: 4 M rows at scale)
    register_frame(con, "_cc_ids", pd.DataFrame({"customer_id": ccand["customer_id"].dropna().unique()}, dtype=object))
    try:
        # the state before the batch, from the copy taken then (the whole state: 12 s at scale)
        state = history.current_consents_sql("_consents_before", "customer_id IN (SELECT customer_id FROM _cc_ids)")
        cstate = to_frame(con.sql("SELECT customer_id, channel AS channel_name, opted_in AS cur_opted_in, updated_at AS cur_ts "
                                      f"FROM ({state})"))
    finally:
        con.unregister("_cc_ids")
    # the copy of every consent row (9 M rows at scale 185) is not read after this point
    con.execute("DROP TABLE IF EXISTS _consents_before")
    cdec = decide_consents(ccand, cstate) if len(ccand) else ccand.assign(outcome=None, winner=False, old_value=None,
                                                                           effective_at=None)

    # ---- changes
    fchg = dec[dec["winner"]].assign(new_value=lambda d: d["value"], changed_at=lambda d: d["ts"].fillna(pd.Timestamp(bdate if bdate is not None else when)))
    cchg = cdec[cdec["winner"]].assign(
        field=lambda d: history.CONSENT_PREFIX + d["channel_name"],
        new_value=lambda d: d["opted_in"].map(lambda v: "true" if v else "false"),
        changed_at=lambda d: d["ts"].fillna(pd.Timestamp(bdate if bdate is not None else when)),
        effective_at=lambda d: pd.to_datetime(d["effective_at"]).fillna(pd.Timestamp(bdate if bdate is not None else when)))
    cols = history.CHANGE_COLUMNS + ["effective_at"]
    changes = pd.concat([fchg.assign(effective_at=fchg["changed_at"])[cols], cchg[cols]], ignore_index=True) \
        if len(fchg) or len(cchg) else pd.DataFrame(columns=cols)
    history.apply_changes(con, changes, run_id=p["run_id"])
    changes = arrow_text(changes[history.CHANGE_COLUMNS])
    # customers created now: counts, sources, prospect flag
    # rows to change found first, updated by rowid (an UPDATE joined on the ids took 9 s at scale 185)
    update_by_rowid(con, "customers", ["n_records", "sources"], """
        SELECT c.rowid AS rid, x.n AS n_records, x.sources
        FROM customers c
        JOIN (SELECT customer_id, count(*) AS n, string_agg(DISTINCT source, ',' ORDER BY source) AS sources
              FROM customer_links GROUP BY 1) x ON x.customer_id = c.customer_id
        WHERE c.n_records IS DISTINCT FROM x.n OR c.sources IS DISTINCT FROM x.sources""")
    con.execute("UPDATE customers SET is_prospect = FALSE WHERE is_prospect AND customer_id IN "
                "(SELECT DISTINCT customer_id FROM transactions WHERE customer_id IS NOT NULL)")

    # ---- decisions, then the ledger of fed items
    # one frame of every decision (values, then consents), copied to DuckDB and released
    # before the ledger is built from it: the ledger's aggregation with the pandas frames
    # alive was the memory peak of the chain at ten million transactions
    parts = [
        dec[["item", "customer_id", "field", "raw", "value", "channel", "source", "ts", "outcome", "reason", "old_value"]]
        .assign(_ledger_field=dec["field"]) if len(dec) else pd.DataFrame(),
        cdec.assign(field=history.CONSENT_PREFIX + cdec["channel_name"].astype(str),
                    raw=cdec["opted_in"].map(lambda v: "oui" if v else "non"),
                    value=cdec["opted_in"].map(lambda v: "true" if v else "false"), reason=None,
                    _ledger_field=cdec["channel_name"].astype(str))[
            ["item", "customer_id", "field", "raw", "value", "channel", "source", "ts", "outcome", "reason", "old_value",
             "_ledger_field"]]
        if len(cdec) else pd.DataFrame(),
    ]
    del dec, cdec, fchg, cchg
    decisions = pd.concat(parts, ignore_index=True)
    del parts
    decision_cols = ["item", "customer_id", "field", "raw", "value", "channel", "source", "ts", "outcome", "reason",
                     "old_value"]
    if decisions.empty:
        decisions = pd.DataFrame(columns=decision_cols + ["_ledger_field"]).astype(object)
    decisions["_pos"] = np.arange(len(decisions), dtype="int64")
    register_frame(con, "_feed_dec_df", decisions)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _feed_dec AS SELECT * FROM _feed_dec_df")
    finally:
        con.unregister("_feed_dec_df")
    del decisions
    items = _feed_items(con, loads, "_feed_dec", p["run_id"], when)
    con.unregister("_new_sha")
    # the staged rows of the batch are not read after the ledger (their memory goes back to
    # DuckDB for the measures that follow)
    for ld in loads:
        con.execute(f"DROP TABLE IF EXISTS {ld.staged}")
    # sorted by customer, field and item, ties in the order of the decisions (a stable sort)
    # under a lower cap: the sort spills instead of holding its rows beside the frame being
    # built (step 05 at scale 185 in one process, end of feed: 3 484 -> 2 359 MiB)
    with memory_cap(con, DECISIONS_FETCH_CAP):
        decisions = to_frame(con.sql(
            f"SELECT {', '.join(decision_cols)} FROM _feed_dec "
            "ORDER BY customer_id NULLS LAST, field NULLS LAST, item NULLS LAST, _pos"))
    con.execute("DROP TABLE _feed_dec")
    # the few-valued columns as categories: as Arrow strings they cost their text on each of
    # the 3.5 M rows at scale 185 (step 05's process-tree peak: 4 160 -> 4 090-4 125 MiB)
    for col in ("field", "channel", "source", "outcome"):
        decisions[col] = decisions[col].astype("category")
    n_new = len(set(links.loc[links["new"].astype(bool), "customer_id"])) if len(links) else 0
    n_new += len(key_only)
    return FeedResult(files=files_table(loads), items=items, decisions=decisions, changes=changes,
                      new_customers=n_new, links=links, restored=restored, pending_interactions=pending,
                      before=before, after=fill_rates(con))


def _feed_items(con, loads, decisions: str, run_id, when) -> pd.DataFrame:
    """Write one ``feed_items`` row per source row of the new files and per interaction fed.

    ``decisions`` names the table of the step's decisions (``item, customer_id, source,
    outcome, reason, _ledger_field, _pos``: values then consents, ``_pos`` their order).
    Built in DuckDB: the pandas version (a text per value joined per item, a frame per
    file) took 26 s for 3.5 M values at scale 185.
    """
    cols = ["item", "kind", "source", "customer_id", "outcome", "reason"]
    # outcome of an item = best of its values: applied > confirmed > ignored > invalid;
    # its reason lists the values in that order (then in the order of the decisions)
    order = {"applied": 0, "confirmed": 1, "superseded": 2, "less_trusted": 3, "older": 4, "optout_wins": 5,
             "optout_newer": 6, "invalid": 7}
    labels = pd.DataFrame({"outcome": list(order), "o": list(order.values()),
                           "label": [OUTCOMES[k] for k in order]})
    register_frame(con, "_fi_labels", labels)
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _fi_val AS
            SELECT v.item, v.customer_id, v.source, l.label, v._pos AS k,
                   l.o::BIGINT * 10000000000000 + v._pos AS ko,
                   CAST(v._ledger_field AS VARCHAR) || ' : ' || l.label
                   || CASE WHEN v.reason IS NOT NULL AND CAST(v.reason AS VARCHAR) <> ''
                           THEN ' (' || CAST(v.reason AS VARCHAR) || ')' ELSE '' END AS part
            FROM {decisions} v JOIN _fi_labels l ON l.outcome = v.outcome
        """)
        # one BIGINT sort key per value (k: order of the decisions, ko: outcome first) and
        # the parts joined from a list sorted afterwards: string_agg(... ORDER BY o, src, _idx)
        # and struct keys took 50 s and the step's memory peak at scale 185
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _fi_sum AS
            SELECT item, arg_min_null(label, ko) AS outcome,
                   CASE WHEN count(part) > 0 THEN array_to_string(list_transform(
                       list_sort(list(struct_pack(k := ko, p := part)) FILTER (WHERE part IS NOT NULL)), lambda x: x.p), '; ')
                   END AS reason,
                   arg_min_null(customer_id, k) AS customer_id, arg_min_null(source, k) AS source,
                   min(k) AS first
            FROM _fi_val GROUP BY item
        """)
    finally:
        con.unregister("_fi_labels")
    parts = []
    for i, ld in enumerate(loads):
        name = ld.name.replace("'", "''")
        if ld.kind == "customers":
            parts.append(f"""
                SELECT s.source || '|' || substr(s.sha256, 1, 16) || '|' || CAST(s.row_number AS VARCHAR) AS item,
                       'customers' AS kind, '{name}' AS source, ids.customer_id,
                       coalesce(m.outcome, 'fiche intégrée') AS outcome, coalesce(m.reason, 'aucune valeur de contact') AS reason,
                       {i} AS part, s.rowid AS pos
                FROM {ld.staged} s
                LEFT JOIN (SELECT s2.source, s2.source_key, l.customer_id FROM {ld.staged} s2
                           JOIN customer_links l USING (source, source_key)) ids
                       ON ids.source IS NOT DISTINCT FROM s.source AND ids.source_key IS NOT DISTINCT FROM s.source_key
                LEFT JOIN _fi_sum m ON m.item = s.source || '|' || substr(s.sha256, 1, 16) || '|' || CAST(s.row_number AS VARCHAR)""")
        elif ld.kind == "consents":
            parts.append(f"""
                SELECT '{name}' || '|' || substr(s.sha256, 1, 16) || '|' || CAST(s.row_number AS VARCHAR) AS item,
                       'consents' AS kind, '{name}' AS source, l.customer_id,
                       coalesce(m.outcome, 'non rattaché') AS outcome, coalesce(m.reason, '') AS reason,
                       {i} AS part, s.rowid AS pos
                FROM {ld.staged} s
                LEFT JOIN customer_links l ON l.source = s.customer_source AND l.source_key = s.customer_key
                LEFT JOIN _fi_sum m
                       ON m.item = s.customer_source || '|' || substr(s.sha256, 1, 16) || '|' || s.channel || '|' || s.customer_key""")
        else:
            key = {"transactions": ("customer_source", "customer_key"),
                   "campaign_contacts": ("customer_source", "customer_key")}.get(ld.kind)
            label = {"transactions": "achat ajouté", "campaigns": "campagne ajoutée",
                     "campaign_contacts": "contact de campagne ajouté"}.get(ld.kind, "ligne ajoutée")
            kind = ld.kind.replace("'", "''")
            join = (f"LEFT JOIN customer_links l ON l.source = s.{key[0]} AND l.source_key = s.{key[1]}" if key else "")
            parts.append(f"""
                SELECT '{name}' || '|' || substr(s.sha256, 1, 16) || '|' || CAST(s.row_number AS VARCHAR) AS item,
                       '{kind}' AS kind, '{name}' AS source, {"l.customer_id" if key else "NULL::VARCHAR"} AS customer_id,
                       '{label}' AS outcome, '' AS reason, {i} AS part, s.rowid AS pos
                FROM {ld.staged} s {join}""")
    parts.append(f"""
        SELECT item, 'interactions' AS kind, source, customer_id, outcome, reason, {len(loads)} AS part, first AS pos
        FROM _fi_sum WHERE starts_with(item, 'interaction|')""")
    # files in order, rows in file order, interactions in the order of the decisions
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fi_items AS
                    SELECT item, kind, source, customer_id, outcome, reason
                    FROM ({" UNION ALL ".join(parts)}) x ORDER BY x.part, x.pos""")
    # the per-value tables (3.5 M rows at scale 185) are released before the items are written and fetched
    con.execute("DROP TABLE IF EXISTS _fi_val; DROP TABLE IF EXISTS _fi_sum")
    con.execute("INSERT INTO feed_items SELECT item, kind, source, customer_id, outcome, reason, ?, ? FROM _fi_items",
                [run_id, when])
    items = to_frame(con.sql("SELECT * FROM _fi_items"))
    con.execute("DROP TABLE IF EXISTS _fi_items")
    if items.empty:
        return pd.DataFrame(columns=cols).astype(object)
    # text columns as DuckDB gives them (1.4 M items at scale 185: as Python objects they
    # took several hundred MB more)
    return items[cols]


# --------------------------------------------------------------------------- quality and freshness


def quality_report(result: FeedResult) -> pd.DataFrame:
    """Invalid values met in this feed (listed, not applied): ``item, customer_id, field, raw, reason, source``."""
    d = result.decisions
    if d.empty:
        return pd.DataFrame(columns=["item", "customer_id", "field", "raw", "reason", "source"])
    return d.loc[d["outcome"] == "invalid", ["item", "customer_id", "field", "raw", "reason", "source"]].reset_index(drop=True)


def freshness_reference(con: duckdb.DuckDBPyConnection, as_of: str | None) -> pd.Timestamp:
    """Date freshness is measured at: the later of ``as_of`` and the last dated event of the base."""
    last = con.execute("""SELECT max(ts) FROM (SELECT max(ts) AS ts FROM transactions UNION ALL
                          SELECT max(changed_at) FROM contact_history UNION ALL SELECT max(ts) FROM interactions)""").fetchall()[0][0]
    cands = [pd.Timestamp(x) for x in (as_of, last) if x is not None]
    return max(cands).normalize() if cands else pd.Timestamp.today().normalize()


def freshness(con: duckdb.DuckDBPyConnection, p: dict) -> tuple[float, pd.DataFrame, pd.Timestamp]:
    """Share of customers whose contact data was confirmed within ``freshness_months``, and the stale ones.

    Returns
    -------
    (share, stale, reference)
        ``stale``: ``customer_id, is_prospect, email, phone, last_confirmed,
        months_since`` (raw PII: mask before display).
    """
    ref = freshness_reference(con, p.get("as_of"))
    share, stale = quality.freshness(quality.last_confirmed(con), ref, p["freshness_months"])
    return share, stale, ref


# --------------------------------------------------------------------------- display


def files_display(result: FeedResult):
    """Files of the batch in French."""
    from crmlab.display import table

    return table(result.files, formats={"rows_read": "int", "rows_kept": "int", "rows_rejected": "int"},
                 labels={"source": "Source", "kind": "Type", "file": "Fichier", "status": "État", "rows_read": "Lignes lues",
                         "rows_kept": "Lignes gardées", "rows_rejected": "Lignes rejetées"})


def outcomes_table(result: FeedResult) -> pd.DataFrame:
    """Decisions per field and outcome: ``field, label, outcome, values``."""
    d = result.decisions
    if d.empty:
        return pd.DataFrame(columns=["field", "label", "outcome", "values"])
    # field and outcome are categories (decisions of feed): observed pairs only, counted on the codes
    out = d.groupby(["field", "outcome"], observed=True).size().rename("values").reset_index()
    out = out.astype({"field": str, "outcome": str})
    out.insert(1, "label", out["field"].map(field_label))
    out["outcome"] = out["outcome"].map(OUTCOMES)
    return out


def outcomes_display(result: FeedResult):
    """Decisions per field (rows) and outcome (columns), in French."""
    from crmlab.display import HTMLBlock, table

    t = outcomes_table(result)
    if t.empty:
        return HTMLBlock("<p><em>Aucune nouvelle valeur de contact dans ce lot.</em></p>")
    wide = t.pivot_table(index="label", columns="outcome", values="values", aggfunc="sum", fill_value=0).reset_index()
    wide.columns.name = None
    wide = wide.rename(columns={"label": "Champ"})
    return table(wide, formats={c: "int" for c in wide.columns if c != "Champ"})


def examples_display(result: FeedResult, n: int = 10):
    """Show a few decisions with masked values (never a full e-mail or phone)."""
    from crmlab.display import mask_email, mask_phone, mask_text, table

    d = result.decisions
    if d.empty:
        return d
    show = d.sort_values(["outcome", "customer_id", "field"], kind="stable").groupby("outcome").head(max(1, n // 4)).head(n).copy()

    def mask(f, v):
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        if f == "email":
            return mask_email(v)
        if f == "phone":
            return mask_phone(v)
        if f in ("first_name", "last_name", "address"):
            return mask_text(v)
        return v

    show["avant"] = [mask(f, v) for f, v in zip(show["field"], show["old_value"], strict=True)]
    show["proposé"] = [mask(f, v) for f, v in zip(show["field"], show["raw"], strict=True)]
    show["Champ"] = show["field"].map(field_label)
    show["Décision"] = show["outcome"].map(OUTCOMES)
    show = show.rename(columns={"customer_id": "Client", "channel": "Canal", "ts": "Date"})
    return table(show[["Client", "Champ", "avant", "proposé", "Canal", "Date", "Décision"]])


def invalid_display(result: FeedResult, con: duckdb.DuckDBPyConnection, p: dict):
    """Invalid values of the batch and of the base, counted per reason, with masked examples."""
    from crmlab.display import mask_pii, table

    batch = quality_report(result)
    base = quality.audit_customers(con, region=p.get("default_region") or "FR")
    summary = pd.concat([
        quality.quality_summary(batch).assign(where="lot reçu"),
        quality.quality_summary(base).assign(where="base clients"),
    ], ignore_index=True)
    examples = pd.concat([batch.assign(where="lot reçu").rename(columns={"raw": "value"}),
                          base.assign(where="base clients")], ignore_index=True)
    examples = examples.head(p.get("list_size", 15))
    shown = examples.assign(email=examples["value"].where(examples["field"] == "email"),
                            phone=examples["value"].where(examples["field"] == "phone"),
                            code_postal=examples["value"].where(examples["field"] == "postal_code"))
    shown = mask_pii(shown[["where", "customer_id", "field", "email", "phone", "code_postal", "reason"]])
    shown["field"] = shown["field"].map(field_label)
    return (table(summary[["where", "label", "reason", "values"]], formats={"values": "int"},
                  labels={"where": "Où", "label": "Champ", "reason": "Motif", "values": "Valeurs"}),
            table(shown, labels={"where": "Où", "customer_id": "Client", "field": "Champ", "email": "E-mail",
                                 "phone": "Téléphone", "code_postal": "Code postal", "reason": "Motif"}),
            base)


def stale_display(stale: pd.DataFrame, n: int):
    """Show the stale customers (oldest confirmation first), masked."""
    from crmlab.display import mask_pii, table

    show = mask_pii(stale.head(n)[["customer_id", "email", "phone", "last_confirmed", "months_since"]])
    show["last_confirmed"] = pd.to_datetime(show["last_confirmed"]).dt.strftime("%d/%m/%Y").fillna("jamais")
    return table(show, formats={"months_since": "float1"},
                 labels={"customer_id": "Client", "email": "E-mail", "phone": "Téléphone",
                         "last_confirmed": "Dernière confirmation", "months_since": "Mois écoulés"})


def fill_table(result: FeedResult) -> pd.DataFrame:
    """Fill rates before and after the feed: ``field, label, before, after, delta`` (shares 0–1)."""
    b = result.before.set_index("field")
    a = result.after.set_index("field")
    out = pd.DataFrame({"label": a["label"], "before": b["share"].reindex(a.index).fillna(0.0), "after": a["share"]})
    out["delta"] = out["after"] - out["before"]
    return out.reset_index()


def fill_display(result: FeedResult):
    """Fill rates before / after in French."""
    from crmlab.display import table

    t = fill_table(result)
    return table(t[["label", "before", "after", "delta"]], formats={"before": "pct", "after": "pct", "delta": "pp"},
                 labels={"label": "Champ", "before": "Avant", "after": "Après", "delta": "Évolution"})


def channel_chart(by_channel: pd.DataFrame):
    """Stacked bars: share of customers whose current value came from each channel, per field."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, axis_fr, finish, fr_percent

    top = by_channel.groupby("channel")["customers"].sum().sort_values(ascending=False).index[:7]
    by_channel = by_channel.assign(channel=by_channel["channel"].where(by_channel["channel"].isin(top), "autres canaux"))
    wide = by_channel.pivot_table(index="label", columns="channel", values="share", aggfunc="sum", fill_value=0.0)
    order = wide.sum(axis=1).sort_values().index
    wide = wide.loc[order]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(wide), 3) + 1.2))
    left = np.zeros(len(wide))
    for i, ch in enumerate(wide.sum().sort_values(ascending=False).index):
        ax.barh(wide.index, wide[ch], left=left, label=ch, color=PALETTE[i % len(PALETTE)])
        left += wide[ch].to_numpy()
    ax.set_xlim(0, 1)
    axis_fr(ax, "x", "percent", 0)
    ax.legend(title="canal", bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    if len(by_channel):
        top = by_channel.groupby("channel")["customers"].sum().sort_values(ascending=False)
        share_top = top.iloc[0] / top.sum()
        title = f"« {top.index[0]} » a rempli {fr_percent(share_top, 0)} des coordonnées actuelles"
    else:
        title = "Aucune coordonnée renseignée"
    return finish(fig, title, "part des clients (valeur actuelle fournie par le canal)", "")


def findings(result: FeedResult, fresh_share: float, stale: pd.DataFrame, months: int, by_channel: pd.DataFrame) -> list[str]:
    """French sentences summarising the feed, computed from the figures."""
    from crmlab.charts import fr_number, fr_percent

    out = []
    n_files = int((result.files["status"] == "intégré").sum()) if len(result.files) else 0
    n_skip = int((result.files["status"] == "déjà intégré").sum()) if len(result.files) else 0
    out.append(f"**{n_files}** fichier(s) intégré(s)" + (f", {n_skip} déjà intégré(s) auparavant et ignoré(s)" if n_skip else "")
               + f" ; **{fr_number(result.new_customers)}** nouveau(x) client(s).")
    d = result.decisions
    if len(d):
        n_app = int((d["outcome"] == "applied").sum())
        n_conf = int((d["outcome"] == "confirmed").sum())
        n_inv = int((d["outcome"] == "invalid").sum())
        n_ign = len(d) - n_app - n_conf - n_inv
        out.append(f"{fr_number(len(d))} valeurs de contact reçues : **{fr_number(len(result.changes))}** changement(s) "
                   f"appliqué(s), {fr_number(n_conf)} confirmation(s), {fr_number(n_ign)} ignorée(s) par les règles, "
                   f"{fr_number(n_inv)} invalide(s) signalée(s).")
        outs = d[(d["field"].str.startswith(history.CONSENT_PREFIX)) & (d["value"] == "false") & (d["outcome"] == "applied")]
        if len(outs):
            out.append(f"**{fr_number(len(outs))}** désinscription(s) appliquée(s) immédiatement.")
    if result.pending_interactions:
        out.append(f"{fr_number(result.pending_interactions)} interaction(s) avec coordonnées ne sont rattachées à aucun client : "
                   "elles attendent d'être rapprochées.")
    t = fill_table(result)
    gains = t[t["delta"] > 0.0005].sort_values("delta", ascending=False)
    if len(gains):
        g = gains.iloc[0]
        out.append(f"Plus forte progression du remplissage : **{g['label']}** ({fr_percent(g['before'])} → {fr_percent(g['after'])}).")
    out.append(f"Fraîcheur : **{fr_percent(fresh_share)}** des clients ont des coordonnées confirmées depuis moins de "
               f"{months} mois ; {fr_number(len(stale))} client(s) à faire confirmer.")
    if result.restored:
        out.append(f"{fr_number(result.restored)} valeur(s) restaurée(s) depuis l'historique après une reconstruction de la base.")
    return out


# --------------------------------------------------------------------------- KPIs and checks


def kpis(result: FeedResult, fresh_share: float, stale: pd.DataFrame, by_channel: pd.DataFrame,
         invalid_base: pd.DataFrame) -> pd.DataFrame:
    """KPIs of step 05: headline (``dimension = ''``), fill per field and per field × channel.

    Returns
    -------
    DataFrame
        ``kpi, dimension, value, unit``; shares in 0–1 (unit ``part``).
    """
    d = result.decisions
    n_inv = int((d["outcome"] == "invalid").sum()) if len(d) else 0
    rows = [
        ("valeurs mises à jour", "", float(len(result.changes)), "valeurs"),
        ("nouveaux clients", "", float(result.new_customers), "clients"),
        ("fraîcheur des coordonnées", "", fresh_share, "part"),
        ("valeurs invalides signalées", "", float(n_inv + len(invalid_base)), "valeurs"),
        ("clients à faire confirmer", "", float(len(stale)), "clients"),
        ("lignes rejetées", "", float(result.files["rows_rejected"].sum()) if len(result.files) else 0.0, "lignes"),
    ]
    t = fill_table(result)
    for r in t.itertuples():
        rows.append(("remplissage", r.field, r.after, "part"))
        rows.append(("remplissage avant", r.field, r.before, "part"))
    for r in by_channel.itertuples():
        rows.append(("rempli par canal", f"{r.field}|{r.channel}", r.share, "part"))
    main = t[t["field"].isin(MEASURED_FIELDS)]
    if len(main):
        rows.insert(3, ("remplissage moyen des coordonnées", "", float(main["after"].mean()), "part"))
    return pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])


def kpis_display(k: pd.DataFrame):
    """Headline KPIs in French."""
    from crmlab.charts import fr_number, fr_percent
    from crmlab.display import table

    head = k[k["dimension"] == ""].copy()
    head["Valeur"] = [fr_percent(v) if u == "part" else fr_number(v) for v, u in zip(head["value"], head["unit"], strict=True)]
    return table(head[["kpi", "Valeur"]].rename(columns={"kpi": "Indicateur"}))


def check_output(con: duckdb.DuckDBPyConnection) -> None:
    """Step 05's own checks before commit (raise :class:`crmlab.errors.CheckError`)."""
    check(con, "SELECT customer_id FROM customers GROUP BY 1 HAVING count(*) > 1", "identifiant client unique")
    check(con, "SELECT source, source_key FROM customer_links GROUP BY 1, 2 HAVING count(*) > 1",
          "chaque fiche source rattachée à un seul client")
    check(con, "SELECT l.customer_id FROM customer_links l ANTI JOIN customers c USING (customer_id)",
          "chaque lien pointe vers un client existant")
    check(con, "SELECT transaction_id FROM transactions WHERE customer_id IS NULL", "chaque achat rattaché à un client")
    check(con, "SELECT transaction_id FROM transactions GROUP BY 1 HAVING count(*) > 1", "identifiant d'achat unique")
    check(con, "SELECT item FROM feed_items GROUP BY 1 HAVING count(*) > 1", "chaque élément intégré une seule fois")
    check(con, "SELECT seq FROM contact_history WHERE seq IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
          "numéro d'ordre unique dans l'historique")


# --------------------------------------------------------------------------- tracing


def traced_customer(result: FeedResult) -> str | None:
    """Pick a customer whose contact data changed in this feed (the one with the most changes), to show its trace."""
    ch = result.changes
    ch = ch[~ch["field"].astype(str).str.startswith(history.CONSENT_PREFIX)] if len(ch) else ch
    if ch.empty:
        return None
    counts = ch.groupby("customer_id").size().sort_values(ascending=False, kind="stable")
    known = ch[ch["old_value"].notna()]
    if len(known):
        counts = known.groupby("customer_id").size().sort_values(ascending=False, kind="stable")
    return str(counts.index[0])


def trace_display(con: duckdb.DuckDBPyConnection, result: FeedResult, customer_id: str | None = None,
                  dates: list | None = None) -> object:
    """One customer's contact record as of several dates, masked (the history at work).

    Default: :func:`traced_customer`, the day before its first change of this feed and
    the day of its last one.
    """
    from crmlab.display import HTMLBlock, mask_email, mask_phone, mask_text, table

    customer_id = customer_id or traced_customer(result)
    if customer_id is None:
        return HTMLBlock("<p><em>Aucun changement de coordonnées dans ce lot.</em></p>")
    if dates is None:
        ch = result.changes[result.changes["customer_id"] == customer_id]
        when = pd.to_datetime(ch["changed_at"])
        dates = [(when.min() - pd.Timedelta(days=1)).date(), when.max().date()]
    frames = []
    for d in dates:
        r = history.record_as_of(con, d, [customer_id]).set_index("field")["value"].rename(_fr_date(d))
        frames.append(r)
    wide = pd.concat(frames, axis=1)
    wide = wide[[i in UPDATE_FIELDS or history.is_consent(i) for i in wide.index]]

    def mask(f, v):
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        return mask_email(v) if f == "email" else mask_phone(v) if f == "phone" else \
            mask_text(v) if f in ("first_name", "last_name", "address") else v

    shown = pd.DataFrame({c: [mask(f, v) for f, v in zip(wide.index, wide[c], strict=True)] for c in wide.columns})
    shown.insert(0, "Champ", [field_label(f) for f in wide.index])
    return table(shown)


def _fr_date(d) -> str:
    return f"au {pd.Timestamp(d).strftime('%d/%m/%Y')}"
