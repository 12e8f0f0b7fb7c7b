"""Identity resolution: link source customer records into one customer each (the RCU).

Pipeline of :func:`link` (all heavy work in DuckDB SQL; Python only over *pairs*):

1. **Normalise** ``source_customers`` (:func:`crmlab.normalize.normalize_customers`).
2. **Block**: candidate pairs are records sharing at least one blocking key –
   normalised e-mail; E.164 phone; a phonetic name token + postal code; a phonetic name
   token + birth date; normalised address + postal code (or city). Keys shared by more
   than ``max_block`` records (placeholder e-mails, very common names) are skipped and
   reported; within a key shared by more
   than 10 records, each record is paired with its 10 nearest neighbours in the order
   of last name, first name, birth date, postal code and address (sorted
   neighbourhood). The number of pairs grows with the number of records, never with
   its square.
3. **Compare and score** each candidate pair in SQL (:data:`WEIGHTS`, a Fellegi–Sunter
   model with fixed m/u probabilities): first and last names (Jaro–Winkler,
   Damerau–Levenshtein, compound names, initials, swapped first/last names, exact-name
   weight adjusted to the name's frequency), e-mail, phone, birth date, address, postal
   code or city. The match weight is the sum of ``log2(m/u)`` of each field's level
   (0 when a field is missing on either side) plus a prior; ``score = 1 / (1 + 2^-w)``.
   **Vetoes** (score 0): first names both present and incompatible (e.g. twins or family
   members at one address: ``Louis``/``Lucas``, ``Jean``/``Jeanne``); birth dates both
   present and not equal up to one typo or a day/month swap; genders both present and
   different.
4. **Rules** (in this order, every link carries one): ``decision`` (a ``same`` line of
   the decisions file), ``email`` (same normalised e-mail, no veto), ``phone_name``
   (same E.164 phone and compatible first and last names – a family landline alone never
   links), ``name_birth`` (same first and last names, in any order, and same birth
   date), ``fuzzy`` (score ≥ ``threshold``). A ``different`` line of the decisions file
   removes the pair and forbids the two records from ever sharing a cluster.
5. **Cluster** transitively (connected components) with a **chain guard**: edges are
   applied from the most to the least certain; a merge of two groups is refused when
   any record of one and any record of the other are in conflict (a ``different``
   decision, incompatible first names in both orders, incompatible birth dates,
   different genders), or when the merged group would exceed ``max_cluster_size``
   records through a fuzzy edge below ``strong_score``. Decisions ``same`` override
   every guard except ``different``.
6. Write ``customer_links`` and ``customers`` (golden records, :data:`SURVIVORSHIP`),
   replacing their content, inside the caller's transaction (no COMMIT here).

``customer_id`` is ``'C'`` + the first 16 hex digits (64 bits) of ``md5(source || '|' ||
source_key)`` of the smallest ``(source, source_key)`` of the cluster: stable across
runs and independent of row order (:func:`customer_id`, :func:`customer_id_sql`). Bases
written before 2026-12 hold 10 hex digits (40 bits: about one collision expected per
1.2 million customers); :func:`crmlab.constituer.carry_over_ids` recognises both.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from crmlab.db import register_frame, to_frame
from crmlab.errors import CheckError, InputError
from crmlab.normalize import normalize_customers

__all__ = [
    "DEFAULT_REVIEW_BAND",
    "DEFAULT_THRESHOLD",
    "LinkResult",
    "SURVIVORSHIP",
    "WEIGHTS",
    "evaluate",
    "first_names_compatible",
    "link",
    "read_decisions",
    "synthetic_source_customers",
]

DEFAULT_THRESHOLD = 0.9
DEFAULT_REVIEW_BAND = (0.5, 0.9)
DEFAULT_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)

#: Fellegi–Sunter levels: field -> level -> (m, u). ``u=None`` for exact names means
#: "frequency of that name among first and last names of the records" (floored at 1e-4,
#: counted over both columns so that swapped names are not taken for rare ones); the
#: same frequency adjustment applies to birth dates (floor 1/25,000), postal codes and
#: cities (floor 1e-4): two records in Paris 75011 say less than two in a village.: two ``Martin`` say less
#: than two ``Kerguelen``. Weight of a level = log2(m/u).
WEIGHTS: dict[str, dict[str, tuple[float, float | None]]] = {
    "first_name": {"exact": (0.86, None), "close": (0.08, 0.003), "compatible": (0.04, 0.03),
                   "different": (0.02, 0.97)},
    "last_name": {"exact": (0.86, None), "close": (0.08, 0.002), "partial": (0.04, 0.02),
                  "different": (0.02, 0.978)},
    "email": {"exact": (0.55, 1e-4), "same_mailbox": (0.30, 1e-3), "dotless": (0.08, 2e-3), "close": (0.05, 1e-4),
              "same_local": (0.03, 5e-3), "different": (0.40, 0.9998)},
    "phone": {"exact": (0.55, 5e-4), "close": (0.04, 1e-3), "different": (0.40, 0.998)},
    "birth_date": {"exact": (0.92, None), "near": (0.05, 2e-3), "different": (0.03, 0.998)},
    "address": {"exact": (0.55, 2e-4), "close": (0.15, 1e-3), "different": (0.30, 0.999)},
    "postal_code": {"exact": (0.85, None), "different": (0.15, 0.99)},
    "city": {"exact": (0.85, None), "close": (0.05, 0.005), "different": (0.15, 0.99)},
}
#: Prior log2-odds that a candidate pair is a match (calibrated on the demo world).
PRIOR_WEIGHT = -14.0

SURVIVORSHIP = (
    "Règles de survie de la fiche unique (champ par champ) : parmi les fiches sources du "
    "client dont la valeur n'est pas vide, on garde celle de la source la plus fiable "
    "(priorité la plus basse), puis la plus récemment mise à jour (updated_at, puis "
    "created_at), puis la première par (source, clé). L'e-mail est repris sous sa forme "
    "nettoyée (minuscules, sans espaces), le téléphone au format international E.164, le "
    "code postal normalisé, le genre en F/M. created_at est la plus ancienne date de "
    "création des fiches, updated_at la plus récente mise à jour."
)

RULE_ORDER = {"decision": 0, "email": 1, "phone_name": 2, "name_birth": 3, "fuzzy": 4}


ID_HEX_DIGITS = 16
"""Hex digits of md5 kept in a customer id (64 bits: a collision among 10 million
customers has a probability below 3e-6)."""

LEGACY_ID_HEX_DIGITS = 10
"""Hex digits of the ids written before 2026-12, still recognised when re-keying."""


def customer_id(source: str, source_key: str, digits: int = ID_HEX_DIGITS) -> str:
    """Return the customer id of the cluster whose smallest record is ``(source, source_key)``."""
    return "C" + hashlib.md5(f"{source}|{source_key}".encode()).hexdigest()[:digits]


def customer_id_sql(source: str, source_key: str, digits: int = ID_HEX_DIGITS) -> str:
    """Build the SQL expression of :func:`customer_id` over two VARCHAR expressions."""
    return f"('C' || left(md5({source} || '|' || {source_key}), {digits}))"


def _w(m: float, u: float) -> float:
    return math.log2(m / u)


@dataclass
class LinkResult:
    """Outcome of :func:`link`.

    Attributes
    ----------
    pairs : DataFrame
        Scored candidate pairs worth showing (score ≥ lowest grid/review threshold, an
        exact rule, a veto with a positive weight, or a decision): ``source_a, key_a,
        source_b, key_b, rule`` (``email``, ``phone_name``, ``name_birth``, ``fuzzy``,
        ``decision``, ``veto_first_name``, ``veto_birth_date``, ``veto_gender``,
        ``different``), ``score`` (0–1), ``weight`` (log2 match weight), ``accepted``
        (bool, before the chain guard), ``blocks`` (blocking keys that proposed it).
    clusters : DataFrame
        ``customer_id, n_records, sources``, one row per customer.
    counts : dict
        ``records, customers, customers_multi, records_merged, candidate_pairs,
        pairs_accepted, pairs_review, guard_refusals, decisions_same, decisions_different,
        decisions_unknown, blocks_skipped``.
    thresholds : DataFrame
        ``threshold, pairs_accepted, customers`` and, with truth, ``precision, recall,
        f1``: the effect of the threshold (the chosen one flagged by ``chosen``).
    examples : DataFrame
        Records of a few merged customers: ``customer_id, source, source_key,
        first_name, last_name, email, phone, address, postal_code, city, birth_date,
        rule, score`` (raw PII: mask before display).
    review : DataFrame
        Uncertain pairs (score within the review band), with both records' fields.
    refusals : DataFrame
        Edges refused by the chain guard: ``source_a, key_a, source_b, key_b, rule,
        score, reason``.
    blocks_skipped : DataFrame
        ``kind, n_keys, max_records`` of the blocking keys too frequent to be used.
    metrics : dict or None
        ``precision, recall, f1, true_pairs, found_pairs, correct_pairs`` against truth.
    rules : str
        French text of the survivorship rules (for the report).
    timings : dict
        Seconds spent per phase (``normalize, blocking, scoring, clustering, tables, report``).
    """

    pairs: pd.DataFrame
    clusters: pd.DataFrame
    counts: dict
    thresholds: pd.DataFrame
    examples: pd.DataFrame
    review: pd.DataFrame
    refusals: pd.DataFrame
    blocks_skipped: pd.DataFrame
    metrics: dict | None = None
    rules: str = field(default=SURVIVORSHIP)
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Comparisons (SQL and their Python mirror for the chain guard)
# --------------------------------------------------------------------------------------

def _feminine_sql(x: str, y: str) -> str:
    """Return SQL true when one first name is the feminine form of the other (Jean/Jeanne, Frédéric/Frédérique)."""
    pairs = []
    for a, b in ((x, y), (y, x)):
        pairs.append(
            # the prefix test first: a cheap necessary condition, the IN list only where it holds
            f"(starts_with({b}, {a}) AND {b} IN ({a} || 'e', {a} || 'ne', {a} || 'le', {a} || 'te') "
            f"OR ({a} LIKE '%c' AND {b} = left({a}, length({a}) - 1) || 'que'))"
        )
    return "(" + " OR ".join(pairs) + ")"


def _dl_le1_sql(x: str, y: str) -> str:
    """Return SQL true when ``damerau_levenshtein(x, y) <= 1``, computing the distance only where needed.

    DuckDB's distance counts bytes, and one edit changes a length by one byte at most. At
    equal byte lengths the edit can only be a substitution (one mismatch) or a swap of
    neighbours (two mismatches): the linear ``hamming`` count settles all but the pairs
    with exactly two mismatches. Lengths further apart than one byte are never one edit
    apart. Unlike the plain test, NULL inputs give false (the callers use it in ``WHEN``).
    The tests are ``WHEN`` conditions, not ``OR`` / ``AND`` of values: DuckDB evaluates
    every operand of a boolean value, so the quadratic distance ran on every pair of
    equal length (7.3 million pairs at scale 185, 35 of them with two mismatches).
    """
    return (f"(CASE strlen({x}) - strlen({y}) "
            f"WHEN 0 THEN (CASE WHEN hamming({x}, {y}) <= 1 THEN true "
            f"WHEN hamming({x}, {y}) = 2 THEN damerau_levenshtein({x}, {y}) <= 1 ELSE false END) "
            f"WHEN 1 THEN damerau_levenshtein({x}, {y}) <= 1 WHEN -1 THEN damerau_levenshtein({x}, {y}) <= 1 "
            f"ELSE false END)")


def _dl1_sql(x: str, y: str, min_len: int) -> str:
    """Return SQL true when both are at least ``min_len`` long and one edit apart (length tests first)."""
    return (f"(least(length({x}), length({y})) >= {min_len} AND abs(length({x}) - length({y})) <= 1 "
            f"AND {_dl_le1_sql(x, y)})")


def _first_level_sql(x: str, y: str, jw: str | None = None) -> str:
    """Return the SQL level of two normalised first names: 3 exact, 2 close, 1 compatible, 0 different.

    ``jw``: SQL of their Jaro-Winkler similarity when already computed.
    """
    jw = jw or f"jaro_winkler_similarity({x}, {y})"
    # word lists only when one name has several words (one word each: equal, settled above)
    return f"""(CASE WHEN {x} IS NULL OR {y} IS NULL THEN NULL
        WHEN {x} = {y} THEN 3
        WHEN {_feminine_sql(x, y)} THEN 0
        WHEN {jw} >= 0.92 OR {_dl1_sql(x, y, 4)} THEN 2
        WHEN {jw} >= 0.85 THEN 1
        WHEN (contains({x}, ' ') OR contains({y}, ' '))
             AND (list_has_all(string_split({x}, ' '), string_split({y}, ' '))
                  OR list_has_all(string_split({y}, ' '), string_split({x}, ' '))) THEN 1
        WHEN (length({x}) = 1 AND {x} = left({y}, 1))
             OR (length({y}) = 1 AND {y} = left({x}, 1)) THEN 1
        ELSE 0 END)"""


def _last_level_sql(x: str, y: str, jw: str | None = None) -> str:
    """Return the SQL level of two normalised last names: 3 exact, 2 close, 1 partial, 0 different.

    ``jw``: SQL of their Jaro-Winkler similarity when already computed.
    """
    jw = jw or f"jaro_winkler_similarity({x}, {y})"
    return f"""(CASE WHEN {x} IS NULL OR {y} IS NULL THEN NULL
        WHEN {x} = {y} THEN 3
        WHEN {jw} >= 0.92 OR {_dl1_sql(x, y, 4)} THEN 2
        WHEN {jw} >= 0.85 THEN 1
        WHEN (contains({x}, ' ') OR contains({y}, ' '))
             AND list_has_any(string_split({x}, ' '), string_split({y}, ' ')) THEN 1
        ELSE 0 END)"""


def _is_feminine(x: str, y: str) -> bool:
    for a, b in ((x, y), (y, x)):
        if b in (a + "e", a + "ne", a + "le", a + "te") or (a.endswith("c") and b == a[:-1] + "que"):
            return True
    return False


def first_name_level(x: str | None, y: str | None) -> int | None:
    """Python mirror of the SQL first-name level (3 exact, 2 close, 1 compatible, 0 different).

    Parameters
    ----------
    x, y : str or None
        Normalised first names (:func:`crmlab.normalize.name`).
    """
    if not x or not y:
        return None
    if x == y:
        return 3
    if _is_feminine(x, y):
        return 0
    jw = JaroWinkler.similarity(x, y)
    if jw >= 0.92 or (min(len(x), len(y)) >= 4 and DamerauLevenshtein.distance(x, y) <= 1):
        return 2
    tx, ty = set(x.split()), set(y.split())
    if jw >= 0.85 or tx <= ty or ty <= tx or (len(x) == 1 and y[0] == x) or (len(y) == 1 and x[0] == y):
        return 1
    return 0


def first_names_compatible(a: tuple[str | None, str | None], b: tuple[str | None, str | None]) -> bool:
    """Whether two records' names can belong to one person (the chain guard's name rule).

    Parameters
    ----------
    a, b : tuple
        ``(first_name, last_name)`` normalised. Incompatible when the first names are
        both present and ``different`` in the straight order *and* the swapped order
        (first name of one against last name of the other) does not match either.
    """
    straight = first_name_level(a[0], b[0])
    if straight is None or straight > 0:
        return True
    if a[0] and b[1] and a[1] and b[0]:
        if first_name_level(a[0], b[1]) and first_name_level(a[1], b[0]):
            return True
    return False


def _dates_compatible(a: dt.date, b: dt.date) -> bool:
    if a == b:
        return True
    sa, sb = a.strftime("%Y%m%d"), b.strftime("%Y%m%d")
    if DamerauLevenshtein.distance(sa, sb) <= 1:
        return True
    return a.year == b.year and a.month == b.day and a.day == b.month


# --------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------

_DECISION_WORDS = {
    "same": "same", "meme": "same", "même": "same", "identique": "same", "oui": "same",
    "fusionner": "same",
    "different": "different", "différent": "different", "differente": "different",
    "différente": "different", "non": "different", "separer": "different", "séparer": "different",
}


def read_decisions(path: str | Path) -> pd.DataFrame:
    """Read a decisions file (CSV, ``,`` or ``;``, UTF-8 with or without BOM, or Windows-1252).

    Parameters
    ----------
    path : path
        File with the columns ``source_a, key_a, source_b, key_b, decision`` (other
        columns – e.g. those of an exported review file – are ignored). ``decision`` is
        ``same`` or ``different`` (French ``même``/``identique``/``oui`` and
        ``différent``/``non`` accepted); empty decisions are skipped.

    Returns
    -------
    DataFrame
        ``source_a, key_a, source_b, key_b, decision`` (``same``/``different``).

    Raises
    ------
    InputError
        Missing file or column, or an unknown decision (file, column and row named).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("Fichier de décisions introuvable", file=str(path),
                         hint="Vérifiez le chemin indiqué dans constituer.decisions")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252")
    lines = text.splitlines()
    if not lines:
        raise InputError("Fichier de décisions vide", file=str(path),
                         hint="Ajoutez l'en-tête source_a;key_a;source_b;key_b;decision")
    sep = ";" if lines[0].count(";") > lines[0].count(",") else ","
    rows = list(csv.reader(lines, delimiter=sep))
    header = [h.strip().lower() for h in rows[0]]
    needed = ["source_a", "key_a", "source_b", "key_b", "decision"]
    for col in needed:
        if col not in header:
            raise InputError(
                f"Colonne obligatoire absente du fichier de décisions (colonnes présentes : {', '.join(header)})",
                file=str(path), column=col,
                hint="Le fichier doit avoir les colonnes source_a, key_a, source_b, key_b, decision",
            )
    idx = [header.index(c) for c in needed]
    out = []
    for number, row in enumerate(rows[1:], start=1):
        if not any(cell.strip() for cell in row):
            continue
        values = [row[i].strip() if i < len(row) else "" for i in idx]
        word = values[4].lower()
        if not word:
            continue
        if word not in _DECISION_WORDS:
            raise InputError(
                f"Décision inconnue « {values[4]} »", file=str(path), column="decision", row=number,
                hint="Écrivez same (même personne) ou different (personnes différentes)",
            )
        if not all(values[:4]):
            raise InputError("Paire incomplète", file=str(path), row=number,
                             hint="Renseignez source_a, key_a, source_b et key_b")
        out.append(values[:4] + [_DECISION_WORDS[word]])
    frame = pd.DataFrame(out, columns=needed, dtype=object)
    # the last line about a pair wins (a later decision corrects an earlier one)
    a = frame["source_a"] + "\x1f" + frame["key_a"]
    b = frame["source_b"] + "\x1f" + frame["key_b"]
    frame["_k"] = np.where(a < b, a + "\x1e" + b, b + "\x1e" + a) if len(frame) else []
    frame = frame.drop_duplicates("_k", keep="last").drop(columns="_k").reset_index(drop=True)
    return frame


# --------------------------------------------------------------------------------------
# Linking
# --------------------------------------------------------------------------------------

def _validate(threshold: float, review_band: Sequence[float], max_block: int) -> tuple[float, float]:
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"Seuil d'appariement {threshold} hors de [0, 1]", column="threshold",
                         hint="Choisissez un seuil entre 0 et 1, par exemple 0.9")
    if len(review_band) != 2 or not 0.0 <= review_band[0] <= review_band[1] <= 1.0:
        raise InputError(f"Bande de revue {list(review_band)} invalide", column="review_band",
                         hint="Donnez deux scores croissants entre 0 et 1, par exemple [0.5, 0.9]")
    if max_block < 2:
        raise InputError("Taille maximale de bloc trop petite", column="max_block", hint="Au moins 2")
    return float(review_band[0]), float(review_band[1])


def _match_records(con: duckdb.DuckDBPyConnection, norm: str, max_shared: int) -> str:
    """TEMP table ``_id_rec``: the fields used for matching, placeholders removed.

    An e-mail or a phone shared by more than ``max_shared`` records (``noemail@…``,
    ``0600000000``, a shop's own number) and a birth date far more frequent than chance
    (more than ``5 + 10 × records / 25,567`` records: ``01/01/1900``, a default date of
    the input form) are placeholders, not identities: they are ignored for matching
    (kept in the golden record if they survive).
    """
    n = con.execute(f"SELECT count(*) FROM {norm}").fetchall()[0][0]
    bd_limit = 5 + 10 * n / 25567
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_rec AS
        WITH fe AS (SELECT email_strict AS v FROM {norm} WHERE email_strict IS NOT NULL
                    GROUP BY 1 HAVING count(*) > ?),
             fp AS (SELECT phone_e164 AS v FROM {norm} WHERE phone_e164 IS NOT NULL
                    GROUP BY 1 HAVING count(*) > ?),
             fb AS (SELECT birth_date AS v FROM {norm} WHERE birth_date IS NOT NULL
                    GROUP BY 1 HAVING count(*) > ?),
             r AS (
                SELECT rid, fn, ln, fn_phon, ln_phon,
                       CASE WHEN email_strict IN (SELECT v FROM fe) THEN NULL ELSE email_strict END AS em,
                       CASE WHEN phone_e164 IN (SELECT v FROM fp) THEN NULL ELSE phone_e164 END AS ph,
                       CASE WHEN birth_date IN (SELECT v FROM fb) THEN NULL ELSE birth_date END AS bd,
                       address_norm AS ad, postal_code AS pc, city_norm AS ci, gender
                FROM {norm}
             )
        SELECT *, replace(split_part(em, '@', 1), '.', '') AS em_local,
               split_part(em, '@', 2) AS em_domain, strftime(bd, '%Y%m%d') AS bd_s
        FROM r
    """, [max_shared, max_shared, bd_limit])
    return "_id_rec"


#: blocking key kinds, in the (alphabetical) order of the ``blocks`` text; bit i = kind i
#: (no nationwide full-name key: on the demo it only added one false link, and at scale 185
#: 40 % of all candidate pairs; swapped first/last names still meet in ``name_cp``)
BLOCK_KINDS = ("address", "email", "name_birth", "name_city", "name_cp", "phone")


def _block_pairs(con: duckdb.DuckDBPyConnection, norm: str, max_block: int, window: int = 10) -> pd.DataFrame:
    """Create TEMP table ``_id_cand(rid_a, rid_b, blocks)``; return the skipped-keys summary.

    Keys are hashed to 64-bit integers and kinds coded as bits: the self-join and the
    per-pair aggregation work on integers only (a hash collision can only propose an
    extra candidate, which scoring then rejects). ``blocks`` is spelled out at the end.

    Within a key shared by more than ``window + 1`` records, records are sorted by last
    name, first name, birth date, postal code and address, and each is paired with its
    ``window`` next neighbours only (*sorted neighbourhood*): near-identical records sit
    next to each other, and the number of pairs grows with the number of records instead
    of the square of the block sizes (1.6 million records of the demo world at scale 185
    gave 577 million pairs with all-pairs blocks). Smaller keys give all their pairs.
    """
    bit = {k: 1 << i for i, k in enumerate(BLOCK_KINDS)}
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_keys AS
        SELECT DISTINCT rid, kind, hash(key) AS h FROM (
            SELECT rid, {bit['email']} AS kind, em_local || '@' || em_domain AS key FROM {norm} WHERE em IS NOT NULL
            UNION ALL SELECT rid, {bit['phone']}, ph FROM {norm} WHERE ph IS NOT NULL
            UNION ALL SELECT rid, {bit['name_cp']}, fn_phon || '|' || pc FROM {norm} WHERE fn_phon IS NOT NULL AND pc IS NOT NULL
            UNION ALL SELECT rid, {bit['name_cp']}, ln_phon || '|' || pc FROM {norm} WHERE ln_phon IS NOT NULL AND pc IS NOT NULL
            UNION ALL SELECT rid, {bit['name_city']}, fn_phon || '|' || ci FROM {norm} WHERE fn_phon IS NOT NULL AND ci IS NOT NULL
            UNION ALL SELECT rid, {bit['name_city']}, ln_phon || '|' || ci FROM {norm} WHERE ln_phon IS NOT NULL AND ci IS NOT NULL
            UNION ALL SELECT rid, {bit['name_birth']}, fn_phon || '|' || CAST(bd AS VARCHAR) FROM {norm}
                WHERE fn_phon IS NOT NULL AND bd IS NOT NULL
            UNION ALL SELECT rid, {bit['name_birth']}, ln_phon || '|' || CAST(bd AS VARCHAR) FROM {norm}
                WHERE ln_phon IS NOT NULL AND bd IS NOT NULL
            UNION ALL SELECT rid, {bit['address']}, ad || '|' || coalesce(pc, ci) FROM {norm}
                WHERE ad IS NOT NULL AND coalesce(pc, ci) IS NOT NULL
        )
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _id_keysize AS
        SELECT kind, h, count(*) AS n FROM _id_keys GROUP BY ALL HAVING count(*) > 1
    """)
    # sort key of the neighbourhood: similar records sort next to each other
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_sorted AS
        SELECT k.rid, k.kind, k.h,
               row_number() OVER (PARTITION BY k.kind, k.h
                                  ORDER BY r.ln NULLS LAST, r.fn NULLS LAST, r.bd NULLS LAST, r.pc NULLS LAST,
                                           r.ad NULLS LAST, k.rid) AS rn
        FROM _id_keys k JOIN {norm} r USING (rid)
        SEMI JOIN (SELECT kind, h FROM _id_keysize WHERE n <= ?) s USING (kind, h)
    """, [max_block])
    names = " ".join(f"WHEN {b} THEN '{k}'" for k, b in bit.items())
    skipped = to_frame(con.sql(
        f"SELECT CASE kind {names} END AS kind, count(*) AS n_keys, max(n) AS max_records FROM _id_keysize "
        "WHERE n > ? GROUP BY 1 ORDER BY 1",
        params=[max_block],
    ))
    spelled = ", ".join(f"CASE WHEN mask & {b} <> 0 THEN '{k}' END" for k, b in bit.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_cand AS
        WITH m AS (
            SELECT least(a.rid, b.rid) AS rid_a, greatest(a.rid, b.rid) AS rid_b, bit_or(a.kind) AS mask
            FROM _id_sorted a JOIN _id_sorted b
              ON a.kind = b.kind AND a.h = b.h AND b.rn > a.rn AND b.rn <= a.rn + ?
            GROUP BY ALL
        )
        SELECT rid_a, rid_b, concat_ws(',', {spelled}) AS blocks FROM m
    """, [int(window)])
    con.execute("DROP TABLE _id_keys; DROP TABLE _id_keysize; DROP TABLE _id_sorted")
    return skipped


def _score_pairs(con: duckdb.DuckDBPyConnection, norm: str, pairs: str, out: str) -> None:
    """Compare and score the pairs of table ``pairs`` (rid_a, rid_b, blocks) into TEMP ``out``."""
    W = {f: {lvl: (_w(m, u) if u is not None else None) for lvl, (m, u) in lv.items()} for f, lv in WEIGHTS.items()}
    fn_m, ln_m = WEIGHTS["first_name"]["exact"][0], WEIGHTS["last_name"]["exact"][0]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_tf AS
        WITH n AS (SELECT count(*) AS n FROM {norm})
        SELECT 'name' AS part, value, count(*) / any_value(n.n) AS tf
        FROM (SELECT fn AS value FROM {norm} WHERE fn IS NOT NULL
              UNION ALL SELECT ln FROM {norm} WHERE ln IS NOT NULL), n
        GROUP BY value
        UNION ALL SELECT 'bd', CAST(bd AS VARCHAR), count(*) / any_value(n.n) FROM {norm}, n
            WHERE bd IS NOT NULL GROUP BY bd
        UNION ALL SELECT 'pc', pc, count(*) / any_value(n.n) FROM {norm}, n WHERE pc IS NOT NULL GROUP BY pc
        UNION ALL SELECT 'ci', ci, count(*) / any_value(n.n) FROM {norm}, n WHERE ci IS NOT NULL GROUP BY ci
    """)
    # the frequencies each record's own values (one join per record, not five per pair)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _id_side AS
        SELECT r.rid, r.fn, r.ln, r.em, r.em_local, r.em_domain, r.ph, r.bd, r.bd_s, r.ad, r.pc, r.ci, r.gender,
               tf.tf AS tf_fn, tl.tf AS tf_ln, tb.tf AS tf_bd, tp.tf AS tf_pc, tc.tf AS tf_ci
        FROM {norm} r
        LEFT JOIN (SELECT value, tf FROM _id_tf WHERE part = 'name') tf ON tf.value = r.fn
        LEFT JOIN (SELECT value, tf FROM _id_tf WHERE part = 'name') tl ON tl.value = r.ln
        LEFT JOIN (SELECT value, tf FROM _id_tf WHERE part = 'bd') tb ON tb.value = CAST(r.bd AS VARCHAR)
        LEFT JOIN (SELECT value, tf FROM _id_tf WHERE part = 'pc') tp ON tp.value = r.pc
        LEFT JOIN (SELECT value, tf FROM _id_tf WHERE part = 'ci') tc ON tc.value = r.ci
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        WITH j AS (
            SELECT p.rid_a, p.rid_b, p.blocks,
                   a.fn AS fn_a, a.ln AS ln_a, b.fn AS fn_b0, b.ln AS ln_b0,
                   a.em AS em_a, b.em AS em_b, a.em_local AS el_a, b.em_local AS el_b,
                   a.em_domain AS ed_a, b.em_domain AS ed_b, a.ph AS ph_a, b.ph AS ph_b,
                   a.bd AS bd_a, b.bd AS bd_b, a.bd_s AS bds_a, b.bd_s AS bds_b, a.ad AS ad_a, b.ad AS ad_b,
                   a.pc AS pc_a, b.pc AS pc_b, a.ci AS ci_a, b.ci AS ci_b,
                   a.gender AS g_a, b.gender AS g_b,
                   a.tf_fn, a.tf_ln, a.tf_bd, a.tf_pc, a.tf_ci,
                   jaro_winkler_similarity(a.fn, b.fn) AS jw_ff, jaro_winkler_similarity(a.ln, b.ln) AS jw_ll,
                   jaro_winkler_similarity(a.fn, b.ln) AS jw_fl, jaro_winkler_similarity(a.ln, b.fn) AS jw_lf
            FROM {pairs} p JOIN _id_side a ON a.rid = p.rid_a JOIN _id_side b ON b.rid = p.rid_b
        ), o AS (
            SELECT *, (coalesce(jw_fl, 0) + coalesce(jw_lf, 0) > coalesce(jw_ff, 0) + coalesce(jw_ll, 0) + 0.05
                       AND fn_a IS NOT NULL AND ln_a IS NOT NULL
                       AND fn_b0 IS NOT NULL AND ln_b0 IS NOT NULL) AS swapped
            FROM j
        ), e AS (
            SELECT *, CASE WHEN swapped THEN ln_b0 ELSE fn_b0 END AS fn_b,
                      CASE WHEN swapped THEN fn_b0 ELSE ln_b0 END AS ln_b,
                      -- the similarities of the names as compared below, computed once above
                      CASE WHEN swapped THEN jw_fl ELSE jw_ff END AS jw_fn,
                      CASE WHEN swapped THEN jw_lf ELSE jw_ll END AS jw_ln
            FROM o
        ), l AS (
            SELECT e.*,
                {_first_level_sql('fn_a', 'fn_b', 'jw_fn')} AS lv_fn,
                {_last_level_sql('ln_a', 'ln_b', 'jw_ln')} AS lv_ln,
                CASE WHEN em_a IS NULL OR em_b IS NULL THEN NULL
                     WHEN em_a = em_b THEN 'exact'
                     WHEN el_a = el_b AND ed_a = ed_b AND ed_a = 'gmail.com' THEN 'same_mailbox'
                     WHEN el_a = el_b AND ed_a = ed_b THEN 'dotless'
                     WHEN ed_a = ed_b AND {_dl1_sql('el_a', 'el_b', 5)} THEN 'close'
                     WHEN el_a = el_b AND length(el_a) >= 5 THEN 'same_local'
                     ELSE 'different' END AS lv_em,
                CASE WHEN ph_a IS NULL OR ph_b IS NULL THEN NULL
                     WHEN ph_a = ph_b THEN 'exact'
                     WHEN length(ph_a) = length(ph_b) AND {_dl_le1_sql('ph_a', 'ph_b')} THEN 'close'
                     ELSE 'different' END AS lv_ph,
                CASE WHEN bd_a IS NULL OR bd_b IS NULL THEN NULL
                     WHEN bd_a = bd_b THEN 'exact'
                     WHEN {_dl_le1_sql('bds_a', 'bds_b')}
                          OR (year(bd_a) = year(bd_b) AND month(bd_a) = day(bd_b) AND day(bd_a) = month(bd_b)) THEN 'near'
                     ELSE 'different' END AS lv_bd,
                CASE WHEN ad_a IS NULL OR ad_b IS NULL THEN NULL
                     WHEN ad_a = ad_b THEN 'exact'
                     WHEN jaro_winkler_similarity(ad_a, ad_b) >= 0.9 THEN 'close'
                     ELSE 'different' END AS lv_ad,
                CASE WHEN pc_a IS NULL OR pc_b IS NULL THEN NULL
                     WHEN pc_a = pc_b THEN 'exact' ELSE 'different' END AS lv_pc,
                CASE WHEN pc_a IS NOT NULL AND pc_b IS NOT NULL THEN NULL
                     WHEN ci_a IS NULL OR ci_b IS NULL THEN NULL
                     WHEN ci_a = ci_b THEN 'exact'
                     WHEN jaro_winkler_similarity(ci_a, ci_b) >= 0.9 THEN 'close'
                     ELSE 'different' END AS lv_ci,
                (g_a IS NOT NULL AND g_b IS NOT NULL AND g_a <> g_b) AS gender_conflict
            FROM e
        ), w AS (
            SELECT l.*,
                CASE lv_fn WHEN 3 THEN log2({fn_m} / greatest(coalesce(tf_fn, 1e-4), 1e-4))
                           WHEN 2 THEN {W['first_name']['close']} WHEN 1 THEN {W['first_name']['compatible']}
                           WHEN 0 THEN {W['first_name']['different']} ELSE 0 END AS w_fn,
                CASE lv_ln WHEN 3 THEN log2({ln_m} / greatest(coalesce(tf_ln, 1e-4), 1e-4))
                           WHEN 2 THEN {W['last_name']['close']} WHEN 1 THEN {W['last_name']['partial']}
                           WHEN 0 THEN {W['last_name']['different']} ELSE 0 END AS w_ln,
                CASE lv_em WHEN 'exact' THEN {W['email']['exact']} WHEN 'close' THEN {W['email']['close']}
                           WHEN 'dotless' THEN {W['email']['dotless']}
                           WHEN 'same_mailbox' THEN {W['email']['same_mailbox']}
                           WHEN 'same_local' THEN {W['email']['same_local']}
                           WHEN 'different' THEN {W['email']['different']} ELSE 0 END AS w_em,
                CASE lv_ph WHEN 'exact' THEN {W['phone']['exact']} WHEN 'close' THEN {W['phone']['close']}
                           WHEN 'different' THEN {W['phone']['different']} ELSE 0 END AS w_ph,
                CASE lv_bd WHEN 'exact' THEN log2({WEIGHTS['birth_date']['exact'][0]} / greatest(coalesce(tf_bd, 4e-5), 4e-5))
                           WHEN 'near' THEN {W['birth_date']['near']}
                           WHEN 'different' THEN {W['birth_date']['different']} ELSE 0 END AS w_bd,
                CASE lv_ad WHEN 'exact' THEN {W['address']['exact']} WHEN 'close' THEN {W['address']['close']}
                           WHEN 'different' THEN {W['address']['different']} ELSE 0 END AS w_ad,
                CASE lv_pc WHEN 'exact' THEN log2({WEIGHTS['postal_code']['exact'][0]} / greatest(coalesce(tf_pc, 1e-4), 1e-4))
                           WHEN 'different' THEN {W['postal_code']['different']} ELSE 0 END AS w_pc,
                CASE lv_ci WHEN 'exact' THEN log2({WEIGHTS['city']['exact'][0]} / greatest(coalesce(tf_ci, 1e-4), 1e-4))
                           WHEN 'close' THEN {W['city']['close']}
                           WHEN 'different' THEN {W['city']['different']} ELSE 0 END AS w_ci
            FROM l
        ), s AS (
            SELECT w.*, {PRIOR_WEIGHT} + w_fn + w_ln + w_em + w_ph + w_bd + w_ad + w_pc + w_ci AS weight,
                CASE WHEN lv_fn = 0 THEN 'veto_first_name'
                     WHEN lv_bd = 'different' THEN 'veto_birth_date'
                     WHEN gender_conflict THEN 'veto_gender' END AS veto
            FROM w
        )
        SELECT rid_a, rid_b, blocks, swapped, lv_fn, lv_ln, lv_em, lv_ph, lv_bd, lv_ad, lv_pc, lv_ci,
               round(weight, 4) AS weight,
               CASE WHEN veto IS NOT NULL THEN 0.0 ELSE round(1.0 / (1.0 + pow(2.0, -weight)), 6) END AS score,
               CASE WHEN veto IS NOT NULL THEN veto
                    WHEN lv_em = 'exact' THEN 'email'
                    WHEN lv_ph = 'exact' AND lv_ln >= 2 AND lv_fn >= 1 THEN 'phone_name'
                    WHEN lv_fn = 3 AND lv_ln = 3 AND lv_bd = 'exact' THEN 'name_birth'
                    ELSE 'fuzzy' END AS rule
        FROM s
    """)
    con.execute("DROP TABLE _id_tf; DROP TABLE _id_side")


def _cluster(
    n: int,
    edges: pd.DataFrame,
    cannot: set[tuple[int, int]],
    attrs: pd.DataFrame | dict[str, dict],
    max_cluster_size: int,
    strong_score: float,
    cache: dict | None = None,
    thresholds: Sequence[float] | None = None,
    refused_at: float | None = None,
) -> tuple[dict[float, np.ndarray], pd.DataFrame]:
    """Cluster: connected components of accepted edges, with the chain guard on groups of 3+.

    At each threshold ``t`` of ``thresholds``, the edges are the non-fuzzy ones and the
    fuzzy ones scoring at least ``t``. In the guard's order (rule, then score descending)
    those form a prefix of the edges of the lowest threshold, and a merge only depends on
    the edges before it: one pass over the edges settles every threshold, each read at the
    end of its prefix. A group of two at ``t`` is merged without the guard (its single
    edge was vetted pairwise), as a separate clustering at ``t`` would.

    Parameters
    ----------
    n : int
        Number of records (rids are ``0..n-1``).
    edges : DataFrame
        ``rid_a, rid_b, rule, score`` accepted edges (``rule == 'decision'`` for ``same``),
        one row per pair.
    cannot : set
        ``(min rid, max rid)`` pairs that must never share a cluster.
    attrs : DataFrame or dict
        Indexed by rid: ``fn, ln, birth_date, gender`` (only rids of groups of 3+ at the
        lowest threshold are needed), or the same as ``{column: {rid: value}}``.
    cache : dict, optional
        ``{(min rid, max rid): reason or None}`` of the guard's record-pair checks.
    thresholds : sequence of float, optional
        Fuzzy score thresholds to cluster at (default: every edge, one threshold below
        all scores).
    refused_at : float, optional
        Threshold whose refused edges are returned (default: the lowest).

    Returns
    -------
    labels : dict
        Threshold -> cluster label of each rid (the smallest rid of its cluster).
    refused : DataFrame
        ``rid_a, rid_b, rule, score, reason`` edges refused by the guard at ``refused_at``.
    """
    empty = pd.DataFrame({"rid_a": pd.Series(dtype="int64"), "rid_b": pd.Series(dtype="int64"),
                          "rule": pd.Series(dtype=object), "score": pd.Series(dtype=float),
                          "reason": pd.Series(dtype=object)})
    a_all = edges["rid_a"].to_numpy(np.int64)
    b_all = edges["rid_b"].to_numpy(np.int64)
    fuzzy_all = (edges["rule"] == "fuzzy").to_numpy()
    score_all = edges["score"].to_numpy(float)
    if thresholds is None:
        thresholds = [-math.inf]
    grid = sorted(set(thresholds))
    refused_at = grid[0] if refused_at is None else refused_at

    def components(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges kept, and whether each lies in a group of exactly two records."""
        a, b = a_all[keep], b_all[keep]
        _, comp = connected_components(coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)),
                                       directed=False)
        sizes = np.bincount(comp)
        return a, b, sizes[comp[a]] == 2

    # the guard's pass: edges in groups of 3+ at the lowest threshold (a group of two there
    # stays a group of two, or less, at every higher threshold)
    low_keep = ~fuzzy_all | (score_all >= grid[0])
    _, _, low_simple = components(low_keep)
    big_idx = np.flatnonzero(low_keep)[~low_simple]
    big_edges = edges.iloc[big_idx][["rid_a", "rid_b", "rule", "score"]].copy()
    big_edges["order"] = big_edges["rule"].map(RULE_ORDER).fillna(9)
    big_edges = big_edges.sort_values(["order", "score", "rid_a", "rid_b"],
                                      ascending=[True, False, True, True], kind="mergesort")
    big_fuzzy = (big_edges["rule"] == "fuzzy").to_numpy()
    big_score = big_edges["score"].to_numpy(float)
    # length of each threshold's prefix (fuzzy edges come last, by score descending)
    ends = {}
    for t in grid:
        keep = ~big_fuzzy | (big_score >= t)
        k = int(np.count_nonzero(keep))
        if not keep[:k].all():  # pragma: no cover - the sort above makes it a prefix
            raise AssertionError("edges of a threshold are not a prefix of the guard's order")
        ends[t] = k
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    if isinstance(attrs, pd.DataFrame):
        attrs = {c: attrs[c].to_dict() for c in ("fn", "ln", "birth_date", "gender")}
    fn, ln, bd, gender = attrs["fn"], attrs["ln"], attrs["birth_date"], attrs["gender"]
    cache = {} if cache is None else cache

    def incompatible(p: int, q: int) -> str | None:
        key = (p, q) if p < q else (q, p)
        if key in cache:
            return cache[key]
        reason = None
        if not first_names_compatible((fn.get(p), ln.get(p)), (fn.get(q), ln.get(q))):
            reason = "prénoms incompatibles"
        else:
            dp, dq = bd.get(p), bd.get(q)
            if dp is not None and dq is not None and not pd.isna(dp) and not pd.isna(dq) \
                    and not _dates_compatible(dp, dq):
                reason = "dates de naissance incompatibles"
            else:
                gp, gq = gender.get(p), gender.get(q)
                if gp and gq and not pd.isna(gp) and not pd.isna(gq) and gp != gq:
                    reason = "genres différents"
        cache[key] = reason
        return reason

    def snapshot(t: float) -> np.ndarray:
        labels = np.arange(n, dtype=np.int64)
        a, b, simple = components(~fuzzy_all | (score_all >= t))
        labels[np.maximum(a[simple], b[simple])] = np.minimum(a[simple], b[simple])
        if members:  # each merged group to its smallest record, in one assignment
            groups = list(members.values())
            lens = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
            flat = np.fromiter(itertools.chain.from_iterable(groups), dtype=np.int64, count=int(lens.sum()))
            starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
            labels[flat] = np.repeat(np.minimum.reduceat(flat, starts), lens)
        return labels

    out: dict[float, np.ndarray] = {}
    refused = []  # (position in the guard's order, edge, reason)
    stops = sorted(set(ends.values()))
    pending = sorted(grid, key=lambda t: ends[t])
    rows = zip(big_edges["rid_a"].tolist(), big_edges["rid_b"].tolist(),
               big_edges["rule"].tolist(), big_edges["score"].tolist(), strict=True)
    pos = 0
    for stop in stops:
        for ra, rb, rule, score in rows if pos < stop else ():
            x, y = find(ra), find(rb)
            here, pos = pos, pos + 1
            if x != y:
                mx, my = members.get(x, [x]), members.get(y, [y])
                reason = None
                for p in mx:
                    for q in my:
                        if (min(p, q), max(p, q)) in cannot:
                            reason = "décision « différent »"
                            break
                        if rule == "decision":
                            continue
                        reason = incompatible(p, q)
                        if reason:
                            break
                    if reason:
                        break
                if reason is None and rule == "fuzzy" and len(mx) + len(my) > max_cluster_size and score < strong_score:
                    reason = f"groupe de plus de {max_cluster_size} fiches relié par un lien faible"
                if reason:
                    refused.append((here, ra, rb, rule, score, reason))
                else:
                    if len(mx) < len(my):
                        x, y, mx, my = y, x, my, mx
                    parent[y] = x
                    members[x] = mx + my
                    members.pop(y, None)
            if pos == stop:
                break
        for t in pending:
            if ends[t] == stop:
                out[t] = snapshot(t)
    # refused edges at refused_at: those of its prefix, except the edges of its groups of two
    end = ends[refused_at]
    a, b, simple = components(~fuzzy_all | (score_all >= refused_at))
    pairs_two = set(zip(a[simple].tolist(), b[simple].tolist(), strict=True))
    kept = [r[1:] for r in refused if r[0] < end and (r[1], r[2]) not in pairs_two]
    refused_df = pd.DataFrame(kept, columns=["rid_a", "rid_b", "rule", "score", "reason"]) if kept else empty
    return out, refused_df


def _truth_frame(truth_csv: str | Path) -> pd.DataFrame:
    path = Path(truth_csv)
    if not path.exists():
        raise InputError("Fichier de vérité introuvable", file=str(path),
                         hint="Générez le monde de démo (crmlab demo-data) ou retirez truth_dir")
    truth = pd.read_csv(path, dtype=str, sep=None, engine="python", encoding="utf-8-sig")
    for col in ("source", "source_key", "person_id"):
        if col not in truth.columns:
            raise InputError("Colonne absente du fichier de vérité", file=str(path), column=col,
                             hint="Colonnes attendues : source, source_key, person_id")
    return truth[["source", "source_key", "person_id"]].dropna()


def _truth_persons(con: duckdb.DuckDBPyConnection, norm: str, truth_csv: str | Path) -> np.ndarray:
    """Integer code of each record's true person (``-1`` when absent from the truth file), by rid."""
    path = Path(truth_csv)
    if not path.exists():
        raise InputError("Fichier de vérité introuvable", file=str(path),
                         hint="Générez le monde de démo (crmlab demo-data) ou retirez truth_dir")
    con.execute("CREATE OR REPLACE TEMP TABLE _id_truth AS SELECT * FROM read_csv(?, all_varchar = true)", [str(path)])
    try:
        cols = {r[0].lstrip("\ufeff") for r in con.execute("DESCRIBE _id_truth").fetchall()}
        for col in ("source", "source_key", "person_id"):
            if col not in cols:
                raise InputError("Colonne absente du fichier de vérité", file=str(path), column=col,
                                 hint="Colonnes attendues : source, source_key, person_id")
        codes = con.execute(f"""
            WITH t AS (SELECT source, source_key, dense_rank() OVER (ORDER BY person_id) - 1 AS code
                       FROM _id_truth WHERE source IS NOT NULL AND source_key IS NOT NULL AND person_id IS NOT NULL)
            SELECT coalesce(t.code, -1) FROM {norm} r LEFT JOIN t USING (source, source_key) ORDER BY r.rid
        """).fetchnumpy()
    finally:
        con.execute("DROP TABLE IF EXISTS _id_truth")
    return next(iter(codes.values())).astype(np.int64)


def _pairwise(links: pd.DataFrame, truth: pd.DataFrame) -> dict:
    merged = links[["source", "source_key", "customer_id"]].merge(truth, on=["source", "source_key"])

    def npairs(counts: pd.Series) -> int:
        c = counts.to_numpy(np.int64)
        return int((c * (c - 1) // 2).sum())

    found = npairs(merged.groupby("customer_id").size())
    true = npairs(merged.groupby("person_id").size())
    correct = npairs(merged.groupby(["customer_id", "person_id"]).size())
    precision = correct / found if found else 1.0
    recall = correct / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": true,
            "found_pairs": found, "correct_pairs": correct, "records": len(merged)}


def _pairwise_codes(cluster: np.ndarray, person: np.ndarray) -> dict:
    """Pairwise precision / recall from integer codes (same result as :func:`_pairwise`)."""

    def npairs(*codes: np.ndarray) -> int:
        if len(codes[0]) == 0:
            return 0
        key = codes[0].astype(np.int64) if len(codes) == 1 else codes[0].astype(np.int64) * (int(codes[1].max()) + 1) + codes[1]
        c = np.unique(key, return_counts=True)[1].astype(np.int64)
        return int((c * (c - 1) // 2).sum())

    found, true, correct = npairs(cluster), npairs(person), npairs(cluster, person)
    precision = correct / found if found else 1.0
    recall = correct / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": true,
            "found_pairs": found, "correct_pairs": correct, "records": len(cluster)}


def evaluate(con_or_links: duckdb.DuckDBPyConnection | pd.DataFrame, truth_csv: str | Path) -> dict:
    """Pairwise precision and recall of the links against a truth file.

    Parameters
    ----------
    con_or_links : connection or DataFrame
        A connection whose ``customer_links`` table is read, or a frame with ``source,
        source_key, customer_id``.
    truth_csv : path
        ``truth/duplicates.csv``: ``source, source_key, person_id``.

    Returns
    -------
    dict
        ``precision`` (share of linked record pairs that are the same person),
        ``recall`` (share of same-person pairs that are linked), ``f1``, ``true_pairs``,
        ``found_pairs``, ``correct_pairs``, ``records`` (records in both). Only records
        present in both the links and the truth count.
    """
    if isinstance(con_or_links, pd.DataFrame):
        links = con_or_links
    else:
        links = to_frame(con_or_links.sql("SELECT source, source_key, customer_id FROM customer_links"))
    return _pairwise(links.astype({"source": str, "source_key": str}), _truth_frame(truth_csv))


def _customer_ids(con: duckdb.DuckDBPyConnection, norm: str, labels: np.ndarray) -> None:
    """Create TEMP table ``_id_ids(rid, root, customer_id)``: each record's group and customer id."""
    register_frame(con, "_id_labels", pd.DataFrame({"rid": np.arange(len(labels), dtype=np.int64), "root": labels}))
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _id_ids AS
            SELECT l.rid, l.root, {customer_id_sql('r.source', 'r.source_key')} AS customer_id
            FROM _id_labels l JOIN {norm} r ON r.rid = l.root
        """)
    finally:
        con.unregister("_id_labels")
    roots, ids = con.execute("SELECT count(DISTINCT root), count(DISTINCT customer_id) FROM _id_ids").fetchall()[0]
    if roots != ids:
        raise CheckError(f"Deux clients différents ont reçu le même identifiant ({roots} groupes, {ids} identifiants) : "
                         "collision de l'empreinte md5, à signaler avec le fichier source.")


def link(
    con: duckdb.DuckDBPyConnection,
    *,
    default_region: str = "FR",
    priorities: dict[str, int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    review_band: tuple[float, float] = DEFAULT_REVIEW_BAND,
    decisions: str | Path | None = None,
    review_out: str | Path | None = None,
    now: dt.datetime | None = None,
    truth: str | Path | None = None,
    threshold_grid: Sequence[float] = DEFAULT_GRID,
    max_block: int = 100,
    max_shared: int = 10,
    max_cluster_size: int = 12,
    strong_score: float = 0.999,
    n_examples: int = 5,
    table: str = "source_customers",
) -> LinkResult:
    """Link the records of ``source_customers`` into customers; write the RCU tables.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Open connection (inside the step's transaction; never committed here).
    default_region : str
        Region of phone numbers without international prefix (ISO alpha-2).
    priorities : dict, optional
        ``{source: rank}``, lower = more trusted, for survivorship; missing sources rank
        after the listed ones; default all equal.
    threshold : float
        Minimum score (0–1) for a ``fuzzy`` link.
    review_band : (float, float)
        Scores ``low ≤ score < high`` of non-exact pairs exported for review.
    decisions : path, optional
        Decisions file (:func:`read_decisions`), applied on every run.
    review_out : path, optional
        Where to write the review file (CSV UTF-8 with BOM, ``;``, for French Excel;
        contains PII: an internal work file). Its ``decision`` column, once filled, makes
        it a valid decisions file.
    now : datetime, optional
        ``linked_at`` of the links (default: now, without microseconds).
    truth : path, optional
        ``truth/duplicates.csv`` of the demo world: adds precision/recall.
    threshold_grid : sequence of float
        Thresholds of the threshold table (the chosen one is added).
    max_block : int
        Blocking keys shared by more records are skipped.
    max_shared : int
        An e-mail or phone shared by more records is a placeholder, ignored for matching.
    max_cluster_size, strong_score : int, float
        Chain guard: a fuzzy edge below ``strong_score`` may not grow a group beyond
        ``max_cluster_size`` records.
    n_examples : int
        Number of merged customers shown in ``examples``.
    table : str
        Source table (canonical columns of ``source_customers``).

    Returns
    -------
    LinkResult
        See :class:`LinkResult`.

    Notes
    -----
    Tables written (content replaced): ``customer_links(source, source_key, customer_id,
    rule, score, linked_at)`` – ``rule`` is the rule of the best accepted edge of the
    record inside its customer (``unique`` and score NULL for a record alone) – and
    ``customers`` (golden record by :data:`SURVIVORSHIP`, ``is_prospect`` FALSE,
    ``n_records``, ``sources`` comma list sorted). A temp table ``customers_norm`` (the
    normalised records) and ``identity_pairs`` (every scored pair) stay available on
    the connection for the rest of the step.
    """
    review_lo, review_hi = _validate(threshold, review_band, max_block)
    linked_at = (now or dt.datetime.now()).replace(microsecond=0)
    clock = [time.perf_counter()]
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        now_ = time.perf_counter()
        timings[name] = round(now_ - clock[0], 2)
        clock[0] = now_

    norm = normalize_customers(con, table, default_region)
    lap("normalize")
    n = con.execute(f"SELECT count(*) FROM {norm}").fetchall()[0][0]

    rec = _match_records(con, norm, max_shared)
    skipped = _block_pairs(con, rec, max_block)
    lap("blocking")
    # decisions: map to rids; 'same' pairs are scored too so every pair has a score
    dec = read_decisions(decisions) if decisions else pd.DataFrame(
        columns=["source_a", "key_a", "source_b", "key_b", "decision"], dtype=object)
    register_frame(con, "_id_dec_in", dec)
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _id_dec AS
            SELECT least(a.rid, b.rid) AS rid_a, greatest(a.rid, b.rid) AS rid_b, d.decision
            FROM _id_dec_in d
            JOIN {norm} a ON a.source = d.source_a AND a.source_key = d.key_a
            JOIN {norm} b ON b.source = d.source_b AND b.source_key = d.key_b
            WHERE a.rid <> b.rid
        """)
    finally:
        con.unregister("_id_dec_in")
    n_dec_known = con.execute("SELECT count(*) FROM _id_dec").fetchall()[0][0]
    con.execute("""
        INSERT INTO _id_cand
        SELECT rid_a, rid_b, 'decision' FROM _id_dec d
        WHERE NOT EXISTS (SELECT 1 FROM _id_cand c WHERE c.rid_a = d.rid_a AND c.rid_b = d.rid_b)
    """)
    _score_pairs(con, rec, "_id_cand", "identity_pairs")
    lap("scoring")
    con.execute("DROP TABLE _id_cand")
    if n_dec_known:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE identity_pairs AS
            SELECT p.* REPLACE (CASE WHEN d.decision = 'same' THEN 'decision'
                                     WHEN d.decision = 'different' THEN 'different' ELSE p.rule END AS rule),
                   d.decision
            FROM identity_pairs p LEFT JOIN _id_dec d USING (rid_a, rid_b)
        """)
    else:  # no decision: the same table without rewriting millions of pairs
        con.execute("ALTER TABLE identity_pairs ADD COLUMN decision VARCHAR")

    # every edge accepted at the lowest threshold of the grid, read once: each threshold
    # keeps the exact-rule edges and the fuzzy ones scoring at least that threshold
    lowest = min([threshold, *threshold_grid])
    all_edges = to_frame(con.sql("""
        SELECT rid_a, rid_b, rule, score FROM identity_pairs
        WHERE rule IN ('decision', 'email', 'phone_name', 'name_birth') OR (rule = 'fuzzy' AND score >= ?)
    """, params=[lowest]))
    cannot = {(int(a), int(b)) for a, b in con.execute(
        "SELECT rid_a, rid_b FROM _id_dec WHERE decision = 'different'").fetchall()}
    # attributes for the guard: records of groups of 3+ at the lowest threshold (the only
    # groups it examines, at any threshold: a higher one keeps a subset of the edges)
    a_all, b_all = all_edges["rid_a"].to_numpy(np.int64), all_edges["rid_b"].to_numpy(np.int64)
    _, comp = connected_components(coo_matrix((np.ones(len(a_all), dtype=np.int8), (a_all, b_all)), shape=(n, n)),
                                   directed=False)
    guarded = np.flatnonzero(np.bincount(comp)[comp] >= 3)
    register_frame(con, "_id_guarded", pd.DataFrame({"rid": guarded.astype(np.int64)}))
    try:
        rows_attrs = con.execute(
            f"SELECT r.rid, r.fn, r.ln, r.bd, r.gender FROM {rec} r SEMI JOIN _id_guarded g USING (rid)").fetchall()
    finally:
        con.unregister("_id_guarded")
    attrs = {"fn": {}, "ln": {}, "birth_date": {}, "gender": {}}
    for rid, fn_, ln_, bd_, g_ in rows_attrs:
        attrs["fn"][rid], attrs["ln"][rid], attrs["birth_date"][rid], attrs["gender"][rid] = fn_, ln_, bd_, g_
    guard_cache: dict = {}

    person_code = in_truth = None
    if truth:
        # truth person of each record, coded once for every threshold
        person = _truth_persons(con, norm, truth)
        in_truth = person >= 0
        person_code = person[in_truth]

    rows = []
    grid = sorted(set([*threshold_grid, threshold]))
    final = None
    fuzzy = (all_edges["rule"] == "fuzzy").to_numpy()
    score = all_edges["score"].to_numpy(float)
    grid_labels, refused = _cluster(n, all_edges, cannot, attrs, max_cluster_size, strong_score, guard_cache,
                                    thresholds=grid, refused_at=threshold)
    for t in grid:
        edges = all_edges.loc[~fuzzy | (score >= t)].reset_index(drop=True)
        labels = grid_labels[t]
        # a group's label is its smallest record: one root per customer
        row = {"threshold": t, "pairs_accepted": len(edges),
               "customers": int(np.count_nonzero(labels == np.arange(n))), "chosen": t == threshold}
        if person_code is not None:
            row.update({k: v for k, v in _pairwise_codes(labels[in_truth], person_code).items()
                        if k in ("precision", "recall", "f1")})
        rows.append(row)
        if t == threshold:
            final = (edges, labels, refused)
    thresholds = pd.DataFrame(rows)
    edges, labels, refused = final

    lap("clustering")
    _customer_ids(con, norm, labels)
    register_frame(con, "_id_edges", edges)
    prio = pd.DataFrame({"source": list((priorities or {}).keys()),
                         "prio": [int(v) for v in (priorities or {}).values()]}, dtype=object)
    prio["prio"] = prio["prio"].astype("int64")
    register_frame(con, "_id_prio", prio)
    try:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _id_best AS
            WITH e AS (
                SELECT rid_a AS rid, rid_b AS other, rule, score FROM _id_edges
                UNION ALL SELECT rid_b, rid_a, rule, score FROM _id_edges
            ), kept AS (
                SELECT e.rid, e.rule, e.score FROM e
                JOIN _id_ids i1 ON i1.rid = e.rid JOIN _id_ids i2 ON i2.rid = e.other
                WHERE i1.root = i2.root
            )
            SELECT rid, arg_min(rule, (CASE rule WHEN 'decision' THEN 0 WHEN 'email' THEN 1
                                 WHEN 'phone_name' THEN 2 WHEN 'name_birth' THEN 3 ELSE 4 END) * 10 - score) AS rule,
                   max(score) FILTER (WHERE rule <> 'decision') AS score
            FROM kept GROUP BY rid
        """)
        con.execute("DELETE FROM customer_links")
        con.execute(f"""
            INSERT INTO customer_links (source, source_key, customer_id, rule, score, linked_at)
            SELECT r.source, r.source_key, i.customer_id, coalesce(b.rule, 'unique'),
                   CASE WHEN b.rule IS NULL THEN NULL WHEN b.rule = 'decision' THEN 1.0 ELSE b.score END, ?
            FROM {norm} r JOIN _id_ids i USING (rid) LEFT JOIN _id_best b USING (rid)
            ORDER BY r.source, r.source_key
        """, [linked_at])
        fields = {"first_name": "r.first_name", "last_name": "r.last_name", "email": "r.email_clean",
                  "phone": "r.phone_e164", "address": "r.address", "postal_code": "r.postal_code",
                  "city": "r.city", "country": "r.country", "birth_date": "r.birth_date", "gender": "r.gender"}
        order = ("coalesce(pr.prio, 1000000) ASC, r.updated_at DESC NULLS LAST, "
                 "r.created_at DESC NULLS LAST, r.source, r.source_key")
        # each record's rank in the survivorship order, computed once (unique: the order ends
        # on the record's key); a field's value is then the one of the best-ranked record
        # that has it – one hash aggregation instead of a sort per field
        picks = ",\n".join(
            f"arg_min({expr}, r.rk) FILTER (WHERE {expr} IS NOT NULL) AS {name}"
            for name, expr in fields.items())
        con.execute("DELETE FROM customers")
        con.execute(f"""
            INSERT INTO customers (customer_id, first_name, last_name, email, phone, address, postal_code,
                                   city, country, birth_date, gender, is_prospect, n_records, sources,
                                   created_at, updated_at)
            WITH r AS (
                SELECT r.*, row_number() OVER (ORDER BY {order}) AS rk
                FROM {norm} r LEFT JOIN _id_prio pr ON pr.source = r.source
            )
            SELECT i.customer_id, {picks}, FALSE, count(*),
                   array_to_string(list_sort(list_distinct(list(r.source))), ','), min(r.created_at),
                   max(coalesce(r.updated_at, r.created_at))
            FROM r JOIN _id_ids i USING (rid)
            GROUP BY i.customer_id ORDER BY i.customer_id
        """)
    finally:
        for view in ("_id_edges", "_id_prio"):
            con.unregister(view)

    lap("tables")
    clusters = to_frame(con.sql("SELECT customer_id, n_records, sources FROM customers ORDER BY customer_id"))
    review = _review(con, norm, review_lo, review_hi, threshold)
    if review_out:
        out_path = Path(review_out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        review.to_csv(out_path, sep=";", index=False, encoding="utf-8-sig")
    examples = to_frame(con.sql(f"""
        WITH m AS (
            SELECT customer_id FROM customers WHERE n_records > 1
            ORDER BY md5(customer_id) LIMIT ?
        )
        SELECT l.customer_id, l.source, l.source_key, r.first_name, r.last_name, r.email_clean AS email,
               r.phone_e164 AS phone, r.address, r.postal_code, r.city, r.birth_date, l.rule, l.score
        FROM customer_links l JOIN m USING (customer_id)
        JOIN {norm} r ON r.source = l.source AND r.source_key = l.source_key
        ORDER BY l.customer_id, l.source, l.source_key
    """, params=[n_examples]))
    low = min(review_lo, *grid)
    pairs = to_frame(con.sql(f"""
        SELECT a.source AS source_a, a.source_key AS key_a, b.source AS source_b, b.source_key AS key_b,
               p.rule, p.score, p.weight,
               (p.rule IN ('decision', 'email', 'phone_name', 'name_birth')
                OR (p.rule = 'fuzzy' AND p.score >= ?)) AS accepted, p.blocks
        FROM identity_pairs p JOIN {norm} a ON a.rid = p.rid_a JOIN {norm} b ON b.rid = p.rid_b
        WHERE p.score >= ? OR p.rule NOT IN ('fuzzy') AND (p.weight > 0 OR p.decision IS NOT NULL)
        ORDER BY source_a, key_a, source_b, key_b
    """, params=[threshold, low]))
    register_frame(con, "_id_refused", refused.assign(i=np.arange(len(refused), dtype=np.int64)))
    try:
        refusals = to_frame(con.sql(f"""
            SELECT a.source AS source_a, a.source_key AS key_a, b.source AS source_b, b.source_key AS key_b,
                   f.rule, f.score, f.reason
            FROM _id_refused f JOIN {norm} a ON a.rid = f.rid_a JOIN {norm} b ON b.rid = f.rid_b
            ORDER BY f.i
        """))
    finally:
        con.unregister("_id_refused")
    counts = {
        "records": int(n),
        "customers": int(len(clusters)),
        "customers_multi": int((clusters["n_records"] > 1).sum()),
        "records_merged": int(n - len(clusters)),
        "candidate_pairs": int(con.execute("SELECT count(*) FROM identity_pairs").fetchall()[0][0]),
        "pairs_accepted": int(len(edges)),
        "pairs_review": int(len(review)),
        "guard_refusals": int(len(refusals)),
        "decisions_same": int((dec["decision"] == "same").sum()) if len(dec) else 0,
        "decisions_different": int((dec["decision"] == "different").sum()) if len(dec) else 0,
        "decisions_unknown": int(len(dec) - n_dec_known),
        "blocks_skipped": int(skipped["n_keys"].sum()) if len(skipped) else 0,
    }
    lap("report")
    metrics = None
    if person_code is not None:
        metrics = _pairwise_codes(labels[in_truth], person_code)
    con.execute("DROP TABLE IF EXISTS _id_best; DROP TABLE IF EXISTS _id_dec; DROP TABLE IF EXISTS _id_rec; "
                "DROP TABLE IF EXISTS _id_ids")
    return LinkResult(pairs=pairs, clusters=clusters, counts=counts, thresholds=thresholds,
                      examples=examples, review=review, refusals=refusals, blocks_skipped=skipped,
                      metrics=metrics, timings=timings)


def _review(con: duckdb.DuckDBPyConnection, norm: str, lo: float, hi: float, threshold: float) -> pd.DataFrame:
    """Uncertain pairs with both records' fields (PII) and an empty ``decision`` column."""
    side = ("first_name", "last_name", "email", "phone", "address", "postal_code", "city", "birth_date")
    cols = ", ".join(f"a.{c} AS {c}_a, b.{c} AS {c}_b" for c in side)
    return to_frame(con.sql(f"""
        SELECT a.source AS source_a, a.source_key AS key_a, b.source AS source_b, b.source_key AS key_b,
               round(p.score, 4) AS score,
               CASE WHEN p.score >= ? THEN 'fusionné' ELSE 'non fusionné' END AS proposition,
               {cols}, '' AS decision
        FROM identity_pairs p
        JOIN {norm} a ON a.rid = p.rid_a JOIN {norm} b ON b.rid = p.rid_b
        WHERE p.rule = 'fuzzy' AND p.score >= ? AND p.score < ? AND p.decision IS NULL
        ORDER BY p.score DESC, source_a, key_a, source_b, key_b
    """, params=[threshold, lo, hi]))


# --------------------------------------------------------------------------------------
# Synthetic data (tests, benchmark)
# --------------------------------------------------------------------------------------

_FIRST = ["jean", "marie", "pierre", "sophie", "nicolas", "isabelle", "philippe", "nathalie", "michel",
          "catherine", "alain", "sylvie", "patrick", "christine", "eric", "sandrine", "laurent", "valerie",
          "stephane", "celine", "thomas", "julie", "julien", "aurelie", "francois", "camille", "louis",
          "emma", "lucas", "lea", "hugo", "chloe", "gabriel", "manon", "arthur", "ines", "jules", "sarah",
          "antoine", "pauline", "maxime", "claire", "olivier", "helene", "vincent", "anne", "david", "laura",
          "guillaume", "elise", "jerome", "agnes", "benoit", "morgane", "cedric", "oceane", "damien", "lucie"]
_LAST = ["martin", "bernard", "thomas", "petit", "robert", "richard", "durand", "dubois", "moreau", "laurent",
         "simon", "michel", "lefebvre", "leroy", "roux", "david", "bertrand", "morel", "fournier", "girard",
         "bonnet", "dupont", "lambert", "fontaine", "rousseau", "vincent", "muller", "lefevre", "faure",
         "andre", "mercier", "blanc", "guerin", "boyer", "garnier", "chevalier", "francois", "legrand",
         "gauthier", "garcia", "perrin", "robin", "clement", "morin", "nicolas", "henry", "roussel", "mathieu",
         "gautier", "masson", "marchand", "duval", "denis", "dumont", "marie", "lemaire", "noel", "meyer",
         "dufour", "meunier", "brun", "blanchard", "giraud", "joly", "riviere", "lucas", "brunet", "gaillard",
         "barbier", "arnaud", "martinez", "gerard", "roche", "renard", "schmitt", "roy", "leroux", "colin",
         "vidal", "caron", "picard", "roger", "fabre", "aubert", "lemoine", "renaud", "dumas", "lacroix",
         "olivier", "philippe", "bourgeois", "pierre", "benoit", "rey", "leclerc", "payet", "rolland",
         "kerguelen", "le gall", "le goff", "nguyen", "da silva", "ferreira", "haddad", "benali", "cohen"]
_STREETS = ["victor hugo", "de la republique", "jean jaures", "de la paix", "pasteur", "du general de gaulle",
            "des lilas", "de la gare", "nationale", "du moulin", "de l eglise", "des ecoles", "voltaire",
            "gambetta", "carnot", "saint michel", "des roses", "du stade", "foch", "de verdun"]
_TYPES = [("rue", "r."), ("avenue", "av."), ("boulevard", "bd"), ("place", "pl."), ("chemin", "chem."),
          ("impasse", "imp."), ("allée", "all."), ("route", "rte")]


def synthetic_source_customers(n_people: int, *, dup_rate: float = 0.3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vectorised generator of customer records with known duplicates (tests, benchmark).

    Each person gets one ``web`` record; a share ``dup_rate`` also gets a ``magasin``
    record with realistic variations (case, accents lost, typos, swapped names,
    phone format, e-mail case/dots, abbreviated street type, missing fields, new
    address). Households (same last name, address and phone, other first name) are
    added as non-duplicates.

    Returns
    -------
    records : DataFrame
        Columns of ``source_customers``: ``source, source_key, first_name, last_name,
        email, phone, address, postal_code, city, country, birth_date, gender,
        created_at, updated_at``.
    truth : DataFrame
        ``source, source_key, person_id``.
    """
    rng = np.random.default_rng(seed)
    n = int(n_people)
    fi = rng.integers(0, len(_FIRST), n)
    first = np.array(_FIRST, dtype=object)[fi]
    last = np.array(_LAST, dtype=object)[rng.integers(0, len(_LAST), n)]
    gender = np.where(fi % 2 == 0, "M", "F")
    # households: 10 % of people share the last name, address and landline of the previous person
    house = rng.random(n) < 0.10
    house[0] = False
    prev = np.arange(n) - 1
    last = np.where(house, last[prev], last)
    cp_num = rng.integers(1000, 95999, n)
    street = rng.integers(0, len(_STREETS), n)
    stype = rng.integers(0, len(_TYPES), n)
    num = rng.integers(1, 200, n)
    cp_num = np.where(house, cp_num[prev], cp_num)
    street = np.where(house, street[prev], street)
    stype = np.where(house, stype[prev], stype)
    num = np.where(house, num[prev], num)
    postal = pd.Series(cp_num).map("{:05d}".format).to_numpy(object)
    full_type = np.array([t[0] for t in _TYPES], dtype=object)[stype]
    abbr_type = np.array([t[1] for t in _TYPES], dtype=object)[stype]
    street_name = np.array(_STREETS, dtype=object)[street]
    numbers = num.astype(str).astype(object)
    addr_full = numbers + " " + full_type + " " + street_name
    addr_abbr = numbers + " " + abbr_type + " " + pd.Series(street_name).str.title().str.replace(" ", "-").to_numpy(object)
    mobile = rng.integers(0, 10**8, n)
    mob_digits = pd.Series(mobile).map("{:08d}".format).to_numpy(object)
    lead = np.where(rng.random(n) < 0.5, "6", "7").astype(object)
    phone_e = "+33" + lead + mob_digits
    phone_fr = "0" + lead + " " + pd.Series(mob_digits).str.replace(r"(\d\d)(?=\d)", r"\1 ", regex=True).to_numpy(object)
    domains = np.array(["gmail.com", "orange.fr", "free.fr", "hotmail.fr", "laposte.net", "sfr.fr"], dtype=object)
    dom = domains[rng.integers(0, len(domains), n)]
    ident = np.arange(n).astype(str).astype(object)
    local = first + "." + pd.Series(last).str.replace(" ", "").to_numpy(object) + ident
    mail = local + "@" + dom
    birth = pd.Timestamp("1940-01-01") + pd.to_timedelta(rng.integers(0, 365 * 65, n), unit="D")
    created = pd.Timestamp("2018-01-01") + pd.to_timedelta(rng.integers(0, 365 * 5 * 24, n), unit="h")
    cities = np.array(["Saint-Étienne", "Châlons", "Villeneuve", "Montreuil", "Beaumont", "Bourg"], dtype=object)
    city_v = cities[cp_num % len(cities)] + "-" + (cp_num // 10).astype(str).astype(object)
    pid = np.array([f"P{i:08d}" for i in range(n)], dtype=object)
    # a few web accounts have no e-mail or phone (no-contact base)
    web = pd.DataFrame({
        "source": "web", "source_key": np.array([f"W{i:08d}" for i in range(n)], dtype=object),
        "first_name": pd.Series(first).str.capitalize().to_numpy(object),
        "last_name": pd.Series(last).str.upper().to_numpy(object),
        "email": np.where(rng.random(n) < 0.9, mail, None),
        "phone": np.where(rng.random(n) < 0.8, phone_fr, None),
        "address": addr_full, "postal_code": postal, "city": city_v, "country": "FR",
        "birth_date": np.where(rng.random(n) < 0.7, birth.date, None), "gender": gender,
        "created_at": created, "updated_at": created + pd.Timedelta(days=30),
    })
    web["birth_date"] = pd.to_datetime(web["birth_date"])
    dup = rng.random(n) < dup_rate
    idx = np.flatnonzero(dup)
    m = len(idx)
    d = web.iloc[idx].reset_index(drop=True).copy()
    d["source"] = "magasin"
    d["source_key"] = np.array([f"M{i:08d}" for i in range(m)], dtype=object)
    r = rng.random((m, 10))
    fn = pd.Series(first[idx])
    ln = pd.Series(last[idx])
    # typo: transpose two inner letters of the last name
    pos = (rng.random(m) * (ln.str.len() - 2).clip(lower=1)).astype(int) + 1
    typo_ln = pd.Series([s[:p - 1] + s[p] + s[p - 1] + s[p + 1:] if len(s) > 3 else s
                         for s, p in zip(ln, pos, strict=True)])
    ln_v = np.where(r[:, 0] < 0.15, typo_ln, ln)
    fn_v = fn.to_numpy(object)
    swap = r[:, 1] < 0.08
    d["first_name"] = np.where(swap, pd.Series(ln_v).str.upper(), pd.Series(fn_v).str.upper())
    d["last_name"] = np.where(swap, fn_v, ln_v)
    d["email"] = np.where(r[:, 2] < 0.35, None,
                          np.where(r[:, 3] < 0.3, pd.Series(d["email"]).str.upper(), d["email"]))
    d["phone"] = np.where(r[:, 4] < 0.3, None, np.where(r[:, 5] < 0.5, phone_e[idx], d["phone"]))
    moved = r[:, 6] < 0.15
    new_addr = (rng.integers(1, 200, m).astype(str).astype(object) + " place "
                + np.array(_STREETS, dtype=object)[rng.integers(0, len(_STREETS), m)])
    d["address"] = np.where(moved, new_addr, addr_abbr[idx])
    d["postal_code"] = np.where(moved, pd.Series(rng.integers(1000, 95999, m)).map("{:05d}".format).to_numpy(object),
                                d["postal_code"])
    d["birth_date"] = np.where(r[:, 7] < 0.4, pd.NaT, d["birth_date"])
    d["birth_date"] = pd.to_datetime(d["birth_date"])
    d["gender"] = None
    d["created_at"] = d["created_at"] + pd.Timedelta(days=100)
    d["updated_at"] = d["created_at"] + pd.Timedelta(days=10)
    records = pd.concat([web, d], ignore_index=True)
    truth = pd.DataFrame({"source": records["source"], "source_key": records["source_key"],
                          "person_id": np.concatenate([pid, pid[idx]])})
    return records, truth
