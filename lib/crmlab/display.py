"""What users see: PII masking, French tables, short text blocks for notebooks and reports."""

from __future__ import annotations

import html
import re

import pandas as pd

from crmlab.charts import fr_money, fr_number, fr_percent

PII_COLUMNS = ("email", "phone", "first_name", "last_name", "address", "birth_date")


def mask_email(value: object) -> object:
    """``jean.dupont@gmail.com`` → ``j•••@g•••.com`` (None stays None)."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return value
    text = str(value)
    if "@" not in text:
        return mask_text(text)
    local, _, domain = text.partition("@")
    host, dot, tld = domain.rpartition(".")
    if not dot:
        host, tld = domain, ""
    return f"{local[:1]}•••@{host[:1]}•••{dot}{tld}"


def mask_phone(value: object) -> object:
    """``+33612345678`` → ``+33 6•• •• •78``: keep the country code, first and last two digits."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return value
    digits = re.sub(r"\D", "", str(value))
    if len(digits) < 4:
        return "•" * len(digits)
    prefix = "+" if str(value).strip().startswith("+") else ""
    return f"{prefix}{digits[:3]}••••{digits[-2:]}"


def mask_text(value: object) -> object:
    """``Dupont`` → ``D•••``."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return value
    text = str(value)
    return f"{text[:1]}•••" if text else text


def mask_pii(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with e-mails, phones, names, addresses and birth dates masked.

    Columns are recognised by name (``email``, ``phone``, ``first_name``, ``last_name``,
    ``address``, ``birth_date``, and any column whose name contains ``email`` or
    ``phone``). Other columns are unchanged.
    """
    out = frame.copy()
    for col in out.columns:
        name = str(col).lower()
        if "email" in name or "mail" == name:
            out[col] = out[col].map(mask_email)
        elif "phone" in name or "tel" == name:
            out[col] = out[col].map(mask_phone)
        elif name == "birth_date":
            out[col] = out[col].map(lambda v: str(v)[:4] + "-••-••" if pd.notna(v) else v)
        elif name in ("first_name", "last_name", "address"):
            out[col] = out[col].map(mask_text)
    return out


def table(frame: pd.DataFrame, formats: dict[str, str] | None = None, labels: dict[str, str] | None = None,
          currency: str = "EUR", index: bool = False):
    """Build a styled, French-formatted table for display (``pandas.io.formats.style.Styler``).

    Parameters
    ----------
    formats : dict
        Column → ``"int"``, ``"float"``, ``"pct"`` (share 0–1), ``"money"`` or ``"pp"``
        (difference of shares, in percentage points).
    labels : dict
        Column → French header.
    """
    formats = formats or {}
    fmt = {}
    for col, kind in formats.items():
        fmt[col] = {
            "int": lambda v: fr_number(v, 0),
            "float": lambda v: fr_number(v, 2),
            "float1": lambda v: fr_number(v, 1),
            "pct": lambda v: fr_percent(v, 1),
            "money": lambda v: fr_money(v, currency, 0),
            "money2": lambda v: fr_money(v, currency, 2),
            "pp": lambda v: ("+" if v > 0 else "") + fr_number(100 * v, 1) + " pt" if v == v else "–",
        }[kind]
    styler = frame.style.format(fmt, na_rep="–")
    text_cols = [c for c in frame.columns if c not in formats and not pd.api.types.is_numeric_dtype(frame[c])]
    if text_cols:
        styler = styler.set_properties(subset=text_cols, **{"text-align": "left"})
    styler = styler.set_table_styles([{"selector": "th", "props": [("text-align", "left")]}], overwrite=False)
    if labels:
        styler = styler.relabel_index([labels.get(c, c) for c in frame.columns], axis=1)
    if not index:
        styler = styler.hide(axis="index")
    return styler


def callout(text: str, kind: str = "info") -> HTMLBlock:
    """Build a short highlighted paragraph (finding, warning) for notebooks and reports.

    ``text`` is plain French text (escaped); ``**bold**`` is kept.
    """
    colors = {"info": ("#eef4fb", "#1f4e79"), "ok": ("#eef8f1", "#3a9e6f"), "warn": ("#fff5e6", "#e07b39"), "error": ("#fdecec", "#c44e52")}
    bg, border = colors[kind]
    body = html.escape(text).replace("\n", "<br>")
    body = _bold(body)
    return HTMLBlock(f'<div style="background:{bg};border-left:4px solid {border};padding:8px 12px;margin:8px 0">{body}</div>')


def bullets(items: list[str]) -> HTMLBlock:
    """Build a bulleted list of French sentences (escaped; ``**bold**`` kept)."""
    lis = "".join("<li>" + _bold(html.escape(t)) + "</li>" for t in items)
    return HTMLBlock(f"<ul>{lis}</ul>")


def _bold(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


class HTMLBlock:
    """Raw HTML rendered by Jupyter (``_repr_html_``) and kept by nbconvert."""

    def __init__(self, markup: str) -> None:
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return re.sub(r"<[^>]+>", "", self.markup)
