"""Uplift of a campaign with a random control group: response rates, difference, intervals.

A campaign with a control group answers one question: how many *more* customers bought
because they were contacted? With ``x1`` responders among ``n1`` treated customers and
``x0`` among ``n0`` control customers:

* response rates ``p1 = x1 / n1`` and ``p0 = x0 / n0``;
* **uplift** ``d = p1 - p0`` (in share points), with a 95 % interval by Newcombe's hybrid
  score method (Newcombe 1998, method 10: Wilson intervals of each rate combined), which
  keeps its coverage for small samples and rates near 0 or 1 where the Wald interval
  ``d ± z·sqrt(p1(1-p1)/n1 + p0(1-p0)/n0)`` fails (Wald is available too);
* **incremental revenue per contact** = mean revenue in the window of the treated minus
  that of the control, with a Welch (normal) interval;
* a cell is **thin** when either arm has fewer than ``min_cell_size`` customers: its
  estimate is shown but flagged, never used as if it were reliable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from crmlab.errors import CheckError

UPLIFT_COLUMNS = [
    "n_treated", "n_control", "responders_treated", "responders_control", "rate_treated", "rate_control",
    "uplift", "uplift_low", "uplift_high", "significant", "revenue_treated", "revenue_control",
    "incremental_revenue", "incremental_revenue_low", "incremental_revenue_high", "thin",
]


def z_value(level: float = 0.95) -> float:
    """Two-sided normal quantile of a confidence level (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def wilson_interval(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``x / n`` (``(nan, nan)`` when ``n = 0``)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = z_value(level)
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def diff_interval(x1: float, n1: float, x0: float, n0: float, level: float = 0.95,
                  method: str = "newcombe") -> tuple[float, float, float]:
    """Difference of two proportions ``x1/n1 - x0/n0`` with its confidence interval.

    Parameters
    ----------
    x1, n1 : float
        Responders and size of the treated group.
    x0, n0 : float
        Responders and size of the control group.
    level : float
        Confidence level (0.95).
    method : {"newcombe", "wald"}
        Newcombe's hybrid score interval (default) or the Wald interval.

    Returns
    -------
    (diff, low, high) : tuple of float
        ``nan`` everywhere when a group is empty.
    """
    if n1 <= 0 or n0 <= 0:
        return (math.nan, math.nan, math.nan)
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    if method == "wald":
        half = z_value(level) * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
        return (d, d - half, d + half)
    if method != "newcombe":
        raise ValueError(f"unknown method {method!r}")
    l1, u1 = wilson_interval(x1, n1, level)
    l0, u0 = wilson_interval(x0, n0, level)
    low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return (d, low, high)


def mean_diff_interval(mean1: float, var1: float, n1: float, mean0: float, var0: float, n0: float,
                       level: float = 0.95) -> tuple[float, float, float]:
    """Difference of two means with a Welch (normal) interval.

    ``var1``/``var0`` are sample variances (ddof = 1; 0 when a group has one member).
    """
    if n1 <= 0 or n0 <= 0:
        return (math.nan, math.nan, math.nan)
    d = mean1 - mean0
    se = math.sqrt((var1 if var1 == var1 else 0.0) / n1 + (var0 if var0 == var0 else 0.0) / n0)
    half = z_value(level) * se
    return (d, d - half, d + half)


def uplift_table(
    contacts: pd.DataFrame,
    by: Sequence[str],
    *,
    group_col: str = "grp",
    response_col: str = "responded",
    revenue_col: str | None = "revenue",
    min_cell_size: int = 100,
    level: float = 0.95,
    method: str = "newcombe",
) -> pd.DataFrame:
    """Treated vs control response rates, uplift and incremental revenue per cell.

    Parameters
    ----------
    contacts : DataFrame
        One row per contacted (or held-out) customer of a campaign: the ``by`` columns,
        ``group_col`` (``"treatment"`` or ``"control"``; other values are ignored),
        ``response_col`` (bool: bought within the response window) and optionally
        ``revenue_col`` (revenue in the window, 0 when no purchase).
    by : list of str
        Columns defining a cell (e.g. ``["segment", "channel"]``); empty list = one cell.
    min_cell_size : int
        Minimum customers in *each* arm for the cell not to be flagged ``thin``.
    level, method
        Interval level and method of :func:`diff_interval`.

    Returns
    -------
    DataFrame
        The ``by`` columns then :data:`UPLIFT_COLUMNS`: sizes, responders, rates (0–1),
        ``uplift`` (difference of rates) and its interval, ``significant`` (interval
        excludes 0), mean revenue per customer of each arm, ``incremental_revenue`` (per
        contact) and its interval, ``thin``. Cells with an empty arm are kept, with NaN
        estimates. Sorted by the ``by`` columns.
    """
    by = list(by)
    need = [*by, group_col, response_col] + ([revenue_col] if revenue_col else [])
    missing = [c for c in need if c not in contacts.columns]
    if missing:
        raise CheckError(f"uplift_table : colonnes manquantes {missing}")
    frame = contacts[need].copy()
    frame = frame[frame[group_col].isin(["treatment", "control"])]
    frame["_resp"] = frame[response_col].fillna(False).astype(bool).astype(float)
    frame["_rev"] = pd.to_numeric(frame[revenue_col], errors="coerce").fillna(0.0) if revenue_col else 0.0
    cell_by = by or ["_all"]
    if not by:
        frame["_all"] = ""
    agg = frame.groupby([*cell_by, group_col], observed=True, dropna=False).agg(
        n=("_resp", "size"), x=("_resp", "sum"), rev=("_rev", "mean"), rev_var=("_rev", "var")).reset_index()
    t = agg[agg[group_col] == "treatment"].drop(columns=group_col)
    c = agg[agg[group_col] == "control"].drop(columns=group_col)
    cells = t.merge(c, on=cell_by, how="outer", suffixes=("_t", "_c"))
    if not by and cells.empty:
        cells = pd.DataFrame({"_all": [""]})
    for col in ("n_t", "n_c", "x_t", "x_c"):
        if col not in cells:
            cells[col] = 0.0
        cells[col] = cells[col].fillna(0.0)
    for col in ("rev_t", "rev_c", "rev_var_t", "rev_var_c"):
        if col not in cells:
            cells[col] = np.nan
    rows = []
    for r in cells.itertuples(index=False):
        rec = r._asdict()
        d, lo, hi = diff_interval(rec["x_t"], rec["n_t"], rec["x_c"], rec["n_c"], level, method)
        m, mlo, mhi = mean_diff_interval(rec["rev_t"], rec["rev_var_t"], rec["n_t"],
                                         rec["rev_c"], rec["rev_var_c"], rec["n_c"], level)
        n_t, n_c = int(rec["n_t"]), int(rec["n_c"])
        rows.append({
            **{k: rec[k] for k in by},
            "n_treated": n_t, "n_control": n_c,
            "responders_treated": int(rec["x_t"]), "responders_control": int(rec["x_c"]),
            "rate_treated": rec["x_t"] / n_t if n_t else math.nan,
            "rate_control": rec["x_c"] / n_c if n_c else math.nan,
            "uplift": d, "uplift_low": lo, "uplift_high": hi,
            "significant": bool(lo > 0 or hi < 0) if lo == lo else False,
            "revenue_treated": rec["rev_t"] if n_t else math.nan, "revenue_control": rec["rev_c"] if n_c else math.nan,
            "incremental_revenue": m if revenue_col else math.nan,
            "incremental_revenue_low": mlo if revenue_col else math.nan,
            "incremental_revenue_high": mhi if revenue_col else math.nan,
            "thin": bool(min(n_t, n_c) < min_cell_size),
        })
    out = pd.DataFrame(rows, columns=[*by, *UPLIFT_COLUMNS])
    if by and len(out):
        out = out.sort_values(by, kind="stable").reset_index(drop=True)
    return out


def best_by(table: pd.DataFrame, group: str, option: str, value: str = "uplift") -> pd.DataFrame:
    """Best option (e.g. channel) of each group (e.g. segment) among non-thin cells.

    A best option is **confirmed** when its interval lower bound is above the upper bound
    of every other non-thin option of the group (or above 0 when it is the only one) —
    otherwise the data cannot tell the options apart.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`uplift_table` with ``group`` and ``option`` among its ``by``.
    value : {"uplift", "incremental_revenue"}
        Estimate compared (its ``_low``/``_high`` columns give the interval).

    Returns
    -------
    DataFrame
        ``group, option, value, <value>_low, <value>_high, n_options, runner_up,
        confirmed`` — one row per group with at least one non-thin cell.
    """
    rows = []
    ok = table[~table["thin"] & table[value].notna()]
    for g, cells in ok.groupby(group, observed=True, sort=True):
        cells = cells.sort_values(value, ascending=False, kind="stable")
        best = cells.iloc[0]
        others = cells.iloc[1:]
        if len(others):
            confirmed = bool(best[f"{value}_low"] > others[f"{value}_high"].max())
            runner = others.iloc[0][option]
        else:
            confirmed = bool(best[f"{value}_low"] > 0)
            runner = None
        rows.append({group: g, option: best[option], value: best[value], f"{value}_low": best[f"{value}_low"],
                     f"{value}_high": best[f"{value}_high"], "n_options": len(cells), "runner_up": runner,
                     "confirmed": confirmed})
    return pd.DataFrame(rows, columns=[group, option, value, f"{value}_low", f"{value}_high", "n_options",
                                       "runner_up", "confirmed"])
