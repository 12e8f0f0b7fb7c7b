"""Step 06 – mesurer: the scorecard of the five measures, segment evolution, results of each action plan.

The notebook calls, in order: :func:`campaign_responses` and :func:`campaign_results`
(economic performance of each action plan, written to ``campaign_results`` by
:func:`write_campaign_results`), :func:`segment_evolution`, :func:`collect_measures`,
:func:`alimenter_measures`, :func:`scorecard` (targets from params, trend against
earlier runs in ``kpis``) and :func:`executive_summary`, which turns the figures into
French sentences. Every heavy aggregation is DuckDB SQL.
"""

from __future__ import annotations

import math
import re

import duckdb
import numpy as np
import pandas as pd

from crmlab import uplift
from crmlab.charts import fr_money, fr_number, fr_percent
from crmlab.collecter import NPS_UNIT, fr_nps
from crmlab.db import check, register_frame, to_frame
from crmlab.errors import ParamsError
from crmlab.params import Param

MEASURES = {
    "01": ("Organiser", "complétude de la base"),
    "02": ("Segmenter", "évolution des segments"),
    "03": ("Interagir", "performance économique des plans d'action"),
    "04": ("Collecter", "données collectées par opération"),
    "05": ("Alimenter", "remplissage des coordonnées par canal"),
    "06": ("Interagir", "performance économique des plans d'action"),
}

#: Direction of known KPIs: +1 higher is better, -1 lower is better (others: neutral).
DIRECTIONS = {
    "complétude moyenne": 1, "taux de doublons": -1, "lignes rejetées": -1, "clients uniques": 1,
    "clients actifs (12 mois)": 1, "CLV moyenne": 1, "part du CA des Champions": 0,
    "taux de rapprochement": 1, "contacts collectés": 1, "nouveaux prospects": 1, "NPS": 1,
    "valeurs mises à jour": 0, "nouveaux clients": 1, "fraîcheur des coordonnées": 1,
    "valeurs invalides signalées": -1, "clients à faire confirmer": -1, "remplissage moyen des coordonnées": 1,
    "ROI attendu du plan": 1, "ROI incrémental global": 1, "CA incrémental des campagnes": 1,
    "campagnes rentables": 1, "objectifs atteints": 1, "alertes clients": -1,
}


def _check_targets(value, key):
    out = {}
    for k, v in value.items():
        op, thr = parse_target(v, f"{key}.{k}")
        out[str(k)] = f"{op} {thr}"
    return out


def parse_target(value, key: str = "mesurer.targets") -> tuple[str, float]:
    """Read a target: a number (« at least ») or a text ``">= 0.8"``, ``"<= 0.05"``, ``"> 0"``, ``"< 3"``.

    Returns
    -------
    (op, threshold) : (str, float)
    """
    if isinstance(value, bool):
        raise ParamsError(f"Objectif invalide pour « {key} » : {value!r}", hint="Écrivez un nombre (au moins) ou \"<= 0.05\"")
    if isinstance(value, (int, float)):
        return ">=", float(value)
    m = re.fullmatch(r"\s*(>=|<=|>|<|≥|≤)?\s*([-+]?\d+(?:[.,]\d+)?)\s*(%?)\s*", str(value))
    if not m:
        raise ParamsError(f"Objectif invalide pour « {key} » : {value!r}",
                          hint="Écrivez un nombre (seuil minimal) ou une comparaison comme \">= 0.8\" ou \"<= 0.05\"")
    op = {"≥": ">=", "≤": "<=", None: ">="}.get(m.group(1), m.group(1))
    thr = float(m.group(2).replace(",", "."))
    if m.group(3):
        thr /= 100
    return op, thr


def reached(value: float, op: str, threshold: float) -> bool | None:
    """Whether ``value op threshold`` holds (``None`` when the value is missing)."""
    if value is None or value != value:
        return None
    return bool({">=": value >= threshold, "<=": value <= threshold, ">": value > threshold, "<": value < threshold}[op])


PARAMS: dict[str, Param] = {
    "targets": Param("dict", {}, "objectifs : indicateur → seuil (nombre = au moins ; \"<= 0.05\" = au plus ; le NPS en points, "
                     "de -100 à +100) ; clé « NN:indicateur » pour viser une étape",
                     check=_check_targets),
    "margin_rate": Param("float", 0.30, "taux de marge appliqué au chiffre d'affaires incrémental des campagnes", min=0.0, max=1.0),
    "response_window_days": Param("int", 30, "fenêtre de réponse d'une campagne sans date de fin (jours après le début)", min=1, max=365),
    "channel_costs": Param("dict", {}, "coût d'un contact par canal quand la campagne n'en donne pas (devise du run)"),
    "include_planned": Param("bool", False, "mesurer aussi les campagnes planifiées (non envoyées) dont la fenêtre est passée"),
    "min_group_size": Param("int", 30, "effectif minimal de chaque groupe (ciblés, témoins) pour lire une campagne", min=1),
    "comparison_months": Param("int", 6, "évolution des segments : instantané recalculé N mois plus tôt quand un seul existe", min=1, max=60),
    "trend_runs": Param("int", 5, "nombre d'exécutions précédentes montrées dans les tendances", min=1, max=50),
}

HEADLINE_KPIS = ["objectifs atteints", "campagnes rentables", "ROI incrémental global", "CA incrémental des campagnes"]


# --------------------------------------------------------------------------- campaign results


def campaign_responses(con: duckdb.DuckDBPyConnection, *, window_days: int = 30, include_planned: bool = False,
                       data_end=None) -> pd.DataFrame:
    """Treated and control customers of each measurable campaign and their response, in SQL.

    A campaign is measured when it has a start date and contacts in both groups, is not
    ``planned`` (unless ``include_planned``), and its response window is over by the last
    purchase of the base (``data_end``). The window runs from the contact date (else the
    start date) to the campaign's end date included, or ``window_days`` days when it has
    none. A customer listed in both groups of a campaign is left out.

    Returns
    -------
    DataFrame
        ``campaign_id, customer_id, grp`` (treatment / control), ``responded`` (bool: a
        purchase with a positive amount in the window), ``revenue`` (amount bought in
        the window).
    """
    if data_end is None:
        data_end = con.execute("SELECT max(ts) FROM transactions").fetchall()[0][0]
    if data_end is None:
        return pd.DataFrame(columns=["campaign_id", "customer_id", "grp", "responded", "revenue"])
    return to_frame(con.sql("""
        WITH c AS (
            SELECT campaign_id, CAST(start_date AS DATE) AS start_date, CAST(end_date AS DATE) AS end_date
            FROM campaigns
            WHERE start_date IS NOT NULL AND (? OR coalesce(status, '') <> 'planned')
        ), k AS (
            SELECT cc.campaign_id, cc.customer_id, any_value(cc.grp) AS grp,
                   CAST(min(coalesce(CAST(cc.contacted_at AS DATE), c.start_date)) AS TIMESTAMP) AS t0,
                   CAST(coalesce(any_value(c.end_date) + 1, min(coalesce(CAST(cc.contacted_at AS DATE), c.start_date))
                        + CAST(? AS INTEGER)) AS TIMESTAMP) AS t1
            FROM campaign_contacts cc JOIN c USING (campaign_id)
            WHERE cc.customer_id IS NOT NULL AND cc.grp IN ('treatment', 'control')
            GROUP BY cc.campaign_id, cc.customer_id
            HAVING count(DISTINCT cc.grp) = 1
        ), k2 AS (SELECT * FROM k WHERE t1 <= CAST(? AS TIMESTAMP))
        SELECT k2.campaign_id, k2.customer_id, k2.grp,
               count(t.transaction_id) > 0 AS responded, coalesce(sum(t.amount), 0.0) AS revenue
        FROM k2 LEFT JOIN transactions t
          ON t.customer_id = k2.customer_id AND t.amount > 0 AND t.ts >= k2.t0 AND t.ts < k2.t1
        GROUP BY ALL
        ORDER BY k2.campaign_id, k2.customer_id
    """, params=[bool(include_planned), int(window_days), pd.Timestamp(data_end).to_pydatetime()]))


RESULT_COLUMNS = ["campaign_id", "name", "channel", "segment", "start_date", "n_treated", "n_control",
                  "rate_treated", "rate_control", "uplift", "uplift_low", "uplift_high", "significant",
                  "incremental_revenue_per_contact", "incremental_revenue", "incremental_margin", "cost",
                  "cost_per_contact", "incremental_roi", "thin"]


def campaign_results(responses: pd.DataFrame, campaigns: pd.DataFrame, *, margin_rate: float,
                     channel_costs: dict | None = None, min_group_size: int = 30) -> pd.DataFrame:
    """Economic performance of each campaign (action plan) from its treated and control groups.

    Parameters
    ----------
    responses : DataFrame
        ``campaign_id, grp, responded, revenue`` (:func:`campaign_responses`).
    campaigns : DataFrame
        ``campaign_id, name, channel, segment, start_date, cost_per_contact``.
    margin_rate : float
        Margin on incremental revenue (0–1).
    channel_costs : dict, optional
        Cost per contact by channel for campaigns without ``cost_per_contact``.
    min_group_size : int
        Campaigns with a smaller group are flagged ``thin``.

    Returns
    -------
    DataFrame
        :data:`RESULT_COLUMNS`: group sizes, response rates (0–1), ``uplift`` (difference
        of rates) with its 95 % interval (Newcombe) and ``significant``;
        ``incremental_revenue_per_contact`` (mean revenue of the treated minus the
        control's), ``incremental_revenue`` (× treated), ``incremental_margin`` (×
        ``margin_rate``), ``cost`` (cost per contact × treated), ``incremental_roi`` =
        (incremental margin − cost) / cost (NaN without cost). Sorted by start date.
    """
    table = uplift.uplift_table(responses, ["campaign_id"], min_cell_size=min_group_size)
    meta = campaigns[["campaign_id", "name", "channel", "segment", "start_date", "cost_per_contact"]].drop_duplicates("campaign_id")
    out = table.merge(meta, on="campaign_id", how="left")
    costs = channel_costs or {}
    fallback = out["channel"].map(lambda c: costs.get(c, np.nan) if isinstance(c, str) else np.nan)
    out["cost_per_contact"] = pd.to_numeric(out["cost_per_contact"], errors="coerce").fillna(fallback)
    out["incremental_revenue_per_contact"] = out["incremental_revenue"]
    out["incremental_revenue"] = out["incremental_revenue_per_contact"] * out["n_treated"]
    out["incremental_margin"] = out["incremental_revenue"] * margin_rate
    out["cost"] = out["cost_per_contact"] * out["n_treated"]
    out["incremental_roi"] = np.where(out["cost"] > 0, (out["incremental_margin"] - out["cost"]) / out["cost"].where(out["cost"] > 0),
                                      np.nan)
    out["start_date"] = pd.to_datetime(out["start_date"]).dt.date.astype(str)
    return out[RESULT_COLUMNS].sort_values(["start_date", "campaign_id"], kind="stable").reset_index(drop=True)


def write_campaign_results(con: duckdb.DuckDBPyConnection, results: pd.DataFrame, run_id: str) -> int:
    """Replace this run's rows of ``campaign_results``; return the rows written."""
    con.execute("DELETE FROM campaign_results WHERE run_id = ?", [run_id])
    if results.empty:
        return 0
    register_frame(con, "_cr_in", results.assign(run_id=run_id))
    try:
        con.execute("""
            INSERT INTO campaign_results (run_id, campaign_id, n_treated, n_control, rate_treated, rate_control, uplift,
                                          uplift_low, uplift_high, significant, incremental_revenue, cost, incremental_roi)
            SELECT run_id, campaign_id, n_treated, n_control, rate_treated, rate_control, uplift, uplift_low, uplift_high,
                   significant, incremental_revenue, cost, incremental_roi FROM _cr_in ORDER BY campaign_id
        """)
    finally:
        con.unregister("_cr_in")
    return len(results)


def campaigns_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Read the ``campaigns`` table (campaign_id, name, channel, segment, start_date, cost_per_contact, status)."""
    return to_frame(con.sql("SELECT campaign_id, name, channel, segment, start_date, cost_per_contact, status FROM campaigns "
                                "ORDER BY start_date, campaign_id"))


def results_totals(results: pd.DataFrame) -> dict:
    """Totals over the measured campaigns: revenue, margin, cost, global ROI, counts."""
    if results.empty:
        return {"campaigns": 0, "significant": 0, "profitable": 0, "incremental_revenue": 0.0, "incremental_margin": 0.0,
                "cost": 0.0, "roi": math.nan}
    cost = float(results["cost"].sum(skipna=True))
    margin = float(results["incremental_margin"].sum(skipna=True))
    return {
        "campaigns": int(len(results)),
        "significant": int((results["significant"] & (results["uplift"] > 0)).sum()),
        "profitable": int(((results["incremental_roi"] > 0) & results["significant"]).sum()),
        "incremental_revenue": float(results["incremental_revenue"].sum(skipna=True)),
        "incremental_margin": margin, "cost": cost,
        "roi": (margin - cost) / cost if cost > 0 else math.nan,
    }


def results_display(results: pd.DataFrame, currency: str = "EUR"):
    """Campaign results in French."""
    from crmlab.display import table

    t = results.copy()
    t["interval"] = [f"[{_pp(lo)} ; {_pp(hi)}]" for lo, hi in zip(t["uplift_low"], t["uplift_high"], strict=True)]
    t["significant"] = t["significant"].map({True: "oui", False: "non"})
    t["roi"] = [fr_percent(v, 0) if v == v else "–" for v in t["incremental_roi"]]
    t["name"] = t["name"].fillna(t["campaign_id"]) + np.where(t["thin"], " (petit groupe)", "")
    cols = ["name", "channel", "segment", "n_treated", "n_control", "rate_treated", "rate_control", "uplift", "interval",
            "significant", "incremental_revenue", "cost", "roi"]
    return table(t[cols], currency=currency,
                 formats={"n_treated": "int", "n_control": "int", "rate_treated": "pct", "rate_control": "pct", "uplift": "pp",
                          "incremental_revenue": "money", "cost": "money"},
                 labels={"name": "Campagne", "channel": "Canal", "segment": "Segment", "n_treated": "Ciblés",
                         "n_control": "Témoins", "rate_treated": "Taux ciblés", "rate_control": "Taux témoins",
                         "uplift": "Effet", "interval": "Intervalle à 95 %", "significant": "Significatif",
                         "incremental_revenue": "CA incrémental", "cost": "Coût", "roi": "ROI incrémental"})


def _pp(v: float) -> str:
    if v is None or v != v:
        return "–"
    return ("+" if v > 0 else "") + fr_number(100 * v, 1) + " pt"


def uplift_chart(results: pd.DataFrame):
    """Uplift of each campaign with its 95 % interval; the title names the best one."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, finish

    r = results.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(r), 3) + 1.2))
    y = np.arange(len(r))
    colors = [PALETTE[2] if s and u > 0 else PALETTE[3] if s else PALETTE[7] for s, u in zip(r["significant"], r["uplift"], strict=True)]
    ax.errorbar(100 * r["uplift"], y, xerr=[100 * (r["uplift"] - r["uplift_low"]), 100 * (r["uplift_high"] - r["uplift"])],
                fmt="none", ecolor="#999999", capsize=3)
    ax.scatter(100 * r["uplift"], y, color=colors, zorder=3)
    ax.axvline(0, color="#333333", lw=0.8)
    ax.set_yticks(y, [f"{n} ({c})" for n, c in zip(r["name"].fillna(r["campaign_id"]), r["channel"], strict=True)])
    tot = results_totals(results)
    if len(results):
        best = results.sort_values("uplift", ascending=False).iloc[0]
        title = (f"{tot['significant']} campagne(s) sur {tot['campaigns']} ont un effet prouvé ; "
                 f"la plus forte : {best['name'] or best['campaign_id']} ({_pp(best['uplift'])})")
    else:
        title = "Aucune campagne mesurable"
    return finish(fig, title, "effet sur le taux d'achat (points, intervalle à 95 %)", "")


def roi_chart(results: pd.DataFrame, currency: str = "EUR"):
    """Incremental margin minus cost per campaign; the title says which plans paid."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, axis_fr, finish

    r = results.assign(net=results["incremental_margin"] - results["cost"]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(r), 3) + 1.2))
    ax.barh([n or c for n, c in zip(r["name"], r["campaign_id"], strict=True)], r["net"],
            color=[PALETTE[2] if v > 0 else PALETTE[3] for v in r["net"]])
    ax.axvline(0, color="#333333", lw=0.8)
    axis_fr(ax, "x", "money", 0, currency)
    paid = int((r["net"] > 0).sum())
    title = f"{paid} campagne(s) sur {len(r)} ont rapporté plus de marge qu'elles n'ont coûté"
    return finish(fig, title, f"marge incrémentale − coût ({currency})", "")


# --------------------------------------------------------------------------- segments


def snapshots(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Dates of the ``segments`` snapshots (ascending, ISO)."""
    return [str(r[0]) for r in con.execute("SELECT DISTINCT as_of FROM segments ORDER BY 1").fetchall()]


def segment_sizes(con: duckdb.DuckDBPyConnection, revenue_months: int = 12) -> pd.DataFrame:
    """Count customers, revenue (``revenue_months`` before each snapshot) and mean CLV per segment and snapshot, in SQL.

    Returns
    -------
    DataFrame
        ``as_of, segment, customers, revenue, clv, customer_share, revenue_share``.
    """
    out = to_frame(con.sql("""
        WITH s AS (SELECT as_of, customer_id, rfm_segment AS segment, clv FROM segments),
        rev AS (
            SELECT s.as_of, s.customer_id, sum(t.amount) AS revenue
            FROM s JOIN transactions t ON t.customer_id = s.customer_id
             AND t.ts < CAST(s.as_of AS TIMESTAMP) AND t.ts >= CAST(s.as_of AS TIMESTAMP) - to_months(CAST(? AS INTEGER))
            GROUP BY ALL
        )
        SELECT CAST(s.as_of AS VARCHAR) AS as_of, s.segment, count(*) AS customers,
               coalesce(sum(rev.revenue), 0) AS revenue, avg(s.clv) AS clv
        FROM s LEFT JOIN rev USING (as_of, customer_id)
        GROUP BY ALL ORDER BY as_of, customers DESC, segment
    """, params=[int(revenue_months)]))
    if out.empty:
        return out.assign(customer_share=pd.Series(dtype=float), revenue_share=pd.Series(dtype=float))
    out["customer_share"] = out["customers"] / out.groupby("as_of")["customers"].transform("sum")
    tot = out.groupby("as_of")["revenue"].transform("sum")
    out["revenue_share"] = np.where(tot > 0, out["revenue"] / tot.where(tot > 0), np.nan)
    return out


def _signed_count(n: float) -> str:
    """Format a change of a count in French: ``+1 746``, ``−12`` (narrow spaces, true minus sign)."""
    return ("+" if n >= 0 else "−") + fr_number(abs(int(n)))


def _segment_scheme(labels: set[str]) -> tuple[str, int] | None:
    from crmlab import rfm

    for scheme in ("rf_grid", "rfm_11"):
        try:
            if labels <= set(rfm.segment_order(scheme)):
                return scheme, 0
        except Exception:  # noqa: BLE001 - unknown scheme in this version
            continue
    return None


def segment_evolution(con: duckdb.DuckDBPyConnection, p: dict) -> dict:
    """Segment sizes across snapshots, the migration matrix between the last two, gains and losses.

    With two snapshots or more in ``segments``, the last two are compared. With one, the
    segments ``comparison_months`` earlier are recomputed from the transactions with the
    same scheme (when it is a standard one, ``rf_grid`` or ``rfm_11``, and the bins of the
    snapshot's scores).

    Returns
    -------
    dict
        ``sizes`` (:func:`segment_sizes`), ``date_before``, ``date_after``, ``counts`` and
        ``pct`` (:func:`crmlab.segmenter.transition_matrix`, or None), ``flows``:
        DataFrame ``segment, before, after, change, gained, lost`` (customers),
        ``moved_share``, ``source`` (``snapshots`` / ``recomputed`` / ``none``).
    """
    from crmlab import rfm
    from crmlab.segmenter import NEW_LABEL, transition_matrix

    sizes = segment_sizes(con)
    dates = snapshots(con)
    out = {"sizes": sizes, "date_before": None, "date_after": dates[-1] if dates else None, "counts": None, "pct": None,
           "flows": pd.DataFrame(columns=["segment", "before", "after", "change", "gained", "lost"]),
           "moved_share": math.nan, "source": "none"}
    if not dates:
        return out
    after = to_frame(con.sql("SELECT customer_id, rfm_segment AS segment FROM segments WHERE as_of = CAST(? AS DATE)",
                        params=[dates[-1]]))
    order = list(sizes[sizes["as_of"] == dates[-1]].sort_values("revenue", ascending=False)["segment"])
    if len(dates) >= 2:
        before = to_frame(con.sql("SELECT customer_id, rfm_segment AS segment FROM segments WHERE as_of = CAST(? AS DATE)",
                             params=[dates[-2]]))
        out.update(date_before=dates[-2], source="snapshots")
    else:
        scheme = _segment_scheme(set(after["segment"].dropna().unique()))
        if scheme is None:
            return out
        bins = int(con.execute("SELECT max(r_score) FROM segments WHERE as_of = CAST(? AS DATE)", [dates[-1]]).fetchall()[0][0] or 5)
        bins = min(max(bins, 3), 10)
        t0 = (pd.Timestamp(dates[-1]) - pd.DateOffset(months=p.get("comparison_months", 6))).date().isoformat()
        if scheme[0] == "rf_grid":  # R x F only: the one-pass SQL (same scores as compute_rfm, orders basis)
            b = rfm.rf_grid_at(con, [t0], bins=bins)
        else:
            b = rfm.compute_rfm(con, t0, bins=bins)
            b = rfm.assign_segments(b, scheme[0], bins) if len(b) else b
        if b.empty:
            return out
        before = b[["customer_id", "rfm_segment"]].rename(columns={"rfm_segment": "segment"})
        before["segment"] = before["segment"].astype(str)
        out.update(date_before=t0, source="recomputed")
        sizes_before = before.groupby("segment").size().rename("customers").reset_index().assign(as_of=t0)
        out["sizes_before_recomputed"] = sizes_before
    counts, pct = transition_matrix(before, after, order or None)
    out["counts"], out["pct"] = counts, pct
    m = after.merge(before.rename(columns={"segment": "before"}), on="customer_id", how="left")
    m["before"] = m["before"].astype(object).where(m["before"].notna(), NEW_LABEL)
    old = m[m["before"] != NEW_LABEL]
    out["moved_share"] = float((old["before"] != old["segment"]).mean()) if len(old) else math.nan
    segs = list(dict.fromkeys(list(order) + sorted(set(before["segment"].dropna().unique()) - set(order))))
    # counts per segment in one pass each (not one scan of every customer per segment)
    n_before = before["segment"].value_counts()
    n_after = after["segment"].value_counts()
    moved = m[(m["segment"] != m["before"]).to_numpy()]
    n_gained = moved["segment"].value_counts()  # now in s, before elsewhere
    n_lost = moved["before"].value_counts()     # before in s, now elsewhere
    rows = []
    for s in segs:
        b_n, a_n = int(n_before.get(s, 0)), int(n_after.get(s, 0))
        rows.append({"segment": s, "before": b_n, "after": a_n, "change": a_n - b_n,
                     "gained": int(n_gained.get(s, 0)), "lost": int(n_lost.get(s, 0))})
    out["flows"] = pd.DataFrame(rows)
    return out


def evolution_chart(evo: dict):
    """Change of size of each segment between the two dates; the title names the biggest mover."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, finish

    f = evo["flows"].sort_values("change")
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(f), 3) + 1.2))
    ax.barh(f["segment"], f["change"], color=[PALETTE[2] if v >= 0 else PALETTE[3] for v in f["change"]])
    ax.axvline(0, color="#333333", lw=0.8)
    if len(f):
        up, down = f.iloc[-1], f.iloc[0]
        title = (f"{up['segment']} gagne le plus ({_signed_count(up['change'])} clients), "
                 f"{down['segment']} perd le plus ({_signed_count(down['change'])})")
    else:
        title = "Pas d'évolution mesurable des segments"
    return finish(fig, title, f"évolution du nombre de clients du {_fr_date(evo['date_before'])} au {_fr_date(evo['date_after'])}", "")


def migration_chart(evo: dict):
    """Heat map of the migration matrix (row shares)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crmlab.charts import finish

    pct = evo["pct"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * max(len(pct), 4) + 1.5))
    sns.heatmap(100 * pct, annot=True, fmt=".0f", cmap="Blues", cbar=False, ax=ax, annot_kws={"size": 8})
    diag = [pct.loc[s, s] for s in pct.index if s in pct.columns]
    stay = float(np.nanmean(diag)) if diag else math.nan
    title = f"En moyenne {fr_percent(stay, 0)} des clients d'un segment y restent (lignes : avant, colonnes : après)"
    return finish(fig, title, "segment après", "segment avant")


def _fr_date(d) -> str:
    return pd.Timestamp(d).strftime("%d/%m/%Y") if d else "–"


# --------------------------------------------------------------------------- collect and feed


def collect_measures(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Compute the « Collecter » measure from ``interactions``, per operation and channel, in SQL.

    Returns
    -------
    DataFrame
        ``operation, channel, collected, customers, prospects, data_items`` (contact fields
        and consents brought).
    """
    return to_frame(con.sql("""
        SELECT coalesce(i.operation, '(sans opération)') AS operation, i.channel, count(*) AS collected,
               count(DISTINCT i.customer_id) AS customers,
               count(DISTINCT i.customer_id) FILTER (WHERE c.is_prospect) AS prospects,
               sum((i.email IS NOT NULL)::INT + (i.phone IS NOT NULL)::INT + (i.address IS NOT NULL)::INT
                   + (i.postal_code IS NOT NULL)::INT + (i.city IS NOT NULL)::INT
                   + (i.consent_channel IS NOT NULL AND i.consent_opted_in IS NOT NULL)::INT) AS data_items
        FROM interactions i LEFT JOIN customers c USING (customer_id)
        GROUP BY ALL ORDER BY collected DESC, operation, channel
    """))


def collect_chart(measures: pd.DataFrame):
    """Chart the records and data items collected per operation."""
    import matplotlib.pyplot as plt

    from crmlab.charts import PALETTE, finish

    g = measures.groupby("operation")[["collected", "data_items"]].sum().sort_values("data_items")
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(g), 3) + 1.2))
    y = np.arange(len(g))
    ax.barh(y - 0.2, g["collected"], height=0.4, color=PALETTE[0], label="contacts")
    ax.barh(y + 0.2, g["data_items"], height=0.4, color=PALETTE[1], label="données apportées")
    ax.set_yticks(y, g.index)
    ax.legend(frameon=False)
    title = f"« {g.index[-1]} » apporte le plus de données ({fr_number(g['data_items'].iloc[-1])})" if len(g) else \
        "Aucune interaction collectée"
    return finish(fig, title, "nombre", "")


def alimenter_measures(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """Read the « Alimenter » measure: share of each field filled by each channel, from step 05's KPIs.

    Returns
    -------
    DataFrame
        ``field, channel, share`` of the latest run of step 05 (or ``run_id``); empty when
        step 05 never ran.
    """
    rid = run_id or _latest_run(con, "05")
    if rid is None:
        return pd.DataFrame(columns=["field", "channel", "share"])
    k = to_frame(con.sql("SELECT dimension, value FROM kpis WHERE step = '05' AND run_id = ? AND kpi = 'rempli par canal' "
                             "ORDER BY dimension", params=[rid]))
    parts = k["dimension"].str.split("|", n=1, expand=True) if len(k) else pd.DataFrame(columns=[0, 1])
    return pd.DataFrame({"field": parts[0] if len(k) else [], "channel": parts[1] if len(k) else [], "share": k["value"]})


def alimenter_chart(meas: pd.DataFrame):
    """Stacked bars of the fill per channel (shares of customers)."""
    from crmlab.alimenter import channel_chart, field_label

    return channel_chart(meas.assign(label=meas["field"].map(field_label), customers=meas["share"]))


# --------------------------------------------------------------------------- scorecard


def _latest_run(con: duckdb.DuckDBPyConnection, step: str, exclude: str | None = None, before=None) -> str | None:
    rows = con.execute("""SELECT run_id, max(recorded_at) AS t FROM kpis WHERE step = ? AND run_id IS DISTINCT FROM ?
                          GROUP BY run_id ORDER BY t DESC, run_id DESC""", [step, exclude]).fetchall()
    for rid, t in rows:
        if before is None or t < before:
            return rid
    return None


def kpi_history(con: duckdb.DuckDBPyConnection, n_runs: int = 5) -> pd.DataFrame:
    """Headline KPIs (``dimension = ''``) of the last ``n_runs`` runs of each step.

    Returns
    -------
    DataFrame
        ``step, run_id, kpi, value, unit, as_of, recorded_at, rank`` (rank 1 = latest run of the step).
        An NPS stored by earlier versions as a share difference (unit ``score``, −1..1) is
        converted to points (unit :data:`crmlab.collecter.NPS_UNIT`, −100..+100), so runs compare.
    """
    return to_frame(con.sql(f"""
        WITH r AS (SELECT step, run_id, max(recorded_at) AS t FROM kpis GROUP BY 1, 2),
        rr AS (SELECT *, row_number() OVER (PARTITION BY step ORDER BY t DESC, run_id DESC) AS rank FROM r)
        SELECT k.step, k.run_id, k.kpi,
               CASE WHEN k.kpi = 'NPS' AND k.unit = 'score' THEN 100 * k.value ELSE k.value END AS value,
               CASE WHEN k.kpi = 'NPS' AND k.unit = 'score' THEN '{NPS_UNIT}' ELSE k.unit END AS unit,
               k.as_of, rr.t AS recorded_at, rr.rank
        FROM kpis k JOIN rr USING (step, run_id)
        WHERE coalesce(k.dimension, '') = '' AND rr.rank <= ?
        ORDER BY k.step, rr.rank, k.kpi
    """, params=[int(n_runs)]))


def _headline(step: str) -> list[str] | None:
    """``HEADLINE_KPIS`` of a step's module, if it declares them."""
    import importlib

    from crmlab.params import STEPS

    module = {c: m for c, _, m, _ in STEPS}.get(step)
    try:
        wanted = getattr(importlib.import_module(module), "HEADLINE_KPIS", None) if module else None
    except Exception:  # noqa: BLE001 - a step module that does not import has no headline list
        return None
    return list(wanted) if wanted else None


def scorecard(con: duckdb.DuckDBPyConnection, targets: dict, extra: pd.DataFrame | None = None,
              run_id: str | None = None, headline_only: bool = True) -> pd.DataFrame:
    """Build the scorecard: every headline KPI of each step's latest run, its target, status and trend.

    Parameters
    ----------
    targets : dict
        ``kpi`` or ``"NN:kpi"`` → ``"op threshold"`` (see :func:`parse_target`).
    extra : DataFrame, optional
        KPIs computed now (``step, kpi, value, unit``), e.g. step 06's own; they replace
        stored ones of the same step and name.
    run_id : str, optional
        Run whose KPIs are "current" for a step when it has some (default: each step's latest).
    headline_only : bool
        Keep, for a step whose module declares ``HEADLINE_KPIS``, only those and the KPIs
        with a target (other steps: every KPI without dimension).

    Returns
    -------
    DataFrame
        ``measure, step, kpi, value, unit, target, op, threshold, reached`` (True / False /
        None without target), ``previous`` (same KPI in the step's previous run),
        ``change`` (value − previous), ``trend`` (``amélioration``, ``dégradation``,
        ``stable``, ``en hausse``, ``en baisse`` or ``''``), ``history`` (list of earlier
        values, oldest first).
    """
    hist = kpi_history(con, 50)
    if extra is not None and len(extra) and len(hist):
        # steps computed now: every stored run of theirs is an earlier one
        es = set(extra["step"])
        hist = hist[~(hist["step"].isin(es) & (hist["run_id"] == run_id))].copy()
        hist.loc[hist["step"].isin(es), "rank"] += 1
    if run_id is not None and len(hist):
        # the current run is rank 1 for the steps it ran
        mine = hist[hist["run_id"] == run_id]
        for step in mine["step"].unique():
            ranks = hist.loc[(hist["step"] == step) & (hist["run_id"] == run_id), "rank"].iloc[0]
            sel = hist["step"] == step
            hist.loc[sel & (hist["rank"] < ranks), "rank"] += 1
            hist.loc[sel & (hist["run_id"] == run_id), "rank"] = 1
    cur = hist[hist["rank"] == 1][["step", "kpi", "value", "unit"]].copy()
    if headline_only and len(cur):
        keep = []
        for step, k in zip(cur["step"], cur["kpi"], strict=True):
            wanted = _headline(step)
            keep.append(wanted is None or k in wanted or f"{step}:{k}" in targets or k in targets)
        cur = cur[keep]
    if extra is not None and len(extra):
        cur = cur.merge(extra[["step", "kpi"]], on=["step", "kpi"], how="left", indicator=True)
        cur = cur[cur["_merge"] == "left_only"].drop(columns="_merge")
        cur = pd.concat([cur, extra[["step", "kpi", "value", "unit"]]], ignore_index=True)
    prev = hist[hist["rank"] > 1].sort_values(["step", "kpi", "rank"])
    first_prev = prev.drop_duplicates(["step", "kpi"])[["step", "kpi", "value"]].rename(columns={"value": "previous"})
    out = cur.merge(first_prev, on=["step", "kpi"], how="left")
    hlists = prev.sort_values("rank", ascending=False).groupby(["step", "kpi"])["value"].apply(list)
    out["history"] = [hlists.get((s, k), []) for s, k in zip(out["step"], out["kpi"], strict=True)]
    out["measure"] = [("Ensemble" if k == "objectifs atteints" else MEASURES.get(s, ("Autre", ""))[0])
                      for s, k in zip(out["step"], out["kpi"], strict=True)]
    tg = []
    for s, k in zip(out["step"], out["kpi"], strict=True):
        spec = targets.get(f"{s}:{k}", targets.get(k))
        tg.append(parse_target(spec) if spec is not None else (None, math.nan))
    out["op"] = [t[0] for t in tg]
    out["threshold"] = [t[1] for t in tg]
    out["target"] = [f"{op} {_fmt(th, u)}" if op else "" for (op, th), u in zip(tg, out["unit"], strict=True)]
    out["reached"] = pd.Series([reached(v, op, th) if op else None for v, (op, th) in zip(out["value"], tg, strict=True)],
                               index=out.index, dtype=object)
    out["change"] = out["value"] - out["previous"]
    trends = []
    for k, ch, op in zip(out["kpi"], out["change"], out["op"], strict=True):
        if ch != ch:
            trends.append("")
            continue
        direction = DIRECTIONS.get(k, 0)
        if op in (">=", ">"):
            direction = 1
        elif op in ("<=", "<"):
            direction = -1
        if abs(ch) < 1e-9:
            trends.append("stable")
        elif direction == 0:
            trends.append("en hausse" if ch > 0 else "en baisse")
        else:
            trends.append("amélioration" if ch * direction > 0 else "dégradation")
    out["trend"] = trends
    order = {"Ensemble": -1, "Organiser": 0, "Segmenter": 1, "Interagir": 2, "Collecter": 3, "Alimenter": 4}
    out = out.assign(_o=out["measure"].map(order).fillna(9)).sort_values(["_o", "step"], kind="stable").drop(columns="_o")
    return out[["measure", "step", "kpi", "value", "unit", "target", "op", "threshold", "reached", "previous", "change",
                "trend", "history"]].reset_index(drop=True)


def _fmt(v: float, unit: str, currency: str = "EUR") -> str:
    if v is None or v != v:
        return "–"
    if unit == "part":
        return fr_percent(v)
    if unit == "%":
        return fr_percent(v / 100)
    if unit in ("devise", "EUR", "USD", "GBP", "CHF"):
        return fr_money(v, currency if unit == "devise" else unit)
    if unit == NPS_UNIT:
        return fr_nps(v)
    return fr_number(v, 0 if abs(v) >= 100 or float(v).is_integer() else 2)


def scorecard_display(card: pd.DataFrame, currency: str = "EUR"):
    """Show the scorecard as a French table with ✓ / ✗ and trend arrows."""
    from crmlab.display import table

    t = card.copy()
    t["Valeur"] = [_fmt(v, u, currency) for v, u in zip(t["value"], t["unit"], strict=True)]
    t["Précédente"] = [_fmt(v, u, currency) for v, u in zip(t["previous"], t["unit"], strict=True)]
    t["Objectif"] = t["target"].replace("", "–")
    t["Atteint"] = t["reached"].map(lambda r: "✓ atteint" if r is True else ("✗ non atteint" if r is False else "–"))
    arrows = {"amélioration": "↗ amélioration", "dégradation": "↘ dégradation", "stable": "→ stable",
              "en hausse": "↑ en hausse", "en baisse": "↓ en baisse", "": "–"}
    t["Tendance"] = t["trend"].map(arrows)
    t = t.rename(columns={"measure": "Mesure", "step": "Étape", "kpi": "Indicateur"})
    return table(t[["Mesure", "Étape", "Indicateur", "Valeur", "Objectif", "Atteint", "Précédente", "Tendance"]])


def own_kpis(results: pd.DataFrame, card: pd.DataFrame | None = None) -> pd.DataFrame:
    """Step 06's headline KPIs: targets reached, profitable campaigns, global incremental ROI and revenue.

    Returns
    -------
    DataFrame
        ``kpi, dimension, value, unit`` (headline rows ``dimension = ''``, then one row
        per campaign).
    """
    tot = results_totals(results)
    with_target = card[card["reached"].notna()] if card is not None else pd.DataFrame()
    rows = [
        ("objectifs atteints", "", float(with_target["reached"].astype(bool).mean()) if len(with_target) else math.nan, "part"),
        ("campagnes rentables", "", float(tot["profitable"]), "campagnes"),
        ("ROI incrémental global", "", tot["roi"], "part"),
        ("CA incrémental des campagnes", "", tot["incremental_revenue"], "devise"),
    ]
    for r in results.itertuples(index=False):
        rows.append(("uplift", r.campaign_id, r.uplift, "part"))
        rows.append(("ROI incrémental", r.campaign_id, r.incremental_roi, "part"))
    return pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])


# --------------------------------------------------------------------------- executive summary


def alerts_context(con: duckdb.DuckDBPyConnection) -> dict | None:
    """Tell what the alert count of step 03's latest run rested on.

    In the chain, step 03 runs before step 04 collects the inbound contacts: on a first
    run it has no survey answer or after-sales ticket to read, and with a single segment
    snapshot no drop of ``p_alive`` to see, so its zero alerts is a real but expected zero.

    Returns
    -------
    dict or None
        ``alerts`` (customers alerted), ``contacts_before`` (inbound contacts in the
        database when step 03 ran), ``contacts_after`` (collected since: step 04 of the same
        run or later), ``snapshots`` (segment snapshots up to step 03's ``as_of``); ``None``
        when step 03 never recorded its alerts.
    """
    rid = _latest_run(con, "03")
    if rid is None:
        return None
    row = con.execute("""SELECT value, recorded_at, as_of FROM kpis WHERE step = '03' AND run_id = ?
                         AND kpi = 'alertes clients' AND coalesce(dimension, '') = ''""", [rid]).fetchall()
    if not row:
        return None
    value, at, as_of = row[0]
    before, after = con.execute("""
        SELECT count(*) FILTER (WHERE NOT coalesce(g.after, false)), count(*) FILTER (WHERE g.after)
        FROM interactions i LEFT JOIN (
            SELECT sha256, source, bool_or((run_id = ? AND step = '04') OR loaded_at > ?) AS after
            FROM ingestions GROUP BY ALL) g ON g.sha256 = i.sha256 AND g.source = i.source
    """, [rid, at]).fetchall()[0]
    snaps = con.execute("SELECT count(DISTINCT as_of) FROM segments WHERE ? IS NULL OR as_of <= ?", [as_of, as_of]).fetchall()[0][0]
    return {"alerts": int(value) if value == value else 0, "contacts_before": int(before), "contacts_after": int(after),
            "snapshots": int(snaps)}


def alerts_sentence(ctx: dict | None) -> str | None:
    """French sentence on step 03's alerts (see :func:`alerts_context`); ``None`` without context."""
    if ctx is None:
        return None
    n = ctx["alerts"]
    if n:
        return (f"**{fr_number(n)} client(s) en alerte** à l'étape 03 (valeur en danger, détracteur récent, ticket SAV "
                "ouvert) : la liste complète est transmise au service client (exports/alertes.csv).")
    missing = []
    if ctx["contacts_before"] == 0:
        missing.append("aucun contact entrant n'était encore collecté (l'étape 04 vient après), donc ni réponse d'enquête "
                       "ni ticket SAV à lire")
    if ctx["snapshots"] < 2:
        missing.append("un seul instantané de segments existait, or une baisse de probabilité d'activité se mesure entre deux")
    if not missing:
        return ("**Aucune alerte client** à l'étape 03 : aucun client précieux en perte d'activité, aucun détracteur "
                "récent, aucun ticket SAV ouvert.")
    text = "**Aucune alerte client** à l'étape 03, faute de données pour les déclencher : " + " ; ".join(missing) + "."
    if ctx["contacts_after"]:
        text += (f" Les {fr_number(ctx['contacts_after'])} contacts collectés depuis (étape 04) seront lus à la prochaine "
                 "exécution de l'étape 03.")
    return text


def executive_summary(card: pd.DataFrame, results: pd.DataFrame, evo: dict | None = None,
                      fill: pd.DataFrame | None = None, currency: str = "EUR", alerts: dict | None = None) -> list[str]:
    """Write the French executive summary, computed from the figures.

    Parameters
    ----------
    card : DataFrame
        :func:`scorecard`.
    results : DataFrame
        :func:`campaign_results`.
    evo : dict, optional
        :func:`segment_evolution`.
    fill : DataFrame, optional
        ``field, before, after`` fill rates of the last feed (step 05).
    alerts : dict, optional
        :func:`alerts_context`.

    Returns
    -------
    list of str
        Sentences: targets reached, what improved, what degraded, which plan paid, how the
        segments moved, what the last feed brought, the customer alerts of step 03 (and why
        there are none, when there are none).
    """
    out = []
    tg = card[card["reached"].notna()]
    if len(tg):
        ok = tg[tg["reached"].astype(bool)]
        ko = tg[~tg["reached"].astype(bool)]
        text = f"**{len(ok)} objectif(s) sur {len(tg)}** atteint(s)"
        if len(ko):
            text += " ; manqué(s) : " + ", ".join(f"{k} ({_fmt(v, u, currency)} pour {t})"
                                                  for k, v, u, t in zip(ko["kpi"], ko["value"], ko["unit"], ko["target"], strict=True))
        out.append(text + ".")
    else:
        out.append("Aucun objectif chiffré n'est fixé dans les paramètres (mesurer.targets) : le tableau de bord montre les valeurs sans verdict.")
    imp = card[card["trend"] == "amélioration"]
    deg = card[card["trend"] == "dégradation"]
    if len(imp) or len(deg):
        if len(imp):
            out.append("Ce qui s'améliore depuis l'exécution précédente : " + ", ".join(
                f"{k} ({_fmt(p, u, currency)} → {_fmt(v, u, currency)})"
                for k, p, v, u in zip(imp["kpi"], imp["previous"], imp["value"], imp["unit"], strict=True)) + ".")
        if len(deg):
            out.append("Ce qui se dégrade : " + ", ".join(
                f"{k} ({_fmt(p, u, currency)} → {_fmt(v, u, currency)})"
                for k, p, v, u in zip(deg["kpi"], deg["previous"], deg["value"], deg["unit"], strict=True)) + ".")
    elif card["previous"].notna().any():
        out.append("Aucun indicateur suivi n'a bougé depuis l'exécution précédente.")
    else:
        out.append("Première exécution mesurée : les tendances apparaîtront à la prochaine.")
    if fill is not None and len(fill):
        f = fill.assign(delta=fill["after"] - fill["before"])
        up = f[f["delta"] > 0.0005].sort_values("delta", ascending=False)
        if len(up):
            r = up.iloc[0]
            out.append(f"Le dernier lot de données a surtout enrichi **{r.get('label', r['field'])}** "
                       f"({fr_percent(r['before'])} → {fr_percent(r['after'])} des clients).")
    if len(results):
        tot = results_totals(results)
        solid = results[~results["thin"]]
        paid = results[(results["incremental_roi"] > 0) & results["significant"]].sort_values("incremental_roi", ascending=False)
        if len(paid):
            b = paid.iloc[0]
            out.append(f"Plan le plus rentable : **{b['name'] or b['campaign_id']}** ({b['channel']}, {b['segment']}) – "
                       f"effet {_pp(b['uplift'])} sur le taux d'achat, {fr_money(b['incremental_revenue'], currency)} de CA "
                       f"incrémental, ROI incrémental {fr_percent(b['incremental_roi'], 0)}.")
        else:
            out.append("Aucune campagne n'a à la fois un effet prouvé et une marge supérieure à son coût.")
        losers = results[results["incremental_roi"] < 0]
        out.append(f"Sur {tot['campaigns']} campagne(s) mesurée(s) ({len(solid)} avec des groupes suffisants), "
                   f"{tot['significant']} ont un effet prouvé ; ensemble elles ont rapporté "
                   f"{fr_money(tot['incremental_revenue'], currency)} de CA incrémental pour {fr_money(tot['cost'], currency)} de coût "
                   f"(ROI incrémental global {fr_percent(tot['roi'], 0)})"
                   + (f" ; {len(losers)} {'a' if len(losers) == 1 else 'ont'} coûté plus {'qu’elle n’a' if len(losers) == 1 else 'qu’elles n’ont'} rapporté."
                      if len(losers) else "."))
    else:
        out.append("Aucune campagne avec groupe témoin n'est encore mesurable.")
    if evo and len(evo.get("flows", [])):
        f = evo["flows"].sort_values("change")
        up, down = f.iloc[-1], f.iloc[0]
        out.append(f"Segments du {_fr_date(evo['date_before'])} au {_fr_date(evo['date_after'])} : **{up['segment']}** gagne "
                   f"{_signed_count(up['change'])} clients, **{down['segment']}** en perd {fr_number(abs(int(down['change'])))} ; "
                   f"{fr_percent(evo['moved_share'], 0)} des clients ont changé de segment.")
    sentence = alerts_sentence(alerts)
    if sentence:
        out.append(sentence)
    return out


def check_output(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Step 06's own checks before commit."""
    check(con, "SELECT campaign_id FROM campaign_results WHERE run_id = ? GROUP BY 1 HAVING count(*) > 1".replace("?", _lit(run_id)),
          "une ligne de résultat par campagne")
    check(con, f"SELECT campaign_id FROM campaign_results WHERE run_id = {_lit(run_id)} AND uplift IS NOT NULL "
               "AND NOT (uplift_low <= uplift AND uplift <= uplift_high)", "l'effet est dans son intervalle")
    check(con, f"SELECT campaign_id FROM campaign_results WHERE run_id = {_lit(run_id)} AND (n_treated < 0 OR n_control < 0)",
          "effectifs positifs")


def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


# --------------------------------------------------------------------------- per-step measures from kpis


def step_kpis(con: duckdb.DuckDBPyConnection, step: str, kpi: str, run_id: str | None = None) -> pd.DataFrame:
    """Rows ``dimension, value, unit`` of one KPI of a step's latest run (or ``run_id``)."""
    rid = run_id or _latest_run(con, step)
    if rid is None:
        return pd.DataFrame(columns=["dimension", "value", "unit"])
    return to_frame(con.sql("SELECT dimension, value, unit FROM kpis WHERE step = ? AND run_id = ? AND kpi = ? "
                                "ORDER BY dimension", params=[step, rid, kpi]))


def organiser_measures(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Completeness per field from step 01's latest KPIs: ``field, label, share`` (sorted, highest first)."""
    from crmlab.constituer import FIELD_LABELS

    k = step_kpis(con, "01", "complétude")
    k = k[k["dimension"] != ""]
    out = pd.DataFrame({"field": k["dimension"], "label": k["dimension"].map(lambda f: FIELD_LABELS.get(f, f)),
                        "share": k["value"].astype(float)})
    return out.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)


def organiser_chart(organiser: pd.DataFrame):
    """Completeness per field (step 01's chart on step 01's stored measure)."""
    from crmlab.constituer import completeness_chart

    return completeness_chart(organiser.sort_values("share", ascending=False, kind="stable"))


def fill_before_after(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Fill rates before / after the latest feed (step 05 KPIs): ``field, label, before, after``."""
    from crmlab.alimenter import field_label

    a = step_kpis(con, "05", "remplissage")
    b = step_kpis(con, "05", "remplissage avant")
    if a.empty:
        return pd.DataFrame(columns=["field", "label", "before", "after"])
    out = a.rename(columns={"dimension": "field", "value": "after"})[["field", "after"]].merge(
        b.rename(columns={"dimension": "field", "value": "before"})[["field", "before"]], on="field", how="left")
    out.insert(1, "label", out["field"].map(field_label))
    return out[["field", "label", "before", "after"]]


def truth_check(results: pd.DataFrame, truth_dir: str | None) -> tuple[float, pd.DataFrame] | None:
    """Share of campaigns whose true uplift (``truth/campaigns.csv``) lies inside the 95 % interval.

    Returns
    -------
    (share, table) or None
        ``table``: ``campaign_id, uplift, uplift_low, uplift_high, true_uplift, inside``;
        ``None`` when there is no truth file.
    """
    import os

    if not truth_dir or not os.path.exists(os.path.join(truth_dir, "campaigns.csv")):
        return None
    truth = pd.read_csv(os.path.join(truth_dir, "campaigns.csv"), dtype={"campaign_id": str})
    m = results.merge(truth[["campaign_id", "uplift_rate"]].rename(columns={"uplift_rate": "true_uplift"}), on="campaign_id")
    m["inside"] = (m["uplift_low"] <= m["true_uplift"]) & (m["true_uplift"] <= m["uplift_high"])
    return (float(m["inside"].mean()) if len(m) else math.nan,
            m[["campaign_id", "uplift", "uplift_low", "uplift_high", "true_uplift", "inside"]])
