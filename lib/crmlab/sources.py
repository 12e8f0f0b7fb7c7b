"""Source loader: read client exports (CSV, TXT, Excel, Parquet) into the canonical tables.

A source is declared in the params (``constituer.sources`` …) as a mapping::

    {name, kind, path, columns: {canonical: SQL expression over the file's columns},
     where?, exclude?: {French label: SQL condition}, sep?, decimal?, encoding?,
     date_format?, sheet?, header?, customer_source?, priority?, max_unparsable_share?,
     scores?: {score type: SQL expression}}

``scores`` (interactions only) declares several scores carried by one row (a survey
answer with an NPS and a CSAT): each is loaded as a number into the staged column
``score_<type>``. It replaces the single-score pair ``score`` / ``score_type`` of
``columns``; a source may not declare both forms.

:func:`validate_sources` and :func:`resolve_source_paths` validate such a list
(``Param(check=..., paths_in=...)``); :func:`load_source` reads each file of one source
into DuckDB, types the canonical columns, counts and stores every row it cannot use in
``rejects``, stages the kept rows in a TEMP table ``_stage_<source>`` and writes them to
the canonical tables (``source_customers``, ``consents``, ``transactions``,
``campaigns``, ``campaign_contacts``; interactions stay staged). A ledger
(``ingestions``) makes loading idempotent.

French exports load without hints: encoding (UTF-8 with or without BOM, UTF-16 with
BOM, else Windows-1252), separator (``;`` ``,`` tab ``|`` or runs of blanks), header
presence, decimal comma and ``dd/mm/yyyy`` dates are detected. Every heavy operation
is DuckDB SQL; values from the data are never pasted into SQL (only the analyst's own
expressions from the params are).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from crmlab.db import now, register_frame, to_frame
from crmlab.errors import InputError, ParamsError
from crmlab.params import closest, resolve_path

# --------------------------------------------------------------------------- schema

#: canonical columns per kind: name -> (type, required). Types: str, date, ts, double,
#: bool, grp (treatment/control).
KINDS: dict[str, dict[str, tuple[str, bool]]] = {
    "customers": {
        "source_key": ("str", True),
        "first_name": ("str", False), "last_name": ("str", False), "email": ("str", False),
        "phone": ("str", False), "address": ("str", False), "postal_code": ("str", False),
        "city": ("str", False), "country": ("str", False), "gender": ("str", False),
        "birth_date": ("date", False), "created_at": ("ts", False), "updated_at": ("ts", False),
    },
    "transactions": {
        "transaction_id": ("str", False), "order_id": ("str", False),
        "customer_key": ("str", True), "ts": ("ts", True), "amount": ("double", True),
        "quantity": ("double", False), "channel": ("str", False),
        "payment_method": ("str", False), "category": ("str", False), "product": ("str", False),
    },
    "consents": {
        "customer_key": ("str", True), "channel": ("str", True), "opted_in": ("bool", True),
        "updated_at": ("ts", False), "customer_source": ("str", False),
    },
    "campaigns": {
        "campaign_id": ("str", True), "name": ("str", False), "channel": ("str", False),
        "segment": ("str", False), "offer": ("str", False), "start_date": ("date", True),
        "end_date": ("date", False), "cost_per_contact": ("double", False),
    },
    "campaign_contacts": {
        "campaign_id": ("str", True), "customer_key": ("str", True), "grp": ("grp", True),
        "contacted_at": ("ts", False), "customer_source": ("str", False),
    },
    "interactions": {
        "interaction_id": ("str", False), "customer_key": ("str", False),
        "channel": ("str", True), "kind": ("str", False), "ts": ("ts", True),
        "operation": ("str", False), "score": ("double", False), "score_type": ("str", False),
        "first_name": ("str", False), "last_name": ("str", False), "email": ("str", False),
        "phone": ("str", False), "address": ("str", False), "postal_code": ("str", False),
        "city": ("str", False), "consent_channel": ("str", False),
        "consent_opted_in": ("bool", False), "status": ("str", False), "text": ("str", False),
    },
}

SOURCE_KEYS = (
    "name", "kind", "path", "columns", "where", "exclude", "sep", "decimal", "encoding",
    "date_format", "sheet", "header", "customer_source", "priority", "max_unparsable_share", "scores",
)
TEXT_EXT = (".csv", ".tsv", ".txt")
EXCEL_EXT = (".xlsx", ".xlsm", ".xls")
PARQUET_EXT = (".parquet", ".pq")
SUPPORTED_EXT = TEXT_EXT + EXCEL_EXT + PARQUET_EXT
CONSENT_PREFIX = "consent_"
#: staged column of each score declared under ``scores`` (interactions): ``score_<type>``
SCORE_PREFIX = "score_"
DEFAULT_MAX_UNPARSABLE = 0.05

_LABELS = {  # French name of a canonical column in messages
    "source_key": "clé client", "customer_key": "clé client", "ts": "date",
    "amount": "montant", "quantity": "quantité", "transaction_id": "identifiant de transaction",
    "campaign_id": "identifiant de campagne", "channel": "canal", "opted_in": "consentement",
    "grp": "groupe", "start_date": "date de début", "end_date": "date de fin",
    "birth_date": "date de naissance", "created_at": "date de création",
    "updated_at": "date de mise à jour", "contacted_at": "date de contact",
    "score": "score", "cost_per_contact": "coût par contact",
    "consent_opted_in": "consentement",
}
_FEMININE = {"clé client", "date", "quantité", "date de début", "date de fin",
             "date de naissance", "date de création", "date de mise à jour", "date de contact"}

TRUE_WORDS = ("oui", "o", "yes", "y", "true", "vrai", "1", "1.0", "opt-in", "optin", "x", "t")
FALSE_WORDS = ("non", "n", "no", "false", "faux", "0", "0.0", "opt-out", "optout", "f")
TREATMENT_WORDS = ("cible", "traite", "traites", "traitement", "treatment", "treated", "test")
CONTROL_WORDS = ("temoin", "temoins", "control", "controle")

# strptime format families tried on text dates, in tie-break order (French before US)
DATE_FAMILIES: list[tuple[str, list[str] | None]] = [
    ("iso", None),  # TRY_CAST(... AS TIMESTAMP): 2024-06-30, 2024-06-30 12:00[:00], T separator
    ("jj/mm/aaaa", ["%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"]),
    ("aaaammjj", ["%Y%m%d", "%Y%m%d%H%M%S"]),
    ("jj.mm.aaaa", ["%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y"]),
    ("jj-mm-aaaa", ["%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y"]),
    ("mm/jj/aaaa", ["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y"]),
]

_ROW = "__crm_row"
_INT_PAT = r"[-+]?(0|[1-9][0-9]*)"
_DOT_PAT = r"[-+]?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?"
_COMMA_PAT = r"[-+]?(0|[1-9][0-9]{0,2}([ \x{00A0}\x{202F}.][0-9]{3})+|[1-9][0-9]*)(,[0-9]+)?"
_FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")


def _label(column: str) -> str:
    if column.startswith(SCORE_PREFIX) and column not in _LABELS and column != "score_type":
        return f"score {column[len(SCORE_PREFIX):].upper()}"
    return _LABELS.get(column, column)


def _missing_reason(column: str) -> str:
    label = _label(column)
    return f"{label} manquante" if label in _FEMININE else f"{label} manquant"


def _bad_reason(column: str, ctype: str) -> str:
    if ctype in ("date", "ts"):
        return "date illisible"
    if ctype == "double":
        return "montant non numérique" if column == "amount" else f"{_label(column)} non numérique"
    if ctype == "bool":
        return "valeur oui/non illisible"
    if ctype == "grp":
        return "groupe inconnu (ni cible ni témoin)"
    return f"{_label(column)} illisible"


def canonical_columns(kind: str, columns: dict | None = None, scores: dict | None = None) -> dict[str, tuple[str, bool]]:
    """Canonical columns of a kind.

    Plus the ``consent_<channel>`` columns mapped for customers, and for interactions one
    optional number column ``score_<type>`` per type of ``scores``.
    """
    spec = dict(KINDS[kind])
    if kind == "customers":
        for c in columns or {}:
            if str(c).startswith(CONSENT_PREFIX) and len(str(c)) > len(CONSENT_PREFIX):
                spec[c] = ("bool", False)
    if kind == "interactions":
        for t in scores or {}:
            spec[SCORE_PREFIX + str(t)] = ("double", False)
    return spec


def with_scores(source: dict) -> dict:
    """Return the source with its ``scores`` merged into ``columns`` as ``score_<type>`` (a new dict).

    A source without ``scores`` is returned unchanged.
    """
    scores = source.get("scores") or {}
    if not scores:
        return source
    return {**source, "columns": {**source["columns"], **{SCORE_PREFIX + str(t): e for t, e in scores.items()}}}


# --------------------------------------------------------------------------- params


def resolve_source_paths(value: Any, base: Path) -> Any:
    """Resolve the ``path`` of each source against ``base`` (the params file's folder).

    Returns a new list; anything that is not a list of mappings is returned unchanged
    (:func:`validate_sources` reports it).
    """
    if not isinstance(value, list):
        return value
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("path"), str) and item["path"]:
            item = {**item, "path": resolve_path(item["path"], Path(base))}
        out.append(item)
    return out


def validate_sources(value: Any, key: str) -> list:
    """Check a list of source declarations; raise :class:`ParamsError` on the first problem.

    Checks the structure (list of mappings, unique names, known kind and keys, with the
    closest valid key suggested), the column mapping (known canonical columns, required
    ones mapped, SQL expressions as strings), the reading hints, and that each path (or
    glob) matches at least one file of a supported type.

    Parameters
    ----------
    value : list
        The sources as written in the params (paths already resolved by
        :func:`resolve_source_paths`).
    key : str
        Dotted params key (``constituer.sources``) used in messages.

    Returns
    -------
    list
        A copy of the sources.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParamsError(f"« {key} » doit être une liste de sources (- name: …, kind: …, path: …)")
    seen: set[str] = set()
    out = []
    for i, src in enumerate(value, start=1):
        if not isinstance(src, dict):
            raise ParamsError(f"La source n°{i} de « {key} » doit être un dictionnaire (name, kind, path, columns)")
        name = src.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ParamsError(f"La source n°{i} de « {key} » n'a pas de nom (clé « name »)")
        if name in seen:
            raise ParamsError(f"Deux sources portent le nom « {name} » dans « {key} »", hint="Donnez un nom unique à chaque source")
        seen.add(name)
        for k in src:
            if k not in SOURCE_KEYS:
                near = closest(str(k), list(SOURCE_KEYS))
                raise ParamsError(
                    f"Clé inconnue « {k} » dans la source « {name} »",
                    hint=f"Vouliez-vous dire « {near} » ?" if near else f"Clés possibles : {', '.join(SOURCE_KEYS)}",
                )
        kind = src.get("kind")
        if kind not in KINDS:
            near = closest(str(kind), list(KINDS)) if kind else None
            raise ParamsError(
                f"Type de source « {kind} » inconnu pour « {name} »",
                hint=(f"Vouliez-vous dire « {near} » ? " if near else "") + f"Types possibles : {', '.join(KINDS)}",
            )
        cols = src.get("columns")
        if not isinstance(cols, dict) or not cols:
            raise ParamsError(
                f"La source « {name} » doit avoir un bloc « columns » (colonne canonique: expression sur les colonnes du fichier)",
            )
        spec = canonical_columns(kind, cols)
        for c, expr in cols.items():
            if c not in spec:
                near = closest(str(c), list(spec))
                raise ParamsError(
                    f"Colonne canonique inconnue « {c} » dans la source « {name} » ({kind})",
                    hint=f"Vouliez-vous dire « {near} » ?" if near else f"Colonnes possibles : {', '.join(spec)}",
                )
            if not isinstance(expr, str) or not expr.strip():
                raise ParamsError(
                    f"L'expression de « {c} » dans la source « {name} » doit être un texte non vide (nom de colonne ou expression SQL)",
                    hint="Mettez l'expression entre guillemets dans le YAML, par exemple amount: \"Quantity * UnitPrice\"",
                )
        missing = [c for c, (_, req) in spec.items() if req and c not in cols]
        if missing:
            raise ParamsError(
                f"La source « {name} » ({kind}) ne renseigne pas les colonnes obligatoires : {', '.join(missing)}",
                hint="Ajoutez-les dans « columns » (colonne canonique: colonne du fichier)",
            )
        _validate_scores(src, name, kind)
        _validate_hints(src, name)
        path = src.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ParamsError(f"La source « {name} » n'a pas de chemin de fichier (clé « path »)")
        source_files(src)  # raises when missing or unsupported
        out.append(dict(src))
    return out


def _validate_scores(src: dict, name: str, kind: str) -> None:
    """Check the ``scores`` mapping of a source (interactions only, not with ``score`` / ``score_type``)."""
    if "scores" not in src:
        return
    scores = src["scores"]
    if kind != "interactions":
        raise ParamsError(f"La source « {name} » ({kind}) déclare « scores », réservé aux sources de contacts entrants",
                          hint="Retirez « scores » ou déclarez la source avec kind: interactions")
    if not isinstance(scores, dict) or not scores:
        raise ParamsError(f"« scores » de la source « {name} » doit être un dictionnaire non vide (type de note: expression)",
                          hint="Par exemple scores: {nps: note_recommandation, csat: note_satisfaction}")
    both = [c for c in ("score", "score_type") if c in src["columns"]]
    if both:
        raise ParamsError(
            f"La source « {name} » déclare ses notes sous deux formes : « scores » et « {' », « '.join(both)} » dans « columns »",
            hint="Gardez une seule forme : scores: {nps: …, csat: …} pour une ou plusieurs notes par ligne, "
                 "ou score + score_type dans columns pour une seule note par ligne")
    for t, expr in scores.items():
        if not isinstance(t, str) or not re.fullmatch(r"[a-z][a-z0-9]*", t):
            raise ParamsError(f"Type de note « {t} » invalide dans « scores » de la source « {name} »",
                              hint="Un nom court en minuscules, par exemple nps, csat ou ces")
        if not isinstance(expr, str) or not expr.strip():
            raise ParamsError(
                f"L'expression de la note « {t} » dans « scores » de la source « {name} » doit être un texte non vide (nom de colonne ou expression SQL)",
                hint="Mettez l'expression entre guillemets dans le YAML, par exemple nps: \"note_recommandation\"")


def _validate_hints(src: dict, name: str) -> None:
    def bad(k: str, what: str) -> ParamsError:
        return ParamsError(f"Indication « {k} » invalide pour la source « {name} » (reçu : {src[k]!r})", hint=what)

    if src.get("where") is not None and not isinstance(src["where"], str):
        raise bad("where", "Écrivez une condition SQL, par exemple where: \"Country = 'France'\"")
    exc = src.get("exclude")
    if exc is not None and (not isinstance(exc, dict) or not all(isinstance(v, str) and v.strip() for v in exc.values())):
        raise bad("exclude", "Écrivez un dictionnaire « libellé: condition SQL »")
    if src.get("sep") is not None and not (isinstance(src["sep"], str) and (len(src["sep"]) == 1 or src["sep"] in ("tab", "\\t", "whitespace", "espaces"))):
        raise bad("sep", "Un seul caractère (; , | ou tab) ou « whitespace » pour des colonnes séparées par des blancs")
    if src.get("decimal") is not None and src["decimal"] not in (",", "."):
        raise bad("decimal", "Valeurs possibles : « , » ou « . »")
    if src.get("encoding") is not None:
        try:
            codecs.lookup(str(src["encoding"]))
        except LookupError:
            raise bad("encoding", "Par exemple utf-8, cp1252 (Windows), latin-1, utf-16") from None
    fmt = src.get("date_format")
    if fmt is not None and not (isinstance(fmt, str) or (isinstance(fmt, list) and all(isinstance(f, str) for f in fmt))):
        raise bad("date_format", "Format strptime, par exemple \"%d/%m/%Y %H:%M\" ou \"%Y%m%d\"")
    if src.get("sheet") is not None and not isinstance(src["sheet"], (str, int)):
        raise bad("sheet", "Nom ou numéro (à partir de 0) de la feuille Excel")
    if src.get("header") is not None and not isinstance(src["header"], bool):
        raise bad("header", "true ou false")
    if src.get("customer_source") is not None and not isinstance(src["customer_source"], str):
        raise bad("customer_source", "Nom de la source clients à laquelle renvoient les clés")
    if src.get("priority") is not None and (isinstance(src["priority"], bool) or not isinstance(src["priority"], (int, float))):
        raise bad("priority", "Un nombre (la source de plus forte priorité l'emporte)")
    share = src.get("max_unparsable_share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1):
        raise bad("max_unparsable_share", "Une part entre 0 et 1, par exemple 0.05")


def source_files(source: dict) -> list[str]:
    """Files of a source (its path, or the sorted matches of its glob).

    Raises
    ------
    ParamsError
        No file matches, or a file type is not supported.
    """
    path = str(source["path"])
    name = source.get("name", "?")
    if glob.has_magic(path):
        files = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not files:
            raise ParamsError(
                f"Aucun fichier ne correspond au motif de la source « {name} »", file=path,
                hint="Vérifiez le chemin (relatif au dossier du fichier de paramètres)",
            )
    else:
        if not os.path.isfile(path):
            raise ParamsError(
                f"Fichier introuvable pour la source « {name} »", file=path,
                hint="Vérifiez le chemin (relatif au dossier du fichier de paramètres)",
            )
        files = [path]
    for f in files:
        if not f.lower().endswith(SUPPORTED_EXT):
            raise ParamsError(
                f"Type de fichier non pris en charge pour la source « {name} »", file=f,
                hint="Formats lus : CSV, TSV, TXT, Excel (.xlsx, .xls), Parquet",
            )
    return files


# --------------------------------------------------------------------------- files


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SAMPLE_BYTES = 1 << 16
_CHUNK = 1 << 24


def _detect_encoding(path: str, hint: str | None) -> str:
    """Return the Python codec of a text file; raise InputError on bad/binary bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if hint:
        enc = codecs.lookup(hint).name
        if enc in ("utf-8",):
            _check_utf8(path, strict_hint=True)
            return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
        return enc
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _check_utf8(path, strict_hint=False):
        return "utf-8"
    # not UTF-8: plausible Windows-1252 text, or binary
    with open(path, "rb") as fh:
        pos = 0
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            bad = _binary_offset(chunk)
            if bad is None:
                try:
                    chunk.decode("cp1252")
                except UnicodeDecodeError as exc:
                    bad = exc.start
            if bad is not None:
                raise InputError(
                    f"Fichier illisible : ni texte UTF-8 ni texte Windows-1252 (octet 0x{chunk[bad]:02x} à la position {pos + bad})",
                    file=path,
                    hint="Ce fichier semble binaire ; exportez-le en CSV, Excel ou Parquet, ou indiquez son encodage (encoding:)",
                )
            pos += len(chunk)
    return "cp1252"


_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
# maps those control bytes to NUL and every other byte to 0x01: a translate + memchr
# finds the first one about 10x faster than a regular expression (5.6 s for 1.3 GB)
_CONTROL_TABLE = bytes(0 if b in _CONTROL_BYTES else 1 for b in range(256))


def _binary_offset(chunk: bytes) -> int | None:
    """Offset of the first control byte that plain text never holds (NUL …), if any."""
    pos = chunk.translate(_CONTROL_TABLE).find(0)
    return None if pos < 0 else pos


def _check_utf8(path: str, *, strict_hint: bool) -> bool:
    """Tell whether the whole file is valid UTF-8 (and not binary).

    With ``strict_hint`` (``encoding: utf-8`` given), raise an InputError naming the line
    of the first invalid byte instead of returning False.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                if not strict_hint:
                    return False
                good = chunk[: exc.start]
                raise InputError(
                    f"Le fichier n'est pas en UTF-8 : octet invalide 0x{chunk[exc.start]:02x}",
                    file=path, row=line + good.count(b"\n"),
                    hint="Retirez « encoding: utf-8 » pour laisser détecter l'encodage, ou indiquez le bon (par exemple encoding: cp1252)",
                ) from None
            if _binary_offset(chunk) is not None:
                if strict_hint:
                    off = _binary_offset(chunk)
                    raise InputError(
                        "Le fichier contient des octets de contrôle (fichier binaire ?)",
                        file=path, row=line + chunk[:off].count(b"\n"),
                        hint="Exportez-le en CSV, Excel ou Parquet",
                    )
                return False
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            if strict_hint:
                raise InputError("Le fichier n'est pas en UTF-8 : il se termine au milieu d'un caractère", file=path, row=line) from None
            return False
    return True


def _sample_lines(path: str, encoding: str, n: int = 200) -> list[str]:
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        text = fh.read(_SAMPLE_BYTES)
    lines = text.splitlines()
    if len(text) >= _SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # last line may be cut
    return [ln for ln in lines if ln.strip()][:n]


_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_NUMLIKE = re.compile(
    r"^\s*[-+]?(\d+([.,]\d+)?|\d{1,3}([ \u00a0\u202f.]\d{3})+(,\d+)?)\s*$"
    r"|^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2})?)?\s*$"
)


def detect_text_format(path: str | os.PathLike, *, encoding: str | None = None) -> dict:
    """Detect how a text export is written.

    Parameters
    ----------
    path : path
        CSV / TSV / TXT file.
    encoding : str, optional
        Known encoding (skips detection; ``utf-8`` is still verified).

    Returns
    -------
    dict
        ``encoding`` (Python codec: ``utf-8``, ``utf-8-sig``, ``utf-16``, ``cp1252`` …),
        ``sep`` (one character, or ``"whitespace"`` for runs of blanks), ``header``
        (bool) and ``decimal`` (``","`` or ``"."``).
    """
    path = str(path)
    enc = _detect_encoding(path, encoding)
    lines = _sample_lines(path, enc)
    sep = _detect_sep(lines)
    header = _detect_header(lines, sep)
    decimal = _detect_decimal(lines[1:] if header else lines, sep)
    return {"encoding": enc, "sep": sep, "header": header, "decimal": decimal}


def _split(line: str, sep: str) -> list[str]:
    if sep == "whitespace":
        return line.split()
    return [f.strip().strip('"') for f in next(iter(csv.reader([line], delimiter=sep)), [])]


def _detect_sep(lines: list[str]) -> str:
    if not lines:
        return ","
    best, best_score = None, (0.0, 0)
    for cand in (";", "\t", ",", "|"):
        counts = [_QUOTED.sub("", ln).count(cand) for ln in lines]
        if not any(counts):
            continue
        mode = max(set(counts), key=counts.count)
        if mode == 0:
            continue
        score = (counts.count(mode) / len(counts), mode)
        if score > best_score:
            best, best_score = cand, score
    if best is not None and best_score[0] >= 0.9:
        return best
    widths = [len(ln.split()) for ln in lines]
    mode = max(set(widths), key=widths.count)
    if mode > 1 and widths.count(mode) / len(widths) >= 0.9:
        return "whitespace"
    return best or ","


def _detect_header(lines: list[str], sep: str) -> bool:
    if not lines:
        return True
    first = _split(lines[0], sep)
    return not any(_NUMLIKE.match(f) for f in first if f)


def _detect_decimal(lines: list[str], sep: str) -> str:
    if sep == ",":
        return "."
    comma = re.compile(r"^[-+]?\d{1,3}([ \u00a0\u202f.]?\d{3})*,\d+$")
    for ln in lines[:200]:
        if any(comma.match(f) for f in _split(ln, sep)):
            return ","
    return "."


def _transcode(path: str, encoding: str) -> str:
    """Write a UTF-8 copy of a text file (large chunks); return its path."""
    fd, out = tempfile.mkstemp(suffix=".csv", prefix="crmlab_")
    with open(path, encoding=encoding, newline="") as src, os.fdopen(fd, "w", encoding="utf-8", newline="") as dst:
        for chunk in iter(lambda: src.read(_CHUNK), ""):
            dst.write(chunk)
    return out


# --------------------------------------------------------------------------- results


@dataclass
class FileLoad:
    """What happened to one file of a source.

    ``row_number`` convention: for text files, the line of the file counting the
    header as line 1 (blank lines and multi-line quoted fields are not counted);
    for Excel, the sheet row (header = row 1); for Parquet, the 1-based record index.
    """

    path: str
    sha256: str
    skipped: bool = False
    rows_read: int = 0
    rows_kept: int = 0
    rows_filtered: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    replaced: int = 0
    columns_present: list[str] = field(default_factory=list)
    columns_used: list[str] = field(default_factory=list)
    format: dict = field(default_factory=dict)
    #: per mapped column: SQL over the classified table for its value text, "non-empty"
    #: and "unparsable" flags (``{"t": …, "n": …, "b": …}``)
    col_sql: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def rows_rejected(self) -> int:
        """Rows rejected (all reasons)."""
        return sum(self.rejected.values())

    @property
    def rows_excluded(self) -> int:
        """Rows deliberately left out (all labels)."""
        return sum(self.excluded.values())


@dataclass
class SourceLoad:
    """Result of :func:`load_source` for one source.

    Attributes
    ----------
    staged : str
        Name of the TEMP table holding the kept rows of the files loaded now: the
        canonical typed columns of the kind, plus ``source``, ``sha256``,
        ``row_number`` (and ``customer_source`` for transactions, consents and
        campaign contacts).
    files : list of FileLoad
        One entry per file, skipped ones (``"déjà chargé"``) included.
    """

    name: str
    kind: str
    staged: str
    files: list[FileLoad] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files if not f.skipped)

    @property
    def rows_read(self) -> int:  # noqa: D102
        return self._sum("rows_read")

    @property
    def rows_kept(self) -> int:  # noqa: D102
        return self._sum("rows_kept")

    @property
    def rows_filtered(self) -> int:  # noqa: D102
        return self._sum("rows_filtered")

    @property
    def rows_rejected(self) -> int:  # noqa: D102
        return self._sum("rows_rejected")

    def _merge(self, attr: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for k, v in getattr(f, attr).items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def excluded(self) -> dict[str, int]:
        """Rows left out per exclusion label, all files."""
        return self._merge("excluded")

    @property
    def rejected(self) -> dict[str, int]:
        """Rows rejected per reason, all files."""
        return self._merge("rejected")

    @property
    def warnings(self) -> dict[str, int]:
        """Optional values set to NULL per reason, all files."""
        return self._merge("warnings")

    @property
    def skipped(self) -> list[str]:
        """Paths of the files already loaded earlier (« déjà chargé »)."""
        return [f.path for f in self.files if f.skipped]

    @property
    def columns_present(self) -> list[str]:
        """Columns of the files (union, in order of appearance)."""
        return _union(f.columns_present for f in self.files)

    @property
    def columns_used(self) -> list[str]:
        """File columns referenced by the mapping, ``where`` or ``exclude``."""
        return _union(f.columns_used for f in self.files)

    @property
    def columns_unused(self) -> list[str]:
        """File columns deliberately not kept."""
        used = set(self.columns_used)
        return [c for c in self.columns_present if c not in used]


def _union(lists) -> list[str]:
    out: list[str] = []
    for lst in lists:
        for c in lst:
            if c not in out:
                out.append(c)
    return out


def stage_table(source_name: str) -> str:
    """Name of the TEMP table holding the staged rows of a source."""
    return "_stage_" + re.sub(r"\W", "_", source_name)


# --------------------------------------------------------------------------- loading


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(text: str) -> str:
    """Quote one of our own constants as a SQL string literal (never a data value)."""
    return "'" + text.replace("'", "''") + "'"


def load_source(con: duckdb.DuckDBPyConnection, source: dict, *, run_id: str, step: str,
                keep_staged: bool = True) -> SourceLoad:
    """Load every file of one source into the canonical tables, inside the caller's transaction.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection of the step (see :func:`crmlab.db.open_step`); this function never
        commits. If it raises, nothing has been written to the canonical tables.
    source : dict
        One validated source declaration (see module docstring).
    run_id, step : str
        Stored with the ledger and reject rows.
    keep_staged : bool
        Keep the new rows in the TEMP table ``SourceLoad.staged`` for the caller (steps 04
        and 05 read it). False (step 01) writes the canonical tables straight from each
        file's classified rows and leaves ``staged`` empty: one copy of ten million rows
        less. Interactions are always staged (they are not written here).

    Returns
    -------
    SourceLoad
        Counts per file. Tables written, by kind:

        - customers: ``source_customers`` (source, source_key, contact fields, sha256,
          row_number; a key already present for this source is replaced by the newer
          row) and ``consents`` for each ``consent_<channel>`` column (customer_id NULL,
          source / source_key filled);
        - transactions: ``transactions`` (customer_id NULL, ``customer_source`` = the
          source's ``customer_source`` or its own name; ``transaction_id`` generated as
          ``<source>:<12 hex of sha256>:<row_number>`` when not mapped; ``order_id``
          defaults to ``transaction_id``);
        - consents: ``consents`` (source = customer source, source_key = customer_key);
        - campaigns: ``campaigns`` (a campaign_id already present is replaced);
        - campaign_contacts: ``campaign_contacts`` (source = customer source);
        - interactions: only the staged TEMP table (with a ``score_<type>`` column per
          type of the source's ``scores``).

        Always: ``ingestions`` (one row per new file), ``rejects`` (rejected rows and
        ``"valeur ignorée : …"`` warnings; ``row_number`` as in :class:`FileLoad`,
        ``column_name`` = the mapping expression, ``record`` = the raw row as JSON).
        A file whose sha256 is already in ``ingestions`` for this source is skipped.

    Raises
    ------
    InputError
        Missing, empty or unreadable file, unknown column, invalid SQL expression, too
        many unparsable values, duplicate transaction ids, missing Excel sheet.
    """
    name = source["name"]
    kind = source["kind"]
    staged = stage_table(name)
    result = SourceLoad(name=name, kind=kind, staged=staged)
    spec = canonical_columns(kind, source.get("columns"), source.get("scores"))
    source = with_scores(source)
    con.execute(f"DROP TABLE IF EXISTS {staged}")
    con.execute(f"CREATE TEMP TABLE {staged} AS SELECT {_stage_columns_sql(kind, spec)} WHERE false")
    files = source_files(source)
    pending: list[tuple[FileLoad, str]] = []  # (file result, temp table of classified rows)
    seen_sha: set[str] = set()
    try:
        for path in files:
            sha = file_sha256(path)
            fl = FileLoad(path=path, sha256=sha)
            result.files.append(fl)
            done = con.execute(
                "SELECT count(*) FROM ingestions WHERE sha256 = ? AND source = ?", [sha, name]
            ).fetchall()[0][0]
            if done or sha in seen_sha:
                fl.skipped = True
                continue
            seen_sha.add(sha)
            table = f"_load_{len(pending)}"
            _load_file(con, source, spec, fl, table, stage=keep_staged or kind == "interactions")
            pending.append((fl, table))
        direct = not keep_staged and kind != "interactions"
        if kind == "transactions":
            rows = "(" + " UNION ALL ".join(_stage_select(source, spec, fl, table) for fl, table in pending) + ")" \
                if direct and pending else staged
            _check_duplicate_ids(con, source, rows, {f.sha256: f.path for f in result.files})
        for fl, table in pending:
            rows = f"({_stage_select(source, spec, fl, table)})" if direct else \
                f"(SELECT * FROM {staged} WHERE sha256 = {_lit(fl.sha256)})"
            _write_file(con, source, spec, fl, table, rows, run_id=run_id, step=step)
    finally:
        try:
            for i in range(len(pending) + 1):
                con.execute(f"DROP VIEW IF EXISTS _load_{i}_typed")
                for suffix in ("", "_raw", "_m", "_rej"):
                    con.execute(f"DROP TABLE IF EXISTS _load_{i}{suffix}")
        except duckdb.Error:  # transaction aborted by an error: the caller rolls back
            pass
    return result


def _stage_columns_sql(kind: str, spec: dict) -> str:
    sqltype = {"str": "VARCHAR", "grp": "VARCHAR", "date": "DATE", "ts": "TIMESTAMP", "double": "DOUBLE", "bool": "BOOLEAN"}
    cols = [f"CAST(NULL AS {sqltype[t]}) AS {_q(c)}" for c, (t, _) in spec.items()]
    if kind in ("transactions", "consents", "campaign_contacts") and "customer_source" not in spec:
        cols.append("CAST(NULL AS VARCHAR) AS customer_source")
    cols += ["CAST(NULL AS VARCHAR) AS source", "CAST(NULL AS VARCHAR) AS sha256", "CAST(NULL AS BIGINT) AS row_number"]
    return ", ".join(cols)


def _read_raw(con: duckdb.DuckDBPyConnection, source: dict, fl: FileLoad, raw: str) -> int:
    """Create TEMP table ``raw`` with the file's rows; return the row-number offset."""
    path = fl.path
    low = path.lower()
    if low.endswith(PARQUET_EXT):
        try:
            con.execute(f"CREATE TEMP TABLE {raw} AS SELECT * FROM read_parquet(?)", [path])
        except duckdb.Error as exc:
            raise InputError(f"Fichier Parquet illisible : {_first_line(exc)}", file=path) from exc
        fl.format = {"type": "parquet"}
        return 1
    if low.endswith(EXCEL_EXT):
        return _read_excel(con, source, fl, raw)
    hint_enc = source.get("encoding")
    fmt = detect_text_format(path, encoding=hint_enc)
    if source.get("sep") is not None:
        s = source["sep"]
        fmt["sep"] = {"tab": "\t", "\\t": "\t", "espaces": "whitespace"}.get(s, s)
        lines = _sample_lines(path, fmt["encoding"])
        if source.get("header") is None:
            fmt["header"] = _detect_header(lines, fmt["sep"])
    if source.get("header") is not None:
        fmt["header"] = bool(source["header"])
    if source.get("decimal") is not None:
        fmt["decimal"] = source["decimal"]
    fmt["type"] = "text"
    fl.format = fmt
    read_path, tmp = path, None
    if fmt["encoding"] not in ("utf-8", "utf-8-sig"):
        read_path = tmp = _transcode(path, fmt["encoding"])
    try:
        if fmt["sep"] == "whitespace":
            lines_sql = (
                "SELECT string_split_regex(trim(line), '\\s+') AS f FROM read_csv(?, delim='\x1f', quote='', "
                "escape='', header=false, columns={'line': 'VARCHAR'}, skip=?) WHERE trim(line) <> ''"
            )
            skip = 1 if fmt["header"] else 0
            width = con.execute(f"SELECT max(len(f)) FROM ({lines_sql})", [read_path, skip]).fetchall()[0][0] or 0
            if fmt["header"]:
                names = _sample_lines(read_path, "utf-8", 1)[0].split()
                names += [f"column{i}" for i in range(len(names), width)]
            else:
                names = [f"column{i}" for i in range(width)]
            sel = ", ".join(f"f[{i + 1}] AS {_q(n)}" for i, n in enumerate(names))
            con.execute(f"CREATE TEMP TABLE {raw} AS SELECT {sel} FROM ({lines_sql})", [read_path, skip])
        else:
            con.execute(
                f"CREATE TEMP TABLE {raw} AS SELECT * FROM read_csv(?, delim=?, header=?, all_varchar=true, "
                "quote='\"', escape='\"', null_padding=true, auto_detect=true)",
                [read_path, fmt["sep"], fmt["header"]],
            )
    except duckdb.Error as exc:
        raise InputError(
            f"Fichier texte illisible : {_first_line(exc)}", file=path,
            hint="Vérifiez le séparateur (sep:) et l'encodage (encoding:) indiqués pour cette source",
        ) from exc
    finally:
        if tmp:
            os.unlink(tmp)
    return 2 if fmt["header"] else 1


def _read_excel(con: duckdb.DuckDBPyConnection, source: dict, fl: FileLoad, raw: str) -> int:
    path = fl.path
    sheet = source.get("sheet", 0)
    header = source.get("header", True)
    try:
        # calamine (Rust): 0.8 s for a 46 k-row form workbook that openpyxl read in 6.5 s, same frame
        frame = pd.read_excel(path, sheet_name=sheet if sheet is not None else 0, header=0 if header else None,
                              engine="calamine")
    except ValueError as exc:
        if "not found" in str(exc) or "out of range" in str(exc).lower() or "index" in str(exc).lower():
            try:
                sheets = pd.ExcelFile(path, engine="calamine").sheet_names
            except Exception:  # noqa: BLE001
                sheets = []
            raise InputError(
                f"Feuille « {sheet} » introuvable dans le classeur", file=path,
                hint=f"Feuilles présentes : {', '.join(map(str, sheets))} ; corrigez « sheet: »",
            ) from exc
        raise InputError(f"Classeur Excel illisible : {exc}", file=path) from exc
    except ImportError as exc:
        raise InputError(
            f"Lecture impossible de ce format Excel : {exc}", file=path,
            hint="Enregistrez le classeur au format .xlsx",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - openpyxl/zip errors on corrupt files
        raise InputError(f"Classeur Excel illisible : {exc}", file=path, hint="Ouvrez-le dans Excel et enregistrez-le à nouveau en .xlsx") from exc
    if not header:
        frame.columns = [f"column{i}" for i in range(frame.shape[1])]
    else:
        frame.columns = [str(c) for c in frame.columns]
    data = {}
    for c in frame.columns:
        s = frame[c]
        if s.dtype == object:
            kinds = {type(v) for v in s.dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                if kinds <= {int, float} or all(issubclass(k, (int, float)) and not issubclass(k, bool) for k in kinds):
                    s = pd.to_numeric(s, errors="coerce")
                else:
                    s = s.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v)).astype(object)
        data[c] = s
    frame = pd.DataFrame(data)
    fl.format = {"type": "excel", "sheet": sheet, "header": header}
    register_frame(con, "_excel_in", frame)
    try:
        con.execute(f"CREATE TEMP TABLE {raw} AS SELECT * FROM _excel_in")
    finally:
        con.unregister("_excel_in")
    return 2 if header else 1


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    text = re.sub(r"^\w+ Error: ", "", text)
    return text.splitlines()[0] if text else type(exc).__name__


def _typed_view(
    con: duckdb.DuckDBPyConnection, raw: str, view: str, offset: int, decimal: str | None, text: bool, share: float
) -> tuple[list[str], dict[str, str]]:
    """Create ``view`` over ``raw``: numeric-looking text columns become numbers.

    A text column is numeric when at least ``1 - share`` of its non-empty values look
    like numbers (others become NULL through TRY_CAST) and none has a leading zero
    (``0612…``, ``01000`` stay text). The raw text of each typed column stays in the
    view as ``__txt_<i>`` so simple mappings parse (and report) the original values.

    Returns
    -------
    names : list of str
        Columns of the file.
    raw_text : dict
        File column -> name of its raw-text column in the view (typed columns only).
    """
    desc = con.execute(f"DESCRIBE {raw}").fetchall()
    names = [r[0] for r in desc]
    exprs: list[str] = []
    raw_text: dict[str, str] = {}
    if text and names:
        aggs = []
        for n in names:
            v = f"NULLIF(trim({_q(n)}), '')"
            aggs += [
                f"count({v})",
                f"count(TRY_CAST({v} AS BIGINT))",
                f"count(TRY_CAST({v} AS DOUBLE))",
                f"count(*) FILTER (WHERE contains({v}, ','))",
                f"count(*) FILTER (WHERE regexp_matches({v}, '^[-+]?0[0-9]'))",
                f"max(length({v}))",
            ]
        # decide on a sample (cheap at 10 M rows); the tolerated share covers the rest
        sample = f"(SELECT * FROM {raw} LIMIT {_DETECT_SAMPLE})"
        stats = con.execute(f"SELECT {', '.join(aggs)} FROM {sample}").fetchall()[0]
        comma_cols = [
            i for i, n in enumerate(names)
            if stats[6 * i + 3] and stats[6 * i + 2] < stats[6 * i] and decimal != "."
        ]
        comma_counts = {}
        if comma_cols:
            row = con.execute(
                "SELECT " + ", ".join(
                    f"count(*) FILTER (WHERE regexp_full_match(trim({_q(names[i])}), '{_COMMA_PAT}'))" for i in comma_cols
                ) + f" FROM {sample}"
            ).fetchall()[0]
            comma_counts = dict(zip(comma_cols, row, strict=True))
        for i, n in enumerate(names):
            nonempty, n_int, n_dot, _, n_lead0, maxlen = stats[6 * i: 6 * i + 6]
            n_comma = comma_counts.get(i, 0)
            v = f"NULLIF(trim({_q(n)}), '')"
            need = nonempty * (1 - share) if nonempty else 1
            typed = None
            if not nonempty or n_lead0:
                typed = None
            elif n_int >= need and n_int == n_dot and (maxlen or 0) <= 18:
                typed = f"TRY_CAST({v} AS BIGINT)"
            elif n_dot >= need and decimal != ",":
                typed = f"TRY_CAST({v} AS DOUBLE)"
            elif n_comma >= need and decimal != ".":
                typed = (
                    f"TRY_CAST(replace(regexp_replace({v}, '[ \\x{{00A0}}\\x{{202F}}.]', '', 'g'), ',', '.') AS DOUBLE)"
                )
            if typed is None:
                exprs.append(_q(n))
            else:
                exprs.append(f"{typed} AS {_q(n)}")
                raw_text[n] = f"__txt_{i}"
                exprs.append(f"{_q(n)} AS {_q(raw_text[n])}")
    else:
        exprs = [_q(n) for n in names]
    exprs.append(f"rowid + {offset} AS {_ROW}")
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT {', '.join(exprs)} FROM {raw}")
    return names, raw_text


def _simple_column(expr: str, names: list[str]) -> str | None:
    """File column an expression is made of, when it is just one column reference."""
    e = expr.strip()
    if len(e) >= 2 and e[0] == e[-1] == '"':
        inner = e[1:-1].replace('""', '"')
        return inner if inner in names else None
    low = {n.lower(): n for n in names}
    return low.get(e.lower()) if re.fullmatch(r"[A-Za-z_][\w]*", e) else None


def _parse_expr(con: duckdb.DuckDBPyConnection, expr: str) -> tuple[str | None, list[str]]:
    """Parse an analyst's expression without running it.

    A failed statement would abort the caller's transaction, hence the parse-only
    check. Returns (parser error or None, referenced column names).
    """
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"SELECT ({expr}) FROM _t"]).fetchall()[0][0])
    if tree.get("error"):
        return tree.get("error_message", "erreur de syntaxe"), []
    if len(tree.get("statements", [])) != 1:
        return "une seule expression attendue", []
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class") == "COLUMN_REF" and node.get("column_names"):
                refs.append(node["column_names"][-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree["statements"][0]["node"].get("select_list"))
    return None, refs


def _check_expr(con: duckdb.DuckDBPyConnection, view: str, names: list[str], expr: str, what: str, fl: FileLoad, source: dict) -> list[str]:
    """Check one expression of the mapping; return the file columns it uses.

    Syntax and unknown columns are checked without executing anything; only an
    expression that parses and binds to existing columns is tried (``LIMIT 0``) for
    type errors.
    """
    error, refs = _parse_expr(con, expr)
    hint_sql = "Corrigez l'expression dans les paramètres (noms de colonnes entre guillemets doubles, textes entre apostrophes)"
    if error:
        raise InputError(
            f"Source « {source['name']} » : syntaxe SQL invalide pour {what} (« {expr} ») : {error}",
            file=fl.path, hint=hint_sql,
        )
    low = {n.lower(): n for n in names}
    used = []
    for col in refs:
        if col.lower() in low:
            used.append(low[col.lower()])
            continue
        near = closest(col, names)
        raise InputError(
            f"Source « {source['name']} » : la colonne « {col} » utilisée par {what} (« {expr} ») n'existe pas dans le fichier",
            file=fl.path, column=col,
            hint=(f"Vouliez-vous dire « {near} » ? " if near else "") + f"Colonnes du fichier : {', '.join(names)}",
        )
    try:
        con.execute(f"SELECT ({expr}) FROM {view} LIMIT 0").fetchall()
    except duckdb.Error as exc:
        raise InputError(
            f"Source « {source['name']} » : expression SQL invalide pour {what} (« {expr} ») : {_first_line(exc)}",
            file=fl.path, hint=hint_sql,
        ) from exc
    return used


def _text_sql(e: str, etype: str) -> str:
    """Build the SQL turning a mapped expression into trimmed text (NULL when empty)."""
    if etype.upper() in _FLOAT_TYPES or etype.upper().startswith("DECIMAL"):
        return (
            f"CASE WHEN {e} IS NULL OR isnan(CAST({e} AS DOUBLE)) THEN NULL "
            f"WHEN {e} = trunc({e}) AND abs({e}) < 1e15 THEN CAST(CAST({e} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({e} AS VARCHAR) END"
        )
    return f"NULLIF(trim(CAST({e} AS VARCHAR)), '')"


#: Characters DuckDB's strptime skips as leading whitespace (``trim`` alone removes spaces only).
_BLANK_SQL = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"


def _date_parse_sql(txt: str, formats: list[str] | None) -> str:
    if formats is None:
        return f"TRY_CAST({txt} AS TIMESTAMP)"
    # never hand strptime a text of whitespace only (a tab, a carriage return…): DuckDB 1.5.6
    # skips leading whitespace without checking the length (duckdb#25082) and reads on past
    # the text – through the next values (3 M texts of 13 tabs: 25 s instead of 0.3 s), and
    # into unmapped memory at the end of a buffer: the intermittent segmentation faults in
    # StrpTimeFormat::Parse seen while loading
    return (f"CASE WHEN trim({txt}, {_BLANK_SQL}) <> '' "
            f"THEN try_strptime({txt}, [{', '.join(_lit(f) for f in formats)}]) END")


@contextlib.contextmanager
def _expression_errors(source: dict, fl: FileLoad):
    """Turn a DuckDB error raised while evaluating the source's expressions into a French input error."""
    try:
        yield
    except (duckdb.OutOfMemoryException, duckdb.InterruptException):
        raise
    except duckdb.Error as exc:
        raise InputError(
            f"Source « {source['name']} » : une expression de « columns », « where » ou « exclude » échoue sur les données : {_first_line(exc)}",
            file=fl.path, hint="Corrigez l'expression (par exemple TRY_CAST au lieu de CAST)",
        ) from exc


def _load_file(con: duckdb.DuckDBPyConnection, source: dict, spec: dict, fl: FileLoad, table: str,
               stage: bool = True) -> None:
    """Read, map, type and classify one file into TEMP table ``table`` (no canonical write).

    With ``stage`` its kept rows go to the source's staged table and ``table`` is dropped;
    without, ``table`` stays for :func:`_write_file` (through :func:`_stage_select`).
    """
    raw, view = f"{table}_raw", f"{table}_typed"
    offset = _read_raw(con, source, fl, raw)
    # rowid does not start at 0 in a table created inside an open transaction (DuckDB keeps
    # transaction-local row ids in a high range): number rows from the table's first rowid.
    first_rowid = con.execute(f"SELECT coalesce(min(rowid), 0) FROM {raw}").fetchall()[0][0]
    offset -= first_rowid
    fl.format["row_offset"] = offset
    n = con.execute(f"SELECT count(*) FROM {raw}").fetchall()[0][0]
    text = fl.format.get("type") == "text"
    share = source.get("max_unparsable_share")
    share = DEFAULT_MAX_UNPARSABLE if share is None else float(share)
    names, raw_text = _typed_view(con, raw, view, offset, source.get("decimal"), text, share)
    fl.columns_present = names
    if n == 0:
        raise InputError(
            f"Source « {source['name']} » : le fichier ne contient aucune ligne de données", file=fl.path,
            hint="Vérifiez l'export (fichier vide ou seulement l'en-tête)",
        )
    fl.rows_read = n
    columns: dict[str, str] = source["columns"]
    exclude: dict[str, str] = source.get("exclude") or {}
    where = source.get("where")
    used: list[list[str]] = []
    for c, expr in columns.items():
        used.append(_check_expr(con, view, names, expr, f"la colonne « {c} »", fl, source))
    for label, cond in exclude.items():
        used.append(_check_expr(con, view, names, cond, f"l'exclusion « {label} »", fl, source))
    if where:
        used.append(_check_expr(con, view, names, where, "le filtre « where »", fl, source))
    fl.columns_used = [n for n in names if any(n in u for u in used)]

    # 1. mapped expressions + exclusion / filter status
    sel = [f"{_ROW}"]
    for c, expr in columns.items():
        col = _simple_column(expr, names)
        if col in raw_text:  # parse the original text (reports the bad values themselves)
            txt = _q(raw_text[col])
            if spec[c][0] == "str":  # 17850.0 -> 17850
                # the regular expression only where it can match (5 M rows per file at scale)
                txt = (f"CASE WHEN contains({txt}, '.') THEN regexp_replace(trim({txt}), '^([-+]?[0-9]+)\\.0+$', '\\1') "
                       f"ELSE trim({txt}) END")
            sel.append(f"{txt} AS {_q('e_' + c)}")
        else:
            sel.append(f"({expr}) AS {_q('e_' + c)}")
    status = ["CASE"]
    for i, cond in enumerate(exclude.values()):
        status.append(f"WHEN coalesce(CAST(({cond}) AS BOOLEAN), false) THEN 'x{i}'")
    if where:
        status.append(f"WHEN NOT coalesce(CAST(({where}) AS BOOLEAN), false) THEN 'filtered'")
    status.append("ELSE 'candidate' END")
    sel.append(" ".join(status) + " AS _status" if len(status) > 2 else "'candidate' AS _status")
    # Tables, not views: fusing these stages into one query made DuckDB 1.5.6 crash now
    # and then (segmentation fault in StrpTimeFormat::Parse, a read past the end of a
    # date text) – 3 runs of step 01 in 12 on the demo, none in 14 with tables.
    mapped = f"{table}_m"
    with _expression_errors(source, fl):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {mapped} AS SELECT {', '.join(sel)} FROM {view}")
    etypes = {r[0]: r[1] for r in con.execute(f"DESCRIBE {mapped}").fetchall()}

    # 2+3. typed canonical values, then row classification (excluded / filtered / rejected
    # by the first failing required column / kept), in one table. Only what cannot be
    # derived is stored: the value ``v_<c>``, plus the original text ``t_<c>`` of the
    # columns whose parsing can fail; "non-empty" and "unparsable" are expressions
    # over them (storing them, and the text of plain text columns twice, made this
    # stage copy ~40 columns of 5 million rows at scale).
    parts, flags = [], {}
    for c, (ctype, _req) in spec.items():
        if c not in columns:
            continue
        e = _q("e_" + c)
        et = etypes["e_" + c].upper()
        txt = _text_sql(e, et)
        parsed = True  # a value can be present and unparsable
        if ctype == "str":
            val, parsed = txt, False
        elif ctype in ("date", "ts"):
            if et.startswith(("TIMESTAMP", "DATE")):
                val, parsed = f"CAST({e} AS TIMESTAMP)", False
            else:
                with _expression_errors(source, fl):
                    fmt = _choose_date_format(con, mapped, txt, source, c, fl)
                val = _date_parse_sql(txt, fmt)
            if ctype == "date":
                val = f"CAST({val} AS DATE)"
        elif ctype == "double":
            if et in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT") or et in _FLOAT_TYPES or et.startswith("DECIMAL"):
                val, parsed = f"CAST({e} AS DOUBLE)", False
            else:
                val = _number_parse_sql(txt, source.get("decimal"))
        elif ctype == "bool":
            if et == "BOOLEAN":
                val, parsed = e, False
            else:
                low = f"lower({txt})"
                with _expression_errors(source, fl):
                    x_style = con.execute(
                        f"SELECT count(*) > 0 AND bool_and({low} = 'x') FROM {mapped} WHERE {txt} IS NOT NULL"
                    ).fetchall()[0][0]
                val = (
                    f"CASE WHEN {low} IN ({', '.join(map(_lit, TRUE_WORDS))}) THEN true "
                    f"WHEN {low} IN ({', '.join(map(_lit, FALSE_WORDS))}) THEN false END"
                )
                if x_style:  # "x" = yes, empty = no: never empty, never unparsable
                    val, parsed = f"coalesce({val}, false)", False
        elif ctype == "grp":
            low = f"lower(strip_accents({txt}))"
            val = (
                f"CASE WHEN {low} IN ({', '.join(map(_lit, TREATMENT_WORDS))}) THEN 'treatment' "
                f"WHEN {low} IN ({', '.join(map(_lit, CONTROL_WORDS))}) THEN 'control' END"
            )
        else:  # pragma: no cover - KINDS only uses the types above
            raise AssertionError(ctype)
        v = _q("v_" + c)
        parts.append(f"{val} AS {v}")
        if parsed:
            t = _q("t_" + c)
            parts.append(f"{txt} AS {t}")
            fl.col_sql[c] = {"t": t, "n": f"({t} IS NOT NULL)", "b": f"({t} IS NOT NULL AND {v} IS NULL)"}
        else:
            fl.col_sql[c] = {"t": f"CAST({v} AS VARCHAR)", "n": f"({v} IS NOT NULL)", "b": "false"}
        flags[c] = ctype
    reasons, rcols = [], []
    for c, (ctype, req) in spec.items():
        if not req or c not in flags:
            continue
        n_sql, b_sql = fl.col_sql[c]["n"], fl.col_sql[c]["b"]
        reasons.append(f"WHEN NOT {n_sql} THEN {_lit(_missing_reason(c))}")
        reasons.append(f"WHEN {b_sql} THEN {_lit(_bad_reason(c, ctype))}")
        rcols.append(f"WHEN NOT {n_sql} OR {b_sql} THEN {_lit(c)}")
    reason_sql = ("CASE " + " ".join(reasons) + " END") if reasons else "NULL"
    rcol_sql = ("CASE " + " ".join(rcols) + " END") if rcols else "NULL"
    try:
        with _expression_errors(source, fl):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT *, "
                f"CASE WHEN _status <> 'candidate' THEN NULL ELSE {reason_sql} END AS _reason, "
                f"CASE WHEN _status <> 'candidate' THEN NULL ELSE {rcol_sql} END AS _rcol "
                f"FROM (SELECT {_ROW}, _status, {', '.join(parts)} FROM {mapped})"
            )
    finally:
        con.execute(f"DROP TABLE IF EXISTS {mapped}")

    # 4. tolerated share of unparsable values per column (one pass for every column)
    checked = [c for c, ctype in flags.items() if ctype != "str"]
    counts = con.execute(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE {fl.col_sql[c]['b']}), count(*) FILTER (WHERE {fl.col_sql[c]['n']})"
                              for c in checked) + f" FROM {table} WHERE _status = 'candidate'"
    ).fetchall()[0] if checked else ()
    for i, c in enumerate(checked):
        ctype = flags[c]
        nb, nn = counts[2 * i], counts[2 * i + 1]
        if nn and nb / nn > share:
            ex = con.execute(
                f"SELECT {_ROW}, {fl.col_sql[c]['t']} FROM {table} WHERE _status = 'candidate' AND {fl.col_sql[c]['b']} "
                f"ORDER BY {_ROW} LIMIT 5"
            ).fetchall()
            examples = ", ".join(f"ligne {r} : « {v} »" for r, v in ex)
            hint = {
                "date": "Indiquez le format des dates avec « date_format: » (par exemple \"%d/%m/%Y\" ou \"%Y%m%d\")",
                "ts": "Indiquez le format des dates avec « date_format: » (par exemple \"%d/%m/%Y %H:%M\")",
                "double": "Indiquez le séparateur décimal avec « decimal: \",\" » ou corrigez l'expression",
            }.get(ctype, "Corrigez les valeurs ou l'expression de la colonne")
            hint += f", ou relevez « max_unparsable_share » (actuellement {share:g})"
            key = c  # the key as the analyst wrote it: a canonical column, or scores.<type>
            if c.startswith(SCORE_PREFIX) and c[len(SCORE_PREFIX):] in (source.get("scores") or {}):
                key = "scores." + c[len(SCORE_PREFIX):]
            raise InputError(
                f"Source « {source['name']} » : {nb} valeur(s) sur {nn} illisible(s) pour « {key} » "
                f"(expression « {columns[c]} », {_bad_reason(c, ctype)}) ; exemples : {examples}",
                file=fl.path, column=columns[c], row=ex[0][0] if ex else None, hint=hint,
            )

    # 5. rows repeating a key of the file
    dup_key = {"customers": ["source_key"], "campaigns": ["campaign_id"],
               "campaign_contacts": ["campaign_id", "customer_key"]}.get(source["kind"])
    if dup_key:
        part = ", ".join(_q("v_" + k) for k in dup_key)
        label = {"customers": "clé client en double dans le fichier", "campaigns": "campagne en double dans le fichier",
                 "campaign_contacts": "contact en double dans le fichier"}[source["kind"]]
        con.execute(
            f"UPDATE {table} SET _reason = ?, _rcol = ? WHERE {_ROW} IN ("
            f"SELECT {_ROW} FROM {table} WHERE _status = 'candidate' AND _reason IS NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {_ROW}) > 1)",
            [label, dup_key[0]],
        )
    # 6. counts
    labels = list(exclude)
    for st, reason, cnt in con.execute(
        f"SELECT _status, _reason, count(*) FROM {table} GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        if st.startswith("x"):
            fl.excluded[labels[int(st[1:])]] = cnt
        elif st == "filtered":
            fl.rows_filtered = cnt
        elif reason is not None:
            fl.rejected[reason] = fl.rejected.get(reason, 0) + cnt
        else:
            fl.rows_kept += cnt
    optional = [c for c, ctype in flags.items() if not spec[c][1] and ctype != "str"]
    if optional:
        bad = con.execute(
            "SELECT " + ", ".join(f"count(*) FILTER (WHERE {fl.col_sql[c]['b']})" for c in optional)
            + f" FROM {table} WHERE _status = 'candidate' AND _reason IS NULL"
        ).fetchall()[0]
        for c, nb in zip(optional, bad, strict=True):
            if nb:
                fl.warnings[f"valeur ignorée : {_bad_reason(c, flags[c])} ({c})"] = nb

    # 7. the rejected rows with their raw record, then the kept rows; the big stages go
    # as soon as they are used (at 10 M rows they would hold the memory cap)
    if fl.rows_rejected or fl.warnings:
        _reject_rows(con, source, spec, fl, table)
    con.execute(f"DROP TABLE IF EXISTS {raw}")
    if stage:
        con.execute(f"INSERT INTO {stage_table(source['name'])} {_stage_select(source, spec, fl, table)}")
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _reject_rows(con: duckdb.DuckDBPyConnection, source: dict, spec: dict, fl: FileLoad, table: str) -> None:
    """Create TEMP table ``<table>_rej(r, reason, col, val, rec)``: rejected rows and ignored values with the raw record as JSON."""
    cols = source["columns"]
    rej_sql = []
    for c, (ctype, req) in spec.items():
        if c not in cols:
            continue
        if not req and ctype != "str":
            rej_sql.append(
                f"SELECT {_ROW} AS r, {_lit('valeur ignorée : ' + _bad_reason(c, ctype))} AS reason, {_lit(cols[c])} AS col, "
                f"{fl.col_sql[c]['t']} AS val FROM {table} WHERE _status = 'candidate' AND _reason IS NULL AND {fl.col_sql[c]['b']}"
            )
    case_col = " ".join(f"WHEN {_lit(c)} THEN {fl.col_sql[c]['t']}" for c in cols if c in spec)
    case_name = " ".join(f"WHEN {_lit(c)} THEN {_lit(e)}" for c, e in cols.items())
    rej_sql.insert(
        0,
        f"SELECT {_ROW} AS r, _reason AS reason, CASE _rcol {case_name} END AS col, CASE _rcol {case_col} END AS val "
        f"FROM {table} WHERE _reason IS NOT NULL",
    )
    raw, offset = f"{table}_raw", fl.format["row_offset"]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table}_rej AS "
        f"WITH j AS ({' UNION ALL '.join(rej_sql)}), "
        f"x AS (SELECT rowid + {offset} AS __r, CAST(to_json({raw}) AS VARCHAR) AS rec FROM {raw} "
        f"WHERE rowid + {offset} IN (SELECT r FROM j)) "
        "SELECT j.r, j.reason, j.col, j.val, x.rec FROM j JOIN x ON x.__r = j.r"
    )


_DETECT_SAMPLE = 200_000


def _choose_date_format(con, mapped: str, txt: str, source: dict, column: str, fl: FileLoad) -> list[str] | None:
    """Pick the date format family that parses the most values (on a sample of rows).

    French comes before US on ties. Within the family, formats are tried most frequent
    first. Returns a strptime format list, or ``None`` for ISO (``TRY_CAST``).
    """
    hint = source.get("date_format")
    if hint:
        fmts = [hint] if isinstance(hint, str) else list(hint)
        fl.format.setdefault("date_formats", {})[column] = fmts
        return fmts
    flat = [(fam, f) for fam, fmts in DATE_FAMILIES for f in (fmts or [None])]
    aggs = [f"count(*) FILTER (WHERE {_date_parse_sql('v', None if f is None else [f])} IS NOT NULL)" for _, f in flat]
    counts = con.execute(
        f"SELECT {', '.join(aggs)} FROM (SELECT {txt} AS v FROM {mapped} "
        f"WHERE _status = 'candidate' AND {txt} IS NOT NULL LIMIT {_DETECT_SAMPLE // 4})"
    ).fetchall()[0]
    per_family: dict[str, int] = {}
    for (fam, _), n in zip(flat, counts, strict=True):
        per_family[fam] = per_family.get(fam, 0) + n
    order = [fam for fam, _ in DATE_FAMILIES]
    best = max(order, key=lambda fam: (per_family[fam], -order.index(fam)))
    fl.format.setdefault("date_formats", {})[column] = best
    fmts = dict(DATE_FAMILIES)[best]
    if fmts is None:
        return None
    ranked = sorted(
        ((n, -i, f) for i, ((fam, f), n) in enumerate(zip(flat, counts, strict=True)) if fam == best),
        reverse=True,
    )
    return [f for n, _, f in ranked if n > 0] or fmts


def _number_parse_sql(txt: str, decimal: str | None, *, fast_path: bool = True) -> str:
    """Return the SQL reading the text ``txt`` as a number (NULL when it is not one).

    Spaces, non-breaking spaces, currency signs and a leading ``+`` are dropped; the
    decimal separator is ``decimal`` (``.`` or ``,``) or, when None, guessed per value
    (``1.234,5`` and ``1,234.5`` both read). A plain value (``12.5``, or ``12,5`` with
    ``decimal: ","``) is read by one cast first: the regular expressions only run on the
    others (most of ten million amounts are plain), with the same result.
    """
    s = f"regexp_replace(regexp_replace({txt}, '[\\s\\x{{00A0}}\\x{{202F}}€$£]', '', 'g'), '^\\+', '')"
    if decimal == ".":
        slow = f"TRY_CAST(replace({s}, ',', '') AS DOUBLE)"
        fast = f"CASE WHEN NOT contains({txt}, ',') THEN TRY_CAST({txt} AS DOUBLE) END"
    elif decimal == ",":
        slow = f"TRY_CAST(replace(replace({s}, '.', ''), ',', '.') AS DOUBLE)"
        fast = f"CASE WHEN NOT contains({txt}, '.') THEN TRY_CAST(replace({txt}, ',', '.') AS DOUBLE) END"
    else:
        slow = (
            f"TRY_CAST(CASE WHEN contains({s}, ',') AND contains({s}, '.') THEN "
            f"  CASE WHEN strpos({s}, ',') > strpos({s}, '.') THEN replace(replace({s}, '.', ''), ',', '.') ELSE replace({s}, ',', '') END "
            f"WHEN contains({s}, ',') THEN replace({s}, ',', '.') ELSE {s} END AS DOUBLE)"
        )
        fast = f"CASE WHEN NOT contains({txt}, ',') THEN TRY_CAST({txt} AS DOUBLE) END"
    return f"coalesce({fast}, {slow})" if fast_path else slow


def _customer_source_sql(source: dict, spec: dict) -> str:
    own = _lit(source.get("customer_source") or source["name"])
    if "customer_source" in spec and "customer_source" in source["columns"]:
        return f"coalesce(v_customer_source, {own})"
    return own


def _stage_select(source: dict, spec: dict, fl: FileLoad, table: str) -> str:
    """Return the SELECT of the kept rows of a classified file in the staged columns.

    Columns, in order: the canonical columns of the kind (``spec``), ``customer_source``
    for the kinds that name a customer, ``source, sha256, row_number``.
    """
    kind = source["kind"]
    cols = []
    for c in spec:
        if c in source["columns"]:
            cols.append(f"{_q('v_' + c)} AS {_q(c)}")
        else:
            cols.append(f"NULL AS {_q(c)}")
    if kind == "transactions":
        gen = f"{_lit(source['name'] + ':' + fl.sha256[:12] + ':')} || CAST({_ROW} AS VARCHAR)"
        tid = f"coalesce(v_transaction_id, {gen})" if "transaction_id" in source["columns"] else gen
        cols[list(spec).index("transaction_id")] = f"{tid} AS transaction_id"
        oid = f"coalesce(v_order_id, {tid})" if "order_id" in source["columns"] else tid
        cols[list(spec).index("order_id")] = f"{oid} AS order_id"
    if kind in ("transactions", "consents", "campaign_contacts"):
        cs = _customer_source_sql(source, spec)
        if "customer_source" in spec:
            cols[list(spec).index("customer_source")] = f"{cs} AS customer_source"
        else:
            cols.append(f"{cs} AS customer_source")
    cols += [f"{_lit(source['name'])} AS source", f"{_lit(fl.sha256)} AS sha256", f"{_ROW} AS row_number"]
    return f"SELECT {', '.join(cols)} FROM {table} WHERE _status = 'candidate' AND _reason IS NULL"


def _check_duplicate_ids(con: duckdb.DuckDBPyConnection, source: dict, staged: str, paths: dict[str, str]) -> None:
    """Raise when a mapped transaction id repeats in the files or is already in the database.

    ``staged``: a table or a parenthesised SELECT of the new rows (staged columns).
    """
    if "transaction_id" not in source["columns"]:
        return
    hint = (
        "Un identifiant de transaction doit être unique : mappez plutôt le numéro de commande sur "
        "« order_id » et laissez « transaction_id » non renseigné (un identifiant est alors généré par ligne)"
    )
    # one light aggregation (no per-group lists) settles the usual case: no repeated id
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _dup_ids AS SELECT transaction_id FROM {staged} "
        "GROUP BY transaction_id HAVING count(*) > 1"
    )
    n = con.execute("SELECT count(*) FROM _dup_ids").fetchall()[0][0]
    if n:
        dup = con.execute(
            f"SELECT d.transaction_id, list(DISTINCT s.sha256 ORDER BY s.sha256) FROM "
            f"(SELECT transaction_id FROM _dup_ids ORDER BY transaction_id LIMIT 5) d JOIN {staged} s USING (transaction_id) "
            "GROUP BY d.transaction_id ORDER BY d.transaction_id"
        ).fetchall()
        con.execute("DROP TABLE _dup_ids")
        shas = sorted({s for d in dup for s in d[1]})
        files = [paths.get(s, s[:12]) for s in shas]
        raise InputError(
            f"Source « {source['name']} » : {n} identifiant(s) de transaction en double "
            f"(ex. {', '.join(str(d[0]) for d in dup)}) dans {' et '.join(files)}",
            file=files[0], column=source["columns"]["transaction_id"], hint=hint,
        )
    con.execute("DROP TABLE _dup_ids")
    clash = con.execute(
        f"SELECT s.transaction_id, s.sha256, t.sha256, t.source FROM {staged} s "
        "JOIN transactions t USING (transaction_id) ORDER BY s.transaction_id LIMIT 5"
    ).fetchall()
    if clash:
        n = con.execute(f"SELECT count(*) FROM {staged} s JOIN transactions t USING (transaction_id)").fetchall()[0][0]
        mine = paths.get(clash[0][1], clash[0][1][:12])
        theirs = con.execute("SELECT any_value(path) FROM ingestions WHERE sha256 = ?", [clash[0][2]]).fetchall()[0][0]
        raise InputError(
            f"Source « {source['name']} » : {n} identifiant(s) de transaction déjà présents dans la base "
            f"(ex. {', '.join(str(c[0]) for c in clash)}) : le fichier « {mine} » reprend des transactions "
            f"du fichier « {theirs or '?'} » (source « {clash[0][3]} »)",
            file=mine, column=source["columns"]["transaction_id"], hint=hint,
        )


def _write_file(con: duckdb.DuckDBPyConnection, source: dict, spec: dict, fl: FileLoad, table: str, mine: str, *,
                run_id: str, step: str) -> None:
    """Write one classified file: canonical table rows (``mine``: parenthesised SELECT of its kept rows in the staged columns), rejects, ledger."""
    name, kind = source["name"], source["kind"]
    cols = source["columns"]
    if kind == "customers":
        fields = [c for c in KINDS["customers"]]
        fl.replaced = con.execute(
            f"SELECT count(*) FROM source_customers WHERE source = ? AND source_key IN (SELECT source_key FROM {mine})", [name]
        ).fetchall()[0][0]
        con.execute(f"DELETE FROM source_customers WHERE source = ? AND source_key IN (SELECT source_key FROM {mine})", [name])
        con.execute(
            f"INSERT INTO source_customers (source, {', '.join(fields)}, sha256, row_number) "
            f"SELECT source, {', '.join(_q(f) for f in fields)}, sha256, row_number FROM {mine}"
        )
        for c in spec:
            if c.startswith(CONSENT_PREFIX) and c in cols:
                channel = c[len(CONSENT_PREFIX):]
                con.execute(
                    f"DELETE FROM consents WHERE source = ? AND channel = ? AND source_key IN (SELECT source_key FROM {mine} WHERE {_q(c)} IS NOT NULL)",
                    [name, channel],
                )
                con.execute(
                    f"INSERT INTO consents (customer_id, channel, opted_in, updated_at, source, source_key, sha256) "
                    f"SELECT NULL, ?, {_q(c)}, updated_at, source, source_key, sha256 FROM {mine} WHERE {_q(c)} IS NOT NULL",
                    [channel],
                )
    elif kind == "transactions":
        tcols = ["transaction_id", "order_id", "source", "customer_source", "customer_key", "ts", "amount", "quantity",
                 "channel", "payment_method", "category", "product", "sha256", "row_number"]
        con.execute(
            f"INSERT INTO transactions (customer_id, {', '.join(tcols)}) SELECT NULL, {', '.join(tcols)} FROM {mine}"
        )
    elif kind == "consents":
        con.execute(
            f"INSERT INTO consents (customer_id, channel, opted_in, updated_at, source, source_key, sha256) "
            f"SELECT NULL, channel, opted_in, updated_at, customer_source, customer_key, sha256 FROM {mine}"
        )
    elif kind == "campaigns":
        fl.replaced = con.execute(
            f"SELECT count(*) FROM campaigns WHERE campaign_id IN (SELECT campaign_id FROM {mine})"
        ).fetchall()[0][0]
        con.execute(f"DELETE FROM campaigns WHERE campaign_id IN (SELECT campaign_id FROM {mine})")
        con.execute(
            "INSERT INTO campaigns (campaign_id, name, channel, segment, offer, start_date, end_date, "
            "cost_per_contact, status, source, run_id, created_at) "
            f"SELECT campaign_id, name, channel, segment, offer, start_date, end_date, cost_per_contact, "
            f"'importée', source, ?, ? FROM {mine}",
            [run_id, now()],
        )
    elif kind == "campaign_contacts":
        con.execute(
            "INSERT INTO campaign_contacts (campaign_id, customer_id, grp, contacted_at, source, customer_key) "
            f"SELECT campaign_id, NULL, grp, contacted_at, customer_source, customer_key FROM {mine}"
        )
    # rejects and warnings, with the raw record as JSON (built by _load_file)
    if fl.rows_rejected or fl.warnings:
        con.execute(
            "INSERT INTO rejects (sha256, source, path, row_number, reason, column_name, value, record, run_id, step) "
            f"SELECT ?, ?, ?, r, reason, col, val, rec, ?, ? FROM {table}_rej ORDER BY r",
            [fl.sha256, name, fl.path, run_id, step],
        )
    con.execute(
        "INSERT INTO ingestions (sha256, source, kind, path, rows_read, rows_kept, rows_rejected, rows_filtered, "
        "loaded_at, run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [fl.sha256, name, kind, fl.path, fl.rows_read, fl.rows_kept, fl.rows_rejected,
         fl.rows_filtered + fl.rows_excluded, now(), run_id, step],
    )


def rejects_summary(con: duckdb.DuckDBPyConnection, source: str | None = None) -> pd.DataFrame:
    """Rejected rows and warnings per source, file and reason, with a few example rows.

    Returns
    -------
    DataFrame
        Columns ``source, path, reason, rows, example_rows`` (list of row numbers).
    """
    sql = (
        "SELECT source, path, reason, count(*) AS rows, list(row_number ORDER BY row_number)[1:5] AS example_rows "
        "FROM rejects {w} GROUP BY ALL ORDER BY source, path, rows DESC, reason"
    )
    if source is None:
        return to_frame(con.sql(sql.format(w="")))
    return to_frame(con.sql(sql.format(w="WHERE source = ?"), params=[source]))
