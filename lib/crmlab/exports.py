"""Target files for the tools that send a campaign: one file per target × channel.

Rules every exported row obeys (checked again here, whatever the plan says):

* never a **control-group** member (they must not be contacted, or the campaign cannot
  be measured);
* never a customer **without a current opt-in** for the channel (latest consent record per
  customer × channel; ties: the opt-out wins; no record = no consent);
* never a customer **without a valid address for the channel**: a valid e-mail for
  ``email``, a mobile number for ``sms``, a phone number for ``telephone``, street +
  postal code + city for ``courrier``;
* only the **fields the channel needs** (data minimisation): no phone in an e-mail file,
  no e-mail in a postal file.

Files are CSV in UTF-8 with BOM and ``;`` separators, which French Excel opens directly,
or xlsx. **Formula injection**: a spreadsheet runs a cell that begins with ``=``, ``+``,
``-``, ``@`` (or a tab / carriage return) as a formula, so a hostile name such as
``=HYPERLINK(...)`` would execute when the file is opened. In CSV such a cell is prefixed
with an apostrophe ``'``: Excel and LibreOffice take it as a "text" marker and do not show
it, so a phone number ``+33612345678`` still reads ``+33612345678`` in the sheet (a
plain-text reader sees ``'+33612345678``: the sending tool must strip a leading ``'``,
which most do). In xlsx every value is written as a typed text cell, which a spreadsheet
never evaluates, so no prefix is needed and the value stays exact.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from crmlab import normalize
from crmlab.db import register_frame, to_frame

CHANNELS = ("email", "sms", "courrier", "telephone")

CHANNEL_LABELS = {"email": "e-mail", "sms": "SMS", "courrier": "courrier", "telephone": "téléphone"}

#: Customer fields each channel needs (besides the campaign code and the customer id).
CHANNEL_FIELDS: dict[str, list[str]] = {
    "email": ["first_name", "last_name", "email"],
    "sms": ["first_name", "phone"],
    "courrier": ["first_name", "last_name", "address", "postal_code", "city"],
    "telephone": ["first_name", "last_name", "phone"],
}

#: French column headers of the files.
HEADERS = {
    "campaign_id": "campagne", "offer": "offre", "customer_id": "id_client", "first_name": "prenom",
    "last_name": "nom", "email": "email", "phone": "telephone", "address": "adresse",
    "postal_code": "code_postal", "city": "ville",
}

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """Prefix a text that a spreadsheet would run as a formula with ``'``; other values unchanged.

    ``"=1+1"`` → ``"'=1+1"``, ``"+33612345678"`` → ``"'+33612345678"``, ``"Dupont"`` and
    non-text values are returned as they are.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with :func:`neutralise` applied to every text cell (headers too)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            values = out[col].astype(object)
            try:  # vectorised: only text cells can start like a formula
                risky = values.str.startswith(FORMULA_START, na=False).to_numpy(dtype=bool)
            except (AttributeError, TypeError):  # no text at all in the column, or odd values
                risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START)).to_numpy(dtype=bool)
            if risky.any():
                values = values.copy()
                values[risky] = ["'" + v for v in values[risky]]
            out[col] = values
    out.columns = [neutralise(c) for c in out.columns]
    return out


def _map_unique(values: pd.Series, func) -> pd.Series:
    """Apply ``func`` once per distinct value (not once per row)."""
    uniq = pd.Series(values.dropna().unique())
    mapping = dict(zip(uniq.tolist(), [func(v) for v in uniq.tolist()], strict=True))
    return values.map(mapping)


#: A French number already in E.164 (``+33`` and nine digits, the first not 0): the form
#: :func:`crmlab.normalize.phone` stores. Such a number is classified from the library's
#: own French metadata without parsing it (see :func:`phone_kinds`).
_FR_E164 = r"\+33[1-9]\d{8}"


@lru_cache(maxsize=1)
def _fr_number_descs() -> tuple:
    """French number descriptions of ``phonenumbers``, in the order its type helper reads them."""
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region("FR")
    other = [meta.premium_rate, meta.toll_free, meta.shared_cost, meta.voip, meta.personal_number, meta.pager,
             meta.uan, meta.voicemail]
    return meta.general_desc, other, meta.fixed_line, meta.mobile, bool(meta.same_mobile_and_fixed_line_pattern)


def _desc_match(nsn: pd.Series, desc) -> np.ndarray:
    """Vectorised ``phonenumbers`` description match: possible length, then the full pattern."""
    if desc is None or not desc.national_number_pattern:
        return np.zeros(len(nsn), dtype=bool)
    ok = nsn.str.fullmatch(desc.national_number_pattern).fillna(False).to_numpy(dtype=bool, copy=True)
    if len(desc.possible_length):
        ok &= nsn.str.len().isin(list(desc.possible_length)).to_numpy(dtype=bool)
    return ok


def _fr_e164_kinds(nsn: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (valid, mobile) of French national significant numbers, as ``phonenumbers`` types them.

    Mirrors ``phonenumberutil._number_type_helper``: a number outside the general
    description is invalid; premium, toll-free, shared-cost, VoIP… numbers are valid, not
    mobile; a fixed-line number is mobile only when it also matches the mobile pattern
    (fixed line or mobile); otherwise a mobile-pattern number is mobile, anything else invalid.
    """
    general, other, fixed, mobile_desc, same = _fr_number_descs()
    g = _desc_match(nsn, general)
    o = np.zeros(len(nsn), dtype=bool)
    for desc in other:
        o |= _desc_match(nsn, desc)
    o &= g
    mobile_hit = _desc_match(nsn, mobile_desc)
    f = g & ~o & _desc_match(nsn, fixed)
    m = g & ~o & ~f & mobile_hit & (not same)
    return o | f | m, (f & (same | mobile_hit)) | m


def phone_kinds(phones: pd.Series, region: str = "FR") -> pd.DataFrame:
    """Tell validity and mobile status of phone numbers, each distinct value read once.

    Same answers as :func:`crmlab.normalize.phone` (``valid``: not ``None``) and
    :func:`crmlab.normalize.phone_is_mobile` (``mobile``: ``True``), faster: a French
    number already in E.164 form is classified by vectorised patterns taken from the
    ``phonenumbers`` metadata; any other value is parsed by ``phonenumbers``.

    Returns
    -------
    DataFrame
        ``valid``, ``mobile`` (bool), same index as ``phones``.
    """
    values = phones.astype(object)
    uniq = pd.Series(values.dropna().unique(), dtype=object)
    is_text = uniq.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    text = uniq.where(is_text, "").astype(str)
    fast = is_text & text.str.fullmatch(_FR_E164).to_numpy(dtype=bool)
    valid = np.zeros(len(uniq), dtype=bool)
    mobile = np.zeros(len(uniq), dtype=bool)
    if fast.any():
        valid[fast], mobile[fast] = _fr_e164_kinds(text[fast].str.slice(3).reset_index(drop=True))
    for i in np.flatnonzero(~fast):
        v = uniq.iat[i]
        valid[i] = normalize.phone(v, region) is not None
        mobile[i] = normalize.phone_is_mobile(v, region) is True
    kinds = pd.DataFrame({"valid": valid, "mobile": mobile}, index=pd.Index(uniq, dtype=object))
    found = kinds.reindex(pd.Index(values, dtype=object))
    return pd.DataFrame({"valid": found["valid"].fillna(False).to_numpy(dtype=bool),
                         "mobile": found["mobile"].fillna(False).to_numpy(dtype=bool)}, index=phones.index)


def reachable(customers: pd.DataFrame, channel: str, region: str = "FR") -> pd.Series:
    """Whether each customer can be reached on ``channel`` (bool Series, same index).

    Parameters
    ----------
    customers : DataFrame
        ``email`` (for e-mail), ``phone`` (SMS, telephone), ``address, postal_code, city``
        (courrier).
    channel : str
        One of :data:`CHANNELS`; any other channel is unreachable (all False).
    region : str
        Default region of phone numbers written without an international prefix.
    """
    return reachable_channels(customers, [channel], region)[channel]


def reachable_channels(customers: pd.DataFrame, channels, region: str = "FR") -> pd.DataFrame:
    """:func:`reachable` for several channels at once (the phone numbers are read once).

    Returns
    -------
    DataFrame
        One bool column per channel of ``channels``, same index as ``customers``.
    """
    def filled(col: str) -> pd.Series:
        if col not in customers:
            return pd.Series(False, index=customers.index)
        values = customers[col].astype(object)
        is_text = values.map(lambda v: isinstance(v, str)).astype(bool)
        if not is_text.any():
            return pd.Series(False, index=customers.index)
        return is_text & values.where(is_text, "").str.strip().ne("")

    def column(col: str) -> pd.Series:
        return customers.get(col, pd.Series(index=customers.index, dtype=object)).astype(object)

    out = {}
    kinds = phone_kinds(column("phone"), region) if {"sms", "telephone"} & set(channels) else None
    for channel in channels:
        if channel == "email":
            ok = _map_unique(column("email"), lambda v: normalize.email(v, provider_rules=False) is not None)
        elif channel in ("sms", "telephone"):
            ok = kinds["mobile" if channel == "sms" else "valid"]
        elif channel == "courrier":
            ok = filled("address") & filled("postal_code") & filled("city")
        else:
            ok = pd.Series(False, index=customers.index)
        out[channel] = ok.astype(object).where(ok.notna(), False).astype(bool)
    return pd.DataFrame(out, index=customers.index, columns=list(channels))


def current_consents(con: duckdb.DuckDBPyConnection, customer_ids: pd.Series | None = None) -> pd.DataFrame:
    """Return the current consent of each customer per channel, from the ``consents`` table.

    The latest record (``updated_at``, undated records oldest) of each customer × channel
    wins; among records of the same date an opt-out wins.

    Parameters
    ----------
    customer_ids : Series, optional
        Only these customers (default: all).

    Returns
    -------
    DataFrame
        ``customer_id, channel, opted_in`` (bool).
    """
    if customer_ids is None:
        return to_frame(con.sql(current_consents_sql() + " ORDER BY customer_id, channel"))
    register_frame(con, "_consent_ids", pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype=object).dropna()
                                                      .astype(str).drop_duplicates().to_numpy(dtype=object)}))
    try:
        return to_frame(con.sql(current_consents_sql("customer_id IN (SELECT customer_id FROM _consent_ids)")
                           + " ORDER BY customer_id, channel"))
    finally:
        con.unregister("_consent_ids")


def current_consents_sql(where: str = "true", pairs: str | None = None) -> str:
    """Return the SQL of the current consent of each customer × channel: ``customer_id, channel, opted_in``.

    The rule of :func:`current_consents` (records with a customer, a channel and an
    ``opted_in``; the latest ``updated_at`` wins, undated records are the oldest, an
    opt-out wins a tie), as one aggregate over ``consents``.
    ``where`` restricts the records (SQL condition on ``consents``), ``pairs`` (SQL of a
    relation ``customer_id, channel``) to these customer × channel pairs.
    """
    only = f"SEMI JOIN ({pairs}) _pairs USING (customer_id, channel)" if pairs else ""
    return f"""SELECT customer_id, channel,
                      arg_max(opted_in, {{'dated': updated_at IS NOT NULL,
                                         'at': coalesce(updated_at, TIMESTAMP '0001-01-01'),
                                         'out': NOT opted_in}}) AS opted_in
               FROM consents {only}
               WHERE customer_id IS NOT NULL AND channel IS NOT NULL AND opted_in IS NOT NULL AND ({where})
               GROUP BY customer_id, channel"""


def consent_matrix(consents: pd.DataFrame, customer_ids: pd.Series, channels=CHANNELS) -> pd.DataFrame:
    """Wide bool frame ``customer_id`` × channel: True only for a current opt-in."""
    ids = pd.DataFrame({"customer_id": pd.Series(customer_ids).astype(str).drop_duplicates().to_numpy()})
    c = consents[consents["channel"].isin(list(channels))]
    wide = c.pivot_table(index="customer_id", columns="channel", values="opted_in", aggfunc="min")
    out = ids.merge(wide.reset_index(), on="customer_id", how="left")
    for ch in channels:
        if ch not in out:
            out[ch] = False
        out[ch] = out[ch].astype(object).where(out[ch].notna(), False).astype(bool)
    return out[["customer_id", *channels]]


def export_rows(contacts: pd.DataFrame, customers: pd.DataFrame, consents: pd.DataFrame, channel: str,
                region: str = "FR") -> pd.DataFrame:
    """Rows of one target × channel file, after every exclusion rule (module docstring).

    Parameters
    ----------
    contacts : DataFrame
        ``campaign_id, customer_id, grp, channel`` (+ optional ``offer``): the planned
        contacts of one campaign (other channels and the control group are dropped here).
    customers : DataFrame
        ``customer_id`` and the contact fields of :data:`CHANNEL_FIELDS`.
    consents : DataFrame
        ``customer_id, channel, opted_in`` (:func:`current_consents`).

    Returns
    -------
    DataFrame
        ``campaign_id, [offer], customer_id`` and the channel's fields, raw values (not
        neutralised), one row per customer, sorted by ``customer_id``.
    """
    if channel not in CHANNEL_FIELDS:
        raise ValueError(f"unknown channel {channel!r}")
    rows = contacts[(contacts["grp"] == "treatment") & (contacts["channel"] == channel)]
    rows = rows.drop_duplicates("customer_id")
    ok = consents[(consents["channel"] == channel) & (consents["opted_in"] == True)]  # noqa: E712
    # object arrays: pandas' isin on two Arrow string columns is an order of magnitude slower
    rows = rows[rows["customer_id"].astype(object).isin(ok["customer_id"].astype(object)).to_numpy()]
    fields = CHANNEL_FIELDS[channel]
    cust = customers[["customer_id", *[f for f in fields if f in customers]]].drop_duplicates("customer_id")
    for f in fields:
        if f not in cust:
            cust = cust.assign(**{f: None})
    keep = ["campaign_id", *(["offer"] if "offer" in rows else []), "customer_id"]
    out = rows[keep].merge(cust, on="customer_id", how="inner")
    out = out[reachable(out, channel, region).to_numpy()]
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)[[*keep, *fields]]


def file_name(campaign_id: str, channel: str, fmt: str = "csv") -> str:
    """``<campaign_id>_<channel>.<fmt>``, or ``<campaign_id>.<fmt>`` when the id already ends with ``-<channel>``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(campaign_id))
    if safe.endswith(f"-{channel}"):
        return f"{safe}.{fmt}"
    return f"{safe}_{channel}.{fmt}"


def write_file(rows: pd.DataFrame, path: str | os.PathLike, fmt: str = "csv") -> Path:
    """Write export rows with French headers: CSV (UTF-8 BOM, ``;``, neutralised) or xlsx (text cells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = rows.rename(columns=HEADERS)
    if fmt == "csv":
        frame = neutralise_frame(frame.astype(object).where(frame.notna(), None))
        frame.to_csv(path, sep=";", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    elif fmt == "xlsx":
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        ws.title = "contacts"
        ws.append([str(c) for c in frame.columns])
        for rec in frame.itertuples(index=False):
            ws.append([None if v is None or (isinstance(v, float) and v != v) else str(v) for v in rec])
        for row in ws.iter_rows(min_row=1):
            for cell in row:
                if cell.value is not None:
                    cell.data_type = "s"  # typed text: never evaluated as a formula
        wb.save(path)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return path


def write_exports(contacts: pd.DataFrame, customers: pd.DataFrame, consents: pd.DataFrame,
                  out_dir: str | os.PathLike, fmt: str = "csv", region: str = "FR") -> pd.DataFrame:
    """Write one file per campaign × channel of ``contacts`` into ``out_dir``.

    Parameters
    ----------
    contacts : DataFrame
        ``campaign_id, customer_id, grp, channel`` (+ ``offer``), all planned contacts.
    customers, consents
        See :func:`export_rows`.
    out_dir : path
        Folder of the files (created).
    fmt : {"csv", "xlsx"}

    Returns
    -------
    DataFrame
        ``campaign_id, channel, file, rows, planned, excluded`` (treated contacts planned
        on the channel and those left out by the consent / address rules), one row per
        file written.
    """
    out = []
    treated = contacts[contacts["grp"] == "treatment"]
    for (cid, ch), part in treated.groupby(["campaign_id", "channel"], sort=True):
        if ch not in CHANNEL_FIELDS:
            continue
        rows = export_rows(part, customers, consents, ch, region)
        path = write_file(rows, Path(out_dir) / file_name(cid, ch, fmt), fmt)
        planned = int(part["customer_id"].nunique())
        out.append({"campaign_id": cid, "channel": ch, "file": path.name, "rows": len(rows), "planned": planned,
                    "excluded": planned - len(rows)})
    return pd.DataFrame(out, columns=["campaign_id", "channel", "file", "rows", "planned", "excluded"])


def read_export(path: str | os.PathLike) -> pd.DataFrame:
    """Read back an export file (CSV or xlsx) as text columns (for checks and tests)."""
    path = Path(path)
    if path.suffix == ".xlsx":
        return pd.read_excel(path, dtype=str, keep_default_na=False, engine="calamine")
    return pd.read_csv(path, sep=";", dtype=str, encoding="utf-8-sig", keep_default_na=False)
