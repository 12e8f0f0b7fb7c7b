"""Targets: select customers by segment / cluster / CLV / p_alive, draw a stratified control group.

A target is declared in ``segmenter.targets`` as a mapping::

    - name: Réactiver les clients à risque
      segments: [À risque, À ne pas perdre]   # any of (optional)
      clusters: [Gros paniers en magasin]       # any of (optional)
      min_clv: 50                               # optional
      min_p_alive: 0.3                          # optional
      max_p_alive: 0.9                          # optional
      offer: bon de 15 € dès 60 € d'achat
      channel: email                            # optional
      control_share: 0.10                       # default 0.10
      cost_per_contact: 0.05                    # optional

Rules are combined with AND. The control group is drawn at random **within each
segment** (stratified), with a seed derived from ``run.seed`` and the target name, so the
same run draws the same group and the control share is the same in every segment.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from crmlab.db import register_frame
from crmlab.errors import InputError, ParamsError
from crmlab.params import closest

TARGET_KEYS = ("name", "segments", "clusters", "min_clv", "min_p_alive", "max_p_alive", "offer",
               "channel", "control_share", "cost_per_contact")


def check_targets(value: list, key: str = "segmenter.targets", segments: Sequence[str] | None = None) -> list[dict]:
    """Validate the ``targets`` list and return it normalised (defaults filled).

    Parameters
    ----------
    value : list of dict
        Targets as written in the params file.
    segments : list of str, optional
        Valid segment labels; unknown names raise :class:`ParamsError` naming the closest.

    Returns
    -------
    list of dict
        Each with every key of :data:`TARGET_KEYS` (``None`` when not given,
        ``control_share`` 0.10 by default, ``segments``/``clusters`` lists).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParamsError(f"« {key} » doit être une liste de cibles (name, segments, offer…)")
    out, names = [], set()
    for i, item in enumerate(value, start=1):
        where = f"« {key} », cible {i}"
        if not isinstance(item, dict):
            raise ParamsError(f"{where} : il faut un dictionnaire (name, segments, offer…)")
        for k in item:
            if k not in TARGET_KEYS:
                near = closest(str(k), list(TARGET_KEYS))
                raise ParamsError(f"{where} : clé inconnue « {k} »",
                                  hint=f"Vouliez-vous dire « {near} » ?" if near else f"Clés possibles : {', '.join(TARGET_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ParamsError(f"{where} : il faut un nom (clé « name »)")
        name = name.strip()
        if name in names:
            raise ParamsError(f"{where} : le nom « {name} » est déjà utilisé par une autre cible")
        names.add(name)
        t = {k: item.get(k) for k in TARGET_KEYS}
        t["name"] = name
        for lk in ("segments", "clusters"):
            v = t[lk]
            if v is None:
                t[lk] = []
            elif isinstance(v, str):
                t[lk] = [v]
            elif isinstance(v, list) and all(isinstance(s, str) for s in v):
                t[lk] = [s.strip() for s in v]
            else:
                raise ParamsError(f"{where} ({name}) : « {lk} » doit être une liste de noms")
        for nk in ("min_clv", "min_p_alive", "max_p_alive", "control_share", "cost_per_contact"):
            v = t[nk]
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParamsError(f"{where} ({name}) : « {nk} » doit être un nombre (reçu : {v!r})")
            t[nk] = float(v)
        for pk in ("min_p_alive", "max_p_alive"):
            if t[pk] is not None and not 0 <= t[pk] <= 1:
                raise ParamsError(f"{where} ({name}) : « {pk} » est une probabilité entre 0 et 1 (reçu : {t[pk]})")
        if t["control_share"] is None:
            t["control_share"] = 0.10
        if not 0 <= t["control_share"] <= 0.9:
            raise ParamsError(f"{where} ({name}) : « control_share » doit être entre 0 et 0,9 (reçu : {t['control_share']})",
                              hint="Part des clients de la cible gardés comme groupe témoin, 0,10 le plus souvent")
        for sk in ("offer", "channel"):
            if t[sk] is not None and not isinstance(t[sk], str):
                raise ParamsError(f"{where} ({name}) : « {sk} » doit être un texte")
        t["offer"] = t["offer"] or ""
        t["channel"] = t["channel"] or ""
        if segments is not None:
            check_names(t["segments"], segments, f"{where} ({name})", "segment")
        out.append(t)
    return out


def check_names(given: Sequence[str], valid: Sequence[str], where: str, what: str) -> None:
    """Raise :class:`ParamsError` naming the closest valid label for each unknown name."""
    valid = list(valid)
    for s in given:
        if s not in valid:
            near = closest(s, valid)
            raise ParamsError(
                f"{where} : {what} inconnu « {s} »",
                hint=(f"Vouliez-vous dire « {near} » ? " if near else "") + f"Valeurs possibles : {', '.join(valid)}",
            )


def select(customers: pd.DataFrame, target: dict) -> pd.Series:
    """Boolean mask of the customers a target selects (rules combined with AND).

    Parameters
    ----------
    customers : DataFrame
        One row per customer with ``rfm_segment`` and, when the target uses them,
        ``cluster``, ``clv``, ``p_alive``. Missing values never satisfy a threshold.
    target : dict
        A normalised target (see :func:`check_targets`).
    """
    mask = pd.Series(True, index=customers.index)
    if target.get("segments"):
        mask &= customers["rfm_segment"].isin(target["segments"])
    if target.get("clusters"):
        _need(customers, "cluster", target)
        check_names(target["clusters"], sorted(customers["cluster"].dropna().unique()),
                    f"Cible « {target['name']} »", "groupe de comportement")
        mask &= customers["cluster"].isin(target["clusters"])
    for key, col, op in (("min_clv", "clv", "ge"), ("min_p_alive", "p_alive", "ge"), ("max_p_alive", "p_alive", "le")):
        if target.get(key) is not None:
            _need(customers, col, target)
            values = pd.to_numeric(customers[col], errors="coerce")
            mask &= (values >= target[key]) if op == "ge" else (values <= target[key])
    return mask.fillna(False).astype(bool)


def _need(customers: pd.DataFrame, col: str, target: dict) -> None:
    if col not in customers.columns or customers[col].isna().all():
        raise InputError(
            f"La cible « {target['name']} » filtre sur « {col} », qui n'a pas été calculé dans cette exécution",
            hint="Retirez ce critère de la cible ou activez le calcul correspondant (CLV, groupes de comportement)",
        )


def target_seed(seed: int, name: str) -> np.random.Generator:
    """Random generator of a target: seeded by ``run.seed`` and the target's name."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def assign_control(selected: pd.DataFrame, share: float, rng: np.random.Generator,
                   stratum: str = "rfm_segment") -> pd.DataFrame:
    """Draw a random control group stratified by ``stratum``.

    In each stratum of ``n`` customers, ``floor(share * n + 0.5)`` customers drawn at
    random (uniform keys from ``rng``, customers sorted by ``customer_id`` first so the
    draw does not depend on row order) go to ``control``, the others to ``treatment``.

    Parameters
    ----------
    selected : DataFrame
        ``customer_id`` and the ``stratum`` column.

    Returns
    -------
    DataFrame
        ``customer_id, <stratum>, grp`` sorted by ``customer_id``.
    """
    frame = selected[["customer_id", stratum]].sort_values("customer_id", kind="stable").reset_index(drop=True)
    if frame.empty:
        return frame.assign(grp=pd.Series([], dtype=object))
    key = rng.random(len(frame))
    strata = frame[stratum].astype(str).fillna("")
    order = pd.Series(key).groupby(strata.values).rank(method="first").to_numpy() - 1
    size = strata.map(strata.value_counts()).to_numpy()
    n_control = np.floor(share * size + 0.5)
    grp = np.where(order < n_control, "control", "treatment")
    return frame.assign(grp=grp)


def slug(text: str) -> str:
    """ASCII lower-case identifier of a name (``"Réactiver les À risque"`` → ``reactiver-les-a-risque``)."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-") or "cible"


def campaign_id(as_of: str, name: str) -> str:
    """Return the identifier of a planned campaign: ``P<yyyymmdd>-<slug>`` (stable for a date and name)."""
    return f"P{as_of.replace('-', '')}-{slug(name)}"


def describe(target: dict) -> str:
    """French description of a target's selection rule."""
    parts = []
    if target.get("segments"):
        parts.append("segments " + ", ".join(target["segments"]))
    if target.get("clusters"):
        parts.append("groupes " + ", ".join(target["clusters"]))
    if target.get("min_clv") is not None:
        parts.append(f"CLV ≥ {target['min_clv']:g}")
    if target.get("min_p_alive") is not None:
        parts.append(f"probabilité d'activité ≥ {target['min_p_alive']:g}")
    if target.get("max_p_alive") is not None:
        parts.append(f"probabilité d'activité ≤ {target['max_p_alive']:g}")
    return " et ".join(parts) if parts else "tous les clients"


def plan(customers: pd.DataFrame, targets: list[dict], *, seed: int, as_of: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the planned campaigns and their contacts.

    Parameters
    ----------
    customers : DataFrame
        One row per customer: ``customer_id, rfm_segment`` (+ ``cluster, clv, p_alive``
        when used, ``revenue`` for the summary).
    targets : list of dict
        Normalised targets.

    Returns
    -------
    (campaigns, contacts) : tuple of DataFrame
        ``campaigns``: campaign_id, name, channel, target, segment, offer, start_date,
        cost_per_contact, control_share, n_selected, n_treatment, n_control, revenue,
        mean_clv. ``contacts``: campaign_id, customer_id, rfm_segment, grp.
    """
    rows, contacts = [], []
    for t in targets:
        mask = select(customers, t)
        chosen = customers.loc[mask]
        drawn = assign_control(chosen, t["control_share"], target_seed(seed, t["name"]))
        cid = campaign_id(as_of, t["name"])
        contacts.append(drawn.assign(campaign_id=cid))
        n_control = int((drawn["grp"] == "control").sum())
        rows.append({
            "campaign_id": cid, "name": t["name"], "channel": t["channel"], "target": describe(t),
            "segment": ", ".join(t["segments"]), "offer": t["offer"], "start_date": as_of,
            "cost_per_contact": t.get("cost_per_contact"), "control_share": t["control_share"],
            "n_selected": int(len(drawn)), "n_treatment": int(len(drawn)) - n_control, "n_control": n_control,
            "revenue": float(chosen["revenue"].sum()) if "revenue" in chosen else np.nan,
            "mean_clv": float(chosen["clv"].mean()) if "clv" in chosen and len(chosen) else np.nan,
        })
    campaigns = pd.DataFrame(rows, columns=[
        "campaign_id", "name", "channel", "target", "segment", "offer", "start_date", "cost_per_contact",
        "control_share", "n_selected", "n_treatment", "n_control", "revenue", "mean_clv"])
    contacts = (pd.concat(contacts, ignore_index=True)[["campaign_id", "customer_id", "rfm_segment", "grp"]]
                if contacts else pd.DataFrame(columns=["campaign_id", "customer_id", "rfm_segment", "grp"]))
    return campaigns, contacts


def store(con: duckdb.DuckDBPyConnection, campaigns: pd.DataFrame, contacts: pd.DataFrame, *,
          run_id: str, as_of: str, created_at=None) -> None:
    """Write planned campaigns and contacts, replacing the planned ones of the same date and name.

    Idempotent: rows of ``campaigns`` / ``campaign_contacts`` with the same
    ``campaign_id`` (same ``as_of`` and target name) and status ``planned`` are deleted
    first. Runs inside the caller's transaction.
    """
    import datetime as dt

    created_at = created_at or dt.datetime.now().replace(microsecond=0)
    ids = pd.DataFrame({"campaign_id": campaigns["campaign_id"].astype(str)})
    register_frame(con, "_target_ids", ids)
    try:
        con.execute("""DELETE FROM campaign_contacts WHERE campaign_id IN (
                           SELECT c.campaign_id FROM campaigns c JOIN _target_ids t USING (campaign_id)
                           WHERE c.status = 'planned')""")
        con.execute("""DELETE FROM campaigns WHERE status = 'planned'
                       AND campaign_id IN (SELECT campaign_id FROM _target_ids)""")
    finally:
        con.unregister("_target_ids")
    camp = campaigns.assign(run_id=run_id, created_at=created_at, status="planned", source="segmenter")
    register_frame(con, "_camp_in", camp)
    register_frame(con, "_contacts_in", contacts)
    try:
        con.execute("""INSERT INTO campaigns (campaign_id, name, channel, target, segment, offer, start_date,
                           end_date, cost_per_contact, status, source, run_id, created_at)
                       SELECT campaign_id, name, channel, target, segment, offer, CAST(start_date AS DATE), NULL,
                              CAST(cost_per_contact AS DOUBLE), status, source, run_id, created_at FROM _camp_in""")
        con.execute("""INSERT INTO campaign_contacts (campaign_id, customer_id, grp, contacted_at, source, customer_key)
                       SELECT campaign_id, customer_id, grp, NULL, 'segmenter', NULL FROM _contacts_in""")
    finally:
        con.unregister("_camp_in")
        con.unregister("_contacts_in")


def control_tolerance(contacts: pd.DataFrame, share: float, stratum: str = "rfm_segment") -> tuple[float, float, float]:
    """Actual control share, expected share and the rounding tolerance of a drawn target.

    Each stratum rounds to the nearest customer, so the control count may differ from
    ``share * n`` by at most ``0.5`` per stratum: tolerance = ``0.5 * strata / n``.
    """
    n = len(contacts)
    if n == 0:
        return 0.0, share, 0.0
    actual = float((contacts["grp"] == "control").mean())
    strata = contacts[stratum].nunique(dropna=False)
    return actual, share, 0.5 * strata / n + 1e-12
