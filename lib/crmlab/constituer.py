"""Step 01 – constituer: load the sources, build the single customer view, measure completeness.

The notebook ``notebooks/01_constituer/constituer.ipynb`` calls these functions in
order; each one works inside the step's transaction opened by :func:`crmlab.db.open_step`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from crmlab import db
from crmlab.db import check, to_frame
from crmlab.errors import InputError, ParamsError
from crmlab.params import Param
from crmlab.sources import resolve_source_paths, validate_sources

CUSTOMER_FIELDS = [
    "first_name", "last_name", "email", "phone", "address", "postal_code",
    "city", "country", "birth_date", "gender",
]

FIELD_LABELS = {
    "first_name": "Prénom", "last_name": "Nom", "email": "E-mail", "phone": "Téléphone",
    "address": "Adresse", "postal_code": "Code postal", "city": "Ville", "country": "Pays",
    "birth_date": "Date de naissance", "gender": "Civilité",
}


def _check_fields(value, key):
    unknown = [f for f in value if f not in CUSTOMER_FIELDS]
    if unknown:
        from crmlab.params import closest

        near = closest(unknown[0], CUSTOMER_FIELDS)
        raise ParamsError(
            f"Champ client inconnu dans « {key} » : {unknown[0]}",
            hint=(f"Vouliez-vous dire « {near} » ? " if near else "") + f"Champs possibles : {', '.join(CUSTOMER_FIELDS)}",
        )
    return list(value)


def _check_band(value, key):
    if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or not 0 <= value[0] <= value[1] <= 1:
        raise ParamsError(f"« {key} » doit être une liste [bas, haut] de deux scores entre 0 et 1 (reçu : {value!r})")
    return [float(v) for v in value]


PARAMS: dict[str, Param] = {
    "sources": Param("list", [], "fichiers sources : nom, type (kind), chemin, correspondance des colonnes", check=validate_sources, paths_in=resolve_source_paths),
    "keep_fields": Param("list", ["first_name", "last_name", "email", "phone", "address", "postal_code", "city", "birth_date"],
                         "champs clients conservés (minimisation) ; les autres sont écartés", check=_check_fields),
    "default_region": Param("str", "FR", "pays par défaut des numéros de téléphone (code ISO à 2 lettres)"),
    "match_threshold": Param("float", 0.90, "score à partir duquel deux fiches sont la même personne", min=0.0, max=1.0),
    "review_band": Param("list", [0.50, 0.90], "scores [bas, haut] des paires incertaines exportées pour revue", check=_check_band),
    "decisions_file": Param("path", None, "décisions de revue (CSV : même / différent par paire), appliquées à chaque exécution", nullable=True, must_exist=True),
    "max_unparsable_share": Param("float", 0.05, "part maximale de valeurs illisibles tolérée par colonne", min=0.0, max=1.0),
}


@dataclass
class LoadSummary:
    """What loading the sources did.

    Attributes
    ----------
    files : DataFrame
        One row per file: source, kind, path, status, rows_read, rows_kept,
        rows_filtered, rows_excluded, rows_rejected.
    rejects : DataFrame
        Counts per source, file, reason: source, path, reason, rows.
    excluded : DataFrame
        Rows deliberately left out per source and label: source, label, rows.
    not_kept : DataFrame
        Columns of the files that are deliberately not kept: source, column, why.
    """

    files: pd.DataFrame
    rejects: pd.DataFrame
    excluded: pd.DataFrame
    not_kept: pd.DataFrame


def output_dir(p: dict) -> Path:
    """Folder where the step writes its work files (run folder, else the database's folder)."""
    folder = Path(p.get("out_dir") or Path(p["database"]).parent)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- loading

# (table, source column, key column) of every table whose rows point to a source customer record
KEY_REFERENCES = [
    ("transactions", "customer_source", "customer_key"),
    ("consents", "source", "source_key"),
    ("campaign_contacts", "source", "customer_key"),
]


def load_sources(con: duckdb.DuckDBPyConnection, p: dict) -> LoadSummary:
    """Load every source of ``p.sources`` (ledger: files already loaded are skipped).

    Also settles ``p["as_of"]``: when empty it becomes the day after the last purchase;
    a date before every purchase is refused.

    Returns
    -------
    LoadSummary
        Per-file counts, rejects per reason, exclusions per label, columns not kept.
    """
    from crmlab.sources import load_source

    if not p["sources"]:
        raise InputError("Aucune source déclarée dans « constituer.sources »",
                         hint="Déclarez au moins un fichier de clients ou de transactions (voir README)")
    results = []
    for source in p["sources"]:
        source = {"max_unparsable_share": p["max_unparsable_share"], **source}
        results.append(load_source(con, source, run_id=p["run_id"], step="01", keep_staged=False))
    files, rejects, excluded, cols = [], [], [], []
    for res in results:
        for f in res.files:
            files.append({
                "source": res.name, "kind": res.kind, "file": os.path.basename(f.path),
                "status": "déjà chargé" if f.skipped else "chargé",
                "rows_read": f.rows_read, "rows_kept": f.rows_kept, "rows_filtered": f.rows_filtered,
                "rows_excluded": f.rows_excluded, "rows_rejected": f.rows_rejected,
                "rows_warned": sum(f.warnings.values()),
            })
            for reason, n in {**f.rejected, **f.warnings}.items():
                rejects.append({"source": res.name, "file": os.path.basename(f.path), "reason": reason, "rows": n})
            for label, n in f.excluded.items():
                excluded.append({"source": res.name, "label": label, "rows": n})
        for column in res.columns_unused:
            cols.append({"source": res.name, "column": column, "why": "colonne du fichier non reprise"})
        if res.kind == "customers":
            src = next(s for s in p["sources"] if s["name"] == res.name)
            for canon in src["columns"]:
                base = canon[len("consent_"):] if canon.startswith("consent_") else None
                if base is None and canon in CUSTOMER_FIELDS and canon not in p["keep_fields"]:
                    cols.append({"source": res.name, "column": f"{canon} ← {src['columns'][canon]}",
                                 "why": "champ non retenu dans keep_fields"})
    summary = LoadSummary(
        files=pd.DataFrame(files, columns=["source", "kind", "file", "status", "rows_read", "rows_kept",
                                           "rows_filtered", "rows_excluded", "rows_rejected", "rows_warned"]),
        rejects=pd.DataFrame(rejects, columns=["source", "file", "reason", "rows"]),
        excluded=pd.DataFrame(excluded, columns=["source", "label", "rows"]),
        not_kept=pd.DataFrame(cols, columns=["source", "column", "why"]),
    )
    settle_as_of(con, p)
    return summary


def settle_as_of(con: duckdb.DuckDBPyConnection, p: dict) -> str | None:
    """Fill ``p["as_of"]`` when empty (day after the last purchase); refuse a date before all data."""
    first, last = con.execute("SELECT min(ts), max(ts) FROM transactions").fetchall()[0]
    if p.get("as_of") is None:
        if last is not None:
            p["as_of"] = (pd.Timestamp(last).normalize() + pd.Timedelta(days=1)).date().isoformat()
        return p.get("as_of")
    if first is not None and pd.Timestamp(p["as_of"]) <= pd.Timestamp(first):
        raise InputError(
            f"La date de référence run.as_of = {p['as_of']} précède tous les achats (le premier date du "
            f"{pd.Timestamp(first):%d/%m/%Y})",
            hint="Choisissez une date postérieure au premier achat, ou laissez as_of vide pour prendre le lendemain du dernier achat",
        )
    return p["as_of"]


def files_table(loads: LoadSummary):
    """French table of the files read (one row per file)."""
    from crmlab.display import table

    frame = loads.files.drop(columns=["kind"])
    return table(frame, formats={c: "int" for c in frame.columns if c.startswith("rows_")}, labels={
        "source": "Source", "file": "Fichier", "status": "État", "rows_read": "Lignes lues",
        "rows_kept": "Gardées", "rows_filtered": "Hors filtre", "rows_excluded": "Écartées",
        "rows_rejected": "Rejetées", "rows_warned": "Valeurs ignorées",
    })


def load_findings(loads: LoadSummary) -> list[str]:
    """French sentences summarising the load."""
    from crmlab.charts import fr_number, fr_percent

    f = loads.files
    out = []
    loaded = f[f.status == "chargé"]
    skipped = f[f.status != "chargé"]
    if len(loaded):
        read, kept, rej = loaded.rows_read.sum(), loaded.rows_kept.sum(), loaded.rows_rejected.sum()
        out.append(f"**{fr_number(read)} lignes lues** dans {len(loaded)} fichier(s) : {fr_number(kept)} gardées, "
                   f"{fr_number(loaded.rows_excluded.sum())} écartées par une règle, {fr_number(rej)} rejetées "
                   f"({fr_percent(rej / read if read else 0)}).")
        if rej:
            worst = loads.rejects.groupby("reason")["rows"].sum().sort_values(ascending=False)
            out.append(f"Premier motif de rejet : « {worst.index[0]} » ({fr_number(worst.iloc[0])} lignes).")
    if len(skipped):
        out.append(f"{len(skipped)} fichier(s) déjà chargé(s) lors d'une exécution précédente : ignorés (registre des chargements).")
    return out


def exclusions_table(loads: LoadSummary):
    """Rows deliberately left out, per source and rule label."""
    from crmlab.display import HTMLBlock, table

    if loads.excluded.empty:
        return HTMLBlock("<p><em>Aucune ligne écartée par une règle des paramètres.</em></p>")
    frame = loads.excluded.groupby(["source", "label"], as_index=False)["rows"].sum()
    return table(frame, formats={"rows": "int"}, labels={"source": "Source", "label": "Règle d'exclusion", "rows": "Lignes"})


def rejects_table(loads: LoadSummary):
    """Rejected rows (and ignored values) counted per source, file and reason."""
    from crmlab.display import HTMLBlock, table

    if loads.rejects.empty:
        return HTMLBlock("<p><em>Aucune ligne rejetée : toutes les lignes chargées sont utilisables.</em></p>")
    frame = loads.rejects.sort_values(["source", "rows"], ascending=[True, False])
    return table(frame, formats={"rows": "int"}, labels={"source": "Source", "file": "Fichier", "reason": "Motif", "rows": "Lignes"})


def reject_examples(con: duckdb.DuckDBPyConnection, p: dict, per_reason: int = 2):
    """Return a few rejected rows per reason for this run, personal data masked.

    Returns
    -------
    Styler
        Source, Fichier, Ligne, Motif, Colonne, Valeur.
    """
    from crmlab.display import mask_email, mask_phone

    frame = to_frame(con.sql(
        """
        SELECT source, path, row_number, reason, column_name, value FROM (
            SELECT *, row_number() OVER (PARTITION BY source, reason ORDER BY path, row_number) AS k
            FROM rejects WHERE run_id = ? AND step = '01')
        WHERE k <= ? ORDER BY source, reason, row_number
        """,
        params=[p["run_id"], per_reason],
    ))
    if frame.empty:
        from crmlab.display import HTMLBlock

        return HTMLBlock("<p><em>Aucun rejet pour cette exécution.</em></p>")

    def masked(row):
        col, val = str(row["column_name"] or "").lower(), row["value"]
        if val is None or pd.isna(val):
            return "(vide)"
        if "@" in str(val) or "mail" in col:
            return mask_email(val)
        if "tel" in col or "phone" in col or "mobile" in col:
            return mask_phone(val)
        return str(val)[:40]

    from crmlab.display import table

    return table(pd.DataFrame({
        "Source": frame.source, "Fichier": frame.path.map(os.path.basename), "Ligne": frame.row_number,
        "Motif": frame.reason, "Colonne": frame.column_name.fillna("").str.strip('"'), "Valeur": frame.apply(masked, axis=1),
    }), formats={"Ligne": "int"})


def export_rejects(con: duckdb.DuckDBPyConnection, p: dict) -> str:
    """Write this run's rejected rows to ``rejets_a_corriger.csv`` (UTF-8 BOM, ``;``) and say where.

    The file holds the raw rows (with personal data) so that the data owner can fix them;
    it stays in the run folder, never in a report.
    """
    frame = to_frame(con.sql(
        "SELECT source, path, row_number, reason, column_name, value, record FROM rejects "
        "WHERE run_id = ? AND step = '01' ORDER BY source, path, row_number", params=[p["run_id"]],
    ))
    if frame.empty:
        return "Aucune ligne à corriger."
    out = output_dir(p) / "rejets_a_corriger.csv"
    frame.columns = ["source", "fichier", "ligne", "motif", "colonne", "valeur", "ligne_brute"]
    frame.to_csv(out, sep=";", index=False, encoding="utf-8-sig")
    return f"{len(frame)} ligne(s) à corriger exportées dans « {out.name} » (dossier de l'exécution), avec la ligne brute et le motif."


# --------------------------------------------------------------------------- minimisation


def apply_minimisation(con: duckdb.DuckDBPyConnection, p: dict) -> int:
    """Blank the customer fields that are not in ``keep_fields``; return the values removed."""
    dropped = [f for f in CUSTOMER_FIELDS if f not in p["keep_fields"]]
    if not dropped:
        return 0
    count = con.execute(
        "SELECT " + " + ".join(f"count({f})" for f in dropped) + " FROM source_customers"
    ).fetchall()[0][0]
    con.execute("UPDATE source_customers SET " + ", ".join(f"{f} = NULL" for f in dropped))
    return int(count)


def not_kept_table(loads: LoadSummary, p: dict):
    """Columns of the sources deliberately left out (data minimisation)."""
    from crmlab.display import HTMLBlock, table

    if loads.not_kept.empty:
        return HTMLBlock("<p><em>Toutes les colonnes des fichiers chargés servent un objectif CRM.</em></p>")
    return table(loads.not_kept, labels={"source": "Source", "column": "Colonne laissée de côté", "why": "Pourquoi"})


# --------------------------------------------------------------------------- single customer view


def add_key_only_records(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Create empty customer records for keys used by transactions/consents/contacts but absent from ``source_customers``.

    A transactions file without customer file (Online Retail, CDNOW) still produces one
    customer per key this way.

    Returns
    -------
    DataFrame
        source, records: records created per customer source.
    """
    union = " UNION ".join(
        f"SELECT DISTINCT {s} AS source, {k} AS source_key FROM {t} WHERE {k} IS NOT NULL" for t, s, k in KEY_REFERENCES
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _missing_keys AS SELECT u.* FROM ({union}) u "
                "ANTI JOIN source_customers c ON c.source = u.source AND c.source_key = u.source_key")
    con.execute("INSERT INTO source_customers (source, source_key) SELECT source, source_key FROM _missing_keys")
    return to_frame(con.sql("SELECT source, count(*) AS records FROM _missing_keys GROUP BY source ORDER BY source"))


def build_customer_view(con: duckdb.DuckDBPyConnection, p: dict):
    """Link source records into customers (golden records), then attach purchases, consents and contacts.

    The links before relinking are kept aside first, so that the customer ids written by
    the later steps (contacts, history, segments, campaign contacts…) follow their person
    when a cluster changes id (:func:`carry_over_ids`).

    Returns
    -------
    crmlab.identity.LinkResult
        With extra attributes ``key_only`` (records created from transaction keys),
        ``rule_counts`` and ``carry_over`` (:class:`CarryOver`).
    """
    from crmlab import identity

    con.execute(f"CREATE OR REPLACE TEMP TABLE {LINKS_BEFORE} AS SELECT source, source_key, customer_id FROM customer_links")
    key_only = add_key_only_records(con)
    priorities = {s["name"]: int(s["priority"]) for s in p["sources"] if s.get("priority") is not None}
    truth = None
    if p.get("truth_dir") and Path(p["truth_dir"], "duplicates.csv").exists():
        truth = Path(p["truth_dir"], "duplicates.csv")
    view = identity.link(
        con,
        default_region=p["default_region"],
        priorities=priorities or None,
        threshold=p["match_threshold"],
        review_band=tuple(p["review_band"]),
        decisions=p.get("decisions_file"),
        review_out=output_dir(p) / "paires_a_revoir.csv",
        truth=truth,
    )
    view.carry_over = carry_over_ids(con)
    con.execute(f"DROP TABLE {LINKS_BEFORE}")
    con.execute(
        "UPDATE customers SET is_prospect = customer_id NOT IN (SELECT DISTINCT customer_id FROM transactions WHERE customer_id IS NOT NULL)"
    )
    view.key_only = key_only
    view.rule_counts = to_frame(con.sql(
        "SELECT rule, count(*) AS records FROM customer_links GROUP BY rule ORDER BY records DESC, rule"
    ))
    view.rule_counts["rule"] = view.rule_counts["rule"].map(lambda r: RULE_LABELS.get(r, r))
    return view


# --------------------------------------------------------------------------- carrying customer ids over

#: TEMP table of ``customer_links`` (source, source_key, customer_id) as it was before relinking
LINKS_BEFORE = "_links_before"

#: Tables whose customer ids are written by steps 02–06 and follow their person through a relinking.
#: ``transactions`` is not listed: every purchase carries its customer key and is re-keyed exactly
#: through ``KEY_REFERENCES``.
CARRIED_TABLES = ["interactions", "contact_history", "feed_items", "consents", "campaign_contacts", "segments"]

#: Tables where a person may appear once only: (table, unique key besides customer_id, rows concerned).
#: When two former customers become one, the row of the primary former customer is kept.
UNIQUE_PER_CUSTOMER = [
    ("segments", "as_of", "TRUE"),
    ("campaign_contacts", "campaign_id", "customer_key IS NULL"),
]


@dataclass
class CarryOver:
    """What :func:`carry_over_ids` did.

    Attributes
    ----------
    mapping : DataFrame
        One row per former customer id whose id changed: ``old_id, new_id, records`` (its
        source records now in ``new_id``; 0 when found through the id itself), ``targets``
        (new customers holding its records: more than 1 is a split), ``rank`` (1 = the
        primary former customer of ``new_id``).
    carried : int
        Former customer ids carried over to a new id.
    splits : int
        Former customers whose records now sit in several customers (they follow the one
        holding most of their records, ties to the smallest id).
    recovered : int
        Ids unknown to the previous links but recognised as the id of a source record's
        cluster (``'C'`` + md5 of ``source|source_key``), e.g. left by an older version.
    rows : dict
        Rows re-keyed per table.
    dropped : dict
        Rows of ids that exist no more: ``interactions`` detached (customer_id NULL),
        duplicate or orphan ``segments`` / ``campaign_contacts`` rows deleted.
    """

    mapping: pd.DataFrame
    carried: int = 0
    splits: int = 0
    recovered: int = 0
    rows: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)


def carry_over_ids(con: duckdb.DuckDBPyConnection, before: str = LINKS_BEFORE) -> CarryOver:
    """Re-key the customer ids of the later steps' tables after a relinking; attach keyed rows.

    Customer ids are derived from the smallest source record of each cluster, so they
    change when a cluster gains or loses records (a prospect of step 04 now linked to a
    customer, records of step 05…). Each former id goes to the new customer that holds
    most of its records (shared ``source, source_key`` between ``before`` and
    ``customer_links``), ties to the smallest id; an id absent from ``before`` is
    recognised, if possible, as the id of a record's cluster (:func:`identity.customer_id`
    of its ``source, source_key``, or the 10-digit id of older bases). Then:

    * every table of :data:`CARRIED_TABLES` is re-keyed; ``segments`` history rows follow
      the person (one row per snapshot: the primary former customer's row wins, i.e. the
      one that kept its id, else the one with most records, else the smallest id), and
      likewise one row per campaign for planned campaign contacts (no customer key);
    * rows pointing to a source record (:data:`KEY_REFERENCES`) take that record's
      customer exactly;
    * ids that exist no more are not left dangling: interactions are detached
      (``customer_id`` NULL, the contact stays collected), ``segments`` and unkeyed
      ``campaign_contacts`` rows are deleted.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection inside the step's transaction, ``customer_links`` and ``customers``
        already rebuilt.
    before : str
        Table of the former links: ``source, source_key, customer_id``.

    Returns
    -------
    CarryOver
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _co_map AS
        WITH shared AS (
            SELECT b.customer_id AS old_id, l.customer_id AS new_id, count(*) AS records
            FROM {before} b JOIN customer_links l ON l.source = b.source AND l.source_key = b.source_key
            WHERE b.customer_id IS NOT NULL
            GROUP BY ALL
        )
        SELECT old_id, new_id, records, count(*) OVER (PARTITION BY old_id) AS targets FROM shared
        QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY records DESC, new_id) = 1
    """)
    referenced = " UNION ".join(f"SELECT DISTINCT customer_id FROM {t}" for t in CARRIED_TABLES)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _co_orphans AS
        SELECT r.customer_id FROM ({referenced}) r
        WHERE r.customer_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = r.customer_id)
          AND NOT EXISTS (SELECT 1 FROM _co_map m WHERE m.old_id = r.customer_id)
    """)
    recovered = 0
    if con.execute("SELECT count(*) FROM _co_orphans").fetchall()[0][0]:
        from crmlab import identity

        # ids of this version and of the bases written before 2026-12 (10 hex digits)
        ids = " UNION ALL ".join(
            f"SELECT {identity.customer_id_sql('source', 'source_key', n)} AS record_id, customer_id FROM customer_links"
            for n in (identity.ID_HEX_DIGITS, identity.LEGACY_ID_HEX_DIGITS))
        recovered = con.execute(f"""
            INSERT INTO _co_map
            SELECT o.customer_id, min(l.customer_id), 0, 1
            FROM _co_orphans o JOIN ({ids}) l ON l.record_id = o.customer_id
            GROUP BY o.customer_id
        """).fetchall()[0][0]
    con.execute("DELETE FROM _co_map WHERE old_id = new_id AND NOT EXISTS "
                "(SELECT 1 FROM _co_map m WHERE m.new_id = _co_map.new_id AND m.old_id <> m.new_id)")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _co_map AS
        SELECT *, row_number() OVER (PARTITION BY new_id ORDER BY old_id = new_id DESC, records DESC, old_id) AS rank
        FROM _co_map
    """)
    rows, dropped = {}, {}
    changed = con.execute("SELECT count(*) FROM _co_map WHERE old_id <> new_id").fetchall()[0][0]
    if changed:
        for table, key, where in UNIQUE_PER_CUSTOMER:
            # one row per person and key: the losing duplicates go before re-keying
            n = con.execute(f"""
                DELETE FROM {table} WHERE rowid IN (
                    SELECT t.rowid FROM {table} t LEFT JOIN _co_map m ON m.old_id = t.customer_id
                    WHERE ({where}) AND (m.old_id IS NOT NULL OR t.customer_id IN (SELECT new_id FROM _co_map))
                    QUALIFY row_number() OVER (PARTITION BY t.{key}, coalesce(m.new_id, t.customer_id)
                                               ORDER BY coalesce(m.rank, 0), t.customer_id) > 1)
            """).fetchall()[0][0]
            if n:
                dropped[f"{table} (doublons)"] = int(n)
        for table in CARRIED_TABLES:
            n = con.execute(f"""
                UPDATE {table} SET customer_id = m.new_id FROM _co_map m
                WHERE {table}.customer_id = m.old_id AND m.old_id <> m.new_id
            """).fetchall()[0][0]
            if n:
                rows[table] = int(n)
    n_links = con.execute("SELECT count(*) FROM customer_links").fetchall()[0][0]
    for table, s, k in KEY_REFERENCES:
        # A table smaller than the links is the build side of the join, so an UPDATE joined
        # on the keys writes its rows in scattered order (633 k campaign contacts: 20 s);
        # those go by rowid (0.7 s). A larger one is scanned in storage order and updated
        # faster directly (10 M purchases: 6.5 s, by rowid 12 s).
        if con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] < n_links:
            db.update_by_rowid(con, table, "customer_id", f"""
                SELECT t.rowid AS rid, l.customer_id AS value FROM {table} t
                JOIN customer_links l ON l.source = t.{s} AND l.source_key = t.{k}
                WHERE t.customer_id IS DISTINCT FROM l.customer_id
            """)
        else:
            con.execute(
                f"UPDATE {table} SET customer_id = l.customer_id FROM customer_links l "
                f"WHERE l.source = {table}.{s} AND l.source_key = {table}.{k} "
                f"AND {table}.customer_id IS DISTINCT FROM l.customer_id"
            )
    gone = "customer_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = {t}.customer_id)"
    for table, sql in [
        ("interactions", f"UPDATE interactions SET customer_id = NULL WHERE {gone.format(t='interactions')}"),
        ("segments", f"DELETE FROM segments WHERE {gone.format(t='segments')}"),
        ("campaign_contacts", f"DELETE FROM campaign_contacts WHERE customer_key IS NULL AND {gone.format(t='campaign_contacts')}"),
    ]:
        n = con.execute(sql).fetchall()[0][0]
        if n:
            dropped[table] = int(n)
    mapping = to_frame(con.sql("SELECT old_id, new_id, records, targets, rank FROM _co_map WHERE old_id <> new_id "
                                   "ORDER BY old_id"))
    con.execute("DROP TABLE IF EXISTS _co_map; DROP TABLE IF EXISTS _co_orphans")
    return CarryOver(mapping=mapping, carried=len(mapping), splits=int((mapping["targets"] > 1).sum()),
                     recovered=int(recovered), rows=rows, dropped=dropped)


def carry_over_sentence(carry: CarryOver | None) -> str | None:
    """French sentence on the customer ids carried over by the relinking (None when none was)."""
    from crmlab.charts import fr_number

    if carry is None or not carry.carried:
        return None
    text = (f"{fr_number(carry.carried)} identifiant(s) client(s) changé(s) par ce rapprochement : contacts, historique, "
            "segments et campagnes suivent la personne sous son nouvel identifiant")
    if carry.splits:
        text += f" ({fr_number(carry.splits)} client(s) aux fiches désormais réparties suivent la majorité de leurs fiches)"
    return text + "."


def view_findings(view) -> list[str]:
    """French sentences on the single customer view."""
    from crmlab.charts import fr_number, fr_percent

    c = view.counts
    records, customers = c["records"], c["customers"]
    rate = 1 - customers / records if records else 0.0
    out = [
        f"**{fr_number(records)} fiches sources** rapprochées en **{fr_number(customers)} clients uniques** : "
        f"taux de doublons de {fr_percent(rate)}.",
        f"{fr_number(c.get('customers_multi', 0))} clients réunissent plusieurs fiches ; "
        f"{fr_number(c.get('pairs_review', 0))} paires incertaines sont à revoir.",
    ]
    if getattr(view, "key_only", None) is not None and len(view.key_only):
        out.append(f"{fr_number(view.key_only.records.sum())} clients créés à partir des seules clés des fichiers d'achats "
                   "(pas de fiche client correspondante).")
    if c.get("guard_refusals"):
        out.append(f"{fr_number(c['guard_refusals'])} lien(s) refusé(s) par le garde-fou anti-chaîne (ils auraient réuni des fiches incompatibles).")
    carried = carry_over_sentence(getattr(view, "carry_over", None))
    if carried:
        out.append(carried)
    if view.metrics:
        m = view.metrics
        out.append(f"Contre la vérité terrain : précision {fr_percent(m['precision'], 2)}, rappel {fr_percent(m['recall'], 2)}, "
                   f"F1 {fr_percent(m['f1'], 2)}.")
    return out


RULE_LABELS = {
    "email": "même e-mail", "phone_name": "même téléphone et nom compatible", "name_birth": "même nom et date de naissance",
    "fuzzy": "ressemblance (score)", "decision": "décision de revue « même »", "unique": "fiche seule (aucun doublon)",
}


def rules_table(view):
    """Count the source records per linking rule."""
    from crmlab.display import table

    return table(view.rule_counts, formats={"records": "int"}, labels={"rule": "Règle de rapprochement", "records": "Fiches"})


def threshold_table(view):
    """Tabulate the threshold's effect: customers, pairs accepted and (with truth) precision/recall."""
    from crmlab.display import table

    frame = view.thresholds.copy()
    if "chosen" in frame:
        frame["chosen"] = frame["chosen"].map({True: "✓ seuil retenu", False: ""})
    fmts = {"threshold": "float", "pairs_accepted": "int", "customers": "int", "precision": "pct", "recall": "pct",
            "f1": "pct"}
    return table(frame, formats={k: v for k, v in fmts.items() if k in frame}, labels={
        "threshold": "Seuil", "pairs_accepted": "Paires retenues", "customers": "Clients", "precision": "Précision",
        "recall": "Rappel", "f1": "F1", "chosen": "Retenu",
    })


def threshold_chart(view):
    """Chart of the threshold's effect (precision/recall when truth is known, else customers)."""
    import matplotlib.pyplot as plt

    from crmlab.charts import axis_fr, finish

    t = view.thresholds
    fig, ax = plt.subplots()
    chosen = t.loc[t["chosen"], "threshold"].iloc[0] if "chosen" in t and t["chosen"].any() else None
    if "precision" in t and t["precision"].notna().any():
        ax.plot(t.threshold, t.precision, marker="o", label="Précision")
        ax.plot(t.threshold, t.recall, marker="o", label="Rappel")
        axis_fr(ax, "y", "percent", 0)
        ax.legend()
        best = t.loc[t.f1.idxmax()]
        title = f"Le meilleur F1 ({best.f1:.1%}) est atteint au seuil {best.threshold:.2f}".replace(".", ",")
        ylabel = "part des paires"
    else:
        ax.plot(t.threshold, t.customers, marker="o")
        axis_fr(ax, "y", "number")
        title = "Plus le seuil est bas, moins il reste de clients distincts"
        ylabel = "clients uniques"
    if chosen is not None:
        ax.axvline(chosen, color="#8c8c8c", linestyle="--")
        ax.annotate("seuil retenu", (chosen, ax.get_ylim()[0]), xytext=(4, 6), textcoords="offset points", color="#555")
    finish(fig, title, "seuil de score", ylabel)
    return fig


def review_note(view) -> str:
    """Where the uncertain pairs were exported and how to apply decisions."""
    n = len(view.review)
    if not n:
        return "Aucune paire incertaine : aucun arbitrage manuel n'est nécessaire."
    return (f"{n} paire(s) incertaine(s) exportée(s) dans « paires_a_revoir.csv ». Indiquez « meme » ou « different » dans "
            "la colonne decision, puis déclarez le fichier dans constituer.decisions_file : la décision sera appliquée à la "
            "prochaine exécution, sans modifier les données sources.")


def merged_examples(view) -> pd.DataFrame:
    """Return a few merged customers with their source records, personal data masked."""
    from crmlab.display import mask_pii

    ex = view.examples
    if ex.empty:
        return pd.DataFrame({"": ["Aucune fusion."]})
    cols = [c for c in ["customer_id", "source", "source_key", "first_name", "last_name", "email", "phone", "postal_code", "city", "rule", "score"] if c in ex]
    out = mask_pii(ex[cols])
    out["rule"] = out["rule"].map(lambda r: RULE_LABELS.get(r, r))
    return out.rename(columns={"customer_id": "Client", "source": "Source", "source_key": "Clé", "first_name": "Prénom",
                               "last_name": "Nom", "email": "E-mail", "phone": "Téléphone", "postal_code": "CP",
                               "city": "Ville", "rule": "Règle", "score": "Score"})


# --------------------------------------------------------------------------- completeness


def completeness(con: duckdb.DuckDBPyConnection, p: dict) -> pd.DataFrame:
    """Share of customers with each kept field filled (the « Organiser » measure).

    Returns
    -------
    DataFrame
        field, label, filled (customers), customers, share (0–1), sorted by share.
    """
    fields = [f for f in p["keep_fields"] if f in CUSTOMER_FIELDS]
    total = con.execute("SELECT count(*) FROM customers").fetchall()[0][0]
    if not fields:
        return pd.DataFrame(columns=["field", "label", "filled", "customers", "share"])
    row = con.execute("SELECT " + ", ".join(f"count({f})" for f in fields) + " FROM customers").fetchall()[0]
    frame = pd.DataFrame({"field": fields, "label": [FIELD_LABELS[f] for f in fields], "filled": list(row)})
    frame["customers"] = total
    frame["share"] = frame.filled / total if total else 0.0
    return frame.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)


def completeness_chart(comp: pd.DataFrame):
    """Horizontal bars of completeness per field, with a title stating the weakest field."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, axis_fr, finish, fr_percent

    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(comp), 3) + 1))
    colors = [PALETTE[3] if s < 0.5 else PALETTE[1] if s < 0.8 else PALETTE[2] for s in comp.share]
    ax.barh(comp.label, comp.share, color=colors)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    axis_fr(ax, "x", "percent", 0)
    for i, s in enumerate(comp.share):
        ax.text(min(s + 0.01, 0.9), i, fr_percent(s, 0), va="center")
    if len(comp):
        weakest = comp.iloc[-1]
        title = f"{weakest.label} : le champ le moins rempli ({fr_percent(weakest.share, 0)} des clients)"
    else:
        title = "Aucun champ client conservé"
    finish(fig, title, "part des clients dont le champ est renseigné", "")
    return fig


def completeness_sentence(comp: pd.DataFrame) -> str:
    """Write a French sentence reading the completeness chart."""
    from crmlab.charts import fr_percent

    if comp.empty:
        return "Aucun champ client n'est conservé : la complétude ne se mesure pas."
    full = comp[comp.share >= 0.95].label.tolist()
    weak = comp[comp.share < 0.5].label.tolist()
    text = f"Complétude moyenne des champs conservés : **{fr_percent(comp.share.mean())}**."
    if full:
        text += f" Presque toujours renseignés : {', '.join(full)}."
    if weak:
        text += f" À enrichir en priorité (moins d'un client sur deux) : {', '.join(weak)} – l'étape 04 « collecter » sert à cela."
    return text


# --------------------------------------------------------------------------- KPIs and checks


def kpis(con: duckdb.DuckDBPyConnection, p: dict, loads: LoadSummary, view, comp: pd.DataFrame) -> pd.DataFrame:
    """KPIs of step 01: headline figures (dimension ``""``), per source and per field.

    Returns
    -------
    DataFrame
        kpi, dimension, value, unit.
    """
    rows = []
    c = view.counts
    records, customers = c["records"], c["customers"]
    n_tx = con.execute("SELECT count(*) FROM transactions").fetchall()[0][0]
    rows += [
        ("clients uniques", "", customers, "clients"),
        ("taux de doublons", "", (1 - customers / records) if records else 0.0, "part"),
        ("complétude moyenne", "", float(comp.share.mean()) if len(comp) else None, "part"),
        ("lignes rejetées", "", float(loads.files.rows_rejected.sum()), "lignes"),
        ("fiches sources", "", records, "fiches"),
        ("transactions", "", n_tx, "transactions"),
    ]
    if view.metrics:
        for k in ("precision", "recall", "f1"):
            rows.append((f"rapprochement {dict(precision='précision', recall='rappel', f1='F1')[k]}", "", view.metrics[k], "part"))
    per_source = loads.files.groupby("source")[["rows_read", "rows_kept", "rows_rejected", "rows_excluded"]].sum()
    for source, r in per_source.iterrows():
        rows += [("lignes lues", source, r.rows_read, "lignes"), ("lignes gardées", source, r.rows_kept, "lignes"),
                 ("lignes rejetées", source, r.rows_rejected, "lignes"), ("lignes écartées", source, r.rows_excluded, "lignes")]
    for _, r in comp.iterrows():
        rows.append(("complétude", r.field, r.share, "part"))
    return pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])


def kpis_table(k: pd.DataFrame):
    """Tabulate the headline KPIs in French."""
    from crmlab.charts import fr_number, fr_percent
    from crmlab.display import table

    head = k[k.dimension == ""].copy()
    head["Valeur"] = [fr_percent(v) if u == "part" else fr_number(v) for v, u in zip(head.value, head.unit, strict=True)]
    return table(head[["kpi", "Valeur"]].rename(columns={"kpi": "Indicateur"}))


def check_output(con: duckdb.DuckDBPyConnection, p: dict) -> None:
    """Step 01's own checks before commit (raise CheckError)."""
    check(con, "SELECT customer_id FROM customers GROUP BY 1 HAVING count(*) > 1", "identifiant client unique")
    check(con, "SELECT source, source_key FROM customer_links GROUP BY 1, 2 HAVING count(*) > 1",
          "chaque fiche source rattachée à un seul client")
    check(con, "SELECT s.source, s.source_key FROM source_customers s ANTI JOIN customer_links l "
               "ON l.source = s.source AND l.source_key = s.source_key", "chaque fiche source rattachée à un client")
    check(con, "SELECT l.customer_id FROM customer_links l ANTI JOIN customers c ON c.customer_id = l.customer_id",
          "chaque lien pointe vers un client existant")
    check(con, "SELECT transaction_id FROM transactions WHERE customer_id IS NULL", "chaque achat rattaché à un client")
    check(con, "SELECT transaction_id FROM transactions GROUP BY 1 HAVING count(*) > 1", "identifiant d'achat unique")
    # ids written by the later steps follow the relinking (carry_over_ids)
    check(con, """SELECT i.interaction_id FROM interactions i ANTI JOIN customers c USING (customer_id)
                  WHERE i.customer_id IS NOT NULL""", "chaque contact rattaché pointe vers un client existant")
    check(con, "SELECT as_of, customer_id FROM segments GROUP BY 1, 2 HAVING count(*) > 1",
          "un client au plus une fois par instantané de segments")
    check(con, "SELECT s.customer_id FROM segments s ANTI JOIN customers c USING (customer_id)",
          "chaque ligne de segments pointe vers un client existant")
