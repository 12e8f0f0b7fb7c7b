"""Step 03 – interagir: which channel for which segment, the action plan, exports, alerts.

The notebook ``notebooks/03_interagir/interagir.ipynb`` calls, inside the step's
transaction:

1. :func:`campaign_responses` – every treated / control customer of the past campaigns,
   with the RFM segment they were in **at the campaign's start** (recomputed from the
   transactions with :mod:`crmlab.rfm`) and whether they bought within
   ``response_window_days``;
2. :func:`channel_uplift` – response rates, uplift and incremental revenue per segment ×
   channel (:func:`crmlab.uplift.uplift_table`), thin cells flagged; :func:`best_channels`;
3. :func:`plan_members` + :func:`channel_estimates` + :func:`choose_channels` – for each
   target planned by step 02, the channel that maximises the expected incremental margin
   minus the cost, among the channels the customer consented to and can be reached on,
   within an optional budget; :func:`plan_summary`;
4. :func:`store_plan` (planned campaigns per target × channel) and :func:`export_plan`
   (files in ``<out_dir>/exports/``);
5. :func:`alerts` – customers to call before it is too late;
6. :func:`kpis`, :func:`check_output`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from crmlab import collecter, exports, rfm, uplift
from crmlab.charts import fr_money, fr_number, fr_percent
from crmlab.db import check, now, register_frame, to_frame
from crmlab.errors import InputError, ParamsError
from crmlab.params import Param, closest

NO_SEGMENT = "Sans achat avant la campagne"
CHANNEL_LABELS = exports.CHANNEL_LABELS
DEFAULT_COSTS = {"email": 0.05, "sms": 0.10, "courrier": 1.20, "telephone": 4.00}

#: why a member of a target is (not) contacted
REASONS = {
    "planned": "contact prévu",
    "control": "groupe témoin (non contacté)",
    "no_channel": "aucun canal autorisé et joignable",
    "unprofitable": "aucun canal rentable",
    "budget": "hors budget",
}


def _check_costs(value, key):
    out = {}
    for ch, cost in value.items():
        if ch not in exports.CHANNELS:
            near = closest(str(ch), list(exports.CHANNELS))
            raise ParamsError(
                f"Canal inconnu « {ch} » dans « {key} »",
                hint=(f"Vouliez-vous dire « {near} » ? " if near else "") + f"Canaux possibles : {', '.join(exports.CHANNELS)}",
            )
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0:
            raise ParamsError(f"Le coût du canal « {ch} » dans « {key} » doit être un nombre positif (reçu : {cost!r})")
        out[str(ch)] = float(cost)
    if not out:
        raise ParamsError(f"« {key} » doit donner le coût d'au moins un canal", hint="Par exemple email: 0.05")
    return out


PARAMS: dict[str, Param] = {
    "response_window_days": Param("int", 30, "fenêtre de réponse : achat dans les N jours suivant le début d'une campagne", min=1, max=365),
    "rfm_frequency_basis": Param("str", "orders", "segments au début des campagnes : fréquence en commandes (orders) ou jours d'achat (days)", choices=("orders", "days")),
    "rfm_bins": Param("int", 5, "nombre de notes R et F des segments au début des campagnes", min=3, max=10),
    "plan_margin_rate": Param("float", 0.30, "taux de marge appliqué au chiffre d'affaires incrémental attendu", min=0.0, max=1.0),
    "channel_costs": Param("dict", dict(DEFAULT_COSTS), "coût d'un contact par canal (devise du run)", check=_check_costs),
    "budget": Param("float", None, "budget maximal du plan ; vide = pas de plafond", nullable=True, min=0.0),
    "min_cell_size": Param("int", 100, "effectif minimal de chaque groupe (ciblés, témoins) pour lire une case segment × canal", min=1),
    "export_format": Param("str", "csv", "format des fichiers de ciblage : csv (UTF-8, ;) ou xlsx", choices=("csv", "xlsx")),
    "alert_clv_quantile": Param("float", 0.80, "alerte : clients dont la CLV dépasse ce quantile (0,8 = 20 % les plus précieux)", min=0.0, max=1.0),
    "alert_p_alive_drop": Param("float", 0.20, "alerte : baisse de la probabilité d'activité entre deux instantanés (0–1)", min=0.0, max=1.0),
    "alert_survey_days": Param("int", 90, "alerte : réponses d'enquête des N derniers jours", min=1),
    "alert_detractor_max": Param("int", 6, "alerte : note NPS maximale d'un détracteur (0–10)", min=0, max=10),
}


def output_dir(p: dict) -> Path:
    """Run folder (``out_dir``), else the database's folder."""
    folder = Path(p.get("out_dir") or Path(p["database"]).parent)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resolve_as_of(con: duckdb.DuckDBPyConnection, p: dict) -> str:
    """``p["as_of"]`` or the day after the last transaction (also stored in ``p``)."""
    if p.get("as_of"):
        return str(p["as_of"])
    last = con.execute("SELECT max(ts) FROM transactions").fetchall()[0][0]
    if last is None:
        raise InputError("La table des transactions est vide", hint="Lancez d'abord l'étape 01 (constituer)")
    p["as_of"] = (pd.Timestamp(last).normalize() + pd.Timedelta(days=1)).date().isoformat()
    return p["as_of"]


# --------------------------------------------------------------------------- 1. responses


def segments_at(con: duckdb.DuckDBPyConnection, dates, *, bins: int = 5, frequency_basis: str = "orders") -> pd.DataFrame:
    """RFM segment (default R × F grid) of every customer at each date, from the transactions.

    Same result as :func:`crmlab.rfm.compute_rfm` (purchases strictly before the date) and
    :func:`crmlab.rfm.assign_segments` date by date, in one pass over the transactions
    (:func:`crmlab.rfm.rf_grid_at`).

    Returns
    -------
    DataFrame
        ``as_of`` (date string), ``customer_id``, ``segment``, sorted by date and customer.
    """
    seg = rfm.rf_grid_at(con, list(dates), bins=bins, frequency_basis=frequency_basis)
    return seg[["as_of", "customer_id", "rfm_segment"]].rename(columns={"rfm_segment": "segment"})


def campaign_responses(con: duckdb.DuckDBPyConnection, p: dict) -> pd.DataFrame:
    """Treated and control customers of the past campaigns and their response.

    A past campaign is any campaign not ``planned`` whose response window
    (``response_window_days`` from its start, or from the contact date when known) ends
    before ``as_of``. A customer listed in both groups of one campaign is left out.

    Returns
    -------
    DataFrame
        ``campaign_id, channel, start_date, customer_id, grp`` (treatment / control),
        ``segment`` (at the campaign's start, :data:`NO_SEGMENT` without earlier purchase),
        ``responded`` (bool: a purchase with a positive amount in the window),
        ``revenue`` (amount bought in the window).
    """
    as_of = resolve_as_of(con, p)
    window = int(p["response_window_days"])
    frame = to_frame(con.sql("""
        WITH c AS (
            SELECT campaign_id, lower(channel) AS channel, CAST(start_date AS DATE) AS start_date
            FROM campaigns
            WHERE coalesce(status, '') <> 'planned' AND start_date IS NOT NULL AND channel IS NOT NULL
              AND CAST(start_date AS DATE) + to_days(CAST(? AS INTEGER)) <= CAST(? AS DATE)
        ), k AS (
            SELECT cc.campaign_id, cc.customer_id, any_value(cc.grp) AS grp,
                   min(coalesce(CAST(cc.contacted_at AS DATE), c.start_date)) AS t0,
                   any_value(c.channel) AS channel, any_value(c.start_date) AS start_date
            FROM campaign_contacts cc JOIN c USING (campaign_id)
            WHERE cc.customer_id IS NOT NULL AND cc.grp IN ('treatment', 'control')
            GROUP BY cc.campaign_id, cc.customer_id
            HAVING count(DISTINCT cc.grp) = 1
        )
        SELECT k.campaign_id, k.channel, strftime(k.start_date, '%Y-%m-%d') AS start_date, k.customer_id, k.grp,
               count(t.transaction_id) > 0 AS responded, coalesce(sum(t.amount), 0.0) AS revenue
        FROM k LEFT JOIN transactions t
          ON t.customer_id = k.customer_id AND t.amount > 0
         AND t.ts >= k.t0 AND t.ts < k.t0 + to_days(CAST(? AS INTEGER))
        GROUP BY ALL
        ORDER BY k.campaign_id, k.customer_id
    """, params=[window, as_of, window]))
    if frame.empty:
        return frame.assign(segment=pd.Series(dtype=object))
    keys = frame[["start_date", "customer_id"]].rename(columns={"start_date": "as_of"})
    seg = rfm.rf_grid_at(con, keys["as_of"].unique(), bins=p["rfm_bins"], frequency_basis=p["rfm_frequency_basis"],
                         keys=keys)
    seg = seg[["as_of", "customer_id", "rfm_segment"]].rename(columns={"as_of": "start_date", "rfm_segment": "segment"})
    out = frame.merge(seg, on=["start_date", "customer_id"], how="left")
    out["segment"] = out["segment"].fillna(NO_SEGMENT)
    out["responded"] = out["responded"].astype(bool)
    return out


def campaigns_table(responses: pd.DataFrame, p: dict) -> pd.DataFrame:
    """Uplift of each past campaign (all its segments together)."""
    return uplift.uplift_table(responses, ["campaign_id", "channel"], min_cell_size=p["min_cell_size"])


def channel_uplift(responses: pd.DataFrame, p: dict) -> pd.DataFrame:
    """Uplift per segment × channel (see :func:`crmlab.uplift.uplift_table`), thin cells flagged."""
    return uplift.uplift_table(responses, ["segment", "channel"], min_cell_size=p["min_cell_size"])


def best_channels(table: pd.DataFrame) -> pd.DataFrame:
    """Best channel by uplift of the response rate for each segment with enough data.

    Returns
    -------
    DataFrame
        ``segment, channel, uplift, uplift_low, uplift_high, n_options, runner_up,
        confirmed`` (:func:`crmlab.uplift.best_by`).
    """
    return uplift.best_by(table, "segment", "channel", "uplift")


def uplift_display(table: pd.DataFrame, currency: str = "EUR"):
    """French table of the segment × channel uplifts."""
    from crmlab.display import table as ftable

    t = table.copy()
    t["channel"] = t["channel"].map(lambda c: CHANNEL_LABELS.get(c, c))
    t["interval"] = [f"[{_pp(lo)} ; {_pp(hi)}]" for lo, hi in zip(t["uplift_low"], t["uplift_high"], strict=True)]
    t["note"] = np.where(t["thin"], "effectif trop faible : ne pas conclure",
                         np.where(t["significant"], "effet démontré", "effet non démontré"))
    cols = ["segment", "channel", "n_treated", "n_control", "rate_treated", "rate_control", "uplift", "interval",
            "incremental_revenue", "note"]
    return ftable(t[cols], formats={"n_treated": "int", "n_control": "int", "rate_treated": "pct", "rate_control": "pct",
                                    "uplift": "pp", "incremental_revenue": "money2"},
                  labels={"segment": "Segment (au début)", "channel": "Canal", "n_treated": "Ciblés", "n_control": "Témoins",
                          "rate_treated": "Taux ciblés", "rate_control": "Taux témoins", "uplift": "Uplift",
                          "interval": "IC 95 %", "incremental_revenue": "CA incrémental / contact", "note": "Lecture"},
                  currency=currency)


def _pp(v: float) -> str:
    if v != v:
        return "–"
    return ("+" if v > 0 else "") + fr_number(100 * v, 1) + " pt"


def uplift_chart(table: pd.DataFrame):
    """Uplift with its 95 % interval per segment × channel (thin cells in grey)."""
    import matplotlib.pyplot as plt

    from crmlab import charts

    t = table.dropna(subset=["uplift"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.42 * len(t) + 1)))
    if t.empty:
        ax.text(0.5, 0.5, "Aucune campagne passée avec groupe témoin", ha="center", va="center")
        ax.set_axis_off()
        return charts.finish(fig, "Pas de mesure d'uplift disponible", ax=ax)
    labels = [f"{s} · {CHANNEL_LABELS.get(c, c)}" for s, c in zip(t["segment"], t["channel"], strict=True)]
    y = np.arange(len(t))[::-1]
    colors = [charts.PALETTE[7] if thin else (charts.PALETTE[2] if sig else charts.PALETTE[0])
              for thin, sig in zip(t["thin"], t["significant"], strict=True)]
    for yi, (u, lo, hi, col) in enumerate(zip(t["uplift"], t["uplift_low"], t["uplift_high"], colors, strict=True)):
        ax.errorbar([u], [y[yi]], xerr=[[u - lo], [hi - u]], fmt="none", ecolor=col, elinewidth=2, capsize=3)
    ax.scatter(t["uplift"], y, c=colors, zorder=3)
    ax.axvline(0, color="#444", lw=1)
    ax.set_yticks(y, labels)
    charts.axis_fr(ax, "x", "percent", 0)
    n_sig = int((t["significant"] & ~t["thin"]).sum())
    title = (f"{n_sig} case(s) segment × canal avec un effet démontré" if n_sig
             else "Aucun effet démontré : les intervalles croisent zéro")
    return charts.finish(fig, title, "Uplift du taux d'achat (ciblés − témoins), IC 95 % – gris : effectif trop faible", None, ax=ax)


def uplift_findings(table: pd.DataFrame, best: pd.DataFrame, p: dict) -> list[str]:
    """French sentences reading the uplift table."""
    out = []
    if table.empty:
        return ["Aucune campagne passée avec groupe témoin : le plan d'action ne peut s'appuyer sur aucune mesure. "
                "Prévoyez un groupe témoin dans chaque campagne (étape 02) pour apprendre."]
    n, thin = len(table), int(table["thin"].sum())
    out.append(f"{n} cases segment × canal mesurées ; {thin} ont moins de {p['min_cell_size']} clients dans un des deux "
               "groupes : elles sont signalées et ne servent pas telles quelles au plan.")
    for r in best.itertuples(index=False):
        word = "nettement" if r.confirmed else "sans certitude"
        channel = CHANNEL_LABELS.get(r.channel, r.channel)
        interval = f"(uplift {_pp(r.uplift)}, IC 95 % [{_pp(r.uplift_low)} ; {_pp(r.uplift_high)}])"
        if isinstance(r.runner_up, str) and r.runner_up:
            out.append(f"**{r.segment}** : le canal {channel} fait le mieux devant "
                       f"{CHANNEL_LABELS.get(r.runner_up, r.runner_up)}, {word} {interval}.")
        else:
            out.append(f"**{r.segment}** : seul le canal {channel} a été mesuré sur assez de clients {interval} ; "
                       "aucune comparaison entre canaux n'est possible.")
    return out


# --------------------------------------------------------------------------- 3. plan


def channel_estimates(table: pd.DataFrame, costs: dict[str, float], *, pooled: pd.DataFrame | None = None) -> pd.DataFrame:
    """Estimate the expected incremental revenue per contact of each segment × channel usable by the plan.

    The estimate is the uplift of the response rate times the mean revenue of a
    responding treated customer (steadier than the raw difference of mean revenues). A
    thin or missing segment × channel cell falls back on the channel's estimate over all
    segments (``pooled``) when that one is not thin; otherwise the channel has no
    estimate for the segment and is not used. A negative estimate counts as zero gain.

    Parameters
    ----------
    table : DataFrame
        :func:`channel_uplift` output (segment, channel, …).
    costs : dict
        Channel → cost per contact (only these channels are considered).
    pooled : DataFrame, optional
        ``uplift_table(responses, ["channel"])``.

    Returns
    -------
    DataFrame
        ``segment, channel, expected_revenue, basis`` (``"segment"`` or ``"canal"``).
    """
    def per_contact(t: pd.DataFrame) -> pd.Series:
        basket = t["revenue_treated"] / t["rate_treated"].where(t["rate_treated"] > 0)
        return (t["uplift"].clip(lower=0) * basket.fillna(0.0)).fillna(0.0)

    rows = []
    good = table[~table["thin"] & table["uplift"].notna() & table["channel"].isin(list(costs))]
    good = good.assign(expected_revenue=per_contact(good), basis="segment")
    rows.append(good[["segment", "channel", "expected_revenue", "basis"]])
    if pooled is not None and len(pooled):
        pool = pooled[~pooled["thin"] & pooled["uplift"].notna() & pooled["channel"].isin(list(costs))]
        pool = pool.assign(expected_revenue=per_contact(pool))
        segments = sorted(set(table["segment"]) | {s for s in rfm.BUILTIN_LABELS})
        grid = pd.MultiIndex.from_product([segments, pool["channel"].tolist()], names=["segment", "channel"]).to_frame(index=False)
        grid = grid.merge(pool[["channel", "expected_revenue"]], on="channel").assign(basis="canal")
        have = good[["segment", "channel"]].assign(_h=True)
        grid = grid.merge(have, on=["segment", "channel"], how="left")
        rows.append(grid[grid["_h"].isna()].drop(columns="_h"))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["segment", "channel", "expected_revenue", "basis"])
    return out.sort_values(["segment", "channel"], kind="stable").reset_index(drop=True)


def planned_targets(con: duckdb.DuckDBPyConnection, as_of: str | None = None) -> pd.DataFrame:
    """Return the targets step 02 planned (latest planning date not after ``as_of``).

    Returns
    -------
    DataFrame
        ``campaign_id, name, target, segment, offer, start_date`` of the campaigns with
        status ``planned`` written by step 02 (source ``segmenter``).
    """
    return to_frame(con.sql("""
        WITH t AS (SELECT * FROM campaigns WHERE status = 'planned' AND source = 'segmenter'
                   AND (CAST(? AS DATE) IS NULL OR start_date <= CAST(? AS DATE)))
        SELECT campaign_id, name, target, segment, offer, CAST(start_date AS VARCHAR) AS start_date
        FROM t WHERE start_date = (SELECT max(start_date) FROM t) ORDER BY campaign_id
    """, params=[as_of, as_of]))


def plan_members(con: duckdb.DuckDBPyConnection, p: dict, targets: pd.DataFrame, region: str = "FR") -> pd.DataFrame:
    """Members of each planned target with their segment and the channels they can receive.

    The segment is the customer's ``rfm_segment`` in the latest ``segments`` snapshot not
    after ``as_of`` (recomputed with :func:`segments_at` when there is none). A channel is
    open (``ok_<channel>`` True) when the customer's current consent is an opt-in
    (:func:`crmlab.exports.current_consents`) and their contact field is valid for it
    (:func:`crmlab.exports.reachable`).

    Returns
    -------
    DataFrame
        ``campaign_id, customer_id, grp, segment, clv, p_alive`` and ``ok_<channel>``
        for each channel of ``p["channel_costs"]``.
    """
    as_of = resolve_as_of(con, p)
    channels = list(p["channel_costs"])
    register_frame(con, "_plan_ids", targets[["campaign_id"]].astype(str))
    try:
        # contact fields of the members, read once; reachability per row, then per customer (any row)
        cust = to_frame(con.sql("""
            SELECT customer_id, email, phone, address, postal_code, city FROM customers
            WHERE customer_id IN (SELECT cc.customer_id FROM campaign_contacts cc JOIN _plan_ids USING (campaign_id))
        """))
        flags = exports.reachable_channels(cust, channels, region)
        reach = pd.DataFrame({"customer_id": cust["customer_id"].to_numpy(dtype=object),
                              **{f"r{i}": flags[ch].to_numpy() for i, ch in enumerate(channels)}})
        register_frame(con, "_plan_reach", reach)
        snap = con.execute("SELECT max(as_of) FROM segments WHERE as_of <= CAST(? AS DATE)", [as_of]).fetchall()[0][0]
        n = len(channels)  # parameters: $1..$n channels, then the label without segment and the snapshot date
        seg_cols = f"coalesce(s.rfm_segment, ${n + 1}) AS segment, s.clv, s.p_alive" if snap is not None else ""
        seg_join = f"LEFT JOIN segments s ON s.as_of = ${n + 2} AND s.customer_id = m.customer_id" if snap is not None else ""
        flags = ", ".join(f"bool_or(channel = ${i + 1} AND opted_in) AS c{i}" for i in range(n))
        reached = ", ".join(f"bool_or(r{i}) AS r{i}" for i in range(n))
        ok = ", ".join(f"coalesce(r.r{i} AND c.c{i}, false) AS \"ok_{i}\"" for i in range(n))
        out = to_frame(con.sql(f"""
            WITH m AS (
                SELECT cc.campaign_id, cc.customer_id, any_value(cc.grp) AS grp
                FROM campaign_contacts cc JOIN _plan_ids USING (campaign_id)
                WHERE cc.customer_id IS NOT NULL GROUP BY ALL
            ), cur AS (  -- current consent of each member per channel (see exports.current_consents)
                {exports.current_consents_sql("customer_id IN (SELECT customer_id FROM m)")}
            ), c AS (
                SELECT customer_id, {flags} FROM cur GROUP BY customer_id
            ), r AS (
                SELECT customer_id, {reached} FROM _plan_reach GROUP BY customer_id
            )
            SELECT m.campaign_id, m.customer_id, m.grp{", " + seg_cols if seg_cols else ""}, {ok}
            FROM m {seg_join}
            LEFT JOIN c ON c.customer_id = m.customer_id
            LEFT JOIN r ON r.customer_id = m.customer_id
            ORDER BY m.campaign_id, m.customer_id
        """, params=[*channels, *([NO_SEGMENT, snap] if snap is not None else [])]))
    finally:
        con.unregister("_plan_ids")
        con.unregister("_plan_reach")
    out = out.rename(columns={f"ok_{i}": f"ok_{ch}" for i, ch in enumerate(channels)})
    if snap is None:
        seg = segments_at(con, [as_of], bins=p["rfm_bins"], frequency_basis=p["rfm_frequency_basis"])
        seg = seg.drop(columns="as_of").assign(clv=np.nan, p_alive=np.nan)
        out = out.merge(seg, on="customer_id", how="left")
        out["segment"] = out["segment"].fillna(NO_SEGMENT)
    cols = ["campaign_id", "customer_id", "grp", "segment", "clv", "p_alive", *[f"ok_{ch}" for ch in channels]]
    return out[cols]


def reach_mask(customers: pd.DataFrame, channel: str, region: str = "FR") -> np.ndarray:
    """Bool array: contact field valid for ``channel`` (see :func:`crmlab.exports.reachable`)."""
    return exports.reachable(customers, channel, region).to_numpy()


def choose_channels(members: pd.DataFrame, estimates: pd.DataFrame, costs: dict[str, float], *,
                    margin_rate: float, budget: float | None = None) -> pd.DataFrame:
    """Pick one channel per target member and apply the budget cap.

    For each member, every channel ``c`` of ``costs`` that is open to them (``ok_<c>``)
    and has an estimate for their segment is valued ``margin_rate × expected_revenue −
    cost``; the best positive value wins. Control-group members get a channel by the same
    rule (so each channel's campaign keeps a comparable control group) but are never
    contacted. With a ``budget``, treated contacts are kept by decreasing expected return
    per unit of cost (ties: higher value, then customer id) while the cumulated cost stays
    within the budget; control members of a segment × channel with no contact kept are
    dropped too.

    Parameters
    ----------
    members : DataFrame
        :func:`plan_members` output (``campaign_id, customer_id, grp, segment, ok_*``).
    estimates : DataFrame
        :func:`channel_estimates` output (``segment, channel, expected_revenue``).

    Returns
    -------
    DataFrame
        ``campaign_id, customer_id, grp, segment, channel`` (None when not contacted),
        ``expected_revenue, cost, value`` (per contact), ``status`` (key of
        :data:`REASONS`), sorted by campaign and customer.
    """
    base = members[["campaign_id", "customer_id", "grp", "segment"]].reset_index(drop=True)
    base["_row"] = np.arange(len(base))
    long = []
    for ch, cost in costs.items():
        col = f"ok_{ch}"
        if col not in members:
            continue
        open_rows = base[members[col].to_numpy().astype(bool)]
        long.append(open_rows[["_row", "segment"]].assign(channel=ch, cost=float(cost)))
    cand = pd.concat(long, ignore_index=True) if long else pd.DataFrame(columns=["_row", "segment", "channel", "cost"])
    any_open = base["_row"].isin(cand["_row"])
    cand = cand.merge(estimates[["segment", "channel", "expected_revenue"]], on=["segment", "channel"], how="inner")
    cand["value"] = margin_rate * cand["expected_revenue"] - cand["cost"]
    cand = cand[cand["value"] > 0]
    order = {ch: i for i, ch in enumerate(costs)}
    cand = cand.assign(_o=cand["channel"].map(order)).sort_values(["_row", "value", "_o"], ascending=[True, False, True],
                                                                   kind="stable")
    best = cand.drop_duplicates("_row")[["_row", "channel", "expected_revenue", "cost", "value"]]
    out = base.merge(best, on="_row", how="left")
    out["status"] = np.where(out["channel"].notna(), np.where(out["grp"] == "control", "control", "planned"),
                             np.where(any_open.to_numpy(), "unprofitable", "no_channel"))
    if budget is not None:
        t = out[out["status"] == "planned"].copy()
        t["_ret"] = margin_rate * t["expected_revenue"] / t["cost"].where(t["cost"] > 0, 1e-9)
        t = t.sort_values(["_ret", "value", "customer_id"], ascending=[False, False, True], kind="stable")
        keep = t["cost"].cumsum() <= budget + 1e-9
        out.loc[t.index[~keep.to_numpy()], "status"] = "budget"
        kept = out[out["status"] == "planned"][["segment", "channel"]].drop_duplicates().assign(_k=True)
        ctrl = out[out["status"] == "control"].merge(kept, on=["segment", "channel"], how="left")
        drop_idx = out.index[out["status"] == "control"][ctrl["_k"].isna().to_numpy()]
        out.loc[drop_idx, "status"] = "budget"
    out.loc[~out["status"].isin(["planned", "control"]), ["channel", "expected_revenue", "cost", "value"]] = np.nan
    out["channel"] = out["channel"].astype(object).where(out["channel"].notna(), None)
    out = out.drop(columns="_row").sort_values(["campaign_id", "customer_id"], kind="stable").reset_index(drop=True)
    return out[["campaign_id", "customer_id", "grp", "segment", "channel", "expected_revenue", "cost", "value", "status"]]


def plan_summary(assign: pd.DataFrame, targets: pd.DataFrame, margin_rate: float) -> pd.DataFrame:
    """One row per target × channel of the plan.

    Returns
    -------
    DataFrame
        ``campaign_id, name, channel, contacts, control, expected_revenue`` (total
        incremental revenue expected from the contacts), ``expected_margin``, ``cost``,
        ``expected_roi`` ((margin − cost) / cost), plus one row per target with
        ``channel`` None counting the members not contacted (``contacts`` = 0,
        ``not_contacted``).
    """
    a = assign.merge(targets[["campaign_id", "name"]], on="campaign_id", how="left")
    used = a[a["status"].isin(["planned", "control"])]
    g = used.groupby(["campaign_id", "name", "channel"], sort=True).agg(
        contacts=("status", lambda s: int((s == "planned").sum())),
        control=("status", lambda s: int((s == "control").sum())),
    ).reset_index()
    planned = used[used["status"] == "planned"].groupby(["campaign_id", "channel"]).agg(
        expected_revenue=("expected_revenue", "sum"), cost=("cost", "sum")).reset_index()
    g = g.merge(planned, on=["campaign_id", "channel"], how="left").fillna({"expected_revenue": 0.0, "cost": 0.0})
    g["expected_margin"] = margin_rate * g["expected_revenue"]
    g["expected_roi"] = (g["expected_margin"] - g["cost"]) / g["cost"].where(g["cost"] > 0)
    g["not_contacted"] = 0
    rest = a[~a["status"].isin(["planned", "control"])].groupby(["campaign_id", "name"]).size().rename("not_contacted").reset_index()
    rest = rest.assign(channel=None, contacts=0, control=0, expected_revenue=0.0, cost=0.0, expected_margin=0.0,
                       expected_roi=np.nan)
    out = pd.concat([g, rest[g.columns]], ignore_index=True) if len(rest) else g
    out = out.astype({"contacts": "int64", "control": "int64", "not_contacted": "int64", "expected_revenue": "float64",
                      "cost": "float64", "expected_margin": "float64", "expected_roi": "float64"})
    return out.sort_values(["campaign_id", "channel"], na_position="last", kind="stable").reset_index(drop=True)


def plan_display(summary: pd.DataFrame, currency: str = "EUR"):
    """French table of the plan per target × channel."""
    from crmlab.display import table as ftable

    t = summary.copy()
    t["channel"] = t["channel"].map(lambda c: CHANNEL_LABELS.get(c, c) if isinstance(c, str) else "non contactés")
    t["contacts"] = np.where(t["channel"] == "non contactés", t["not_contacted"], t["contacts"])
    cols = ["name", "channel", "contacts", "control", "expected_revenue", "cost", "expected_roi"]
    return ftable(t[cols], formats={"contacts": "int", "control": "int", "expected_revenue": "money", "cost": "money",
                                    "expected_roi": "pct"},
                  labels={"name": "Cible", "channel": "Canal", "contacts": "Contacts", "control": "Témoins",
                          "expected_revenue": "CA incrémental attendu", "cost": "Coût", "expected_roi": "ROI attendu"},
                  currency=currency)


def reasons_table(assign: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Members per target and status (French labels)."""
    a = assign.merge(targets[["campaign_id", "name"]], on="campaign_id", how="left")
    t = a.groupby(["name", "status"]).size().rename("customers").reset_index()
    t["status"] = t["status"].map(REASONS)
    return t.rename(columns={"name": "Cible", "status": "Situation", "customers": "Clients"})


def plan_findings(summary: pd.DataFrame, assign: pd.DataFrame, p: dict) -> list[str]:
    """French sentences on the plan."""
    cur = p.get("currency", "EUR")
    if assign.empty:
        return ["Aucune cible planifiée par l'étape 02 (segmenter.targets) : pas de plan d'action à construire. "
                "Déclarez des cibles, relancez l'étape 02 puis celle-ci."]
    used = summary[summary["channel"].notna()]
    n = int(used["contacts"].sum())
    cost = float(used["cost"].sum())
    rev = float(used["expected_revenue"].sum())
    out = [f"**{fr_number(n)} contacts** prévus pour un coût de **{fr_money(cost, cur)}** et un chiffre d'affaires "
           f"incrémental attendu de **{fr_money(rev, cur)}** (marge attendue {fr_money(p['plan_margin_rate'] * rev, cur)})."]
    by_ch = used.groupby("channel")["contacts"].sum()
    if len(by_ch):
        out.append("Répartition : " + ", ".join(f"{CHANNEL_LABELS.get(c, c)} {fr_number(v)}" for c, v in by_ch.items()) + ".")
    for key in ("no_channel", "unprofitable", "budget"):
        k = int((assign["status"] == key).sum())
        if k:
            out.append(f"{fr_number(k)} membres des cibles ne sont pas contactés : {REASONS[key]}.")
    if p.get("budget") is not None:
        out.append(f"Budget plafonné à {fr_money(p['budget'], cur)} : les contacts au meilleur rendement attendu sont retenus d'abord.")
    return out


def ensure_parent_column(con: duckdb.DuckDBPyConnection) -> None:
    """Add ``campaigns.parent_id`` to a database created before the column existed."""
    con.execute("ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS parent_id VARCHAR")


def plan_campaigns(assign: pd.DataFrame, targets: pd.DataFrame, p: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the planned campaigns (one per target × channel) and their contacts.

    Returns
    -------
    (campaigns, contacts)
        ``campaigns``: ``campaign_id`` (``<target id>-<channel>``), ``parent_id``, name,
        channel, target, segment, offer, start_date, end_date (start +
        ``response_window_days`` − 1), cost_per_contact. ``contacts``: ``campaign_id,
        customer_id, grp, channel, offer``.
    """
    used = assign[assign["status"].isin(["planned", "control"])].copy()
    used["parent_id"] = used["campaign_id"]
    used["campaign_id"] = used["campaign_id"] + "-" + used["channel"].astype(str)
    tg = targets.set_index("campaign_id")
    camp = used[["campaign_id", "parent_id", "channel"]].drop_duplicates().sort_values("campaign_id").reset_index(drop=True)
    camp["name"] = [f"{tg.at[pid, 'name']} – {CHANNEL_LABELS.get(ch, ch)}" for pid, ch in zip(camp["parent_id"], camp["channel"], strict=True)]
    for col in ("target", "segment", "offer", "start_date"):
        camp[col] = camp["parent_id"].map(tg[col])
    camp["end_date"] = (pd.to_datetime(camp["start_date"]) + pd.to_timedelta(p["response_window_days"] - 1, unit="D")).dt.date.astype(str)
    camp["cost_per_contact"] = camp["channel"].map(p["channel_costs"]).astype(float)
    contacts = used.assign(grp=np.where(used["status"] == "planned", "treatment", "control"),
                           offer=used["parent_id"].map(tg["offer"]))
    return camp, contacts[["campaign_id", "customer_id", "grp", "channel", "offer"]].reset_index(drop=True)


def store_plan(con: duckdb.DuckDBPyConnection, campaigns: pd.DataFrame, contacts: pd.DataFrame, p: dict) -> int:
    """Record the planned campaigns (status ``planned``, source ``interagir``) and their contacts.

    Idempotent: the planned ``interagir`` campaigns of the same parent targets are
    replaced. Step 02's target campaigns are left as they are; each channel campaign
    points to its target with ``parent_id`` (measure either, not both).

    Returns
    -------
    int
        Contacts written (treated + control).
    """
    ensure_parent_column(con)
    parents = pd.DataFrame({"parent_id": campaigns["parent_id"].astype(str).unique()})
    register_frame(con, "_parents", parents)
    try:
        con.execute("""DELETE FROM campaign_contacts WHERE campaign_id IN (
                           SELECT campaign_id FROM campaigns WHERE status = 'planned' AND source = 'interagir'
                           AND parent_id IN (SELECT parent_id FROM _parents))""")
        con.execute("""DELETE FROM campaigns WHERE status = 'planned' AND source = 'interagir'
                       AND parent_id IN (SELECT parent_id FROM _parents)""")
    finally:
        con.unregister("_parents")
    camp = campaigns.assign(status="planned", source="interagir", run_id=p["run_id"], created_at=now())
    register_frame(con, "_camp_in", camp)
    register_frame(con, "_cont_in", contacts)
    try:
        con.execute("""INSERT INTO campaigns (campaign_id, name, channel, target, segment, offer, start_date, end_date,
                           cost_per_contact, status, source, run_id, created_at, parent_id)
                       SELECT campaign_id, name, channel, target, segment, offer, CAST(start_date AS DATE),
                              CAST(end_date AS DATE), cost_per_contact, status, source, run_id, created_at, parent_id
                       FROM _camp_in""")
        con.execute("""INSERT INTO campaign_contacts (campaign_id, customer_id, grp, contacted_at, source, customer_key)
                       SELECT campaign_id, customer_id, grp, NULL, 'interagir', NULL FROM _cont_in""")
    finally:
        con.unregister("_camp_in")
        con.unregister("_cont_in")
    return len(contacts)


def export_plan(con: duckdb.DuckDBPyConnection, contacts: pd.DataFrame, p: dict, region: str = "FR") -> pd.DataFrame:
    """Write the target files in ``<out_dir>/exports/`` (see :mod:`crmlab.exports`).

    Files left by an earlier plan of the same targets are removed first.

    Returns
    -------
    DataFrame
        ``campaign_id, channel, file, rows, planned, excluded`` (:func:`crmlab.exports.write_exports`).
    """
    folder = output_dir(p) / "exports"
    if folder.exists():  # files of an earlier plan of the same targets (a channel may have dropped out)
        parents = {c.rsplit("-", 1)[0] for c in contacts["campaign_id"].astype(str).unique()}
        for f in folder.iterdir():
            if f.suffix in (".csv", ".xlsx") and any(f.name.startswith(par + "-") for par in parents):
                f.unlink()
    treated = contacts.loc[contacts["grp"] == "treatment", ["customer_id", "channel"]].astype(object).drop_duplicates()
    register_frame(con, "_exp_pairs", treated)
    try:
        cust = to_frame(con.sql("""SELECT customer_id, first_name, last_name, email, phone, address, postal_code, city
                              FROM customers WHERE customer_id IN (SELECT customer_id FROM _exp_pairs)"""))
        # the export keeps a treated contact whose current consent to the file's channel is an opt-in: the rows of
        # exports.current_consents(con, treated) with such a pair and opted_in true (the other rows are never read)
        consents = to_frame(con.sql(f"""SELECT * FROM ({exports.current_consents_sql(pairs="SELECT customer_id, channel FROM _exp_pairs")})
                                   WHERE opted_in ORDER BY customer_id, channel"""))
    finally:
        con.unregister("_exp_pairs")
    return exports.write_exports(contacts, cust, consents, folder, p["export_format"], region)


def exports_display(files: pd.DataFrame):
    """French table of the files written."""
    from crmlab.display import table as ftable

    t = files.assign(channel=files["channel"].map(lambda c: CHANNEL_LABELS.get(c, c)))
    return ftable(t[["file", "channel", "rows", "excluded"]], formats={"rows": "int", "excluded": "int"},
                  labels={"file": "Fichier", "channel": "Canal", "rows": "Lignes", "excluded": "Écartés (consentement, adresse)"})


# --------------------------------------------------------------------------- widget


def replan(members: pd.DataFrame, estimates: pd.DataFrame, targets: pd.DataFrame, costs: dict[str, float], *,
           margin_rate: float, budget: float | None) -> pd.DataFrame:
    """Plan summary for other costs / budget (the logic behind the widget)."""
    assign = choose_channels(members, estimates, costs, margin_rate=margin_rate, budget=budget)
    return plan_summary(assign, targets, margin_rate)


def plan_explorer(members: pd.DataFrame, estimates: pd.DataFrame, targets: pd.DataFrame, p: dict):
    """Ipywidgets control: channel costs and budget → the plan table, updated live."""
    import ipywidgets as w
    from IPython.display import display

    cur = p.get("currency", "EUR")
    cost_boxes = {ch: w.BoundedFloatText(value=c, min=0, max=1000, step=0.05, description=CHANNEL_LABELS.get(ch, ch))
                  for ch, c in p["channel_costs"].items()}
    budget_box = w.BoundedFloatText(value=p["budget"] or 0.0, min=0, max=1e9, step=100,
                                    description="Budget", tooltip="0 = pas de plafond")
    out = w.Output()

    def refresh(*_):
        costs = {ch: box.value for ch, box in cost_boxes.items()}
        budget = budget_box.value or None
        summary = replan(members, estimates, targets, costs, margin_rate=p["plan_margin_rate"], budget=budget)
        out.clear_output(wait=True)
        with out:
            display(plan_display(summary, cur))

    for box in [*cost_boxes.values(), budget_box]:
        box.observe(refresh, names="value")
    refresh()
    return w.VBox([w.HBox(list(cost_boxes.values())[:2]), w.HBox(list(cost_boxes.values())[2:]), budget_box, out])


# --------------------------------------------------------------------------- 5. alerts


def alerts(con: duckdb.DuckDBPyConnection, p: dict) -> pd.DataFrame:
    """List the customers to act on now, with the reason and a suggested action.

    Three rules:

    * **valeur en danger** – CLV above the ``alert_clv_quantile`` of the latest snapshot
      and ``p_alive`` down by at least ``alert_p_alive_drop`` since the previous
      ``segments`` snapshot (needs two snapshots);
    * **détracteur récent** – an NPS answer ≤ ``alert_detractor_max`` in the last
      ``alert_survey_days`` days (an ``nps`` score of :func:`crmlab.collecter.scores_sql`);
    * **ticket ouvert** – an interaction whose ``status`` is still open (after-sales).

    Returns
    -------
    DataFrame
        ``customer_id, first_name, last_name, email, phone`` (raw: mask before display),
        ``rule, reason, action, clv, priority`` (1 = most urgent), ``ts``; one row per
        customer and rule, sorted by priority then CLV descending.
    """
    as_of = resolve_as_of(con, p)
    snaps = [r[0] for r in con.execute(
        "SELECT DISTINCT as_of FROM segments WHERE as_of <= CAST(? AS DATE) ORDER BY as_of DESC LIMIT 2", [as_of]).fetchall()]
    parts = []
    if len(snaps) == 2:
        parts.append(to_frame(con.sql("""
            WITH now_ AS (SELECT * FROM segments WHERE as_of = ?), prev AS (SELECT * FROM segments WHERE as_of = ?),
                 q AS (SELECT quantile_cont(clv, ?) AS v FROM now_ WHERE clv IS NOT NULL)
            SELECT n.customer_id, 'valeur' AS rule,
                   'CLV ' || CAST(round(n.clv) AS BIGINT) || ' ; probabilité d''activité passée de '
                       || CAST(round(100 * p.p_alive) AS BIGINT) || ' % à ' || CAST(round(100 * n.p_alive) AS BIGINT) || ' %' AS reason,
                   'Appel du conseiller et offre personnalisée avant qu''il ne parte' AS action,
                   n.clv, 1 AS priority, CAST(n.as_of AS TIMESTAMP) AS ts
            FROM now_ n JOIN prev p USING (customer_id), q
            WHERE n.clv >= q.v AND p.p_alive - n.p_alive >= ?
        """, params=[snaps[0], snaps[1], p["alert_clv_quantile"], p["alert_p_alive_drop"]])))
    parts.append(to_frame(con.sql(f"""
        SELECT i.customer_id, 'detracteur' AS rule,
               'Note NPS ' || CAST(CAST(min(s.score) AS BIGINT) AS VARCHAR) || '/10 le ' || strftime(max(i.ts), '%d/%m/%Y') AS reason,
               'Rappeler sous 48 h pour comprendre et réparer l''insatisfaction' AS action,
               NULL::DOUBLE AS clv, 2 AS priority, max(i.ts) AS ts
        FROM interactions i JOIN {collecter.scores_sql()} s ON s.interaction_id = i.interaction_id
        WHERE i.customer_id IS NOT NULL AND s.score_type = 'nps' AND s.score <= ?
          AND i.ts >= CAST(? AS DATE) - to_days(CAST(? AS INTEGER)) AND i.ts < CAST(? AS DATE)
        GROUP BY i.customer_id
    """, params=[p["alert_detractor_max"], as_of, p["alert_survey_days"], as_of])))
    parts.append(to_frame(con.sql("""
        SELECT i.customer_id, 'ticket' AS rule,
               count(*) || ' ticket(s) SAV ouvert(s), le plus ancien du ' || strftime(min(i.ts), '%d/%m/%Y') AS reason,
               'Relancer le service après-vente et tenir le client informé' AS action,
               NULL::DOUBLE AS clv, 2 AS priority, min(i.ts) AS ts
        FROM interactions i
        WHERE i.customer_id IS NOT NULL AND lower(trim(i.status)) IN ('open', 'ouvert', 'en cours', 'nouveau', 'opened')
          AND i.ts < CAST(? AS DATE)
        GROUP BY i.customer_id
    """, params=[as_of])))
    cols = ["customer_id", "rule", "reason", "action", "clv", "priority", "ts"]
    frame = pd.concat([x[cols] for x in parts if len(x)], ignore_index=True) if any(len(x) for x in parts) else pd.DataFrame(columns=cols)
    if snaps:
        clv = to_frame(con.sql("SELECT customer_id, clv AS clv_now FROM segments WHERE as_of = ?", params=[snaps[0]]))
        frame = frame.merge(clv, on="customer_id", how="left")
        frame["clv"] = frame["clv"].fillna(frame["clv_now"])
        frame = frame.drop(columns="clv_now")
    cust = to_frame(con.sql("SELECT customer_id, first_name, last_name, email, phone FROM customers"))
    frame = frame.merge(cust, on="customer_id", how="left")
    frame = frame.sort_values(["priority", "clv", "customer_id"], ascending=[True, False, True], na_position="last", kind="stable")
    return frame[["customer_id", "first_name", "last_name", "email", "phone", "rule", "reason", "action", "clv", "priority", "ts"]].reset_index(drop=True)


ALERT_LABELS = {"valeur": "valeur en danger", "detracteur": "détracteur récent", "ticket": "ticket SAV ouvert"}


def alerts_display(frame: pd.DataFrame, n: int = 15, currency: str = "EUR"):
    """French table of the first ``n`` alerts, personal data masked."""
    from crmlab.display import mask_pii
    from crmlab.display import table as ftable

    t = mask_pii(frame.head(n))
    t = t.assign(rule=t["rule"].map(ALERT_LABELS))
    return ftable(t[["customer_id", "first_name", "last_name", "phone", "rule", "reason", "action", "clv"]],
                  formats={"clv": "money"},
                  labels={"customer_id": "Client", "first_name": "Prénom", "last_name": "Nom", "phone": "Téléphone",
                          "rule": "Alerte", "reason": "Motif", "action": "Action suggérée", "clv": "CLV"}, currency=currency)


def export_alerts(frame: pd.DataFrame, p: dict) -> str:
    """Write the full alert list (for customer service) as CSV in ``<out_dir>/exports/``; return a French sentence."""
    folder = output_dir(p) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    out = frame.assign(rule=frame["rule"].map(ALERT_LABELS), clv=frame["clv"].round(2)).rename(columns={
        "customer_id": "id_client", "first_name": "prenom", "last_name": "nom", "email": "email", "phone": "telephone",
        "rule": "alerte", "reason": "motif", "action": "action", "clv": "clv", "priority": "priorite", "ts": "date"})
    exports.neutralise_frame(out.astype(object).where(out.notna(), None)).to_csv(
        folder / "alertes.csv", sep=";", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    return f"{fr_number(len(frame))} alerte(s) exportée(s) dans « exports/alertes.csv » pour le service client."


def alert_findings(frame: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> list[str]:
    """French sentences on the alerts (what is missing to compute some of them)."""
    out = []
    counts = frame["rule"].value_counts()
    for rule, label in ALERT_LABELS.items():
        out.append(f"{label} : {fr_number(int(counts.get(rule, 0)))} client(s).")
    n_snap = con.execute("SELECT count(DISTINCT as_of) FROM segments").fetchall()[0][0]
    if n_snap < 2:
        out.append("Un seul instantané de segments : la baisse de probabilité d'activité se mesurera à la prochaine exécution.")
    if con.execute("SELECT count(*) FROM interactions").fetchall()[0][0] == 0:
        out.append("Aucun contact entrant encore collecté (étape 04) : détracteurs et tickets ouverts apparaîtront ensuite.")
    return out


# --------------------------------------------------------------------------- 6. KPIs and checks


def kpis(table: pd.DataFrame, summary: pd.DataFrame, alert_frame: pd.DataFrame, files: pd.DataFrame) -> pd.DataFrame:
    """Step 03 KPIs: four headline ones (``dimension = ''``) and details per channel / cell.

    Returns
    -------
    DataFrame
        ``kpi, dimension, value, unit``.
    """
    used = summary[summary["channel"].notna()]
    cost = float(used["cost"].sum())
    margin = float(used["expected_margin"].sum())
    rows = [
        {"kpi": "contacts planifiés", "dimension": "", "value": float(used["contacts"].sum()), "unit": "clients"},
        {"kpi": "coût du plan", "dimension": "", "value": cost, "unit": "devise"},
        {"kpi": "ROI attendu du plan", "dimension": "", "value": (margin - cost) / cost if cost else np.nan, "unit": "part"},
        {"kpi": "alertes clients", "dimension": "", "value": float(len(alert_frame)), "unit": "clients"},
    ]
    for ch, g in used.groupby("channel"):
        rows.append({"kpi": "contacts planifiés", "dimension": f"canal={ch}", "value": float(g["contacts"].sum()), "unit": "clients"})
        rows.append({"kpi": "CA incrémental attendu", "dimension": f"canal={ch}", "value": float(g["expected_revenue"].sum()), "unit": "devise"})
    for r in table.itertuples(index=False):
        dim = f"segment={r.segment}|canal={r.channel}"
        rows.append({"kpi": "uplift taux d'achat", "dimension": dim, "value": r.uplift, "unit": "part"})
        rows.append({"kpi": "effectif témoin", "dimension": dim, "value": float(r.n_control), "unit": "clients"})
    rows.append({"kpi": "fichiers exportés", "dimension": "détail", "value": float(len(files)), "unit": "fichiers"})
    return pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])


def kpis_table(k: pd.DataFrame, currency: str = "EUR"):
    """Show the headline KPIs as a French table."""
    from crmlab.display import table as ftable

    head = k[k["dimension"] == ""].copy()
    head["Valeur"] = [fr_percent(v) if u == "part" else (fr_money(v, currency) if u == "devise" else fr_number(v))
                      for v, u in zip(head["value"], head["unit"], strict=True)]
    return ftable(head[["kpi", "Valeur"]].rename(columns={"kpi": "Indicateur"}))


def check_output(con: duckdb.DuckDBPyConnection, p: dict, files: pd.DataFrame) -> None:
    """Step 03's own checks before commit (raise :class:`crmlab.errors.CheckError`).

    Planned channel campaigns have a known channel and a cost; their treated contacts all
    have a current opt-in for the channel; no customer is both treated and control; the
    budget holds; every export file contains no control-group member and no customer
    without consent.
    """
    ensure_parent_column(con)
    mine = "SELECT * FROM campaigns WHERE status = 'planned' AND source = 'interagir'"
    check(con, f"SELECT campaign_id FROM ({mine}) WHERE channel IS NULL OR cost_per_contact IS NULL",
          "chaque campagne prévue a un canal et un coût")
    # the first record of each customer × channel (latest updated_at, undated last; false, true, then NULL
    # opted_in first on a tie) must be an opt-in: one aggregate over the treated customers' records
    check(con, f"""WITH t AS (
                       SELECT cc.campaign_id, cc.customer_id, c.channel FROM campaign_contacts cc JOIN ({mine}) c USING (campaign_id)
                       WHERE cc.grp = 'treatment'
                   ), s AS (
                       SELECT customer_id, channel,
                              max({{'dated': updated_at IS NOT NULL, 'at': coalesce(updated_at, TIMESTAMP '0001-01-01'),
                                    'opt': CASE WHEN opted_in IS NULL THEN 0 WHEN opted_in THEN 1 ELSE 2 END}}) AS k
                       FROM consents SEMI JOIN t USING (customer_id, channel)
                       GROUP BY customer_id, channel
                   )
                   SELECT t.campaign_id, t.customer_id FROM t
                   LEFT JOIN s ON s.customer_id = t.customer_id AND s.channel = t.channel
                   WHERE s.k.opt IS DISTINCT FROM 1""",
          "chaque client ciblé a consenti au canal de sa campagne")
    check(con, f"""SELECT cc.campaign_id, cc.customer_id FROM campaign_contacts cc JOIN ({mine}) c USING (campaign_id)
                   GROUP BY ALL HAVING count(DISTINCT cc.grp) > 1 OR count(*) > 1""",
          "un client figure une seule fois par campagne, ciblé ou témoin")
    if p.get("budget") is not None:
        check(con, f"""SELECT sum(c.cost_per_contact) AS cost FROM campaign_contacts cc JOIN ({mine}) c USING (campaign_id)
                       WHERE cc.grp = 'treatment' AND c.run_id = '{_sql_str(p['run_id'])}'
                       HAVING sum(c.cost_per_contact) > {float(p['budget'])} + 1e-6""",
              "le coût du plan respecte le budget")
    folder = output_dir(p) / "exports"
    read = {f.file: exports.read_export(folder / f.file) for f in files.itertuples(index=False)}
    # ids of every file, then per file: distinct ids of a control group, distinct ids without a current opt-in
    in_files = pd.DataFrame({
        "file": np.concatenate([np.full(len(rows), name, dtype=object) for name, rows in read.items() if len(rows)] or
                               [np.zeros(0, dtype=object)]),
        "customer_id": np.concatenate([rows["id_client"].to_numpy(dtype=object) for rows in read.values() if len(rows)] or
                                      [np.zeros(0, dtype=object)]),
    })
    in_files = in_files.merge(files[["file", "channel"]].astype(object), on="file", how="left")
    register_frame(con, "_chk_files", in_files)
    try:
        counts = to_frame(con.sql(f"""
            WITH f AS (SELECT DISTINCT file, channel, customer_id FROM _chk_files),
            ctrl AS (SELECT DISTINCT cc.customer_id FROM campaign_contacts cc JOIN ({mine}) c USING (campaign_id)
                     WHERE cc.grp = 'control'),
            ok AS ({exports.current_consents_sql(pairs="SELECT customer_id, channel FROM f")})
            SELECT f.file, count(*) FILTER (WHERE k.customer_id IS NOT NULL) AS n_control,
                   count(*) FILTER (WHERE NOT coalesce(ok.opted_in, false)) AS n_no_consent
            FROM f LEFT JOIN ctrl k ON k.customer_id = f.customer_id
            LEFT JOIN ok ON ok.customer_id = f.customer_id AND ok.channel = f.channel
            GROUP BY f.file
        """)).set_index("file")
    finally:
        con.unregister("_chk_files")
    for f in files.itertuples(index=False):
        n_control = int(counts["n_control"].get(f.file, 0))
        if n_control:
            from crmlab.errors import CheckError

            raise CheckError(f"Contrôle échoué : le fichier {f.file} contient {n_control} membre(s) d'un groupe témoin")
        n_no_consent = int(counts["n_no_consent"].get(f.file, 0))
        if n_no_consent:
            from crmlab.errors import CheckError

            raise CheckError(f"Contrôle échoué : le fichier {f.file} contient {n_no_consent} client(s) sans consentement")


def _sql_str(text: str) -> str:
    """Escape one of the analyst's own strings (run id) for a check query."""
    return str(text).replace("'", "''")
