"""Workshop explorers of step 02: change the RFM bins / scheme, build a target, see the effect.

The logic lives in pure functions (:func:`rfm_summary`, :func:`target_summary`) that take
a per-customer frame and the widget values and return tables; the ipywidgets only call
them. Under papermill (and in the HTML report, which drops widget outputs) the
``show_*`` helpers first display the static result for the run's parameters, then the
widget for JupyterLab.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmlab import display as show
from crmlab import rfm, targets
from crmlab.charts import fr_money, fr_number, fr_percent

SUMMARY_LABELS = {"segment": "Segment", "customers": "Clients", "customer_share": "Part des clients",
                  "revenue": "CA", "revenue_share": "Part du CA", "clv": "CLV moyenne"}
SUMMARY_FORMATS = {"customers": "int", "customer_share": "pct", "revenue": "money", "revenue_share": "pct", "clv": "money"}


def rfm_summary(customers: pd.DataFrame, bins: int, scheme: str = "rf_grid",
                custom: list[dict] | None = None) -> pd.DataFrame:
    """Segment sizes, revenue and CLV after re-scoring on ``bins`` bins with ``scheme``.

    Parameters
    ----------
    customers : DataFrame
        One row per customer: ``recency_days, frequency, monetary, revenue`` and
        optionally ``clv``.
    bins : int
        Number of score bins (same minimum-rank quantile rule as the SQL scores).
    scheme : str
        ``rf_grid``, ``rfm_11`` or ``custom`` (then ``custom`` holds the rules).

    Returns
    -------
    DataFrame
        ``segment, customers, customer_share, revenue, revenue_share, clv`` (mean CLV,
        NaN without model), one row per segment of the scheme in display order
        (empty segments kept with 0 customers).
    """
    return _summary(rfm.assign_segments(rfm.rescore(customers, bins), scheme, bins, custom), scheme, custom)


def _summary(scored: pd.DataFrame, scheme: str, custom: list[dict] | None) -> pd.DataFrame:
    """:func:`rfm_summary` of customers already re-scored and segmented (``rfm_segment``)."""
    if "clv" not in scored:
        scored["clv"] = np.nan
    order = rfm.segment_order(scheme, custom)
    g = scored.groupby("rfm_segment")
    out = pd.DataFrame({
        "customers": g.size(),
        "revenue": g["revenue"].sum(),
        "clv": g["clv"].mean(),
    }).reindex(order)
    out["customers"] = out["customers"].fillna(0).astype("int64")
    out["revenue"] = out["revenue"].fillna(0.0)
    n, rev = out["customers"].sum(), out["revenue"].sum()
    out["customer_share"] = out["customers"] / n if n else np.nan
    out["revenue_share"] = out["revenue"] / rev if rev else np.nan
    out = out.reset_index(names="segment")
    return out[["segment", "customers", "customer_share", "revenue", "revenue_share", "clv"]]


def changed_segments(customers: pd.DataFrame, scheme: str, bins_a: int, bins_b: int) -> int:
    """Count the customers whose segment differs when scored on ``bins_a`` vs ``bins_b`` bins."""
    seg_a = rfm.assign_segments(rfm.rescore(customers, bins_a), scheme, bins_a)["rfm_segment"]
    return _changed(seg_a, customers, scheme, bins_b)


def _changed(seg_a: pd.Series, customers: pd.DataFrame, scheme: str, bins_b: int) -> int:
    """:func:`changed_segments` given the segments on the first number of bins."""
    seg_b = rfm.assign_segments(rfm.rescore(customers, bins_b), scheme, bins_b)["rfm_segment"]
    return int((seg_a.to_numpy() != seg_b.to_numpy()).sum())


def target_summary(customers: pd.DataFrame, segments: list[str] | tuple = (), clusters: list[str] | tuple = (),
                   min_clv: float | None = None, p_alive_range: tuple[float, float] | None = None,
                   control_share: float = 0.10) -> dict:
    """Size and value of a target chosen with the widget values.

    Parameters
    ----------
    customers : DataFrame
        ``customer_id, rfm_segment, revenue`` (+ ``cluster, clv, p_alive`` when used).
    segments, clusters : sequence of str
        Selected labels (empty = no filter).
    min_clv : float, optional
        Minimum CLV (``None`` or 0 with no CLV column = no filter).
    p_alive_range : (float, float), optional
        Inclusive bounds on ``p_alive``; ``(0, 1)`` or ``None`` = no filter.
    control_share : float
        Share kept as control group (rounded per segment like the real draw).

    Returns
    -------
    dict
        ``customers, customer_share, revenue, revenue_share, clv_mean, clv_total,
        n_control, n_treatment`` and ``by_segment`` (DataFrame ``segment, customers,
        n_control``).
    """
    t = {"name": "exploration", "segments": list(segments), "clusters": list(clusters),
         "min_clv": min_clv if min_clv else None, "min_p_alive": None, "max_p_alive": None}
    if p_alive_range is not None and tuple(p_alive_range) != (0.0, 1.0) and tuple(p_alive_range) != (0, 1):
        t["min_p_alive"], t["max_p_alive"] = float(p_alive_range[0]), float(p_alive_range[1])
    frame = customers.assign(rfm_segment=customers["rfm_segment"].astype(str))
    mask = targets.select(frame, t)
    chosen = frame.loc[mask]
    by = chosen.groupby("rfm_segment").size().rename_axis("segment").reset_index(name="customers")
    by["n_control"] = np.floor(control_share * by["customers"] + 0.5).astype("int64")
    n_total, rev_total = len(frame), float(frame["revenue"].sum())
    has_clv = "clv" in chosen and chosen["clv"].notna().any()
    n_control = int(by["n_control"].sum())
    return {
        "customers": int(len(chosen)),
        "customer_share": len(chosen) / n_total if n_total else np.nan,
        "revenue": float(chosen["revenue"].sum()),
        "revenue_share": float(chosen["revenue"].sum()) / rev_total if rev_total else np.nan,
        "clv_mean": float(chosen["clv"].mean()) if has_clv else np.nan,
        "clv_total": float(chosen["clv"].sum()) if has_clv else np.nan,
        "n_control": n_control,
        "n_treatment": int(len(chosen)) - n_control,
        "by_segment": by,
    }


def target_sentence(result: dict, currency: str = "EUR") -> str:
    """French sentence describing a :func:`target_summary` result."""
    if not result["customers"]:
        return "Aucun client ne correspond à ces critères."
    text = (f"La cible compte **{fr_number(result['customers'])} clients** ({fr_percent(result['customer_share'], 1)} "
            f"de la base) qui ont fait {fr_money(result['revenue'], currency)} de CA "
            f"({fr_percent(result['revenue_share'], 1)}) ; {fr_number(result['n_control'])} seraient gardés en groupe témoin")
    if result["clv_mean"] == result["clv_mean"]:
        text += f", CLV moyenne {fr_money(result['clv_mean'], currency)}"
    return text + "."


def show_table(summary: pd.DataFrame, currency: str = "EUR"):
    """Styled French table of :func:`rfm_summary`."""
    cols = [c for c in summary.columns if not (c == "clv" and summary["clv"].isna().all())]
    return show.table(summary[cols], {k: v for k, v in SUMMARY_FORMATS.items() if k in cols},
                      SUMMARY_LABELS, currency=currency)


def rfm_explorer(customers: pd.DataFrame, *, bins: int = 5, scheme: str = "rf_grid",
                 custom: list[dict] | None = None, currency: str = "EUR", initial: pd.DataFrame | None = None):
    """Ipywidgets explorer: number of bins and scheme → segment table (JupyterLab).

    ``initial`` is the :func:`rfm_summary` of ``bins`` and ``scheme`` when the caller
    already has it (shown first without being computed again).
    """
    import ipywidgets as w
    from IPython.display import display

    schemes = ["rf_grid", "rfm_11"] + (["custom"] if custom else [])
    w_bins = w.IntSlider(value=bins, min=3, max=10, description="Notes (N)")
    w_scheme = w.Dropdown(options=schemes, value=scheme, description="Schéma")
    out = w.Output()

    def refresh(_=None):
        out.clear_output(wait=True)
        with out:
            try:
                same = initial is not None and (w_bins.value, w_scheme.value) == (bins, scheme)
                table = initial if same else rfm_summary(customers, w_bins.value, w_scheme.value, custom)
                display(show_table(table, currency))
            except Exception as exc:  # e.g. a custom scheme written for another number of bins
                display(show.callout(str(exc), "warn"))

    w_bins.observe(refresh, "value")
    w_scheme.observe(refresh, "value")
    refresh()
    return w.VBox([w.HBox([w_bins, w_scheme]), out])


def target_builder(customers: pd.DataFrame, *, control_share: float = 0.10, currency: str = "EUR"):
    """Ipywidgets target builder: segments, clusters, CLV and p_alive sliders → size and value."""
    import ipywidgets as w
    from IPython.display import display

    segs = [s for s in pd.unique(customers["rfm_segment"].astype(str))]
    if isinstance(customers["rfm_segment"].dtype, pd.CategoricalDtype):
        segs = [s for s in customers["rfm_segment"].cat.categories if s in set(segs)]
    controls = {"segments": w.SelectMultiple(options=segs, description="Segments", rows=min(len(segs), 10))}
    if "cluster" in customers and customers["cluster"].notna().any():
        clusters = sorted(customers["cluster"].dropna().astype(str).unique())
        controls["clusters"] = w.SelectMultiple(options=clusters, description="Groupes", rows=min(len(clusters), 8))
    if "clv" in customers and customers["clv"].notna().any():
        hi = float(np.nanpercentile(customers["clv"], 99)) or 1.0
        controls["min_clv"] = w.FloatSlider(value=0.0, min=0.0, max=round(hi, 0) or 1.0, step=max(round(hi / 100, 0), 1.0),
                                            description="CLV min")
    if "p_alive" in customers and customers["p_alive"].notna().any():
        controls["p_alive_range"] = w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05,
                                                       description="P(actif)")
    controls["control_share"] = w.FloatSlider(value=control_share, min=0.0, max=0.5, step=0.01, description="Témoin")
    out = w.Output()

    def refresh(_=None):
        values = {k: (list(c.value) if isinstance(c.value, tuple) and k in ("segments", "clusters") else c.value)
                  for k, c in controls.items()}
        res = target_summary(customers, **values)
        out.clear_output(wait=True)
        with out:
            display(show.callout(target_sentence(res, currency)))

    for c in controls.values():
        c.observe(refresh, "value")
    refresh()
    return w.VBox([*controls.values(), out])


def show_rfm_explorer(customers: pd.DataFrame, p: dict) -> None:
    """Display the static segment table for the run's parameters, then the live explorer."""
    from IPython.display import display

    bins, scheme, custom = p["rfm_bins"], p["rfm_scheme"], p.get("rfm_custom_scheme")
    currency = p.get("currency", "EUR")
    alt = 4 if bins != 4 else 5
    display(show.callout(f"Avec {bins} notes et le schéma « {scheme} » (paramètres de cette exécution) :"))
    # the customers re-scored on the run's bins serve the table, the comparison and the widget
    scored = rfm.assign_segments(rfm.rescore(customers, bins), scheme, bins, custom)
    summary = _summary(scored, scheme, custom)
    display(show_table(summary, currency))
    if scheme != "custom":
        moved = _changed(scored["rfm_segment"], customers, scheme, alt)
        display(show.callout(
            f"Avec {alt} notes au lieu de {bins}, environ {fr_number(moved)} clients "
            f"({fr_percent(moved / max(len(customers), 1), 0)}) changeraient de segment : les frontières des "
            "segments dépendent de ce choix, leur hiérarchie beaucoup moins."))
    display(rfm_explorer(customers, bins=bins, scheme=scheme, custom=custom, currency=currency, initial=summary))


def show_target_builder(customers: pd.DataFrame, p: dict) -> None:
    """Display one static example (the first target of the params, if any), then the live builder."""
    from IPython.display import display

    currency = p.get("currency", "EUR")
    tl = p.get("targets") or []
    if tl:
        t = tl[0]
        rng = None
        if t.get("min_p_alive") is not None or t.get("max_p_alive") is not None:
            rng = (t.get("min_p_alive") or 0.0, t.get("max_p_alive") if t.get("max_p_alive") is not None else 1.0)
        res = target_summary(customers, t["segments"], t["clusters"], t.get("min_clv"), rng, t["control_share"])
        display(show.callout(f"Exemple – cible « {t['name']} » : " + target_sentence(res, currency)))
    display(target_builder(customers, control_share=tl[0]["control_share"] if tl else 0.10, currency=currency))
