"""Normalisation of customer fields for identity resolution (names, e-mails, phones, addresses).

Every normaliser is a pure function ``f(value) -> str | None``: ``None``/NaN/empty in,
``None`` out, and idempotent (``f(f(x)) == f(x)``). :func:`normalize_customers` applies
them to a whole table in DuckDB, calling the Python functions once per *distinct* raw
value only (a million records hold far fewer distinct names, cities or postal codes),
and adds the blocking keys used by :mod:`crmlab.identity`.

Rules
-----
- names: lowercase, accents and ligatures folded (``é→e``, ``œ→oe``), every run of
  punctuation, hyphens, apostrophes or spaces becomes one space.
- e-mails: trimmed, lowercase, ``mailto:`` dropped; an address without exactly one ``@``
  or without a dot in its domain is invalid (``None``). With ``provider_rules``: for
  Gmail (``gmail.com``, ``googlemail.com`` → ``gmail.com``) dots in the local part are
  removed; the ``+tag`` is dropped for the providers that deliver ``name+tag@`` to
  ``name@`` (:data:`PLUS_TAG_PROVIDERS`: Gmail, Microsoft Outlook/Hotmail/Live/MSN,
  Apple iCloud/me/mac, Proton, Fastmail). Other providers keep the address as is
  (``+`` may be a real character there).
- phones: parsed with ``phonenumbers`` (default region for numbers without an
  international prefix), returned in E.164 (``+33612345678``); an unparsable or invalid
  number is ``None``.
- postal codes: French (and Monaco) codes keep digits only and recover the leading zero
  lost by spreadsheets (``1000`` → ``01000``); anything that is not then 5 digits is
  ``None``. Other countries: uppercase, spaces removed.
- addresses: name rules, then street-type abbreviations mapped to the full word
  (:data:`ADDRESS_ABBREVIATIONS`: ``av``/``ave`` → ``avenue``, ``bd`` → ``boulevard``,
  ``r`` → ``rue``, ``st`` → ``saint`` …), ``12bis``/``12 b`` → ``12 bis``, ``n°`` dropped;
  numbers are kept.
- cities: name rules, ``st``/``ste`` → ``saint``/``sainte``, ``s/`` → ``sur``, ``cedex``
  and what follows dropped, arrondissement suffixes (``Paris 15e``, ``Lyon 3``) dropped.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import duckdb
import pandas as pd
import phonenumbers

from crmlab.db import register_frame, to_frame

__all__ = [
    "ADDRESS_ABBREVIATIONS",
    "PLUS_TAG_PROVIDERS",
    "address",
    "city",
    "country",
    "email",
    "name",
    "normalize_customers",
    "phone",
    "phone_is_mobile",
    "phonetic",
    "postal_code",
]

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o",
                            "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i"})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

#: Providers that deliver ``local+tag@domain`` to ``local@domain`` (sub-addressing).
PLUS_TAG_PROVIDERS = frozenset({
    "gmail.com", "googlemail.com",
    "outlook.com", "outlook.fr", "hotmail.com", "hotmail.fr", "live.com", "live.fr", "msn.com",
    "icloud.com", "me.com", "mac.com",
    "protonmail.com", "protonmail.ch", "proton.me", "pm.me",
    "fastmail.com", "fastmail.fm",
})
#: Providers that ignore dots in the local part (and their canonical domain).
DOTLESS_PROVIDERS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}

#: Address tokens (after name normalisation) mapped to their canonical full form.
ADDRESS_ABBREVIATIONS = {
    "av": "avenue", "ave": "avenue", "avn": "avenue", "aven": "avenue",
    "bd": "boulevard", "bld": "boulevard", "blvd": "boulevard", "boul": "boulevard", "bvd": "boulevard",
    "r": "rue",
    "pl": "place",
    "ch": "chemin", "chem": "chemin", "che": "chemin",
    "imp": "impasse",
    "all": "allee", "al": "allee", "allees": "allee",
    "rte": "route",
    "fbg": "faubourg", "fg": "faubourg", "faub": "faubourg",
    "st": "saint", "ste": "sainte",
    "sq": "square", "crs": "cours", "qu": "quai", "qua": "quai",
    "pas": "passage", "pass": "passage", "prom": "promenade", "sen": "sentier",
    "res": "residence", "resid": "residence", "bat": "batiment", "bt": "batiment",
    "apt": "appartement", "app": "appartement", "appt": "appartement", "esc": "escalier",
    "lot": "lotissement", "lots": "lotissement", "hab": "habitation",
    "mal": "marechal", "mar": "marechal", "gal": "general", "gen": "general",
    "pdt": "president", "pres": "president", "prof": "professeur", "dr": "docteur",
    "cdt": "commandant", "lt": "lieutenant", "cpt": "capitaine",
    "nd": "notre dame", "sq.": "square",
}
_NUMBER_SUFFIX = re.compile(r"\b(\d+) ?(bis|ter|quater|b)\b")
_NUMBER_SIGN = re.compile(r"\b(n|no|num)\s+(?=\d)")
_CITY_ABBREVIATIONS = {"st": "saint", "ste": "sainte", "s": "sur", "mt": "mont"}
_CITY_TAIL = re.compile(r"\s+(cedex\b.*|\d+\s*(e|er|eme|ieme)?(\s+arr\w*)?)$")

_COUNTRIES = {
    "fr": "FR", "fra": "FR", "france": "FR", "france metropolitaine": "FR",
    "be": "BE", "bel": "BE", "belgique": "BE", "belgium": "BE",
    "ch": "CH", "che": "CH", "suisse": "CH", "switzerland": "CH",
    "lu": "LU", "lux": "LU", "luxembourg": "LU",
    "mc": "MC", "mco": "MC", "monaco": "MC",
    "de": "DE", "deu": "DE", "allemagne": "DE", "germany": "DE",
    "es": "ES", "esp": "ES", "espagne": "ES", "spain": "ES",
    "it": "IT", "ita": "IT", "italie": "IT", "italy": "IT",
    "gb": "GB", "uk": "GB", "gbr": "GB", "royaume uni": "GB", "united kingdom": "GB",
    "us": "US", "usa": "US", "etats unis": "US", "united states": "US",
    "nl": "NL", "pays bas": "NL", "pt": "PT", "portugal": "PT", "ca": "CA", "canada": "CA",
}


def _blank(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _fold(text: str) -> str:
    """Lowercase ASCII fold: accents and ligatures removed."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def _words(text: str) -> str:
    return _NON_ALNUM.sub(" ", _fold(text)).strip()


def name(value: object) -> str | None:
    """Normalise a first or last name.

    ``"Jean-Éric  DUPONT"`` → ``"jean eric dupont"``; ``"D'Artagnan"`` → ``"d artagnan"``.
    """
    if _blank(value):
        return None
    out = _words(str(value))
    return out or None


_SPACE = re.compile(r"\s")


def email(value: object, provider_rules: bool = True, *, ignore_dots: bool = True) -> str | None:
    """Normalise an e-mail address (see module rules); invalid → ``None``.

    ``"Jean.Dupont+promo@GMail.com"`` → ``"jeandupont@gmail.com"`` (with provider rules)
    or ``"jean.dupont+promo@gmail.com"`` (without). ``ignore_dots=False`` applies the
    provider rules except the removal of Gmail dots (``"jean.dupont@gmail.com"``).
    """
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text.startswith("mailto:"):
        text = text[7:].strip()
    if text.count("@") != 1 or _SPACE.search(text):
        return None
    local, domain = text.split("@")
    domain = domain.strip(".")
    if not local or "." not in domain or ".." in domain:
        return None
    if provider_rules:
        if domain in PLUS_TAG_PROVIDERS:
            local = local.split("+", 1)[0]
        if domain in DOTLESS_PROVIDERS:
            domain = DOTLESS_PROVIDERS[domain]
            if ignore_dots:
                local = local.replace(".", "")
        if not local:
            return None
    return f"{local}@{domain}"


def country(value: object, default: str | None = "FR") -> str | None:
    """ISO 3166 alpha-2 code of a country written as a code or a (French/English) name.

    Unknown two-letter codes are kept uppercased; other unknown names return ``default``.
    """
    if _blank(value) or not str(value).strip():
        return default
    key = _words(str(value))
    if key in _COUNTRIES:
        return _COUNTRIES[key]
    if len(key) == 2 and key.isalpha():
        return key.upper()
    return default


@lru_cache(maxsize=200_000)
def _parse_phone(text: str, region: str) -> tuple[str | None, bool | None]:
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, None
    if not phonenumbers.is_valid_number(parsed):
        return None, None
    kind = phonenumbers.number_type(parsed)
    mobile = kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), mobile


def _phone_text(value: object) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, float):  # spreadsheets turn 0612345678 into 612345678.0
        value = f"{value:.0f}"
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0", text):
        text = text[:-2]
    return text or None


def phone(value: object, region: str = "FR") -> str | None:
    """Phone number in E.164 (``"06 12 34 56 78"`` → ``"+33612345678"``); invalid → ``None``.

    Parameters
    ----------
    value : str
        Raw number; without ``+``/``00`` it is read as a number of ``region``.
    region : str
        ISO alpha-2 default region.
    """
    text = _phone_text(value)
    if text is None:
        return None
    return _parse_phone(text, region or "FR")[0]


def phone_is_mobile(value: object, region: str = "FR") -> bool | None:
    """Whether the number is a mobile (``True``), another valid number (``False``) or invalid (``None``)."""
    text = _phone_text(value)
    if text is None:
        return None
    return _parse_phone(text, region or "FR")[1]


def postal_code(value: object, country_code: object = "FR") -> str | None:
    """Normalise a postal code for its country (see module rules)."""
    if _blank(value):
        return None
    if isinstance(value, float):
        value = f"{value:.0f}"
    text = str(value).strip().upper()
    if re.fullmatch(r"\d+\.0", text):
        text = text[:-2]
    cc = country(country_code, "FR") if not _blank(country_code) else "FR"
    if cc in ("FR", "MC"):
        digits = re.sub(r"\D", "", text)
        if len(digits) == 4:
            digits = "0" + digits
        return digits if len(digits) == 5 else None
    out = re.sub(r"[^0-9A-Z]", "", _fold(text).upper())
    return out or None


def address(value: object) -> str | None:
    """Normalise a street address (see module rules).

    ``"12 av. Victor-Hugo"`` and ``"12 avenue Victor Hugo"`` → ``"12 avenue victor hugo"``.
    """
    if _blank(value):
        return None
    text = _words(str(value).replace("°", " "))
    text = _NUMBER_SIGN.sub("", text)
    text = _NUMBER_SUFFIX.sub(lambda m: f"{m.group(1)} {'bis' if m.group(2) == 'b' else m.group(2)}", text)
    tokens = [ADDRESS_ABBREVIATIONS.get(tok, tok) for tok in text.split()]
    out = " ".join(tokens)
    return out or None


def city(value: object) -> str | None:
    """Normalise a city name (``"ST-DENIS CEDEX 01"`` → ``"saint denis"``, ``"Paris 15e"`` → ``"paris"``)."""
    if _blank(value):
        return None
    text = _words(str(value))
    previous = None
    while previous != text:
        previous = text
        text = _CITY_TAIL.sub("", text).strip()
    tokens = [_CITY_ABBREVIATIONS.get(tok, tok) for tok in text.split()]
    if tokens and tokens[0] == "sur":  # a leading "s" is not "sur"
        tokens[0] = "s"
    out = " ".join(tokens)
    return out or None


_PHONETIC_RULES = [
    (re.compile(r"[^a-z]"), ""),
    (re.compile(r"ph"), "f"),
    (re.compile(r"sch|sh"), "ch"),
    (re.compile(r"qu|q"), "k"),
    (re.compile(r"gu(?=[eiy])"), "g"),
    (re.compile(r"g(?=[eiy])"), "j"),
    (re.compile(r"c(?=[eiy])"), "s"),
    (re.compile(r"ck|c(?!h)"), "k"),
    (re.compile(r"(?<!c)h"), ""),
    (re.compile(r"eaux?|aux?|o"), "o"),
    (re.compile(r"ai|ei|e|y"), "e"),
    (re.compile(r"z"), "s"),
    (re.compile(r"w"), "v"),
    (re.compile(r"th"), "t"),
    (re.compile(r"(.)\1+"), r"\1"),
    (re.compile(r"(?<=.)[stdx]$"), ""),
    (re.compile(r"(?<=.)e$"), ""),
]


def phonetic(value: object) -> str | None:
    """Return a coarse French phonetic key of a name, for blocking only (``"Dupond"`` ≈ ``"Dupont"``).

    Sounds that French spelling writes in several ways are merged (``ph/f``, ``c/k/qu``,
    ``eau/au/o``, ``ai/ei/e``, ``y/i``), doubled letters collapsed and silent final letters
    dropped. Spaces are removed, so compound names give one key.
    """
    text = name(value)
    if text is None:
        return None
    for pattern, repl in _PHONETIC_RULES:
        text = pattern.sub(repl, text)
    return text or None


_PHONE_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
                "voip", "pager", "uan", "voicemail")


def _fast_phone_rules(region: str) -> dict | None:
    """Regexes reproducing ``phonenumbers`` validity for plain numbers of ``region``.

    Built from phonenumbers' own metadata (national prefix, country code, the national
    number pattern and possible lengths of each number type), so that SQL can settle the
    common shapes (``0612345678``, ``+33612345678``, ``0033612345678`` once spaces, dots
    and dashes are removed) without one Python call per number; anything else goes to
    ``phonenumbers`` itself.
    """
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.national_prefix or meta.general_desc is None:
        return None
    patterns, lengths = [], set()
    for kind in _PHONE_TYPES:
        desc = getattr(meta, kind)
        if desc is not None and desc.national_number_pattern:
            patterns.append(f"(?:{desc.national_number_pattern})")
            lengths.update(desc.possible_length or meta.general_desc.possible_length or ())
    if not patterns or not lengths or meta.mobile is None or not meta.mobile.national_number_pattern:
        return None
    return {"cc": str(meta.country_code), "prefix": meta.national_prefix, "valid": "|".join(patterns),
            "mobile": meta.mobile.national_number_pattern, "lengths": sorted(lengths)}


def phone_fast_e164(values: pd.Series, countries: pd.Series | None = None, region: str = "FR") -> pd.Series:
    """Vectorised :func:`phone` for the plain shapes of ``region``; NULL where not settled here.

    Same rules as the SQL fast path of :func:`normalize_customers` (:func:`_fast_phone_rules`):
    a number made of digits and ``space . ( ) / + -`` written as ``0…``, ``+cc…`` or
    ``00cc…`` whose national number has a possible length and matches a number type of
    ``region``, in a row whose country is empty or names ``region``. ``None`` does not
    mean invalid: call :func:`phone` for those values.

    Returns
    -------
    Series
        E.164 text (``+33612345678``) or None, aligned on ``values``.
    """
    out = pd.Series(None, index=values.index, dtype=object)
    region = (region or "FR").upper()
    rules = _fast_phone_rules(region)
    if rules is None or values.empty:
        return out
    text = values.astype(object)
    ok = text.map(lambda v: isinstance(v, str)).astype(bool)
    if countries is not None:
        names = {k for k, v in _COUNTRIES.items() if v == region} | {region.lower()}
        ok &= countries.astype(object).map(lambda c: not isinstance(c, str) or c.strip().lower() in names).astype(bool)
    t = text[ok].astype(str)
    # "612345678.0" is a spreadsheet number (phone() drops the ".0"): not a plain shape
    t = t[t.str.fullmatch(r"[0-9 .()/+-]*") & ~t.str.strip().str.fullmatch(r"\d+\.0")]
    d = t.str.replace(r"[^0-9+]", "", regex=True)
    cc, prefix = rules["cc"], rules["prefix"]
    nat = pd.Series(None, index=d.index, dtype=object)
    for pattern, skip in ((re.escape(prefix) + "[1-9][0-9]*", len(prefix)), (r"\+" + cc + "[1-9][0-9]*", len(cc) + 1),
                          ("00" + cc + "[1-9][0-9]*", len(cc) + 2)):
        hit = nat.isna() & d.str.fullmatch(pattern)
        nat[hit] = d[hit].str.slice(skip)
    nat = nat.dropna().astype(str)
    nat = nat[nat.str.len().isin(rules["lengths"]) & nat.str.fullmatch(rules["valid"])]
    out[nat.index] = "+" + cc + nat
    return out.where(out.notna(), None)


def _map_distinct(con: duckdb.DuckDBPyConnection, sql: str, func, name_: str) -> str:
    """Apply ``func(raw[, extra])`` once per distinct row of ``sql`` (columns raw[, extra]); register the result."""
    frame = to_frame(con.sql(sql))
    if frame.shape[1] == 1:
        frame.columns = ["raw"]
        frame["norm"] = [func(v) for v in frame.iloc[:, 0].tolist()]
    else:
        frame["norm"] = [func(a, b) for a, b in zip(frame.iloc[:, 0].tolist(), frame.iloc[:, 1].tolist(), strict=True)]
    frame["norm"] = frame["norm"].astype(object)
    register_frame(con, name_, frame)
    return name_


def normalize_customers(
    con: duckdb.DuckDBPyConnection,
    table: str = "source_customers",
    default_region: str = "FR",
    out: str = "customers_norm",
) -> str:
    """Create the TEMP table of normalised customer fields and blocking keys.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection holding ``table``.
    table : str
        Table with the canonical columns of ``source_customers`` (``source, source_key,
        first_name, last_name, email, phone, address, postal_code, city, country,
        birth_date, gender, created_at, updated_at``). One row per (source, source_key)
        is kept (the most recently updated if a key repeats).
    default_region : str
        Region of phone numbers written without an international prefix, and country of
        records without one.
    out : str
        Name of the TEMP table created (replaced).

    Returns
    -------
    str
        ``out``, a TEMP table with one row per record and the columns ``rid`` (BIGINT,
        0-based rank of ``(source, source_key)``: independent of row order), ``source,
        source_key``, the raw (trimmed) ``first_name, last_name, email, phone, address,
        city``, ``fn`` (normalised first name), ``ln`` (normalised last name),
        ``fn_first`` (first token of ``fn``), ``fn_phon, ln_phon`` (phonetic keys),
        ``email_norm`` (provider rules), ``email_strict`` (provider rules but Gmail dots
        kept), ``email_clean`` (lowercase only), ``phone_e164,
        phone_mobile, address_norm, postal_code, city_norm, country, birth_date, gender``
        (``F``/``M`` or NULL), ``created_at, updated_at``.
    """
    cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}

    def col(c: str, cast: str = "VARCHAR") -> str:
        return f"CAST({c} AS {cast})" if c in cols else f"CAST(NULL AS {cast})"

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _nc_raw AS
        SELECT CAST(source AS VARCHAR) AS source, CAST(source_key AS VARCHAR) AS source_key,
               {col('first_name')} AS first_name, {col('last_name')} AS last_name,
               {col('email')} AS email, {col('phone')} AS phone, {col('address')} AS address,
               {col('postal_code')} AS postal_code, {col('city')} AS city,
               {col('country')} AS country, {col('birth_date', 'DATE')} AS birth_date,
               {col('gender')} AS gender, {col('created_at', 'TIMESTAMP')} AS created_at,
               {col('updated_at', 'TIMESTAMP')} AS updated_at
        FROM {table}
        WHERE source IS NOT NULL AND source_key IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY source, source_key
                                   ORDER BY updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
                                            first_name, last_name, email, phone, address) = 1
    """)
    region = (default_region or "FR").upper()
    try:
        _map_distinct(con, "SELECT DISTINCT first_name FROM _nc_raw WHERE first_name IS NOT NULL "
                      "UNION SELECT DISTINCT last_name FROM _nc_raw WHERE last_name IS NOT NULL",
                      lambda v: (name(v)), "_nc_names")
        names = to_frame(con.sql("SELECT * FROM _nc_names"))
        names.columns = ["raw", "norm"]
        names["phon"] = [phonetic(v) for v in names["norm"].tolist()]
        names["phon"] = names["phon"].astype(object)
        con.unregister("_nc_names")
        register_frame(con, "_nc_names", names)
        # e-mails and addresses: a million distinct values at scale, normalised in SQL
        # (printable ASCII values; the others by the Python functions)
        _map_distinct_sql(con, "email",
                          {"norm": _email_from_parts_sql("t", "lo", "dom", True, True),
                           "clean": _email_from_parts_sql("t", "lo", "dom", False, True),
                           "strict": _email_from_parts_sql("t", "lo", "dom", True, False)},
                          {"norm": lambda v: email(v, True), "clean": lambda v: email(v, False),
                           "strict": lambda v: email(v, True, ignore_dots=False)}, "_nc_email",
                          parts=dict(zip(("t", "lo", "dom"), _email_parts_sql("v").values(), strict=True)))
        rules = _fast_phone_rules(region)
        region_names = [k for k, v in _COUNTRIES.items() if v == region] + [region.lower()]
        if rules:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _nc_phone_fast AS
                WITH d AS (
                    SELECT DISTINCT phone AS raw, country FROM _nc_raw
                    WHERE phone IS NOT NULL AND regexp_full_match(phone, '[0-9 .()/+-]*')
                      AND NOT regexp_full_match(trim(phone), '[0-9]+[.]0')
                      AND (country IS NULL OR lower(trim(country)) IN (SELECT unnest(?)))
                ), n AS (
                    SELECT raw, country, regexp_replace(raw, '[^0-9+]', '', 'g') AS d FROM d
                ), m AS (
                    SELECT raw, country,
                        CASE WHEN regexp_full_match(d, ? || '[1-9][0-9]*') THEN substr(d, length(?) + 1)
                             WHEN regexp_full_match(d, '[+]' || ? || '[1-9][0-9]*') THEN substr(d, length(?) + 2)
                             WHEN regexp_full_match(d, '00' || ? || '[1-9][0-9]*') THEN substr(d, length(?) + 3)
                        END AS nat
                    FROM n
                )
                SELECT raw, country,
                       CASE WHEN regexp_full_match(nat, ?) THEN '+' || ? || nat END AS e164,
                       CASE WHEN regexp_full_match(nat, ?) THEN regexp_full_match(nat, ?) END AS mobile
                FROM m WHERE length(nat) IN (SELECT unnest(?))
            """, [region_names, rules["prefix"], rules["prefix"], rules["cc"], rules["cc"], rules["cc"], rules["cc"],
                  rules["valid"], rules["cc"], rules["valid"], rules["mobile"], rules["lengths"]])
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _nc_phone_fast AS "
                        "SELECT NULL::VARCHAR AS raw, NULL::VARCHAR AS country, NULL::VARCHAR AS e164, "
                        "NULL::BOOLEAN AS mobile WHERE FALSE")
        phones = to_frame(con.sql(
            "SELECT DISTINCT phone AS raw, country FROM _nc_raw r WHERE phone IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM _nc_phone_fast f WHERE f.raw = r.phone AND f.country IS NOT DISTINCT FROM r.country)"))
        parsed = [
            _parse_phone(t, country(c, region) or region) if (t := _phone_text(p)) else (None, None)
            for p, c in zip(phones["raw"].tolist(), phones["country"].tolist(), strict=True)
        ]
        phones["e164"] = pd.Series([p[0] for p in parsed], dtype=object)
        phones["mobile"] = pd.Series([p[1] for p in parsed], dtype=object)
        register_frame(con, "_nc_phone_slow", phones)
        con.execute("""CREATE OR REPLACE TEMP TABLE _nc_phone AS
                       SELECT raw, country, e164, mobile FROM _nc_phone_fast
                       UNION ALL SELECT raw, country, e164, CAST(mobile AS BOOLEAN) FROM _nc_phone_slow""")
        con.unregister("_nc_phone_slow")
        con.execute("DROP TABLE _nc_phone_fast")
        _map_distinct_sql(con, "address", {"norm": address_sql("v")}, {"norm": address}, "_nc_address")
        _map_distinct(con, "SELECT DISTINCT city FROM _nc_raw WHERE city IS NOT NULL", city, "_nc_city")
        _map_distinct(con, "SELECT DISTINCT postal_code, country FROM _nc_raw WHERE postal_code IS NOT NULL",
                      lambda p, c: postal_code(p, c if not _blank(c) else region), "_nc_postal")
        _map_distinct(con, "SELECT DISTINCT country FROM _nc_raw WHERE country IS NOT NULL",
                      lambda c: country(c, region), "_nc_country")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {out} AS
            SELECT CAST(row_number() OVER (ORDER BY r.source, r.source_key) - 1 AS BIGINT) AS rid,
                   r.source, r.source_key,
                   trim(r.first_name) AS first_name, trim(r.last_name) AS last_name,
                   trim(r.email) AS email, trim(r.phone) AS phone, trim(r.address) AS address,
                   trim(r.city) AS city,
                   f.norm AS fn, l.norm AS ln, split_part(f.norm, ' ', 1) AS fn_first,
                   f.phon AS fn_phon, l.phon AS ln_phon,
                   e.norm AS email_norm, e.strict AS email_strict, e.clean AS email_clean,
                   p.e164 AS phone_e164, CAST(p.mobile AS BOOLEAN) AS phone_mobile,
                   a.norm AS address_norm, pc.norm AS postal_code, c.norm AS city_norm,
                   coalesce(co.norm, ?) AS country, r.birth_date,
                   CASE WHEN upper(trim(r.gender)) IN ('F', 'FEMME', 'MME', 'MLLE', 'W', 'FEMALE', 'MADAME') THEN 'F'
                        WHEN upper(trim(r.gender)) IN ('M', 'H', 'HOMME', 'MR', 'M.', 'MALE', 'MONSIEUR') THEN 'M'
                   END AS gender,
                   r.created_at, r.updated_at
            FROM _nc_raw r
            LEFT JOIN _nc_names f ON f.raw = r.first_name
            LEFT JOIN _nc_names l ON l.raw = r.last_name
            LEFT JOIN _nc_email e ON e.raw = r.email
            LEFT JOIN _nc_phone p ON p.raw = r.phone AND p.country IS NOT DISTINCT FROM r.country
            LEFT JOIN _nc_address a ON a.raw = r.address
            LEFT JOIN _nc_city c ON c.raw = r.city
            LEFT JOIN _nc_postal pc ON pc.postal_code = r.postal_code AND pc.country IS NOT DISTINCT FROM r.country
            LEFT JOIN _nc_country co ON co.raw = r.country
        """, [region])
    finally:
        for view in ("_nc_names", "_nc_city", "_nc_postal", "_nc_country"):
            try:
                con.unregister(view)
            except Exception:  # noqa: BLE001 - not registered if an earlier step failed
                pass
        con.execute("DROP TABLE IF EXISTS _nc_raw; DROP TABLE IF EXISTS _nc_phone; DROP TABLE IF EXISTS _nc_phone_fast; "
                    "DROP TABLE IF EXISTS _nc_email; DROP TABLE IF EXISTS _nc_address")
    return out


#: Values the SQL normalisers below settle: printable ASCII only (no accent to fold, no
#: Unicode space or case rule where SQL and Python could differ); others go to Python.
_ASCII_SQL = "regexp_full_match({x}, '[ -~]*')"


def _sql_lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _email_parts_sql(x: str) -> dict[str, str]:
    """Build the SQL of the parts :func:`email` works on: trimmed lowercase text ``t``, ``local`` and ``domain``."""
    t0 = f"lower(trim({x}))"
    t = f"(CASE WHEN starts_with({t0}, 'mailto:') THEN trim(substr({t0}, 8)) ELSE {t0} END)"
    return {"t": t, "local": f"split_part({t}, '@', 1)", "domain": f"trim(split_part({t}, '@', 2), '.')"}


def _email_from_parts_sql(t: str, local: str, domain: str, provider_rules: bool, ignore_dots: bool) -> str:
    valid = (f"(length({t}) - length(replace({t}, '@', '')) = 1 AND NOT contains({t}, ' ') "
             f"AND {local} <> '' AND contains({domain}, '.') AND NOT contains({domain}, '..'))")
    if not provider_rules:
        return f"(CASE WHEN {valid} THEN {local} || '@' || {domain} END)"
    plus = ", ".join(_sql_lit(d) for d in sorted(PLUS_TAG_PROVIDERS))
    dotless = ", ".join(_sql_lit(d) for d in sorted(DOTLESS_PROVIDERS))
    local1 = f"(CASE WHEN {domain} IN ({plus}) THEN split_part({local}, '+', 1) ELSE {local} END)"
    local2 = f"(CASE WHEN {domain} IN ({dotless}) THEN replace({local1}, '.', '') ELSE {local1} END)" if ignore_dots else local1
    domain2 = "(CASE " + " ".join(f"WHEN {domain} = {_sql_lit(k)} THEN {_sql_lit(v)}" for k, v in DOTLESS_PROVIDERS.items()) \
        + f" ELSE {domain} END)"
    return f"(CASE WHEN {valid} AND {local2} <> '' THEN {local2} || '@' || {domain2} END)"


def email_sql(x: str, provider_rules: bool = True, *, ignore_dots: bool = True) -> str:
    """Return the SQL of :func:`email` over the text column ``x``, exact for printable ASCII values.

    Callers apply it where ``regexp_full_match(x, '[ -~]*')`` and call :func:`email` on the
    other values; a property test holds the two to the same results.
    """
    parts = _email_parts_sql(x)
    return _email_from_parts_sql(parts["t"], parts["local"], parts["domain"], provider_rules, ignore_dots)


def address_sql(x: str) -> str:
    """Return the SQL of :func:`address` over the text column ``x``, exact for printable ASCII values."""
    words = f"trim(regexp_replace(lower({x}), '[^a-z0-9]+', ' ', 'g'))"
    signs = f"regexp_replace({words}, '\\b(n|no|num)\\s+([0-9])', '\\2', 'g')"
    suffix = f"regexp_replace({signs}, '\\b([0-9]+) ?(bis|ter|quater)\\b', '\\1 \\2', 'g')"
    suffix = f"regexp_replace({suffix}, '\\b([0-9]+) ?b\\b', '\\1 bis', 'g')"
    cases = " ".join(f"WHEN {_sql_lit(k)} THEN {_sql_lit(v)}" for k, v in ADDRESS_ABBREVIATIONS.items())
    return (f"nullif(array_to_string(list_transform(string_split({suffix}, ' '), "
            f"lambda w: CASE w {cases} ELSE w END), ' '), '')")


def _map_distinct_sql(con: duckdb.DuckDBPyConnection, column: str, exprs: dict[str, str], funcs: dict, name_: str,
                      parts: dict[str, str] | None = None) -> None:
    """TEMP table ``name_(raw, <exprs>)`` over the distinct non-null ``column`` of ``_nc_raw``.

    Printable ASCII values are normalised by the SQL ``exprs`` (``{out: sql over "v"}``, or
    over the columns of ``parts``, ``{name: sql over "v"}`` computed once before), the
    others by the Python ``funcs`` (``{out: f(value)}``), once per distinct value.
    """
    ascii_ = _ASCII_SQL.format(x="v")
    cols = ", ".join(f"{e} AS {o}" for o, e in exprs.items())
    pre = "".join(f", {e} AS {n}" for n, e in (parts or {}).items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name_} AS
        WITH d AS (SELECT DISTINCT {column} AS v FROM _nc_raw WHERE {column} IS NOT NULL),
             p AS (SELECT v{pre} FROM d WHERE {ascii_})
        SELECT v AS raw, {cols} FROM p
    """)
    rest = con.execute(f"SELECT DISTINCT {column} FROM _nc_raw WHERE {column} IS NOT NULL "
                       f"AND NOT {_ASCII_SQL.format(x=column)}").fetchall()
    if rest:
        values = [r[0] for r in rest]
        frame = pd.DataFrame({"raw": values, **{o: [f(v) for v in values] for o, f in funcs.items()}}, dtype=object)
        register_frame(con, "_nc_slow", frame)
        try:
            con.execute(f"INSERT INTO {name_} SELECT raw, {', '.join(exprs)} FROM _nc_slow")
        finally:
            con.unregister("_nc_slow")
