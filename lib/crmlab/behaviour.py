"""Behavioural segmentation: purchase-behaviour features in SQL, seeded k-means, French portraits.

Features per customer (computed in DuckDB from ``transactions`` before ``as_of``):

* ``orders`` – number of orders (distinct ``order_id``, else transaction);
* ``basket`` – mean order value (revenue / orders);
* ``tenure_days`` – days since the first purchase; ``recency_days`` – days since the last;
* ``channel:<value>``, ``category:<value>``, ``payment_method:<value>`` – share of the
  customer's transaction lines in each of the most common values of those columns (only
  when the column has at least two values).

Counts and amounts are log-transformed (``log1p``), every feature is standardised, and
k-means (scikit-learn, ``random_state=seed``, ``n_init=10``) groups the customers; k is a
parameter or chosen by the best silhouette on a seeded sample of at most 10,000 customers.
Each group is described from the features whose group mean departs most from the overall
mean (in standard deviations): a short label and a French sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from crmlab.charts import fr_money, fr_number, fr_percent
from crmlab.db import to_frame
from crmlab.errors import InputError

GROUPS = ("frequency", "basket", "tenure", "recency", "channel", "category", "payment_method")
BASE = {"orders": "frequency", "basket": "basket", "tenure_days": "tenure", "recency_days": "recency"}
SHARE_COLUMNS = ("channel", "category", "payment_method")
LOG_FEATURES = ("orders", "basket")
TOP_VALUES = 6
N_INIT = 10
SAMPLE = 10_000
MIN_Z = 0.5


def features(
    con: duckdb.DuckDBPyConnection,
    as_of,
    *,
    table: str = "transactions",
    top_values: int = TOP_VALUES,
) -> pd.DataFrame:
    """Per-customer behaviour features, computed in DuckDB.

    Parameters
    ----------
    con : duckdb connection
        Holds ``table`` (``customer_id, ts, amount`` and optionally ``order_id, channel,
        category, payment_method``).
    as_of : date-like
        First day not observed (rows with ``ts < as_of``).
    top_values : int
        Most common values of each share column kept as features.

    Returns
    -------
    DataFrame
        ``customer_id, orders, basket, tenure_days, recency_days`` and one
        ``<column>:<value>`` share (0–1) per kept value, sorted by ``customer_id``.
    """
    cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    missing = [c for c in ("customer_id", "ts", "amount") if c not in cols]
    if missing:
        raise InputError(f"La table {table} n'a pas les colonnes {missing}", file=table, column=missing[0])
    order_key = "COALESCE(order_id, transaction_id, CAST(ts AS VARCHAR))" if "order_id" in cols else "CAST(ts AS VARCHAR)"
    as_of = pd.Timestamp(as_of).date()
    where = "customer_id IS NOT NULL AND ts < CAST(? AS TIMESTAMP)"
    # the most common values of each share column: one small aggregation (a few groups)
    share_cols = [c for c in SHARE_COLUMNS if c in cols]
    kept: list[tuple[str, str]] = []  # (column, value) of every share feature, in output order
    if share_cols:
        union = " UNION ALL ".join(
            f"SELECT {i} AS c, CAST({c} AS VARCHAR) AS value, COUNT(*) AS n FROM {table} "
            f"WHERE {where} AND {c} IS NOT NULL GROUP BY value" for i, c in enumerate(share_cols))
        tot = to_frame(con.sql(union, params=[as_of] * len(share_cols)))
        for i, col in enumerate(share_cols):
            t = tot[tot["c"] == i]
            if t["value"].nunique() < 2:
                continue
            top = t.sort_values(["n", "value"], ascending=[False, True])["value"].to_list()[:top_values]
            kept += [(col, v) for v in top]
    # one pass over the transactions: base features and, per share column, the customer's
    # non-NULL lines and the lines of each kept value (values are parameters, never pasted)
    shares = [f"COUNT({c}) AS n_{i}" for i, c in enumerate(share_cols)]
    shares += [f"COUNT(*) FILTER (WHERE CAST({c} AS VARCHAR) = ?) AS v_{j}" for j, (c, _v) in enumerate(kept)]
    # share of the customer's lines with a value, 0 when the customer has none (exact IEEE
    # division of the two counts, as in pandas)
    share_sql = "".join(
        f", CASE WHEN n_{share_cols.index(c)} = 0 THEN 0.0 ELSE CAST(v_{j} AS DOUBLE) / n_{share_cols.index(c)} END AS f_{j}"
        for j, (c, _v) in enumerate(kept))
    out = to_frame(con.sql(
        f"""
        SELECT customer_id, CAST(orders AS DOUBLE) AS orders, spend / orders AS basket,
               CAST(date_diff('day', first_day, CAST(? AS DATE)) AS DOUBLE) AS tenure_days,
               CAST(date_diff('day', last_day, CAST(? AS DATE)) AS DOUBLE) AS recency_days
               {share_sql}
        FROM (
            -- spend rounded to 1e-6: the order in which parallel threads add the rows changed
            -- the last bits of 120 to 137 k baskets between two runs at ten million transactions
            SELECT customer_id, round(SUM(COALESCE(amount, 0)), 6) AS spend,
                   MIN(CAST(ts AS DATE)) AS first_day, MAX(CAST(ts AS DATE)) AS last_day
                   {''.join(', ' + s for s in shares)}
            FROM {table}
            WHERE {where}
            GROUP BY customer_id
        ) JOIN (
            -- distinct orders by grouping, not COUNT(DISTINCT): 7.4 s -> 4.9 s at ten million rows
            SELECT customer_id, COUNT(*) AS orders
            FROM (SELECT DISTINCT customer_id, {order_key} AS order_key FROM {table} WHERE {where})
            GROUP BY customer_id
        ) USING (customer_id)
        ORDER BY customer_id
        """,
        params=[as_of, as_of, *[v for _c, v in kept], as_of, as_of],
    ))
    out = out.rename(columns={f"f_{j}": f"{c}:{v}" for j, (c, v) in enumerate(kept)})
    out["customer_id"] = out["customer_id"].astype(str)
    return out.reset_index(drop=True)


def select(feat: pd.DataFrame, groups: list[str] | None) -> list[str]:
    """Feature columns of the chosen groups (None = all); unknown group → InputError."""
    cols = [c for c in feat.columns if c != "customer_id"]
    if not groups:
        return cols
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise InputError(f"Variable de comportement inconnue : {unknown}", column="cluster_features",
                         hint=f"Variables possibles : {', '.join(GROUPS)}")
    chosen = [c for c in cols if BASE.get(c) in groups or c.split(":", 1)[0] in groups]
    if not chosen:
        raise InputError("Aucune des variables de comportement demandées n'existe dans les transactions",
                         column="cluster_features", hint=f"Colonnes présentes : {', '.join(cols)}")
    return chosen


def standardise(feat: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """log1p of counts and amounts, then z-scores; constant columns dropped. Input unchanged."""
    X = feat[columns].astype(float).copy()
    for c in LOG_FEATURES:
        if c in X:
            X[c] = np.log1p(X[c].clip(lower=0))
    sd = X.std(ddof=0)
    keep = sd[sd > 1e-12].index
    return (X[keep] - X[keep].mean()) / sd[keep]


def silhouettes(X: np.ndarray, label_sets: list[np.ndarray]) -> list[float]:
    """Mean silhouette coefficient (Euclidean) of several labellings of the same points.

    Gives exactly ``sklearn.metrics.silhouette_score(X, labels)`` for each labelling (same
    chunked distances, same per-cluster sums with ``np.bincount``, same divisions), but
    computes the pairwise distances once for all labellings instead of once per labelling:
    they are the costly part (the k-search of :func:`cluster` tries up to 19 labellings).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Points (float64).
    label_sets : list of ndarray of shape (n,)
        Cluster labels; each labelling must have 2 to n - 1 distinct labels.

    Returns
    -------
    list of float
        One score per labelling, in the order given.
    """
    from sklearn.metrics import pairwise_distances_chunked

    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    encoded = []
    for labels in label_sets:
        _, lab = np.unique(np.asarray(labels), return_inverse=True)
        freqs = np.bincount(lab)
        if not 1 < len(freqs) < n:
            raise ValueError(f"Number of labels is {len(freqs)}. Valid values are 2 to n_samples - 1 (inclusive)")
        encoded.append((lab, freqs))
    intra = [[] for _ in encoded]
    inter = [[] for _ in encoded]
    start = 0
    for D_chunk in pairwise_distances_chunked(X, metric="euclidean"):
        rows = D_chunk.shape[0]
        end = start + rows
        for j, (lab, freqs) in enumerate(encoded):
            dist = np.zeros((rows, len(freqs)), dtype=D_chunk.dtype)
            for i in range(rows):
                dist[i] += np.bincount(lab, weights=D_chunk[i], minlength=len(freqs))
            own = (np.arange(rows), lab[start:end])
            intra[j].append(dist[own])
            dist[own] = np.inf
            dist /= freqs
            inter[j].append(dist.min(axis=1))
        start = end
    out = []
    for j, (lab, freqs) in enumerate(encoded):
        a = np.concatenate(intra[j])
        b = np.concatenate(inter[j])
        denom = (freqs - 1).take(lab, mode="clip")
        with np.errstate(divide="ignore", invalid="ignore"):
            a /= denom
        s = b - a
        with np.errstate(divide="ignore", invalid="ignore"):
            s /= np.maximum(a, b)
        out.append(float(np.mean(np.nan_to_num(s))))
    return out


@dataclass
class Clustering:
    """Result of :func:`cluster`.

    Attributes
    ----------
    k : int
    labels : ndarray
        Cluster number (0..k-1) of each row of the features, ordered by decreasing size.
    silhouette : DataFrame
        ``k, silhouette`` of every k tried (empty when k was given).
    z : DataFrame
        Standardised features used.
    seed : int
    """

    k: int
    labels: np.ndarray
    silhouette: pd.DataFrame
    z: pd.DataFrame
    seed: int


def cluster(feat: pd.DataFrame, *, k: int = 0, k_max: int = 8, seed: int = 42, groups: list[str] | None = None,
            sample: int = SAMPLE) -> Clustering:
    """Seeded k-means on the standardised features; k by silhouette when ``k`` = 0.

    Parameters
    ----------
    feat : DataFrame
        :func:`features` output.
    k : int
        Number of clusters (0 = best silhouette among 2..k_max on a seeded sample).
    groups : list of str, optional
        Feature groups (see ``GROUPS``); None = all.
    sample : int
        Maximum rows used to compute silhouettes.
    """
    from sklearn.cluster import KMeans

    Z = standardise(feat, select(feat, groups))
    n = len(Z)
    if n < 3 or Z.shape[1] == 0:
        raise InputError(f"Trop peu de clients ({n}) ou de variables pour former des groupes de comportement")
    from threadpoolctl import threadpool_limits

    scores = []
    # one OpenMP thread: on a small or busy machine KMeans' threads oversubscribe the cores
    # (measured 3x slower on the demo, bench/RESULTS.md); results are identical.
    with threadpool_limits(1, user_api="openmp"):
        if k == 0:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(n, size=min(n, sample), replace=False))
            Zs = Z.to_numpy()[idx]
            tried = []
            for kk in range(2, max(2, min(k_max, len(idx) - 1)) + 1):
                km = KMeans(n_clusters=kk, random_state=seed, n_init=N_INIT).fit(Zs)
                if len(np.unique(km.labels_)) < 2:
                    continue
                tried.append((kk, km.labels_))
            # the sample's distances are the same for every k: computed once for all of them
            sil = silhouettes(Zs, [labels for _kk, labels in tried])
            scores = [(kk, s) for (kk, _labels), s in zip(tried, sil, strict=True)]
            k = max(scores, key=lambda t: t[1])[0] if scores else 2
        k = min(k, n)
        km = KMeans(n_clusters=k, random_state=seed, n_init=N_INIT).fit(Z.to_numpy())
    # renumber by decreasing size (ties by first occurrence) so numbers are stable
    sizes = np.bincount(km.labels_, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], int(np.argmax(km.labels_ == c))))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return Clustering(k, remap[km.labels_], pd.DataFrame(scores, columns=["k", "silhouette"]), Z, seed)


# --------------------------------------------------------------------------- portraits


def _value(col: str) -> tuple[str, str]:
    kind, _, value = col.partition(":")
    return kind, value


def _phrase(col: str, mean: float, overall: float, z: float, currency: str) -> str:
    ratio = mean / overall if overall else float("nan")
    if col == "orders":
        if ratio >= 1:
            return f"achètent {fr_number(ratio, 1)}× plus souvent que la moyenne ({fr_number(mean, 1)} commandes contre {fr_number(overall, 1)})"
        return f"achètent rarement ({fr_number(mean, 1)} commande(s) en moyenne contre {fr_number(overall, 1)})"
    if col == "basket":
        if ratio >= 1:
            return f"paniers {fr_number(ratio, 1)}× plus gros que la moyenne ({fr_money(mean, currency)} contre {fr_money(overall, currency)})"
        inv = overall / mean if mean > 0 else float("nan")
        return f"paniers {fr_number(inv, 1)}× plus petits que la moyenne ({fr_money(mean, currency)} contre {fr_money(overall, currency)})"
    if col == "tenure_days":
        word = "clients anciens" if z > 0 else "clients récents"
        return f"{word} (premier achat il y a {fr_number(mean / 30.4375, 0)} mois en moyenne contre {fr_number(overall / 30.4375, 0)})"
    if col == "recency_days":
        word = "n'ont plus acheté depuis longtemps" if z > 0 else "ont acheté récemment"
        return f"{word} (dernier achat il y a {fr_number(mean, 0)} jours en moyenne contre {fr_number(overall, 0)})"
    kind, value = _value(col)
    verb = {"channel": "achètent", "category": "achètent", "payment_method": "paient"}[kind]
    where = {"channel": f"via « {value} »", "category": f"en « {value} »", "payment_method": f"par « {value} »"}[kind]
    how = "surtout" if z > 0 else "peu"
    return f"{verb} {how} {where} ({fr_percent(mean, 0)} des achats contre {fr_percent(overall, 0)} en moyenne)"


def _label(col: str, z: float) -> str:
    fixed = {
        ("orders", True): "Acheteurs fréquents", ("orders", False): "Acheteurs occasionnels",
        ("basket", True): "Gros paniers", ("basket", False): "Petits paniers",
        ("tenure_days", True): "Clients anciens", ("tenure_days", False): "Nouveaux clients",
        ("recency_days", True): "Endormis", ("recency_days", False): "Actifs récents",
    }
    if (col, z > 0) in fixed:
        return fixed[(col, z > 0)]
    kind, value = _value(col)
    return f"Surtout {value}" if z > 0 else f"Peu {value}"


def describe(feat: pd.DataFrame, result: Clustering, *, currency: str = "EUR", max_traits: int = 3) -> pd.DataFrame:
    """Portrait of each cluster: size, distinguishing features, short label, French sentence.

    The distinguishing features of a cluster are those whose standardised cluster mean
    departs most from 0 (the overall mean), at least ``MIN_Z`` standard deviations; the
    sentence reads them on the original scale ("paniers 2,1× plus gros que la moyenne").

    Returns
    -------
    DataFrame
        ``cluster_id, cluster`` (short label, unique), ``customers, share, description,
        traits`` (list of feature names, most distinguishing first) and the cluster mean of
        every feature column.
    """
    cols = list(result.z.columns)
    raw = feat[cols].astype(float)
    overall = raw.mean()
    zmeans = result.z.groupby(result.labels).mean()
    means = raw.groupby(result.labels).mean()
    rows = []
    used: set[str] = set()
    for c in range(result.k):
        zc = zmeans.loc[c]
        ranked = zc.abs().sort_values(ascending=False)
        traits = [f for f in ranked.index if abs(zc[f]) >= MIN_Z][:max_traits] or [ranked.index[0]]
        label = _label(traits[0], zc[traits[0]])
        if label in used and len(traits) > 1:
            label = f"{label}, {_label(traits[1], zc[traits[1]]).lower()}"
        n_try = 2
        while label in used:
            label = f"{label} ({n_try})"
            n_try += 1
        used.add(label)
        if all(abs(zc[f]) < MIN_Z for f in traits):
            text = "Clients proches de la moyenne sur toutes les variables."
        else:
            text = " ; ".join(_phrase(f, means.loc[c, f], overall[f], zc[f], currency) for f in traits) + "."
        size = int((result.labels == c).sum())
        rows.append({"cluster_id": c, "cluster": label, "customers": size, "share": size / len(result.labels),
                     "description": text, "traits": traits, **means.loc[c].to_dict()})
    return pd.DataFrame(rows)


def assign(feat: pd.DataFrame, result: Clustering, portraits: pd.DataFrame) -> pd.DataFrame:
    """Per-customer table: ``customer_id, cluster`` (label), ``cluster_id`` and the features."""
    out = feat.copy()
    out.insert(1, "cluster_id", result.labels)
    out.insert(1, "cluster", portraits.set_index("cluster_id")["cluster"].reindex(result.labels).to_numpy())
    return out


def kpis(portraits: pd.DataFrame, result: Clustering) -> pd.DataFrame:
    """KPI rows (``kpi, value, unit, dimension``): k, silhouette, size and share of each cluster."""
    rows = [("clusters_k", float(result.k), "groupes", "")]
    if len(result.silhouette):
        best = result.silhouette.loc[result.silhouette["k"] == result.k, "silhouette"]
        if len(best):
            rows.append(("clusters_silhouette", float(best.iloc[0]), "", ""))
    for _, r in portraits.iterrows():
        rows.append(("cluster_clients", float(r["customers"]), "clients", r["cluster"]))
        rows.append(("cluster_part", float(r["share"]), "part", r["cluster"]))
    return pd.DataFrame(rows, columns=["kpi", "value", "unit", "dimension"])


# --------------------------------------------------------------------------- charts


def chart_profiles(portraits: pd.DataFrame, result: Clustering):
    """Heatmap of cluster means in standard deviations from the overall mean."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from crmlab import charts

    zmeans = result.z.groupby(result.labels).mean()
    zmeans.index = portraits.set_index("cluster_id").loc[zmeans.index, "cluster"]
    names = {"orders": "commandes", "basket": "panier moyen", "tenure_days": "ancienneté", "recency_days": "jours depuis le dernier achat"}
    zmeans.columns = [names.get(c, c.split(":", 1)[1] if ":" in c else c) for c in zmeans.columns]
    fig, ax = plt.subplots(figsize=(min(2 + 0.9 * zmeans.shape[1], 14), 1.2 + 0.6 * len(zmeans)))
    sns.heatmap(zmeans, cmap="RdBu_r", center=0, vmin=-2, vmax=2, annot=True, fmt=".1f", ax=ax, cbar_kws={"label": "écart-types"})
    top = portraits.iloc[0]
    title = f"{result.k} groupes de comportement ; le plus grand, « {top['cluster']} », réunit {fr_percent(top['share'], 0)} des clients"
    return charts.finish(fig, title, "", "", ax=ax)


def chart_silhouette(result: Clustering):
    """Silhouette score by number of clusters, the chosen k marked."""
    import matplotlib.pyplot as plt

    from crmlab import charts

    s = result.silhouette
    fig, ax = plt.subplots()
    ax.plot(s["k"], s["silhouette"], marker="o", color=charts.PALETTE[0])
    ax.axvline(result.k, color=charts.PALETTE[1], linestyle="--")
    best = s.loc[s["k"] == result.k, "silhouette"]
    val = fr_number(float(best.iloc[0]), 2) if len(best) else "–"
    return charts.finish(fig, f"{result.k} groupes donnent la meilleure silhouette ({val})",
                         "nombre de groupes", "silhouette (plus haut = groupes plus nets)")
