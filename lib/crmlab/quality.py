"""Data quality of contact fields: e-mail syntax, phone validity, postal code format, freshness.

Invalid values are *flagged and listed*, never silently dropped: :func:`flag_values`
returns one row per value with its verdict and a French reason, and step 05 keeps the
list. E-mails are checked with ``email-validator`` without any network look-up
(``check_deliverability=False``), phones with ``phonenumbers`` (region of numbers
written without ``+``: a parameter), postal codes with a per-country pattern.
"""

from __future__ import annotations

import re
from functools import lru_cache

import duckdb
import numpy as np
import pandas as pd
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from crmlab.db import register_frame, require_columns, to_frame

#: Postal code pattern per ISO country code (after trimming and upper-casing).
POSTAL_PATTERNS: dict[str, str] = {
    "FR": r"\d{5}", "MC": r"980\d{2}", "BE": r"\d{4}", "CH": r"\d{4}", "LU": r"(L-)?\d{4}",
    "DE": r"\d{5}", "ES": r"\d{5}", "IT": r"\d{5}", "NL": r"\d{4} ?[A-Z]{2}", "PT": r"\d{4}-\d{3}",
    "GB": r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}", "US": r"\d{5}(-\d{4})?", "CA": r"[A-Z]\d[A-Z] ?\d[A-Z]\d",
}

CHECKED_FIELDS = ("email", "phone", "postal_code")

FIELD_LABELS = {"email": "E-mail", "phone": "Téléphone", "postal_code": "Code postal"}


def _blank(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value) or str(value).strip() == ""


@lru_cache(maxsize=200_000)
def email_problem(value: str) -> str | None:
    """French reason why an e-mail address is syntactically invalid, or ``None`` if valid.

    No DNS or network look-up (``check_deliverability=False``).
    """
    try:
        validate_email(str(value).strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        text = str(exc)
        if "@" not in str(value):
            return "e-mail sans @"
        if "domain" in text.lower() or "period" in text.lower():
            return "e-mail : domaine invalide"
        return "e-mail : syntaxe invalide"
    return None


@lru_cache(maxsize=200_000)
def phone_problem(value: str, region: str = "FR") -> str | None:
    """French reason why a phone number is invalid for ``region`` (ISO alpha-2), or ``None``."""
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0", text):
        text = text[:-2]
    try:
        parsed = phonenumbers.parse(text, region or "FR")
    except phonenumbers.NumberParseException:
        return "téléphone illisible"
    if not phonenumbers.is_possible_number(parsed):
        return "téléphone : nombre de chiffres impossible"
    if not phonenumbers.is_valid_number(parsed):
        return "téléphone : numéro inexistant"
    return None


def postal_code_problem(value: str, country: str | None = "FR") -> str | None:
    """French reason why a postal code does not fit its country's format, or ``None``.

    Countries without a known pattern accept any 3–10 letters/digits.
    """
    text = str(value).strip().upper()
    if re.fullmatch(r"\d+\.0", text):
        text = text[:-2]
    cc = (country or "FR").strip().upper()[:2] if not _blank(country) else "FR"
    pattern = POSTAL_PATTERNS.get(cc, r"[A-Z0-9 -]{3,10}")
    if re.fullmatch(pattern, text):
        return None
    return f"code postal au format invalide pour {cc}"


def check_value(field: str, value: object, *, region: str = "FR", country: str | None = None) -> str | None:
    """Reason why ``value`` is invalid for ``field`` (``email``, ``phone``, ``postal_code``); ``None`` if valid or blank."""
    if _blank(value):
        return None
    if field == "email":
        return email_problem(str(value))
    if field == "phone":
        return phone_problem(str(value), region or "FR")
    if field == "postal_code":
        return postal_code_problem(str(value), country or region)
    return None


#: e-mails of this plain shape are valid for ``email-validator`` (no deliverability check):
#: dot-atom local part of common characters, hostname labels of letters, digits and inner
#: hyphens, a top-level domain of letters. Everything else goes through the library.
_EMAIL_FAST = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63})"
)
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def email_fast_valid(values: pd.Series) -> pd.Series:
    """Vectorised test: ``True`` where the (stripped) e-mail is surely valid for :func:`email_problem`.

    ``False`` means "not decided here", not "invalid": call :func:`email_problem` for those.
    """
    out = pd.Series(False, index=values.index)
    is_text = values.map(lambda v: isinstance(v, str)).astype(bool)
    text = values[is_text].astype(str).str.strip()
    if text.empty:
        return out
    tld = text.str.extract(f"^{_EMAIL_FAST.pattern}$", expand=False)
    domain = text.str.split("@").str[-1]
    ok = (tld.notna() & ~tld.fillna("").str.lower().isin(_SPECIAL_TLDS) & (text.str.find("@") <= 64)
          & (text.str.len() <= 254) & ~domain.str.contains("--", regex=False))
    out[ok.index] = ok.astype(bool)
    return out


def flag_values(values: pd.DataFrame, *, region: str = "FR") -> pd.DataFrame:
    """Check a long frame of contact values; return it with ``valid`` and ``reason``.

    Parameters
    ----------
    values : DataFrame
        Columns ``field`` (``email``, ``phone``, ``postal_code``; other fields are
        always valid), ``value`` (raw text) and optional ``country`` (ISO code used for
        postal codes and phones without prefix; default ``region``). Other columns are
        kept.
    region : str
        Default region of phone numbers and postal codes.

    Returns
    -------
    DataFrame
        A new frame: the input columns plus ``valid`` (bool) and ``reason`` (French
        text, ``None`` when valid). The check runs once per distinct value.
    """
    require_columns(values, ["field", "value"], "flag_values")
    out = values.copy()
    country = out["country"] if "country" in out else pd.Series(region, index=out.index)
    country = country.astype(object).where(country.notna(), region)
    keys = pd.DataFrame({"field": out["field"].astype(str), "value": out["value"], "country": country})
    # only the checked fields can be invalid (check_value is None for the others): the
    # distinct values and the merge back cover their rows only (3/8 of step 05's values)
    checked = keys["field"].isin(CHECKED_FIELDS).to_numpy()
    keys = keys[checked]
    distinct = keys.drop_duplicates()
    # plain shapes are settled vectorised (e-mails, phones of the default region): one
    # library call per distinct value took most of step 05 at scale; the rest as before
    settled = pd.Series(False, index=distinct.index)
    em = distinct["field"] == "email"
    if em.any():
        settled[em] = email_fast_valid(distinct.loc[em, "value"]).to_numpy()
    ph = distinct["field"] == "phone"
    if ph.any():
        # check_value reads a phone in the row's country when it is a two-letter code, else
        # in ``region``: settle here the phones read in ``region``
        cty = distinct.loc[ph, "country"].astype(object)
        in_region = cty.map(lambda c: not (isinstance(c, str) and len(c) == 2) or c == region).astype(bool)
        from crmlab.normalize import phone_fast_e164  # a valid E.164 form = a valid phone

        fast = phone_fast_e164(distinct.loc[ph, "value"], None, region).notna()
        settled[ph] = (fast & in_region).to_numpy()
    # one Python call per distinct value the vectorised tests did not settle
    todo = (~settled).to_numpy()
    reason = pd.Series(None, index=distinct.index, dtype=object)
    rest = distinct[todo]
    reason[todo] = [check_value(f, v, region=(c if f == "phone" and isinstance(c, str) and len(c) == 2 else region), country=c)
                    for f, v, c in zip(rest["field"], rest["value"], rest["country"], strict=True)]
    distinct = distinct.assign(reason=reason.to_numpy())
    merged = keys.merge(distinct, on=["field", "value", "country"], how="left")
    reason = merged["reason"].astype(object)
    reasons = np.full(len(out), None, dtype=object)
    reasons[checked] = reason.where(reason.notna(), None).to_numpy()
    out["reason"] = pd.Series(reasons, index=out.index, dtype=object)
    out["valid"] = pd.isna(reasons)
    return out


def audit_customers(con: duckdb.DuckDBPyConnection, *, region: str = "FR",
                    fields: tuple[str, ...] = CHECKED_FIELDS) -> pd.DataFrame:
    """Check the current e-mail, phone and postal code of every customer.

    Returns
    -------
    DataFrame
        One row per invalid value: ``customer_id, field, value, reason`` (raw value:
        mask before display), sorted by field then customer.
    """
    # field by field, on the distinct (value, country) pairs, the invalid ones joined back to
    # their customers in DuckDB: the long frame of every customer's three values and its
    # flags took 1.5 GB at 1.15 M customers (scale 185), the peak of step 05
    cols = ["customer_id", "field", "value", "reason"]
    found = []
    for f in sorted(fields):  # sorted by field, then customer, as before
        distinct = to_frame(con.sql(f"SELECT DISTINCT CAST({f} AS VARCHAR) AS value, country FROM customers "
                                        f"WHERE {f} IS NOT NULL"))
        if distinct.empty:
            continue
        flagged = flag_values(distinct.assign(field=f), region=region)
        bad = flagged.loc[~flagged["valid"], ["value", "country", "reason"]].astype(object)
        if bad.empty:
            continue
        register_frame(con, "_audit_bad", bad)
        try:
            found.append(to_frame(con.sql(f"""
                SELECT c.customer_id, '{f}' AS field, b.value, b.reason
                FROM customers c JOIN _audit_bad b
                  ON CAST(c.{f} AS VARCHAR) = b.value AND c.country IS NOT DISTINCT FROM b.country
                ORDER BY c.customer_id""")))
        finally:
            con.unregister("_audit_bad")
    if not found:
        return pd.DataFrame(columns=cols)
    return pd.concat(found, ignore_index=True)[cols]


def quality_summary(flags: pd.DataFrame, totals: dict[str, int] | None = None) -> pd.DataFrame:
    """Count invalid values per field and reason.

    Parameters
    ----------
    flags : DataFrame
        ``field, reason`` (rows of invalid values, e.g. :func:`audit_customers`).
    totals : dict, optional
        Field → number of values checked, to add a share.

    Returns
    -------
    DataFrame
        ``field, label, reason, values`` (+ ``share`` with ``totals``).
    """
    if flags.empty:
        cols = ["field", "label", "reason", "values"] + (["share"] if totals else [])
        return pd.DataFrame(columns=cols)
    out = (flags.groupby(["field", "reason"]).size().rename("values").reset_index()
           .sort_values(["field", "values"], ascending=[True, False], kind="stable").reset_index(drop=True))
    out.insert(1, "label", out["field"].map(lambda f: FIELD_LABELS.get(f, f)))
    if totals:
        out["share"] = [v / totals[f] if totals.get(f) else float("nan") for f, v in zip(out["field"], out["values"], strict=True)]
    return out


# --------------------------------------------------------------------------- freshness


def last_confirmed(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Date each customer's contact data was last confirmed, in SQL.

    A confirmation is any dated evidence about the contact data: the latest update of
    one of the customer's source records (``updated_at``, else ``created_at``), a change
    in ``contact_history``, or an inbound interaction that brought a contact field or a
    consent.

    Returns
    -------
    DataFrame
        ``customer_id, is_prospect, email, phone, last_confirmed`` (timestamp, NaT when
        never dated), one row per customer.
    """
    return to_frame(con.sql("""
        WITH ev AS (
            SELECT l.customer_id, coalesce(s.updated_at, s.created_at) AS ts
            FROM customer_links l JOIN source_customers s ON s.source = l.source AND s.source_key = l.source_key
            UNION ALL SELECT customer_id, changed_at FROM contact_history
            UNION ALL SELECT customer_id, ts FROM interactions
            WHERE customer_id IS NOT NULL AND (email IS NOT NULL OR phone IS NOT NULL OR address IS NOT NULL
                  OR postal_code IS NOT NULL OR city IS NOT NULL OR consent_channel IS NOT NULL)
        ), last AS (SELECT customer_id, max(ts) AS ts FROM ev GROUP BY customer_id)
        SELECT c.customer_id, coalesce(c.is_prospect, FALSE) AS is_prospect, c.email, c.phone,
               greatest(l.ts, c.updated_at) AS last_confirmed
        FROM customers c LEFT JOIN last l USING (customer_id)
        ORDER BY c.customer_id
    """))


def freshness(confirmed: pd.DataFrame, reference: str | pd.Timestamp, months: int) -> tuple[float, pd.DataFrame]:
    """Share of customers confirmed within ``months`` before ``reference``, and the stale ones.

    Parameters
    ----------
    confirmed : DataFrame
        ``customer_id, last_confirmed`` (+ any columns kept in the stale list), e.g.
        :func:`last_confirmed`.
    reference : date
        Date the freshness is measured at.
    months : int
        Confirmation window in months.

    Returns
    -------
    (share, stale) : float, DataFrame
        Share (0–1) of customers whose last confirmation is on or after ``reference −
        months``; the stale customers (never confirmed included) with
        ``months_since`` (float, NaN when never), oldest first. Raw PII columns are kept:
        mask before display.
    """
    require_columns(confirmed, ["customer_id", "last_confirmed"], "freshness")
    ref = pd.Timestamp(reference)
    limit = ref - pd.DateOffset(months=months)
    ts = pd.to_datetime(confirmed["last_confirmed"])
    fresh = ts >= limit
    share = float(fresh.mean()) if len(confirmed) else float("nan")
    stale = confirmed.loc[~fresh.to_numpy()].copy()
    stale["months_since"] = ((ref - pd.to_datetime(stale["last_confirmed"])).dt.days / 30.4375).round(1)
    stale = stale.sort_values(["last_confirmed", "customer_id"], na_position="first", kind="stable").reset_index(drop=True)
    return share, stale
