"""Step 04 – collecter: inbound contacts into ``interactions``, matched to customers, measured.

The notebook ``notebooks/04_collecter/collecter.ipynb`` calls, inside the step's
transaction, :func:`collect` (load every source of ``collecter.sources``, check it,
match each contact to a customer with step 01's identity rules, create prospects for the
people not found, record contact-field changes and consent changes), then
:func:`collect_measures`, :func:`satisfaction`, :func:`kpis` and :func:`check_output`.

Matching rules, in this order (the first that finds exactly one customer wins):

* ``key`` – the source gives a customer key (e.g. a loyalty card number) of the source
  named by ``customer_source``: its link in ``customer_links``;
* ``email`` – same normalised e-mail as one of the customer's records, first names not
  incompatible (step 01's veto);
* ``phone_name`` – same E.164 phone and compatible names (last name close, first name
  compatible, either order): a family landline alone never links.

A contact that matches nobody but carries an e-mail or a valid phone number is a
**prospect**: contacts of one unknown person (same e-mail, or same phone and last name)
become one ``source_customers`` record of the interaction source, one ``customer_links``
row (rule ``prospect``) and one ``customers`` row with ``is_prospect = TRUE``, so a later
relinking (step 05) keeps them. A contact with neither (a name alone, a hidden number)
stays anonymous (``customer_id`` NULL): it counts as collected, not as matched – a name
alone is neither a safe match nor a way to reach the person.

Scores. A source gives one score per row with ``score`` and ``score_type`` in its
``columns``, or several with a ``scores`` mapping (``scores: {nps: ..., csat: ...}``, a
survey answer carrying both): either way a row is **one** contact (one ``interactions``
row, its person counted once) and every score it carries is one ``interaction_scores``
row (``interaction_id, score_type, score``). ``interactions.score`` / ``score_type`` keep
the score of a contact that has exactly one (NULL otherwise). Readers of the scores use
:func:`scores_sql`, which also reads the scores of databases written before
``interaction_scores`` existed.
"""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from crmlab import uplift
from crmlab.charts import fr_number, fr_percent
from crmlab.db import check, now, register_frame, to_frame
from crmlab.errors import InputError, ParamsError
from crmlab.params import Param, closest
from crmlab.sources import SCORE_PREFIX, resolve_source_paths, validate_sources, with_scores

#: channels of inbound contacts (values after normalisation) and their accepted spellings
CHANNEL_ALIASES = {
    "telephone": ("telephone", "tel", "phone", "appel", "appels", "call", "centre d'appels"),
    "email": ("email", "e-mail", "mail", "courriel"),
    "web": ("web", "site", "internet", "formulaire web", "en ligne"),
    "magasin": ("magasin", "boutique", "store", "point de vente"),
    "courrier": ("courrier", "papier", "formulaire papier", "poste"),
    "sms": ("sms",),
    "reseaux_sociaux": ("reseaux_sociaux", "reseaux sociaux", "social", "facebook", "instagram"),
    "sav": ("sav", "apres-vente", "service apres-vente"),
}
CHANNEL_LABELS = {"telephone": "téléphone", "email": "e-mail", "web": "web", "magasin": "magasin", "courrier": "courrier",
                  "sms": "SMS", "reseaux_sociaux": "réseaux sociaux", "sav": "après-vente"}
#: consent channels (those of step 03's exports)
CONSENT_CHANNELS = ("email", "sms", "courrier", "telephone")
#: allowed range of each score type
SCORE_RANGES = {"nps": (0.0, 10.0), "csat": (1.0, 5.0), "ces": (1.0, 7.0)}
#: unit of the NPS KPIs: the Net Promoter Score in points, from -100 to +100
NPS_UNIT = "NPS"
#: contact fields whose arrival counts as a data item brought
CONTACT_FIELDS = ("email", "phone", "address", "postal_code", "city")
FIELD_LABELS = {"email": "e-mail", "phone": "téléphone", "address": "adresse", "postal_code": "code postal", "city": "ville"}
RULE_LABELS = {"key": "clé client", "email": "même e-mail", "phone_name": "même téléphone et nom compatible",
               "prospect": "nouveau prospect", "known_prospect": "prospect déjà connu", "anonymous": "anonyme"}
COLUMNS = ["interaction_id", "customer_id", "source", "source_key", "channel", "kind", "ts", "operation", "score",
           "score_type", "first_name", "last_name", "email", "phone", "address", "postal_code", "city",
           "consent_channel", "consent_opted_in", "status", "text", "sha256", "row_number"]


def _check_sources(value, key):
    out = validate_sources(value, key)
    for src in out:
        if src["kind"] != "interactions":
            raise ParamsError(f"La source « {src['name']} » de « {key} » est de type « {src['kind']} »",
                              hint="L'étape 04 ne lit que des sources de type interactions (kind: interactions)")
        for t in src.get("scores") or {}:
            if t not in SCORE_RANGES:
                near = closest(t, list(SCORE_RANGES))
                raise ParamsError(f"Type de note inconnu « {t} » dans « scores » de la source « {src['name']} »",
                                  hint=(f"Vouliez-vous dire « {near} » ? " if near else "")
                                  + "Types connus : " + ", ".join(SCORE_RANGES))
    return out


PARAMS: dict[str, Param] = {
    "sources": Param("list", [], "contacts entrants : nom, chemin, kind: interactions, correspondance des colonnes ; "
                     "une note par ligne avec score et score_type dans columns, ou plusieurs avec scores: {nps: …, csat: …} "
                     "(un seul contact par ligne)",
                     check=_check_sources, paths_in=resolve_source_paths),
    "keep_text": Param("bool", False, "conserver le texte libre des contacts (commentaires, messages) ; non par défaut (minimisation)"),
    "bad_rows": Param("str", "erreur", "ligne invalide (canal inconnu, note hors échelle, date manquante) : erreur (tout arrêter) ou rejeter (écarter et compter)",
                      choices=("erreur", "rejeter")),
    "survey_recent_days": Param("int", 365, "satisfaction : réponses des N derniers jours avant as_of", min=1),
    "collect_region": Param("str", "FR", "pays par défaut des numéros de téléphone (code ISO à 2 lettres)"),
    "collect_max_unparsable_share": Param("float", 0.05, "part maximale de valeurs illisibles tolérée par colonne", min=0.0, max=1.0),
}


# --------------------------------------------------------------------------- loading and checks



def not_applicable(block: dict) -> str | None:
    """Why step 04 has nothing to do with these params (no inbound source), else None."""
    if not block.get("sources"):
        return "aucune source de contacts entrants déclarée (collecter.sources)"
    return None

def _alias_sql(expr: str, aliases: dict[str, tuple[str, ...]]) -> str:
    """Return a SQL CASE mapping the accepted spellings (our constants) to the canonical value."""
    norm = f"lower(trim(strip_accents({expr})))"
    whens = " ".join(
        f"WHEN {norm} IN ({', '.join(_lit(a) for a in alts)}) THEN {_lit(canon)}" for canon, alts in aliases.items())
    return f"CASE {whens} END"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _problems_sql(staged: str, score_types: tuple[str, ...] = ()) -> str:
    """Rows of a staged table that break a rule: row_number, sha256, reason, column.

    ``score_types`` are the types of the source's ``scores`` (staged columns
    ``score_<type>``), each checked against its scale; ``column`` is then ``score_<type>``.
    """
    chan = _alias_sql("channel", CHANNEL_ALIASES)
    cons = _alias_sql("consent_channel", {c: CHANNEL_ALIASES[c] for c in CONSENT_CHANNELS})
    ranges = " ".join(f"WHEN {_lit(t)} THEN score < {lo} OR score > {hi}" for t, (lo, hi) in SCORE_RANGES.items())
    multi = "".join(
        f"""UNION ALL SELECT row_number, sha256, 'note ' || CAST({SCORE_PREFIX}{t} AS VARCHAR) || ' hors de l''échelle {t}',
                   {_lit(SCORE_PREFIX + t)} FROM {staged} WHERE {SCORE_PREFIX}{t} < {lo} OR {SCORE_PREFIX}{t} > {hi}
        """ for t in score_types for lo, hi in [SCORE_RANGES[t]])
    return f"""
        SELECT row_number, sha256, 'canal inconnu « ' || channel || ' »' AS reason, 'channel' AS col FROM {staged}
            WHERE {chan} IS NULL
        UNION ALL SELECT row_number, sha256, 'note sans type (nps, csat…)', 'score_type' FROM {staged}
            WHERE score IS NOT NULL AND score_type IS NULL
        UNION ALL SELECT row_number, sha256, 'type de note inconnu « ' || score_type || ' »', 'score_type' FROM {staged}
            WHERE score IS NOT NULL AND lower(trim(score_type)) NOT IN ({', '.join(_lit(t) for t in SCORE_RANGES)})
        UNION ALL SELECT row_number, sha256, 'note ' || CAST(score AS VARCHAR) || ' hors de l''échelle ' || lower(trim(score_type)), 'score'
            FROM {staged} WHERE score IS NOT NULL AND (CASE lower(trim(score_type)) {ranges} ELSE false END)
        UNION ALL SELECT row_number, sha256, 'canal de consentement inconnu « ' || consent_channel || ' »', 'consent_channel'
            FROM {staged} WHERE consent_channel IS NOT NULL AND consent_opted_in IS NOT NULL AND {cons} IS NULL
        {multi}"""


def load_inbound(con: duckdb.DuckDBPyConnection, p: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load every source into the TEMP table ``_col_new`` (checked, channels normalised).

    Rows whose date or channel is missing or unreadable (rejected by the loader), whose
    channel or consent channel is unknown, or whose score (any of ``scores``) is
    unreadable or out of its scale raise :class:`InputError` naming the file, column and
    row (``bad_rows: erreur``) or are left out and counted (``bad_rows: rejeter``). An
    interaction id already collected is skipped (``déjà collecté``).

    ``_col_new`` has the :data:`COLUMNS` of ``interactions`` plus ``customer_key``,
    ``customer_source`` and ``scores`` (list of ``{score_type, score}``, every score of
    the row; ``score`` / ``score_type`` hold it when there is exactly one).

    Returns
    -------
    (files, rejected) : tuple of DataFrame
        ``files``: source, file, status, rows_read, rows_kept, rows_rejected;
        ``rejected``: source, file, reason, rows.
    """
    from crmlab.sources import load_source

    strict = p["bad_rows"] == "erreur"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _col_new AS SELECT {', '.join(_null_cols())}, "
                "CAST(NULL AS VARCHAR) AS customer_key, CAST(NULL AS VARCHAR) AS customer_source, "
                f"CAST(NULL AS {_SCORES_TYPE}) AS scores WHERE false")
    files, rejected = [], []
    for source in p["sources"]:
        source = {"max_unparsable_share": p["collect_max_unparsable_share"], **source}
        name, cols = source["name"], with_scores(source)["columns"]  # messages name the file's column
        types = tuple(source.get("scores") or {})
        res = load_source(con, source, run_id=p["run_id"], step="04")
        paths = {f.sha256: f.path for f in res.files}
        # rows the loader rejected (missing / unreadable date or channel) and score warnings
        bad = con.execute("""SELECT path, row_number, reason, column_name, sha256 FROM rejects
                             WHERE source = ? AND sha256 IN (SELECT UNNEST(?::VARCHAR[]))
                               AND (reason NOT LIKE 'valeur ignorée%' OR reason LIKE '%score%' OR reason LIKE '%consentement%')
                             ORDER BY path, row_number""",
                          [name, [f.sha256 for f in res.files if not f.skipped]]).fetchall()
        if bad and strict:
            path, row, reason, col, _sha = bad[0]
            raise InputError(f"Source « {name} » : {reason} ({len(bad)} ligne(s) en tout)", file=path, column=col, row=row,
                             hint="Corrigez le fichier, ou écrivez collecter.bad_rows: rejeter pour écarter ces lignes en les comptant")
        staged = res.staged
        problems = con.execute(f"SELECT * FROM ({_problems_sql(staged, types)}) ORDER BY sha256, row_number").fetchall()
        if problems and strict:
            row, sha, reason, col = problems[0]
            raise InputError(f"Source « {name} » : {reason} ({len(problems)} ligne(s) en tout)", file=paths.get(sha),
                             column=cols.get(col, col), row=row,
                             hint=_hint(col) + " ; ou écrivez collecter.bad_rows: rejeter pour écarter ces lignes en les comptant")
        for path, _row, reason, _col, _sha in bad:
            rejected.append({"source": name, "file": os.path.basename(path), "reason": reason})
        for _row, sha, reason, _col in problems:
            rejected.append({"source": name, "file": os.path.basename(paths.get(sha, "")), "reason": reason})
        # left out: rows breaking a rule, and rows whose score or consent the loader could not read
        bad_rows = pd.DataFrame([(r[0], r[1]) for r in problems] + [(r[1], r[4]) for r in bad],
                                columns=["row_number", "sha256"]).drop_duplicates()
        register_frame(con, "_col_bad", bad_rows)
        try:
            iid = "coalesce(s.interaction_id, s.source || ':' || left(s.sha256, 12) || ':' || CAST(s.row_number AS VARCHAR))"
            dup = con.execute(f"""SELECT count(*) FROM {staged} s WHERE {iid} IN (SELECT interaction_id FROM interactions)
                                  OR {iid} IN (SELECT interaction_id FROM _col_new)""").fetchall()[0][0]
            rejected += [{"source": name, "file": "", "reason": "déjà collecté"}] * int(dup)
            text = "s.text" if p["keep_text"] else "NULL"
            con.execute(f"""
                INSERT INTO _col_new
                SELECT {iid} AS interaction_id, NULL AS customer_id, s.source, {iid} AS source_key,
                       {_alias_sql('s.channel', CHANNEL_ALIASES)} AS channel, s.kind, s.ts, s.operation,
                       CASE WHEN len(s._scores) = 1 THEN s._scores[1].score END AS score,
                       CASE WHEN len(s._scores) = 1 THEN s._scores[1].score_type END AS score_type,
                       s.first_name, s.last_name, s.email, s.phone, s.address, s.postal_code, s.city,
                       {_alias_sql('s.consent_channel', {c: CHANNEL_ALIASES[c] for c in CONSENT_CHANNELS})} AS consent_channel,
                       s.consent_opted_in, s.status, {text} AS text, s.sha256, s.row_number,
                       s.customer_key, ? AS customer_source, s._scores AS scores
                FROM (SELECT *, {_scores_list_sql(types)} AS _scores FROM {staged}) s
                ANTI JOIN _col_bad b ON b.row_number = s.row_number AND b.sha256 = s.sha256
                WHERE {iid} NOT IN (SELECT interaction_id FROM interactions)
                QUALIFY row_number() OVER (PARTITION BY {iid} ORDER BY s.row_number) = 1
            """, [source.get("customer_source")])
        finally:
            con.unregister("_col_bad")
        for f in res.files:
            files.append({"source": name, "file": os.path.basename(f.path), "status": "déjà chargé" if f.skipped else "chargé",
                          "rows_read": f.rows_read, "rows_kept": f.rows_kept, "rows_rejected": f.rows_rejected})
    files = pd.DataFrame(files, columns=["source", "file", "status", "rows_read", "rows_kept", "rows_rejected"])
    rej = pd.DataFrame(rejected, columns=["source", "file", "reason"])
    rej = rej.groupby(["source", "file", "reason"]).size().rename("rows").reset_index() if len(rej) else rej.assign(rows=0)
    return files, rej


_SCORES_TYPE = "STRUCT(score_type VARCHAR, score DOUBLE)[]"


def _scores_list_sql(score_types: tuple[str, ...]) -> str:
    """Return the SQL list of the scores of a staged row (``{score_type, score}``, NULL scores left out).

    With ``score_types`` (the source's ``scores``) one item per non-NULL ``score_<type>``;
    without, the single ``score`` / ``score_type`` pair of ``columns``.
    """
    if score_types:
        items = ", ".join(f"struct_pack(score_type := {_lit(t)}, score := {SCORE_PREFIX}{t})" for t in score_types)
        return f"CAST(list_filter([{items}], lambda x: x.score IS NOT NULL) AS {_SCORES_TYPE})"
    return (f"CAST(CASE WHEN score IS NOT NULL THEN [struct_pack(score_type := lower(trim(score_type)), score := score)] "
            f"ELSE [] END AS {_SCORES_TYPE})")


def _hint(col: str) -> str:
    if col.startswith(SCORE_PREFIX) and col != "score_type":
        col = "score"
    return {
        "channel": "Canaux reconnus : " + ", ".join(CHANNEL_ALIASES),
        "score": "Échelles : NPS de 0 à 10, CSAT de 1 à 5, CES de 1 à 7",
        "score_type": "Indiquez le type de note avec score_type (par exemple \"'nps'\")",
        "consent_channel": "Canaux de consentement : " + ", ".join(CONSENT_CHANNELS),
    }.get(col, "Corrigez la valeur")


def _null_cols() -> list[str]:
    types = {"ts": "TIMESTAMP", "score": "DOUBLE", "consent_opted_in": "BOOLEAN", "row_number": "BIGINT"}
    return [f"CAST(NULL AS {types.get(c, 'VARCHAR')}) AS {c}" for c in COLUMNS]


# --------------------------------------------------------------------------- matching


def match(con: duckdb.DuckDBPyConnection, p: dict) -> None:
    """Add ``customer_id`` and ``rule`` to ``_col_new`` (TEMP table ``_col_matched``); create prospects.

    See the module docstring for the rules. Writes ``source_customers``,
    ``customer_links`` and ``customers`` rows for the new prospects.
    """
    from crmlab import identity
    from crmlab.normalize import normalize_customers

    region = p["collect_region"]
    normalize_customers(con, "_col_new", default_region=region, out="_col_norm")
    normalize_customers(con, "source_customers", default_region=region, out="_col_ref0")
    # only the columns matching and the data items read (the normalised table is wide)
    con.execute("""CREATE OR REPLACE TEMP TABLE _col_ref AS
                   SELECT l.customer_id, r.email_strict, r.phone_e164, r.fn, r.ln, r.email_clean, r.address_norm,
                          r.postal_code, r.city_norm
                   FROM _col_ref0 r JOIN customer_links l USING (source, source_key)""")
    con.execute("DROP TABLE _col_ref0")
    fl = identity._first_level_sql("n.fn", "r.fn")  # step 01's name levels (same SQL as the linker)
    fl_x = identity._first_level_sql("n.fn", "r.ln")
    ll = identity._last_level_sql("n.ln", "r.ln")
    ll_x = identity._last_level_sql("n.ln", "r.fn")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _col_cand AS
        WITH fe AS (SELECT email_strict AS v FROM _col_ref
                    WHERE email_strict IN (SELECT email_strict FROM _col_norm WHERE email_strict IS NOT NULL)
                    GROUP BY 1 HAVING count(DISTINCT customer_id) > 5),
        k AS (
            SELECT c.interaction_id, l.customer_id, 'key' AS rule, 0 AS o
            FROM _col_new c JOIN customer_links l ON l.source = c.customer_source AND l.source_key = c.customer_key
            WHERE c.customer_key IS NOT NULL
        ), e AS (
            SELECT n.source_key AS interaction_id, r.customer_id, 'email' AS rule, 1 AS o
            FROM _col_norm n JOIN _col_ref r ON r.email_strict = n.email_strict
            WHERE n.email_strict IS NOT NULL AND n.email_strict NOT IN (SELECT v FROM fe)
              AND coalesce({fl}, 1) > 0
        ), ph AS (
            SELECT n.source_key AS interaction_id, r.customer_id, 'phone_name' AS rule, 2 AS o
            FROM _col_norm n JOIN _col_ref r ON r.phone_e164 = n.phone_e164
            WHERE n.phone_e164 IS NOT NULL
              AND ((coalesce({ll}, -1) >= 2 AND coalesce({fl}, 1) >= 1)
                   OR (coalesce({ll_x}, -1) >= 2 AND coalesce({fl_x}, 1) >= 1))
        ), u AS (
            SELECT interaction_id, rule, o, list(DISTINCT customer_id) AS ids
            FROM (SELECT * FROM k UNION ALL SELECT * FROM e UNION ALL SELECT * FROM ph) GROUP BY ALL
        )
        SELECT interaction_id, rule, ids[1] AS customer_id FROM u WHERE len(ids) = 1
        QUALIFY row_number() OVER (PARTITION BY interaction_id ORDER BY o) = 1
    """)
    # unknown people: cluster their contacts (same e-mail, or same phone and last name), one prospect each
    _cluster_unknown(con)
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _col_prospects AS
            SELECT u.p_source AS source, u.p_key AS source_key,
                   {identity.customer_id_sql('u.p_source', 'u.p_key')} AS customer_id,
                   arg_max(n.first_name, c.ts) FILTER (WHERE n.first_name IS NOT NULL) AS first_name,
                   arg_max(n.last_name, c.ts) FILTER (WHERE n.last_name IS NOT NULL) AS last_name,
                   arg_max(n.email_clean, c.ts) FILTER (WHERE n.email_clean IS NOT NULL) AS email,
                   arg_max(n.phone_e164, c.ts) FILTER (WHERE n.phone_e164 IS NOT NULL) AS phone,
                   arg_max(n.address, c.ts) FILTER (WHERE n.address IS NOT NULL) AS address,
                   arg_max(n.postal_code, c.ts) FILTER (WHERE n.postal_code IS NOT NULL) AS postal_code,
                   arg_max(n.city, c.ts) FILTER (WHERE n.city IS NOT NULL) AS city,
                   min(c.ts) AS created_at, max(c.ts) AS updated_at, arg_min(c.sha256, c.interaction_id) AS sha256,
                   min(c.row_number) AS row_number
            FROM _col_unknown u JOIN _col_norm n ON n.source_key = u.interaction_id
            JOIN _col_new c ON c.interaction_id = u.interaction_id
            GROUP BY u.p_source, u.p_key
        """)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _col_matched AS
            SELECT c.* REPLACE (coalesce(m.customer_id, pr.customer_id) AS customer_id),
                   coalesce(m.customer_id, pr.customer_id) AS matched_id,
                   -- contacts matched to an existing prospect are not "new prospects"
                   CASE WHEN m.rule IS NOT NULL AND kp.customer_id IS NOT NULL THEN 'known_prospect'
                        WHEN m.rule IS NOT NULL THEN m.rule WHEN pr.customer_id IS NOT NULL THEN 'prospect'
                        ELSE 'anonymous' END AS rule
            FROM _col_new c LEFT JOIN _col_cand m USING (interaction_id)
            LEFT JOIN (SELECT DISTINCT customer_id FROM customers WHERE is_prospect) kp ON kp.customer_id = m.customer_id
            LEFT JOIN _col_unknown u USING (interaction_id)
            LEFT JOIN _col_prospects pr ON pr.source = u.p_source AND pr.source_key = u.p_key
        """)
    finally:
        con.execute("DROP TABLE IF EXISTS _col_unknown")
    con.execute("""
        INSERT INTO source_customers (source, source_key, first_name, last_name, email, phone, address, postal_code,
                                      city, country, created_at, updated_at, sha256, row_number)
        SELECT source, source_key, first_name, last_name, email, phone, address, postal_code, city, ?,
               created_at, updated_at, sha256, row_number FROM _col_prospects
    """, [region])
    con.execute("""INSERT INTO customer_links (source, source_key, customer_id, rule, score, linked_at)
                   SELECT source, source_key, customer_id, 'prospect', 1.0, ? FROM _col_prospects""", [now()])
    con.execute("""
        INSERT INTO customers (customer_id, first_name, last_name, email, phone, address, postal_code, city, country,
                               is_prospect, n_records, sources, created_at, updated_at)
        SELECT customer_id, first_name, last_name, email, phone, address, postal_code, city, ?, TRUE, 1, source,
               created_at, updated_at FROM _col_prospects
    """, [region])


def _cluster_unknown(con: duckdb.DuckDBPyConnection) -> None:
    """TEMP table ``_col_unknown(interaction_id, p_source, p_key)``: each unknown contact and its prospect.

    Unknown contacts (in ``_col_norm``, not in ``_col_cand``, with an e-mail or a phone)
    linked by the same e-mail or the same phone and phonetic last name form one person
    (connected components); the person's record is keyed by the smallest interaction id
    of its contacts (``p_key``), in the source of that contact (``p_source``). Edges are
    built in SQL (each contact to the first contact sharing a key), only the components
    in scipy.
    """
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _col_unk AS
        SELECT CAST(row_number() OVER (ORDER BY n.source_key) - 1 AS BIGINT) AS i, n.source_key AS interaction_id,
               n.source, n.email_strict, n.phone_e164, n.ln_phon
        FROM _col_norm n ANTI JOIN _col_cand c ON c.interaction_id = n.source_key
        WHERE n.email_strict IS NOT NULL OR n.phone_e164 IS NOT NULL
    """)
    try:
        n = con.execute("SELECT count(*) FROM _col_unk").fetchall()[0][0]
        edges = con.execute("""
            WITH k AS (
                SELECT i, 'e:' || email_strict AS k FROM _col_unk WHERE email_strict IS NOT NULL
                UNION ALL
                SELECT i, 'p:' || phone_e164 || '|' || coalesce(ln_phon, '') FROM _col_unk WHERE phone_e164 IS NOT NULL
            )
            SELECT i, min(i) OVER (PARTITION BY k) AS j FROM k
        """).fetchnumpy()
        i, j = np.asarray(edges["i"], dtype=np.int64), np.asarray(edges["j"], dtype=np.int64)
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
        labels = connected_components(graph, directed=False)[1] if n else np.zeros(0, dtype=np.int64)
        register_frame(con, "_col_labels", pd.DataFrame({"i": np.arange(n, dtype=np.int64),
                                                         "label": np.asarray(labels, dtype=np.int64)}))
        try:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _col_unknown AS
                WITH l AS (SELECT u.i, u.interaction_id, u.source, f.label FROM _col_unk u JOIN _col_labels f USING (i)),
                r AS (SELECT label, arg_min(source, i) AS p_source, min(interaction_id) AS p_key FROM l GROUP BY label)
                SELECT l.interaction_id, r.p_source, r.p_key FROM l JOIN r USING (label)
            """)
        finally:
            con.unregister("_col_labels")
    finally:
        con.execute("DROP TABLE IF EXISTS _col_unk")


# --------------------------------------------------------------------------- writing


#: Data items of a contact: (field, value written when it is new, the records' normalised
#: column it is compared with). The comparison uses the contact's normalised form (``n.<field>``).
ITEM_FIELDS = (
    ("email", "email", "email_clean"),
    ("phone", "phone", "phone_e164"),
    ("address", "address_v", "address_norm"),
    ("postal_code", "postal_code", "postal_code"),
    ("city", "city_v", "city_norm"),
)


def write(con: duckdb.DuckDBPyConnection, p: dict) -> None:
    """Write ``_col_matched`` to ``interactions`` (its scores to ``interaction_scores``), fields brought and consents.

    Fields brought go to ``contact_history``, consent changes to ``consents``.

    A data item is a contact field (e-mail, phone, address, postal code, city) of the
    contact that the customer's records did not have (``new``) or had with another value
    (``changed``, compared after normalisation with every record of the customer).
    """
    con.execute(f"INSERT INTO interactions ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM _col_matched")
    con.execute("""INSERT INTO interaction_scores (interaction_id, score_type, score)
                   SELECT interaction_id, x.score_type, x.score FROM (SELECT interaction_id, UNNEST(scores) AS x FROM _col_matched)
                   ORDER BY interaction_id, x.score_type""")
    # one row per contacted customer with the values of its records (lists per field), then one
    # pass per field: no unpivot of the records (a few million rows at scale) and no DISTINCT
    lists = ",\n                   ".join(
        f"list({ref}) FILTER (WHERE {ref} IS NOT NULL) AS k_{f}" for f, _v, ref in ITEM_FIELDS)
    per_field = "\n        UNION ALL\n".join(
        f"""SELECT interaction_id, customer_id, channel, source, ts, rule, '{f}' AS field, {v} AS new_value,
               CASE WHEN k_{f} IS NULL THEN 'new' ELSE 'changed' END AS change
        FROM j WHERE {f} IS NOT NULL AND NOT coalesce(list_contains(k_{f}, {f}), false)""" for f, v, _ref in ITEM_FIELDS)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _col_items AS
        WITH n AS (
            SELECT m.interaction_id, m.customer_id, m.channel, m.source, m.ts, m.rule,
                   x.email_clean AS email, x.phone_e164 AS phone, x.address_norm AS address, x.postal_code, x.city_norm AS city,
                   m.address AS address_v, m.city AS city_v
            FROM _col_matched m JOIN _col_norm x ON x.source_key = m.interaction_id
            WHERE m.customer_id IS NOT NULL
        ), kc AS (
            SELECT customer_id,
                   {lists}
            FROM _col_ref WHERE customer_id IN (SELECT customer_id FROM n) GROUP BY 1
        ), j AS (
            SELECT n.*, kc.* EXCLUDE (customer_id) FROM n LEFT JOIN kc USING (customer_id)
        )
        {per_field}
    """)
    con.execute("""
        INSERT INTO contact_history (customer_id, field, old_value, new_value, channel, source, changed_at, run_id)
        SELECT i.customer_id, i.field, CASE i.field WHEN 'email' THEN c.email WHEN 'phone' THEN c.phone
                   WHEN 'address' THEN c.address WHEN 'postal_code' THEN c.postal_code WHEN 'city' THEN c.city END,
               i.new_value, i.channel, i.source, i.ts, ?
        FROM _col_items i LEFT JOIN customers c USING (customer_id)
        WHERE i.rule <> 'prospect'
    """, [p["run_id"]])
    con.execute("""
        INSERT INTO consents (customer_id, channel, opted_in, updated_at, source, source_key, sha256)
        SELECT customer_id, consent_channel, consent_opted_in, ts, source, interaction_id, sha256 FROM _col_matched
        WHERE customer_id IS NOT NULL AND consent_channel IS NOT NULL AND consent_opted_in IS NOT NULL
    """)


def collect(con: duckdb.DuckDBPyConnection, p: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load, check, match and write the inbound sources of ``p["sources"]`` (one call does the step's writing).

    Returns
    -------
    (files, rejected)
        See :func:`load_inbound`.

    Raises
    ------
    InputError
        Bad rows with ``bad_rows: erreur`` (file, column, row named); nothing is written
        that the caller's rollback does not undo.
    """
    if not p["sources"]:
        raise InputError("Aucune source déclarée dans « collecter.sources »",
                         hint="Déclarez au moins un fichier de contacts entrants (kind: interactions)")
    files, rejected = load_inbound(con, p)
    match(con, p)
    write(con, p)
    return files, rejected


# --------------------------------------------------------------------------- measures


def collect_measures(con: duckdb.DuckDBPyConnection, rejected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Compute the "Collecter" measures of this step's contacts, per operation and channel.

    Returns
    -------
    DataFrame
        ``source, operation`` (the ``operation`` column, else the source name),
        ``channel, collected, customers`` (distinct customers and prospects reached),
        ``new_prospects, matched`` (contacts matched to an existing customer or prospect),
        ``match_rate, data_items, rejected`` (rows of the source left out, any reason).
    """
    m = to_frame(con.sql("""
        SELECT m.source, coalesce(m.operation, m.source) AS operation, m.channel, count(*) AS collected,
               count(DISTINCT m.customer_id) AS customers,
               count(DISTINCT m.customer_id) FILTER (WHERE m.rule = 'prospect') AS new_prospects,
               count(*) FILTER (WHERE m.rule IN ('key', 'email', 'phone_name', 'known_prospect')) AS matched,
               coalesce(sum(it.n), 0) AS data_items
        FROM _col_matched m LEFT JOIN (SELECT interaction_id, count(*) AS n FROM _col_items GROUP BY 1) it USING (interaction_id)
        GROUP BY ALL ORDER BY 1, 2, 3
    """))
    m["match_rate"] = m["matched"] / m["collected"].where(m["collected"] > 0)
    rej = (rejected.groupby("source")["rows"].sum() if rejected is not None and len(rejected) else pd.Series(dtype=float))
    first = ~m.duplicated("source")
    m["rejected"] = np.where(first, m["source"].map(rej).fillna(0), 0).astype(int)
    return m[["source", "operation", "channel", "collected", "customers", "new_prospects", "matched", "match_rate",
              "data_items", "rejected"]]


def collect_totals(con: duckdb.DuckDBPyConnection) -> dict:
    """Totals of this step's contacts (people counted once across operations and channels).

    Returns
    -------
    dict
        ``collected, matched, customers, new_prospects, data_items``.
    """
    row = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE rule IN ('key', 'email', 'phone_name', 'known_prospect')),
               count(DISTINCT customer_id), count(DISTINCT customer_id) FILTER (WHERE rule = 'prospect'),
               (SELECT count(*) FROM _col_items)
        FROM _col_matched
    """).fetchall()[0]
    return dict(zip(["collected", "matched", "customers", "new_prospects", "data_items"], [int(v) for v in row], strict=True))


def measures_display(m: pd.DataFrame):
    """French table of :func:`collect_measures`."""
    from crmlab.display import table

    t = m.assign(channel=m["channel"].map(lambda c: CHANNEL_LABELS.get(c, c)))
    return table(t.drop(columns=["source", "matched"]),
                 formats={"collected": "int", "customers": "int", "new_prospects": "int", "match_rate": "pct",
                          "data_items": "int", "rejected": "int"},
                 labels={"operation": "Opération", "channel": "Canal", "collected": "Contacts collectés",
                         "customers": "Personnes touchées", "new_prospects": "Nouveaux prospects",
                         "match_rate": "Taux de rapprochement", "data_items": "Données apportées",
                         "rejected": "Lignes écartées"})


def rules_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Contacts per matching rule (French labels)."""
    t = to_frame(con.sql("SELECT rule, count(*) AS contacts FROM _col_matched GROUP BY 1 ORDER BY 2 DESC"))
    t["rule"] = t["rule"].map(RULE_LABELS)
    return t.rename(columns={"rule": "Règle", "contacts": "Contacts"})


def items_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Count the data items brought per field and kind of change (French labels)."""
    t = to_frame(con.sql("""SELECT field, change, count(*) AS items FROM _col_items GROUP BY ALL ORDER BY 1, 2"""))
    if t.empty:
        return pd.DataFrame(columns=["Champ", "Nouveau", "Modifié"])
    w = t.pivot_table(index="field", columns="change", values="items", aggfunc="sum", fill_value=0).reset_index()
    for c in ("new", "changed"):
        if c not in w:
            w[c] = 0
    w["field"] = w["field"].map(FIELD_LABELS)
    return w[["field", "new", "changed"]].rename(columns={"field": "Champ", "new": "Nouveau", "changed": "Modifié"})


def consent_changes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Consent changes brought by this step's contacts, per channel."""
    return to_frame(con.sql("""
        SELECT consent_channel AS "Canal", count(*) FILTER (WHERE consent_opted_in) AS "Accords",
               count(*) FILTER (WHERE NOT consent_opted_in) AS "Refus"
        FROM _col_matched WHERE customer_id IS NOT NULL AND consent_channel IS NOT NULL AND consent_opted_in IS NOT NULL
        GROUP BY 1 ORDER BY 1
    """))


def rejected_display(rejected: pd.DataFrame):
    """French table of the rows left out, per source and reason."""
    from crmlab.display import HTMLBlock, table

    if rejected is None or rejected.empty:
        return HTMLBlock("<p><em>Aucune ligne écartée : toutes les lignes lues sont collectées.</em></p>")
    return table(rejected.drop(columns=["file"]), formats={"rows": "int"},
                 labels={"source": "Source", "reason": "Motif", "rows": "Lignes"})


# --------------------------------------------------------------------------- satisfaction


def scores_sql() -> str:
    """Return the SQL subquery of every score: ``interaction_id, score_type, score``, one row per score.

    Reads ``interaction_scores``, plus ``interactions.score`` / ``score_type`` of the
    contacts absent from it (databases written before ``interaction_scores`` existed).
    """
    return """(SELECT interaction_id, score_type, score FROM interaction_scores
               UNION ALL
               SELECT i.interaction_id, lower(trim(i.score_type)) AS score_type, i.score
               FROM interactions i ANTI JOIN interaction_scores s ON s.interaction_id = i.interaction_id
               WHERE i.score IS NOT NULL)"""


def nps_interval(promoters: float, detractors: float, n: float, level: float = 0.95) -> tuple[float, float, float]:
    """Net Promoter Score (share of promoters − share of detractors, −1..1) and its normal interval.

    Variance of the difference of two shares of one multinomial sample:
    ``(p + d − (p − d)²) / n``.
    """
    if n <= 0:
        return (np.nan, np.nan, np.nan)
    pp, dd = promoters / n, detractors / n
    nps = pp - dd
    half = uplift.z_value(level) * np.sqrt(max(pp + dd - nps * nps, 0.0) / n)
    return (nps, max(-1.0, nps - half), min(1.0, nps + half))


def satisfaction(con: duckdb.DuckDBPyConnection, p: dict, by: str = "segment") -> pd.DataFrame:
    """NPS and CSAT per segment or per channel, with 95 % intervals and counts.

    Uses every score of the database (:func:`scores_sql`, not only this step's
    contacts), of contacts in the ``survey_recent_days`` days before ``as_of``: a contact
    carrying an NPS and a CSAT counts once in each. The segment is the customer's
    ``rfm_segment`` in the latest ``segments`` snapshot not after ``as_of``; prospects are
    « Prospects », customers without a segment « Non segmentés », anonymous answers
    « Anonymes ».

    Returns
    -------
    DataFrame
        ``group, nps_n, promoters, passives, detractors, nps, nps_low, nps_high, csat_n,
        csat, csat_low, csat_high`` (CSAT = share of 4–5 on the 1–5 scale), ``csat_mean``;
        one row per group plus « Ensemble ».
    """
    as_of = p.get("as_of") or con.execute("SELECT CAST(max(ts) AS DATE) + 1 FROM interactions").fetchall()[0][0]
    snap = con.execute("SELECT max(as_of) FROM segments WHERE as_of <= CAST(? AS DATE)", [as_of]).fetchall()[0][0]
    group = {"segment": """CASE WHEN i.customer_id IS NULL THEN 'Anonymes' WHEN c.is_prospect THEN 'Prospects'
                                 ELSE coalesce(s.rfm_segment, 'Non segmentés') END""",
             "channel": "i.channel"}[by]
    frame = to_frame(con.sql(f"""
        SELECT {group} AS grp, sc.score_type, sc.score
        FROM interactions i JOIN {scores_sql()} sc ON sc.interaction_id = i.interaction_id
        LEFT JOIN customers c ON c.customer_id = i.customer_id
        LEFT JOIN segments s ON s.customer_id = i.customer_id AND s.as_of = ?
        WHERE sc.score_type IN ('nps', 'csat')
          AND i.ts < CAST(? AS DATE) AND i.ts >= CAST(? AS DATE) - to_days(CAST(? AS INTEGER))
    """, params=[snap, as_of, as_of, p["survey_recent_days"]]))
    rows = []
    groups = [(g, f) for g, f in frame.groupby("grp", sort=True)] + [("Ensemble", frame)]
    for g, f in groups:
        nps = f[f["score_type"] == "nps"]["score"]
        cs = f[f["score_type"] == "csat"]["score"]
        pro, det = int((nps >= 9).sum()), int((nps <= 6).sum())
        v, lo, hi = nps_interval(pro, det, len(nps))
        sat = int((cs >= 4).sum())
        clo, chi = uplift.wilson_interval(sat, len(cs))
        rows.append({"group": CHANNEL_LABELS.get(g, g) if by == "channel" else g, "nps_n": len(nps), "promoters": pro,
                     "passives": len(nps) - pro - det, "detractors": det, "nps": v, "nps_low": lo, "nps_high": hi,
                     "csat_n": len(cs), "csat": sat / len(cs) if len(cs) else np.nan, "csat_low": clo, "csat_high": chi,
                     "csat_mean": float(cs.mean()) if len(cs) else np.nan})
    return pd.DataFrame(rows)


def satisfaction_display(t: pd.DataFrame, label: str = "Segment"):
    """French table of :func:`satisfaction` (NPS in points −100..100)."""
    from crmlab.display import table

    x = t.copy()
    x["nps_txt"] = [_nps(v) for v in x["nps"]]
    x["nps_ci"] = [f"[{_nps(lo)} ; {_nps(hi)}]" for lo, hi in zip(x["nps_low"], x["nps_high"], strict=True)]
    x["csat_ci"] = [f"[{fr_percent(lo, 0)} ; {fr_percent(hi, 0)}]" for lo, hi in zip(x["csat_low"], x["csat_high"], strict=True)]
    x["note"] = np.where(x["nps_n"] < 30, "moins de 30 réponses : indicatif", "")
    return table(x[["group", "nps_n", "nps_txt", "nps_ci", "csat_n", "csat", "csat_ci", "note"]],
                 formats={"nps_n": "int", "csat_n": "int", "csat": "pct"},
                 labels={"group": label, "nps_n": "Réponses NPS", "nps_txt": "NPS", "nps_ci": "IC 95 %",
                         "csat_n": "Réponses CSAT", "csat": "CSAT (4–5 sur 5)", "csat_ci": "IC 95 % ", "note": "Lecture"})


def fr_nps(points: float | None) -> str:
    """Format an NPS given in points (−100..+100) as a signed whole score: « +12 », « -10 », « 0 » (« – » if missing)."""
    if points is None or points != points:
        return "–"
    r = int(round(float(points)))
    return f"+{r}" if r > 0 else str(r)


def _nps(v: float) -> str:
    """Format an NPS given as a difference of shares (−1..1) in points (see :func:`fr_nps`)."""
    return fr_nps(100 * v)


def satisfaction_chart(t: pd.DataFrame):
    """NPS per group with its interval."""
    import matplotlib.pyplot as plt

    from crmlab import charts

    x = t[(t["group"] != "Ensemble") & (t["nps_n"] > 0)].sort_values("nps").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.4 * len(x) + 1)))
    if x.empty:
        ax.text(0.5, 0.5, "Aucune réponse d'enquête", ha="center", va="center")
        ax.set_axis_off()
        return charts.finish(fig, "Pas de NPS mesurable", ax=ax)
    y = np.arange(len(x))
    ax.errorbar(100 * x["nps"], y, xerr=[100 * (x["nps"] - x["nps_low"]), 100 * (x["nps_high"] - x["nps"])],
                fmt="o", color=charts.PALETTE[0], ecolor=charts.PALETTE[7], capsize=3)
    ax.set_yticks(y, [f"{g} ({n})" for g, n in zip(x["group"], x["nps_n"], strict=True)])
    ax.axvline(0, color="#444", lw=1)
    worst, best = x.iloc[0], x.iloc[-1]
    return charts.finish(fig, f"NPS de {_nps(worst['nps'])} ({worst['group']}) à {_nps(best['nps'])} ({best['group']})",
                         "NPS (points, −100 à +100), IC 95 % – entre parenthèses : réponses", None, ax=ax)


def findings(measures: pd.DataFrame, totals: dict, sat: pd.DataFrame) -> list[str]:
    """French sentences on the collection."""
    if measures.empty:
        return ["Aucun nouveau contact collecté (fichiers déjà chargés)."]
    t = totals
    out = [f"**{fr_number(t['collected'])} contacts** collectés, **{fr_percent(t['matched'] / t['collected'])}** rattachés à "
           f"une fiche connue ; **{fr_number(t['new_prospects'])} nouveaux prospects** créés.",
           f"{fr_number(t['data_items'])} données de contact apportées (nouvelles ou modifiées) ; "
           f"{fr_number(int(measures['rejected'].sum()))} ligne(s) écartée(s)."]
    m = measures.groupby("channel")[["collected", "matched"]].sum()
    m["rate"] = m["matched"] / m["collected"]
    worst = m["rate"].idxmin()
    out.append(f"Canal le moins bien rapproché : {CHANNEL_LABELS.get(worst, worst)} ({fr_percent(m.loc[worst, 'rate'])}) – "
               "demander systématiquement l'e-mail ou le numéro de carte y améliorerait la connaissance client.")
    tot_row = sat[sat["group"] == "Ensemble"]
    if len(tot_row) and tot_row.iloc[0]["nps_n"]:
        r = tot_row.iloc[0]
        out.append(f"NPS d'ensemble {_nps(r['nps'])} (IC 95 % {_nps(r['nps_low'])} à {_nps(r['nps_high'])}, "
                   f"{fr_number(r['nps_n'])} réponses) ; CSAT {fr_percent(r['csat'])}.")
    return out


# --------------------------------------------------------------------------- KPIs and checks


def kpis(measures: pd.DataFrame, totals: dict, sat_segment: pd.DataFrame, sat_channel: pd.DataFrame) -> pd.DataFrame:
    """Step 04 KPIs: four headline ones (``dimension = ''``) and details per operation / channel / segment.

    Returns
    -------
    DataFrame
        ``kpi, dimension, value, unit``. NPS values are in points, −100..+100 (unit
        :data:`NPS_UNIT`); CSAT and rates are shares 0–1 (unit ``part``).
    """
    tot = totals
    all_ = sat_segment[sat_segment["group"] == "Ensemble"]
    nps = 100 * float(all_.iloc[0]["nps"]) if len(all_) else np.nan
    rows = [
        {"kpi": "contacts collectés", "dimension": "", "value": float(tot["collected"]), "unit": "contacts"},
        {"kpi": "taux de rapprochement", "dimension": "", "value": tot["matched"] / tot["collected"] if tot["collected"] else np.nan, "unit": "part"},
        {"kpi": "nouveaux prospects", "dimension": "", "value": float(tot["new_prospects"]), "unit": "personnes"},
        {"kpi": "NPS", "dimension": "", "value": nps, "unit": NPS_UNIT},
        {"kpi": "données apportées", "dimension": "total", "value": float(tot["data_items"]), "unit": "champs"},
    ]
    for r in measures.itertuples(index=False):
        dim = f"operation={r.operation}|canal={r.channel}"
        for k, col, unit in (("contacts collectés", "collected", "contacts"), ("personnes touchées", "customers", "personnes"),
                             ("nouveaux prospects", "new_prospects", "personnes"), ("données apportées", "data_items", "champs"),
                             ("taux de rapprochement", "match_rate", "part"), ("lignes écartées", "rejected", "lignes")):
            rows.append({"kpi": k, "dimension": dim, "value": float(getattr(r, col)), "unit": unit})
    for r in sat_segment.itertuples(index=False):
        if r.group != "Ensemble":
            rows.append({"kpi": "NPS", "dimension": f"segment={r.group}", "value": 100 * r.nps, "unit": NPS_UNIT})
            rows.append({"kpi": "CSAT", "dimension": f"segment={r.group}", "value": r.csat, "unit": "part"})
    for r in sat_channel.itertuples(index=False):
        if r.group != "Ensemble":
            rows.append({"kpi": "NPS", "dimension": f"canal={r.group}", "value": 100 * r.nps, "unit": NPS_UNIT})
    return pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])


def kpis_table(k: pd.DataFrame):
    """Headline KPIs as a French table."""
    from crmlab.display import table

    head = k[k["dimension"] == ""].copy()
    head["Valeur"] = [fr_percent(v) if u == "part" else (fr_nps(v) if u == NPS_UNIT else fr_number(v))
                      for v, u in zip(head["value"], head["unit"], strict=True)]
    return table(head[["kpi", "Valeur"]].rename(columns={"kpi": "Indicateur"}))


def check_output(con: duckdb.DuckDBPyConnection, p: dict) -> None:
    """Step 04's own checks before commit (raise :class:`crmlab.errors.CheckError`)."""
    check(con, "SELECT interaction_id FROM interactions GROUP BY 1 HAVING count(*) > 1", "identifiant de contact unique")
    check(con, """SELECT i.interaction_id FROM interactions i ANTI JOIN customers c USING (customer_id)
                  WHERE i.customer_id IS NOT NULL""", "chaque contact rattaché pointe vers un client existant")
    ranges = " OR ".join(f"(score_type = '{t}' AND (score < {lo} OR score > {hi}))" for t, (lo, hi) in SCORE_RANGES.items())
    check(con, f"SELECT interaction_id FROM {scores_sql()} WHERE {ranges}", "chaque note dans son échelle")
    check(con, "SELECT s.interaction_id FROM interaction_scores s ANTI JOIN interactions i USING (interaction_id)",
          "chaque note appartient à un contact")
    check(con, "SELECT interaction_id, score_type FROM interaction_scores GROUP BY 1, 2 HAVING count(*) > 1",
          "une seule note de chaque type par contact")
    check(con, """SELECT s.source, s.source_key FROM source_customers s ANTI JOIN customer_links l
                  ON l.source = s.source AND l.source_key = s.source_key""", "chaque fiche (prospects compris) rattachée à un client")
    check(con, "SELECT customer_id FROM customers GROUP BY 1 HAVING count(*) > 1", "identifiant client unique")
    if not p["keep_text"]:
        check(con, "SELECT interaction_id FROM _col_matched WHERE text IS NOT NULL", "aucun texte libre conservé (keep_text: false)")
