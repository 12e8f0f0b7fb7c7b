"""Step 02 "segmenter et cibler": parameters and the high-level functions its notebook calls.

The notebook reads like this: :func:`customers_rfm` (RFM scores and segments in SQL),
the behaviour and CLV cells (``crmlab.behaviour``, ``crmlab.clv``) which leave
``clusters_df`` and ``clv_df``, :func:`attach_models`, :func:`ranking`,
:func:`concentration`, :func:`migration`, :func:`plan_targets`, :func:`findings`, then
:func:`write_snapshot`, :func:`write_kpis` and :func:`run_checks` before the commit.
"""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from crmlab import charts, db, rfm, targets
from crmlab.charts import fr_money, fr_number, fr_percent
from crmlab.db import register_frame, to_frame
from crmlab.errors import CheckError, InputError, ParamsError
from crmlab.params import Param


def _check_custom_scheme(value, key):
    if value is None:
        return None
    return rfm.check_rules(value, 10, key)


def _check_targets(value, key):
    return targets.check_targets(value, key)


def _check_features(value, key):
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParamsError(f"« {key} » doit être une liste de noms de variables (ou vide = toutes)")
    return value


PARAMS: dict[str, Param] = {
    # RFM
    "frequency_basis": Param("str", "orders", "fréquence : nombre de commandes (orders) ou de jours d’achat (days)", choices=("orders", "days")),
    "monetary_basis": Param("str", "mean", "montant : panier moyen (mean) ou dépense totale (total)", choices=("mean", "total")),
    "rfm_bins": Param("int", 5, "nombre de notes R, F, M (quantiles, de 3 à 10)", min=3, max=10),
    "rfm_scheme": Param("str", "rf_grid", "schéma de segments : rf_grid (grille R×F), rfm_11, custom", choices=("rf_grid", "rfm_11", "custom")),
    "rfm_custom_scheme": Param("list", None, "schéma personnalisé : liste de {segment, r: [bas, haut], f: [bas, haut], m: [bas, haut]}", nullable=True, check=_check_custom_scheme),
    "revenue_months": Param("int", 12, "fenêtre du chiffre d’affaires des tableaux, en mois avant as_of (0 : tout l’historique)", min=0),
    "comparison_months": Param("int", 6, "migration : comparer les segments d’il y a N mois à ceux d’aujourd’hui", min=1, max=60),
    # Behaviour (crmlab.behaviour)
    "clusters_k": Param("int", 0, "nombre de groupes de comportement (0 : choisi par la silhouette)", min=0, max=20),
    "clusters_k_max": Param("int", 8, "nombre maximal de groupes essayés par la silhouette", min=2, max=20),
    "cluster_features": Param("list", None, "variables de comportement utilisées (vide : toutes les disponibles)", nullable=True, check=_check_features),
    # CLV (crmlab.clv)
    "clv_model": Param("str", "bgnbd", "modèle de fréquence d’achat : bgnbd, pareto, mbgnbd", choices=("bgnbd", "pareto", "mbgnbd")),
    "time_unit": Param("str", "week", "unité de temps des modèles de CLV : week, day, month", choices=("week", "day", "month")),
    "holdout_days": Param("int", 180, "durée de la période de validation (jours)", min=1),
    "calibration_end": Param("date", None, "fin de la période de calibration ; vide : as_of moins holdout_days", nullable=True),
    "clv_horizon_months": Param("int", 12, "horizon de la CLV (mois)", min=1, max=120),
    "discount_rate_annual": Param("float", 0.10, "taux d’actualisation annuel de la CLV", min=0.0, max=1.0),
    "margin_rate": Param("float", 0.30, "taux de marge appliqué au chiffre d’affaires pour la CLV", min=0.0, max=1.0),
    "penalizer": Param("float", 0.0, "pénalisation des ajustements lifetimes (0 : aucune)", min=0.0),
    "merge_same_day": Param("bool", True, "fusionner les achats d’un même jour (modèles de CLV)"),
    # Targets
    "targets": Param("list", [], "cibles : liste de {name, segments, clusters, min_clv, min_p_alive, max_p_alive, offer, channel, control_share}", check=_check_targets),
}


def check_block(block: dict, key: str = "segmenter") -> dict:
    """Cross-key checks of the ``segmenter`` block (after each key was validated).

    The custom scheme is validated against ``rfm_bins`` (gaps and overlaps listed) and the
    targets' segment names against the labels of the chosen scheme (unknown name →
    :class:`ParamsError` naming the closest). Returns the block unchanged.
    """
    scheme = block.get("rfm_scheme", "rf_grid")
    custom = block.get("rfm_custom_scheme")
    bins = block.get("rfm_bins", 5)
    if scheme == "custom" or custom:
        if scheme != "custom":
            raise ParamsError(f"« {key}.rfm_custom_scheme » est renseigné mais « {key}.rfm_scheme » vaut « {scheme} »",
                              hint="Écrivez rfm_scheme: custom pour utiliser votre schéma, ou retirez rfm_custom_scheme")
    rfm.scheme_rules(scheme, custom, bins)
    labels = rfm.segment_order(scheme, custom)
    targets.check_targets(block.get("targets") or [], f"{key}.targets", segments=labels)
    return block


# --------------------------------------------------------------------------- notebook


def notebook_params(ns: dict):
    """Return the validated parameters of the step-02 notebook, with ``as_of`` resolved.

    ``as_of`` left empty becomes the day after the last transaction of the database
    (read with a short read-only connection, closed before the step opens its own).
    """
    from crmlab import params

    p = params.for_notebook(ns, "02")
    if not p["as_of"]:
        con = db.connect(p["database"], read_only=True)
        try:
            p["as_of"] = resolve_as_of(con, None)
        finally:
            con.close()
    return p


def definitions(p: dict) -> list[str]:
    """French sentences stating the RFM definitions used by this run."""
    bins = p["rfm_bins"]
    freq = ("le nombre de **commandes** (identifiants de commande distincts au montant positif)"
            if p["frequency_basis"] == "orders" else "le nombre de **jours d'achat** distincts")
    mon = ("le **panier moyen** (dépense totale / fréquence)" if p["monetary_basis"] == "mean"
           else "la **dépense totale**")
    window = (f"les {p['revenue_months']} derniers mois" if p["revenue_months"] else "tout l'historique")
    scheme = {"rf_grid": "la grille récence × fréquence (10 segments)",
              "rfm_11": "la grille récence × fréquence dont les clients en hibernation aux petits montants (M1–2) forment « Perdus » (11 segments)",
              "custom": "le schéma personnalisé du fichier de paramètres"}[p["rfm_scheme"]]
    out = [
        f"Seuls les achats **avant le {pd.Timestamp(p['as_of']).strftime('%d/%m/%Y')}** comptent.",
        "Récence (R) = nombre de jours depuis le dernier achat ; fréquence (F) = " + freq + " ; montant (M) = " + mon + ".",
        f"Chaque client reçoit des notes de 1 à {bins} par quantiles : note = 1 + partie entière de "
        f"{bins} × (rang − 1) / nombre de clients, où les ex aequo prennent le plus petit rang, donc **la même note**. "
        f"Pour la récence l'ordre est inversé : {bins} = achat le plus récent.",
        "Conséquence : quand beaucoup de clients ont la même valeur (par exemple un seul achat), ils partagent une "
        "note et les notes suivantes peuvent rester vides.",
        f"Segments : {scheme}. Chaque combinaison de notes tombe dans exactement un segment (vérifié au chargement).",
        f"Le chiffre d'affaires (CA) des tableaux est celui des achats sur {window}.",
    ]
    if bins != 5 and p["rfm_scheme"] != "custom":
        out.append(f"La grille est définie sur 5 notes : une note n sur {bins} est ramenée au centre de son "
                   f"intervalle, note sur 5 = 1 + partie entière de 5 × (n − ½) / {bins}.")
    return out


def grid_sentence(customers: pd.DataFrame) -> str:
    """French sentence reading the R x F grid."""
    n = len(customers)
    one = float((customers["f_score"] == customers["f_score"].min()).mean())
    recent = float((customers["r_score"] == customers["r_score"].max()).mean())
    return (f"Lecture : en haut à droite, les clients récents et fréquents ; en bas à gauche, ceux qui ont peu acheté "
            f"il y a longtemps. {fr_percent(one, 0)} des {fr_number(n)} clients ont la note de fréquence la plus basse "
            f"et {fr_percent(recent, 0)} la note de récence la plus haute.")


def ranking_sentence(table: pd.DataFrame) -> str:
    """French sentence reading the ranking chart: segments whose revenue share exceeds their size."""
    over = table[table["revenue_share"] > table["customer_share"]]
    under = table[table["revenue_share"] < table["customer_share"] / 2]
    text = ""
    if len(over):
        text += ("Pèsent plus dans le CA que dans l'effectif (part du CA / part des clients) : " + ", ".join(
            f"« {r.segment} » (×{fr_number(r.revenue_share / r.customer_share, 1)})" for r in over.itertuples()) + ". ")
    if len(under):
        text += "Pèsent moins de la moitié de leur effectif dans le CA : " + ", ".join(f"« {s} »" for s in under["segment"]) + "."
    return text.strip() or "Chaque segment pèse dans le CA à peu près autant que dans l'effectif."


# --------------------------------------------------------------------------- RFM


def resolve_as_of(con: duckdb.DuckDBPyConnection, as_of: str | None) -> str:
    """``as_of`` or, when empty, the day after the last transaction."""
    if as_of:
        return str(as_of)
    last = con.execute("SELECT MAX(ts) FROM transactions").fetchall()[0][0]
    if last is None:
        raise InputError("La table des transactions est vide : rien à segmenter",
                         hint="Lancez d'abord l'étape 01 (constituer) sur vos fichiers de ventes")
    return (pd.Timestamp(last).normalize() + pd.Timedelta(days=1)).date().isoformat()


def customers_rfm(con: duckdb.DuckDBPyConnection, p: dict, as_of: str | None = None) -> pd.DataFrame:
    """RFM scores and segment of every customer who bought before ``as_of``.

    Parameters
    ----------
    p : dict
        Notebook parameters (``rfm_bins, rfm_scheme, rfm_custom_scheme, frequency_basis,
        monetary_basis, revenue_months``, ``as_of``).

    Returns
    -------
    DataFrame
        Columns of :func:`crmlab.rfm.compute_rfm` plus ``rfm_segment`` (ordered
        categorical in the scheme's display order).
    """
    check_block(p)
    as_of = as_of or p["as_of"]
    scores = rfm.compute_rfm(con, as_of, bins=p["rfm_bins"], frequency_basis=p["frequency_basis"],
                             monetary_basis=p["monetary_basis"], revenue_months=p["revenue_months"])
    if scores.empty:
        raise InputError(f"Aucune transaction avant le {as_of} : rien à segmenter",
                         hint="Vérifiez run.as_of et que l'étape 01 a bien chargé des ventes")
    out = rfm.assign_segments(scores, p["rfm_scheme"], p["rfm_bins"], p.get("rfm_custom_scheme"))
    order = rfm.segment_order(p["rfm_scheme"], p.get("rfm_custom_scheme"))
    out["rfm_segment"] = pd.Categorical(out["rfm_segment"], categories=order, ordered=True)
    return out


def attach_models(customers: pd.DataFrame, clv_df: pd.DataFrame | None = None,
                  clusters_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add ``p_alive, clv, expected_purchases`` and ``cluster`` to the RFM frame (new frame).

    Parameters
    ----------
    customers : DataFrame
        One row per customer (``customer_id`` …).
    clv_df : DataFrame, optional
        ``customer_id, p_alive, clv, expected_purchases`` (from the CLV cells).
    clusters_df : DataFrame, optional
        ``customer_id, cluster`` (French label, from the behaviour cells).

    Missing models give missing values (NaN / None), never invented ones.
    """
    out = customers.drop(columns=["p_alive", "clv", "expected_purchases", "cluster"], errors="ignore")
    if clv_df is not None and len(clv_df):
        cols = [c for c in ("p_alive", "clv", "expected_purchases") if c in clv_df.columns]
        out = out.merge(clv_df[["customer_id", *cols]].drop_duplicates("customer_id"), on="customer_id", how="left")
    for c in ("p_alive", "clv", "expected_purchases"):
        if c not in out:
            out[c] = np.nan
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    if clusters_df is not None and len(clusters_df):
        out = out.merge(clusters_df[["customer_id", "cluster"]].drop_duplicates("customer_id"), on="customer_id", how="left")
        out["cluster"] = out["cluster"].astype(object)
    else:
        out["cluster"] = None
    return out


def ranking(customers: pd.DataFrame) -> pd.DataFrame:
    """Segment table ranked by revenue contribution.

    Parameters
    ----------
    customers : DataFrame
        ``customer_id, rfm_segment, revenue, total_spend, n_orders, frequency, recency_days``
        and optionally ``p_alive, clv``.

    Returns
    -------
    DataFrame
        One row per segment (segments without customers dropped): ``segment, customers,
        customer_share, revenue, revenue_share`` (revenue of the ``revenue_months``
        window), ``basket`` (total spend / orders, all history), ``frequency`` (mean), ``repeat_rate``
        (share with two orders or more), ``recency_days`` (median), ``p_alive``, ``clv``
        (means; NaN without model), ``clv_total``; sorted by ``revenue`` then ``customers``.
    """
    frame = customers.assign(
        repeat=(customers["n_orders"] >= 2).astype(float),
        rfm_segment=customers["rfm_segment"].astype(str),
    )
    for c in ("p_alive", "clv"):
        if c not in frame:
            frame[c] = np.nan
    g = frame.groupby("rfm_segment", observed=True)
    table = pd.DataFrame({
        "customers": g.size(),
        "revenue": g["revenue"].sum(),
        "spend": g["total_spend"].sum(),
        "orders": g["n_orders"].sum(),
        "frequency": g["frequency"].mean(),
        "repeat_rate": g["repeat"].mean(),
        "recency_days": g["recency_days"].median(),
        "p_alive": g["p_alive"].mean(),
        "clv": g["clv"].mean(),
        "clv_total": g["clv"].sum(min_count=1),
    })
    total_rev = table["revenue"].sum()
    table["customer_share"] = table["customers"] / table["customers"].sum()
    table["revenue_share"] = table["revenue"] / total_rev if total_rev else np.nan
    table["basket"] = table["spend"] / table["orders"].where(table["orders"] > 0)
    table = table.reset_index(names="segment").sort_values(["revenue", "customers"], ascending=False, kind="stable")
    return table[["segment", "customers", "customer_share", "revenue", "revenue_share", "basket", "frequency",
                  "repeat_rate", "recency_days", "p_alive", "clv", "clv_total"]].reset_index(drop=True)


RANKING_LABELS = {
    "segment": "Segment", "customers": "Clients", "customer_share": "Part des clients", "revenue": "CA",
    "revenue_share": "Part du CA", "basket": "Panier moyen", "frequency": "Fréquence moyenne",
    "repeat_rate": "Taux de réachat", "recency_days": "Récence médiane (j)", "p_alive": "Prob. d'activité",
    "clv": "CLV moyenne", "clv_total": "CLV totale",
}
RANKING_FORMATS = {"customers": "int", "customer_share": "pct", "revenue": "money", "revenue_share": "pct",
                   "basket": "money", "frequency": "float1", "repeat_rate": "pct", "recency_days": "int",
                   "p_alive": "pct", "clv": "money", "clv_total": "money"}


def concentration(customers: pd.DataFrame, value: str = "revenue") -> tuple[pd.DataFrame, float]:
    """Cumulative share of ``value`` against the share of customers, best customers first.

    Returns
    -------
    (curve, top20) : DataFrame, float
        ``curve``: ``customer_share, value_share`` from (0, 0) to (1, 1); ``top20``: share
        of ``value`` made by the best 20 % of customers (interpolated on the curve).
    """
    v = np.sort(np.clip(customers[value].fillna(0).to_numpy(dtype=float), 0, None))[::-1]
    n = len(v)
    total = v.sum()
    x = np.concatenate([[0.0], np.arange(1, n + 1) / n]) if n else np.array([0.0, 1.0])
    y = np.concatenate([[0.0], np.cumsum(v) / total]) if n and total > 0 else np.linspace(0, 1, len(x))
    curve = pd.DataFrame({"customer_share": x, "value_share": y})
    top20 = float(np.interp(0.2, x, y))
    return curve, top20


# --------------------------------------------------------------------------- migration

NEW_LABEL = "Pas encore client"


def transition_matrix(before: pd.DataFrame, after: pd.DataFrame, order: list[str] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment transition matrix between two snapshots.

    Parameters
    ----------
    before, after : DataFrame
        ``customer_id, segment``. Customers of ``after`` missing from ``before`` come
        from :data:`NEW_LABEL`; customers of ``before`` missing from ``after`` are ignored
        (cannot happen with cumulative histories).
    order : list of str, optional
        Display order of segments.

    Returns
    -------
    (counts, pct) : DataFrame, DataFrame
        Rows = segment before (``NEW_LABEL`` last), columns = segment after; ``pct`` is
        the row share (each row sums to 1; empty rows dropped).
    """
    merged = after[["customer_id", "segment"]].rename(columns={"segment": "after"}).merge(
        before[["customer_id", "segment"]].rename(columns={"segment": "before"}), on="customer_id", how="left")
    merged["before"] = merged["before"].astype(object).where(merged["before"].notna(), NEW_LABEL)
    return _transition(merged, order)


def _transition(merged: pd.DataFrame, order: list[str] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`transition_matrix` of a frame ``after, before`` (one row per customer of ``after``, new ones labelled)."""
    merged = merged.assign(after=merged["after"].astype(object))
    seen_after = list(dict.fromkeys(merged["after"]))
    seen_before = list(dict.fromkeys(merged["before"]))
    base = order or sorted(set(seen_after) | set(seen_before) - {NEW_LABEL})
    rows = [s for s in base if s in seen_before] + ([NEW_LABEL] if NEW_LABEL in seen_before else [])
    cols = [s for s in base if s in seen_after]
    counts = pd.crosstab(merged["before"], merged["after"]).reindex(index=rows, columns=cols, fill_value=0)
    counts.index.name, counts.columns.name = "avant", "après"
    pct = counts.div(counts.sum(axis=1), axis=0)
    return counts.astype("int64"), pct


def _date_before(p: dict) -> str:
    return (pd.Timestamp(p["as_of"]) - pd.DateOffset(months=p["comparison_months"])).date().isoformat()


def segments_before(con: duckdb.DuckDBPyConnection, p: dict) -> pd.DataFrame:
    """Segment of every customer ``comparison_months`` before ``as_of``.

    Scores recomputed on the customers of that date (quantiles of that population) with
    the same definitions and scheme as :func:`customers_rfm`. The notebook computes them
    right after today's segments, while little else is in memory: the two distinct counts
    of the RFM query take about 1.8 GB in DuckDB at 10 M transactions, and doing it in
    :func:`migration`, after the CLV frames, made the step's peak (3.8 GB).

    Returns
    -------
    DataFrame
        ``customer_id, segment`` (object; empty when nobody had bought then).
    """
    before = rfm.compute_rfm(con, _date_before(p), bins=p["rfm_bins"], frequency_basis=p["frequency_basis"],
                             monetary_basis=p["monetary_basis"], revenue_months=p["revenue_months"])
    if len(before):
        before = rfm.assign_segments(before, p["rfm_scheme"], p["rfm_bins"], p.get("rfm_custom_scheme"))
    else:
        before = before.assign(rfm_segment=pd.Series(dtype=object))
    return pd.DataFrame({"customer_id": before["customer_id"].astype(object),
                         "segment": before["rfm_segment"].astype(object)})


def migration(con: duckdb.DuckDBPyConnection, p: dict, customers: pd.DataFrame,
              before: pd.DataFrame | None = None) -> dict:
    """Segments ``comparison_months`` ago vs at ``as_of``, with the revenue that moved.

    Parameters
    ----------
    customers : DataFrame
        Today's customers (``customer_id, rfm_segment``).
    before : DataFrame, optional
        :func:`segments_before` (computed here when not given).

    Returns
    -------
    dict
        ``date_before`` (str), ``counts``, ``pct`` (see :func:`transition_matrix`),
        ``flows``: DataFrame ``before, after, customers, revenue_before, revenue_after``
        (revenue over the ``comparison_months`` before / after the earlier date),
        ``stay_rate``: Series segment → share of its customers still in it,
        ``moved_share``: share of the earlier customers who changed segment.
    """
    t0 = _date_before(p)
    b = segments_before(con, p) if before is None else before[["customer_id", "segment"]]
    order = rfm.segment_order(p["rfm_scheme"], p.get("rfm_custom_scheme"))
    a = customers[["customer_id", "rfm_segment"]].rename(columns={"rfm_segment": "segment"})
    a = a.assign(segment=a["segment"].astype(str))
    t_start = (pd.Timestamp(t0) - pd.DateOffset(months=p["comparison_months"])).date().isoformat()
    # each customer of today with its segment then and the revenue before / after t0: joined
    # in DuckDB, returned in the order of `customers`
    register_frame(con, "_mig_a", pd.DataFrame({"i": np.arange(len(a)), "customer_id": a["customer_id"].reset_index(drop=True)}))
    register_frame(con, "_mig_b", b)
    try:
        joined = to_frame(con.sql("""
            SELECT b.segment AS before, coalesce(r.revenue_before, 0.0) AS revenue_before,
                   coalesce(r.revenue_after, 0.0) AS revenue_after
            FROM _mig_a a LEFT JOIN _mig_b b ON b.customer_id = a.customer_id
            LEFT JOIN (
                SELECT customer_id,
                       SUM(amount) FILTER (WHERE ts >= CAST(? AS DATE) AND ts < CAST(? AS DATE)) AS revenue_before,
                       SUM(amount) FILTER (WHERE ts >= CAST(? AS DATE) AND ts < CAST(? AS DATE)) AS revenue_after
                FROM transactions WHERE customer_id IS NOT NULL AND ts >= CAST(? AS DATE) AND ts < CAST(? AS DATE)
                GROUP BY customer_id
            ) r ON r.customer_id = a.customer_id
            ORDER BY a.i""", params=[t_start, t0, t0, p["as_of"], t_start, p["as_of"]]))
    finally:
        con.unregister("_mig_a")
        con.unregister("_mig_b")
    before_seg = joined["before"].astype(object)
    m = pd.DataFrame({"customer_id": a["customer_id"].reset_index(drop=True), "after": a["segment"].reset_index(drop=True),
                      "before": before_seg.where(before_seg.notna(), NEW_LABEL),
                      "revenue_before": joined["revenue_before"].astype(float),
                      "revenue_after": joined["revenue_after"].astype(float)})
    counts, pct = _transition(m[["customer_id", "after", "before"]], order)
    flows = (m.groupby(["before", "after"], observed=True)
             .agg(customers=("customer_id", "size"), revenue_before=("revenue_before", "sum"),
                  revenue_after=("revenue_after", "sum"))
             .reset_index().sort_values("customers", ascending=False, kind="stable").reset_index(drop=True))
    old = m[m["before"] != NEW_LABEL]
    stay = old.assign(stay=old["before"] == old["after"]).groupby("before")["stay"].mean()
    stay = stay.reindex([s for s in order if s in stay.index])
    return {
        "date_before": t0, "date_after": p["as_of"], "counts": counts, "pct": pct, "flows": flows, "stay_rate": stay,
        "moved_share": float((old["before"] != old["after"]).mean()) if len(old) else np.nan,
        "n_new": int((m["before"] == NEW_LABEL).sum()),
    }


# --------------------------------------------------------------------------- targets


def plan_targets(con: duckdb.DuckDBPyConnection, p: dict, customers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Select the targets of ``p["targets"]``, draw their control groups and store them as planned campaigns.

    Returns
    -------
    (campaigns, contacts) : see :func:`crmlab.targets.plan`.
    """
    labels = rfm.segment_order(p["rfm_scheme"], p.get("rfm_custom_scheme"))
    tlist = targets.check_targets(p.get("targets") or [], "segmenter.targets", segments=labels)
    frame = customers.assign(rfm_segment=customers["rfm_segment"].astype(str))
    campaigns, contacts = targets.plan(frame, tlist, seed=p["seed"], as_of=p["as_of"])
    targets.store(con, campaigns, contacts, run_id=p["run_id"], as_of=p["as_of"])
    return campaigns, contacts


# --------------------------------------------------------------------------- writing, KPIs, checks


def write_snapshot(con: duckdb.DuckDBPyConnection, customers: pd.DataFrame, *, as_of: str, run_id: str) -> int:
    """Replace the ``segments`` rows of ``as_of`` with one row per customer; return the row count."""
    seg = customers["rfm_segment"]
    # the segment and cluster labels go to DuckDB as categoricals (read as ENUM, cast to
    # VARCHAR): no per-row Python string conversion; as_of and run_id are parameters
    if not (isinstance(seg.dtype, pd.CategoricalDtype) and seg.notna().all()):
        seg = seg.astype(str)
    frame = pd.DataFrame({c: customers[c] for c in ("customer_id", "recency_days", "frequency", "monetary",
                                                   "r_score", "f_score", "m_score")})
    frame["rfm_segment"] = seg
    cluster = customers["cluster"] if "cluster" in customers else pd.Series(None, index=customers.index, dtype=object)
    frame["cluster"] = (pd.Categorical(cluster.astype(object).where(cluster.notna(), None)) if cluster.notna().any()
                        else pd.Series(None, index=customers.index, dtype=object))
    for c in ("p_alive", "clv"):
        frame[c] = customers[c] if c in customers else None
    con.execute("DELETE FROM segments WHERE as_of = CAST(? AS DATE)", [as_of])
    register_frame(con, "_segments_in", frame)
    try:
        con.execute("""INSERT INTO segments SELECT CAST(? AS DATE), customer_id, recency_days, frequency, monetary,
                       r_score, f_score, m_score, CAST(rfm_segment AS VARCHAR), CAST(cluster AS VARCHAR),
                       CAST(p_alive AS DOUBLE), CAST(clv AS DOUBLE), ? FROM _segments_in""", [as_of, run_id])
    finally:
        con.unregister("_segments_in")
    return len(frame)


#: KPIs shown on index.html for step 02 (all written with ``dimension = ''``).
HEADLINE_KPIS = ["clients actifs", "part du CA des Champions", "CLV moyenne", "part du CA des 20 % meilleurs clients"]


def kpi_frame(customers: pd.DataFrame, table: pd.DataFrame, top20: float, mig: dict | None,
              campaigns: pd.DataFrame | None, *, currency: str = "EUR", revenue_months: int = 12,
              fits: pd.DataFrame | None = None, extra: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """KPIs of step 02: headline figures (``dimension = ''``), per segment, migration, targets, model fits.

    Shares are fractions 0–1 with unit ``part``, amounts in the run currency. Headline
    KPIs (:data:`HEADLINE_KPIS`): active customers (bought within ``revenue_months``),
    revenue share of the Champions (of the first segment when the scheme has none), mean
    CLV (when computed), revenue share of the best 20 % customers.

    Parameters
    ----------
    fits : DataFrame, optional
        ``model, param, value`` (see :func:`model_fits`), stored as ``ajustement du modèle``
        with dimension ``model.param``.
    extra : list of DataFrame, optional
        Further KPI frames (``kpi, value, unit, dimension``) of the step, e.g. the CLV and
        behaviour cells' ``clv_kpis`` and ``cluster_kpis``; appended as they are.

    Returns
    -------
    DataFrame
        ``kpi, dimension, value, unit``.
    """
    window = f"{revenue_months} mois" if revenue_months else "historique"
    rows = []
    active = int((customers["revenue"] > 0).sum()) if revenue_months else int(len(customers))
    rows.append(("clients actifs", "", active, "clients"))
    champ = table.loc[table["segment"] == "Champions", "revenue_share"]
    if len(champ):
        rows.append(("part du CA des Champions", "", float(champ.iloc[0]), "part"))
    else:
        rows.append(("part du CA du 1er segment", table["segment"].iloc[0], float(table["revenue_share"].iloc[0]), "part"))
    if customers["clv"].notna().any():
        rows.append(("CLV moyenne", "", float(customers["clv"].mean()), currency))
    rows.append(("part du CA des 20 % meilleurs clients", "", top20, "part"))
    rows.append(("clients segmentés", "ensemble", len(customers), "clients"))
    rows.append(("fenêtre du CA", "ensemble", revenue_months, "mois"))
    for r in table.itertuples():
        rows += [("clients", r.segment, r.customers, "clients"),
                 ("part des clients", r.segment, r.customer_share, "part"),
                 (f"chiffre d'affaires ({window})", r.segment, r.revenue, currency),
                 ("part du CA", r.segment, r.revenue_share, "part"),
                 ("taux de réachat", r.segment, r.repeat_rate, "part")]
        if r.clv == r.clv:
            rows.append(("CLV moyenne", r.segment, r.clv, currency))
        if r.p_alive == r.p_alive:
            rows.append(("probabilité d'activité moyenne", r.segment, r.p_alive, "part"))
    if mig is not None:
        rows.append(("taux de migration", "ensemble", mig["moved_share"], "part"))
        for seg, v in mig["stay_rate"].items():
            rows.append(("taux de maintien", seg, v, "part"))
    if campaigns is not None:
        for c in campaigns.itertuples():
            rows += [("clients ciblés", c.name, c.n_selected, "clients"),
                     ("groupe témoin", c.name, c.n_control, "clients")]
    if fits is not None and len(fits):
        for f in fits.itertuples():
            rows.append(("ajustement du modèle", f"{f.model}.{f.param}", f.value, ""))
    out = pd.DataFrame(rows, columns=["kpi", "dimension", "value", "unit"])
    for frame in extra or []:
        if frame is not None and len(frame):
            add = frame.copy()
            add["dimension"] = add["dimension"].fillna("").astype(str) if "dimension" in add else ""
            add["unit"] = add["unit"].fillna("").astype(str) if "unit" in add else ""
            out = pd.concat([out, add[["kpi", "dimension", "value", "unit"]]], ignore_index=True)
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    return out.drop_duplicates(["kpi", "dimension"], keep="first").reset_index(drop=True)


def write_kpis(con: duckdb.DuckDBPyConnection, kpis: pd.DataFrame, *, run_id: str, as_of: str) -> pd.DataFrame:
    """Write step 02's KPIs, keeping those other cells of the step already wrote for this run.

    ``db.write_kpis`` replaces every KPI of the run and step; KPIs written earlier in the
    notebook (e.g. by the CLV cells) with another (kpi, dimension) are kept.

    Returns
    -------
    DataFrame
        Every KPI written (``kpi, dimension, value, unit``).
    """
    earlier = to_frame(con.sql("SELECT kpi, dimension, value, unit FROM kpis WHERE run_id = ? AND step = '02'", params=[run_id]))
    keys = set(zip(kpis["kpi"], kpis["dimension"], strict=True))
    keep = earlier[[(k, d) not in keys for k, d in zip(earlier["kpi"], earlier["dimension"], strict=True)]]
    allk = pd.concat([keep, kpis], ignore_index=True) if len(keep) else kpis
    db.write_kpis(con, allk, run_id=run_id, step="02", as_of=as_of)
    return allk


def model_fits(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Fitted model parameters this run stored in ``model_fits`` (``model, param, value``)."""
    return to_frame(con.sql("SELECT model, param, value FROM model_fits WHERE run_id = ? ORDER BY model, param", params=[run_id]))


def run_checks(con: duckdb.DuckDBPyConnection, p: dict, table: pd.DataFrame, contacts: pd.DataFrame,
               campaigns: pd.DataFrame) -> list[str]:
    """Run the step's own checks before the commit; raise :class:`CheckError` on failure.

    * every customer with a transaction before ``as_of`` has exactly one ``segments`` row
      for ``as_of``, with a segment, and no other customer has one;
    * customer and revenue shares of the ranking add up to 100 %;
    * in every planned target the control share is within rounding tolerance of the
      requested share (0.5 customer per segment).

    Returns
    -------
    list of str
        French sentences of the checks passed.
    """
    day = pd.Timestamp(p["as_of"]).date().isoformat()  # a validated parameter, not data
    # the customers who bought before as_of, read once for both checks
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _seg_buyers AS
                    SELECT DISTINCT customer_id FROM transactions WHERE customer_id IS NOT NULL AND ts < DATE '{day}'""")
    try:
        db.check(con, f"""
            SELECT t.customer_id, COUNT(s.customer_id) AS n FROM _seg_buyers t
            LEFT JOIN segments s ON s.customer_id = t.customer_id AND s.as_of = DATE '{day}'
            GROUP BY t.customer_id HAVING COUNT(s.customer_id) <> 1
        """, "chaque client ayant acheté a exactement un segment")
        db.check(con, f"""
            SELECT * FROM segments WHERE as_of = DATE '{day}' AND (rfm_segment IS NULL OR rfm_segment = 'None'
                OR customer_id NOT IN (SELECT customer_id FROM _seg_buyers))
        """, "chaque ligne de segments a un segment et un client ayant acheté")
    finally:
        con.execute("DROP TABLE IF EXISTS _seg_buyers")
    done = [f"Chaque client ayant acheté avant le {pd.Timestamp(day).strftime('%d/%m/%Y')} est dans exactement un segment."]
    for col, what in (("customer_share", "clients"), ("revenue_share", "chiffre d'affaires")):
        total = table[col].sum()
        if table["revenue"].sum() == 0 and col == "revenue_share":
            continue
        if abs(total - 1) > 1e-9:
            raise CheckError(f"Contrôle échoué : les parts de {what} des segments font {100 * total:.6f} % au lieu de 100 %")
    done.append("Les parts de clients et de chiffre d'affaires des segments font 100 %.")
    for c in campaigns.itertuples():
        sub = contacts[contacts["campaign_id"] == c.campaign_id]
        actual, share, tol = targets.control_tolerance(sub, c.control_share)
        if len(sub) and abs(actual - share) > tol:
            raise CheckError(f"Contrôle échoué : groupe témoin de « {c.name} » = {100 * actual:.2f} % au lieu de "
                             f"{100 * share:.0f} % (tolérance {100 * tol:.2f} pt)")
        stored = con.execute("SELECT COUNT(*) FROM campaign_contacts WHERE campaign_id = ?", [c.campaign_id]).fetchall()[0][0]
        if stored != len(sub):
            raise CheckError(f"Contrôle échoué : {stored} contacts enregistrés pour « {c.name} » au lieu de {len(sub)}")
    if len(campaigns):
        done.append("Dans chaque cible, la part du groupe témoin respecte la part demandée (à l'arrondi près par segment).")
    return done


# --------------------------------------------------------------------------- findings


def _pct(x: float) -> str:
    if x == 0 or x >= 1 or 0.095 <= x <= 0.995:
        return fr_percent(x, 0)
    return fr_percent(x, 1)


def findings(customers: pd.DataFrame, table: pd.DataFrame, top20: float, mig: dict | None = None,
             campaigns: pd.DataFrame | None = None, *, as_of: str, currency: str = "EUR",
             revenue_months: int = 12, comparison_months: int = 6) -> list[str]:
    """French sentences stating what the data says, computed from the tables.

    Returns
    -------
    list of str
        Sentences (``**bold**`` allowed) for :func:`crmlab.display.bullets`.
    """
    out = []
    n = len(customers)
    window = f"des {revenue_months} derniers mois" if revenue_months else "de tout l'historique"
    date_fr = pd.Timestamp(as_of).strftime("%d/%m/%Y")
    active = int((customers["revenue"] > 0).sum())
    if revenue_months:
        out.append(f"Au {date_fr}, **{fr_number(n)} clients** ont déjà acheté ; {fr_number(active)} "
                   f"({_pct(active / n)}) ont acheté au cours des {revenue_months} derniers mois.")
    else:
        out.append(f"Au {date_fr}, **{fr_number(n)} clients** ont déjà acheté.")
    rev = table[table["revenue"] > 0]
    if len(rev):
        first = rev.iloc[0]
        cum = rev["revenue_share"].cumsum()
        k = int((cum < 0.5).sum()) + 1
        top_k = rev.iloc[:k]
        names = ", ".join(f"« {s} »" for s in top_k["segment"])
        out.append(
            f"Le segment « **{first.segment}** » ({_pct(first.customer_share)} des clients) fait "
            f"**{_pct(first.revenue_share)} du chiffre d'affaires** {window}"
            + (f" ; avec {names.split(', ', 1)[1]}, {k} segments réunissant {_pct(top_k['customer_share'].sum())} "
               f"des clients en font {_pct(top_k['revenue_share'].sum())}." if k > 1 else ".")
        )
        champ = table[table["segment"] == "Champions"]
        if len(champ) and first.segment != "Champions":
            c = champ.iloc[0]
            out.append(f"Les Champions ({_pct(c.customer_share)} des clients) font {_pct(c.revenue_share)} du chiffre "
                       f"d'affaires {window}.")
    out.append(f"Les 20 % de meilleurs clients font **{_pct(top20)}** du chiffre d'affaires {window}"
               + (" : la valeur est très concentrée." if top20 >= 0.6 else "."))
    risk = table[table["segment"].isin(["À risque", "À ne pas perdre"])]
    if len(risk) and risk["customers"].sum():
        cust = customers[customers["rfm_segment"].astype(str).isin(["À risque", "À ne pas perdre"])]
        out.append(
            f"{fr_number(len(cust))} clients « À risque » ou « À ne pas perdre » ont acheté souvent mais plus depuis "
            f"{fr_number(cust['recency_days'].median())} jours en médiane ; ils ont dépensé "
            f"{fr_money(cust['total_spend'].sum(), currency)} au total : ce sont les premiers à réactiver.")
    if customers["clv"].notna().any():
        best = table.dropna(subset=["clv"]).sort_values("clv", ascending=False).iloc[0]
        out.append(f"La valeur future estimée (CLV) est de **{fr_money(customers['clv'].mean(), currency)} par client** "
                   f"en moyenne ; les clients « {best.segment} » valent {fr_money(best.clv, currency)} chacun.")
    if customers["p_alive"].notna().any():
        dormant = float((customers["p_alive"] < 0.5).mean())
        out.append(f"Selon le modèle, {_pct(dormant)} des clients ont moins d'une chance sur deux d'être encore actifs.")
    if mig is not None and len(mig["stay_rate"]):
        stay = mig["stay_rate"]
        top_seg = next((s for s in ("Champions", *stay.index) if s in stay.index), None)
        flows = mig["flows"]
        leave = flows[(flows["before"] == top_seg) & (flows["after"] != top_seg)].sort_values("customers", ascending=False)
        sent = (f"En {comparison_months} mois, {_pct(stay[top_seg])} des clients « {top_seg} » le sont restés"
                if top_seg else "")
        if top_seg and len(leave):
            dest = leave.iloc[0]
            share = dest.customers / flows.loc[flows["before"] == top_seg, "customers"].sum()
            sent += f" ; {_pct(share)} sont passés « {dest.after} »"
        if sent:
            out.append(sent + f" (au total, {_pct(mig['moved_share'])} des clients ont changé de segment).")
    if campaigns is not None and len(campaigns):
        out.append(f"{len(campaigns)} cible(s) préparée(s) : {fr_number(campaigns['n_selected'].sum())} clients, "
                   f"dont {fr_number(campaigns['n_control'].sum())} gardés en groupe témoin pour mesurer l'effet à l'étape 06.")
    return out


# --------------------------------------------------------------------------- charts


def chart_grid(customers: pd.DataFrame, bins: int):
    """Heatmap of customer counts on the R x F score grid, annotated with segment labels."""
    counts = pd.crosstab(customers["f_score"], customers["r_score"]).reindex(
        index=range(bins, 0, -1), columns=range(1, bins + 1), fill_value=0)
    seg = (customers.assign(rfm_segment=customers["rfm_segment"].astype(str))
           .groupby(["f_score", "r_score"])["rfm_segment"].agg(lambda s: s.mode().iloc[0]))
    labels = counts.copy().astype(object)
    for f in counts.index:
        for r in counts.columns:
            name = seg.get((f, r), "")
            labels.loc[f, r] = f"{fr_number(counts.loc[f, r])}\n{name}" if counts.loc[f, r] else ""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sns.heatmap(counts, annot=labels.to_numpy(), fmt="", cmap="Blues", cbar=False, ax=ax,
                annot_kws={"fontsize": 7}, linewidths=0.5)
    cell = counts.stack()
    fr = cell.idxmax()
    title = (f"La case la plus peuplée est F{fr[0]}·R{fr[1]} ({fr_percent(cell.max() / cell.sum(), 0)} des clients)")
    return charts.finish(fig, title, "note de récence R (5 = achat le plus récent)", "note de fréquence F", ax=ax)


def chart_ranking(table: pd.DataFrame):
    """Bars of customer share vs revenue share per segment."""
    long = table.melt(id_vars="segment", value_vars=["customer_share", "revenue_share"], var_name="mesure", value_name="part")
    long["mesure"] = long["mesure"].map({"customer_share": "part des clients", "revenue_share": "part du CA"})
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(table) + 1.5))
    sns.barplot(long, y="segment", x="part", hue="mesure", ax=ax, orient="h")
    charts.axis_fr(ax, "x", "percent", 0)
    first = table.iloc[0]
    title = f"« {first.segment} » : {fr_percent(first.customer_share, 0)} des clients, {fr_percent(first.revenue_share, 0)} du CA"
    ax.legend(title=None)
    return charts.finish(fig, title, "part", "", ax=ax)


def chart_concentration(curve: pd.DataFrame, top20: float):
    """Cumulative revenue share vs customer share (Lorenz-like), with the top-20 % point."""
    fig, ax = plt.subplots()
    ax.plot(curve["customer_share"], curve["value_share"], color=charts.PALETTE[0], lw=2, label="clients triés par CA")
    ax.plot([0, 1], [0, 1], color="#8c8c8c", ls="--", lw=1, label="répartition égale")
    ax.scatter([0.2], [top20], color=charts.PALETTE[1], zorder=3)
    ax.annotate(f"20 % des clients → {fr_percent(top20, 0)} du CA", (0.2, top20), xytext=(0.3, max(top20 - 0.15, 0.05)),
                arrowprops={"arrowstyle": "->"})
    charts.axis_fr(ax, "x", "percent", 0)
    charts.axis_fr(ax, "y", "percent", 0)
    ax.legend(loc="lower right")
    return charts.finish(fig, f"Les 20 % de meilleurs clients font {fr_percent(top20, 0)} du chiffre d'affaires",
                         "part cumulée des clients (meilleurs d'abord)", "part cumulée du CA", ax=ax)


def chart_migration(mig: dict, comparison_months: int):
    """Heatmap of the transition matrix in row percent."""
    pct = mig["pct"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(pct) + 2.5))
    annot = pct.map(lambda v: fr_percent(v, 0) if v >= 0.005 else "")
    sns.heatmap(pct, annot=annot.to_numpy(), fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                annot_kws={"fontsize": 7}, linewidths=0.5)
    ax.tick_params(axis="x", rotation=45)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    stay = mig["stay_rate"]
    if len(stay):
        title = (f"En {comparison_months} mois, {fr_percent(mig['moved_share'], 0)} des clients ont changé de segment ; "
                 f"« {stay.idxmax()} » est le plus stable ({fr_percent(stay.max(), 0)})")
    else:
        title = "Tous les clients sont nouveaux sur la période"
    return charts.finish(fig, title, f"segment au {pd.Timestamp(mig['date_after']).strftime('%d/%m/%Y')}",
                         f"segment au {pd.Timestamp(mig['date_before']).strftime('%d/%m/%Y')}", ax=ax)
