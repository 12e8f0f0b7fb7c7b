"""Customer lifetime value: BG/NBD-family purchase models, Gamma-Gamma spend, holdout checks.

The per-customer summaries (frequency, recency, T, monetary) are computed in DuckDB SQL
from ``transactions`` with the definitions of ``lifetimes.utils.summary_data_from_transaction_data``
(``freq="D"``), so the same code scales to millions of customers and does not depend on
lifetimes' pandas helpers (which break on pandas 3). ``lifetimes`` only fits the models,
on rows grouped by identical (frequency, recency, T) with its ``weights`` argument; for
BG/NBD and Gamma-Gamma its fitters minimise a written-out gradient of their own
likelihood (:func:`bgnbd_value_and_grad`) instead of autograd's (same optimum, 4 to 7
times faster at a million customers).

Conventions (the same as Fader, Hardie & Lee 2005 and lifetimes):

* ``as_of`` is the first day *not* observed: purchases with ``ts < as_of`` count and the
  last observed day is ``as_of - 1 day``.
* A *purchase* is one customer-day when ``merge_same_day`` (several orders the same day
  count as one purchase, worth their total); otherwise one distinct timestamp.
* ``frequency`` = number of purchases minus one (repeat purchases); ``recency`` = days
  between the first and the last purchase; ``T`` = days between the first purchase and
  the last observed day; both divided by the length of ``time_unit`` in days (day 1,
  week 7, month 365.25/12).
* ``monetary`` = mean value of the repeat purchases (the first purchase excluded), 0 for
  customers without repeat purchase.
* Calibration/holdout: ``calibration_end`` is the last day of the calibration period;
  the holdout runs from the next day to ``as_of - 1 day``. When ``calibration_end`` is not
  given it is ``as_of - holdout_days - 1 day`` so that the holdout lasts exactly
  ``holdout_days`` days.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
import warnings
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from crmlab.charts import fr_number
from crmlab.db import register_frame, to_frame
from crmlab.errors import CheckError, InputError

UNIT_DAYS = {"day": 1.0, "week": 7.0, "month": 365.25 / 12}
UNIT_FR = {"day": "jours", "week": "semaines", "month": "mois"}
DAYS_PER_MONTH = 365.25 / 12
MODELS = ("bgnbd", "pareto", "mbgnbd")
MODEL_FR = {"bgnbd": "BG/NBD", "pareto": "Pareto/NBD", "mbgnbd": "MBG/NBD", "gamma_gamma": "Gamma-Gamma"}
CORR_THRESHOLD = 0.3

SUMMARY_COLUMNS = ["customer_id", "frequency", "recency", "T", "monetary", "first_purchase"]
CALHOLD_COLUMNS = [
    "customer_id", "frequency_cal", "recency_cal", "T_cal", "monetary_cal",
    "frequency_holdout", "monetary_holdout", "duration_holdout", "first_purchase",
]


# --------------------------------------------------------------------------- lifetimes


def _lifetimes():
    """Import lifetimes without its import-time side effects (warning filters, pandas option)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            before = pd.get_option("mode.chained_assignment")
        except Exception:  # pragma: no cover - option removed in a later pandas
            before = None
        import lifetimes

        if before is not None:
            pd.set_option("mode.chained_assignment", before)
    return lifetimes


#: Step of the central differences of the analytic gradient that give the Hessian of the
#: fast fitters (log parameters); truncation and rounding errors are both near 1e-10.
HESSIAN_STEP = 1e-5


def bgnbd_value_and_grad(freq, rec, T, weights, penalizer: float = 0.0):
    """BG/NBD negative log-likelihood of lifetimes and its gradient, written out.

    The same function as ``lifetimes.BetaGeoFitter._negative_log_likelihood`` (mean over
    the weighted rows, in log parameters ``log r, log alpha, log a, log b``, plus the
    L2 penalty), with the gradient derived by hand instead of autograd's tape: the
    log-gamma and digamma terms depend on the frequency alone and are computed once per
    distinct frequency (a few hundred values for a million rows). At a million
    customers the fit is several times faster, for the same optimum.

    Parameters
    ----------
    freq, rec, T, weights : array_like
        Frequency (int), recency and age in lifetimes' scaled time, row weights.

    Returns
    -------
    callable
        ``f(log_params) -> (value, gradient)`` for ``scipy.optimize.minimize(jac=True)``.
    """
    from scipy.special import digamma, gammaln

    freq = np.asarray(freq, dtype=np.int64)
    rec = np.asarray(rec, dtype=float)
    T = np.asarray(T, dtype=float)
    w = np.asarray(weights, dtype=float)
    ux, inv = np.unique(freq, return_inverse=True)
    uxf = ux.astype(float)
    wu = np.bincount(inv, weights=w, minlength=len(ux))  # weight per distinct frequency
    total = w.sum()
    rx0 = freq.astype(float)
    pos = freq > 0
    bshift = np.maximum(uxf, 1) - 1  # b + max(x, 1) - 1

    def f(log_params):
        params = np.exp(log_params)
        r, alpha, a, b = params
        # terms of the distinct frequencies
        a1 = gammaln(r + uxf) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + uxf) - gammaln(b) - gammaln(a + b + uxf)
        lb = np.log(b + bshift)
        # terms of the rows
        rx = r + rx0
        l3 = np.log(alpha + T)
        l4 = np.log(rec + alpha)
        A3 = -rx * l3
        A4 = (np.log(a) - lb)[inv] - rx * l4
        m = np.where(pos, np.maximum(A3, A4), A3)
        e3 = np.exp(A3 - m)
        e4 = np.where(pos, np.exp(A4 - m), 0.0)
        s = e3 + e4
        ll = (a1 + a2) @ wu + w @ (np.log(s) + m)
        value = -ll / total + penalizer * float(np.sum(params ** 2))
        s3 = w * (e3 / s)
        s4 = w * (e4 / s)
        s4u = np.bincount(inv, weights=s4, minlength=len(ux))
        d_r = (digamma(r + uxf) - digamma(r) + np.log(alpha)) @ wu - s3 @ l3 - s4 @ l4
        d_alpha = r / alpha * total - s3 @ (rx / (alpha + T)) - s4 @ (rx / (rec + alpha))
        d_a = (digamma(a + b) - digamma(a + b + uxf)) @ wu + s4u.sum() / a
        d_b = (digamma(a + b) + digamma(b + uxf) - digamma(b) - digamma(a + b + uxf)) @ wu - s4u @ (1.0 / (b + bshift))
        grad = -np.array([d_r, d_alpha, d_a, d_b]) / total + 2.0 * penalizer * params
        return value, grad * params

    return f


def gamma_gamma_value_and_grad(freq, mon, weights, penalizer: float = 0.0):
    """Gamma-Gamma negative log-likelihood of lifetimes and its gradient, written out.

    The same function as ``lifetimes.GammaGammaFitter._negative_log_likelihood`` (log
    parameters ``log p, log q, log v``); see :func:`bgnbd_value_and_grad`.
    """
    from scipy.special import digamma, gammaln

    x = np.asarray(freq, dtype=float)
    m = np.asarray(mon, dtype=float)
    w = np.asarray(weights, dtype=float)
    ux, inv = np.unique(x, return_inverse=True)
    wu = np.bincount(inv, weights=w, minlength=len(ux))
    total = w.sum()
    const = w @ ((x * np.log(m)) + x * np.log(x))  # per p: sum w x (log m + log x)
    logm_w = w @ np.log(m)
    wx = w * x

    def f(log_params):
        params = np.exp(log_params)
        p, q, v = params
        px = p * ux
        lxmv = np.log(x * m + v)
        ll = ((gammaln(px + q) - gammaln(px)) @ wu - total * gammaln(q) + total * q * np.log(v)
              + p * const - logm_w - (p * x + q) @ (w * lxmv))
        value = -ll / total + penalizer * float(np.sum(params ** 2))
        dpsi = digamma(px + q)
        d_p = (ux * (dpsi - digamma(px))) @ wu + const - wx @ lxmv
        d_q = dpsi @ wu - total * digamma(q) + total * np.log(v) - w @ lxmv
        d_v = total * q / v - (p * x + q) @ (w / (x * m + v))
        grad = -np.array([d_p, d_q, d_v]) / total + 2.0 * penalizer * params
        return value, grad * params

    return f


def _hessian(f, x: np.ndarray, step: float = HESSIAN_STEP) -> np.ndarray:
    """Hessian of ``f``'s value by central differences of its analytic gradient (symmetrised)."""
    n = len(x)
    h = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = step
        h[:, j] = (f(x + e)[1] - f(x - e)[1]) / (2 * step)
    return (h + h.T) / 2


def _fast_fit(self, args, initial_params, params_size, disp, tol=1e-7, bounds=None, **kwargs):
    """``lifetimes.BaseFitter._fit`` with the written-out likelihood gradient (same minimiser, start and tolerance)."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    f = self._value_and_grad(*args)
    x0 = 0.1 * np.ones(params_size) if initial_params is None else initial_params
    # one BLAS thread: the dot products over a million rows took 20 times longer with
    # OpenBLAS' threads on a busy 2-core machine (17 ms instead of 0.8 ms each)
    with threadpool_limits(1, user_api="blas"):
        out = minimize(f, jac=True, method=None, tol=tol, x0=x0, options={"disp": disp, **kwargs}, bounds=bounds)
        if not out.success:
            raise _lifetimes().utils.ConvergenceError("The model did not converge. Try adding a larger penalizer.")
        return out.x, out.fun, _hessian(f, out.x)


_FAST: dict = {}


def _fast_fitters() -> dict:
    """BG/NBD and Gamma-Gamma fitters of lifetimes whose fit uses the written-out gradients.

    Subclasses created on first use (importing lifetimes takes two seconds): everything but
    the minimisation – time scaling, parameters, standard errors, predictions – is
    lifetimes' own code.
    """
    if not _FAST:
        lt = _lifetimes()
        _FAST["bgnbd"] = type("FastBetaGeoFitter", (lt.BetaGeoFitter,), {
            "_fit": _fast_fit, "_value_and_grad": staticmethod(bgnbd_value_and_grad), "__module__": __name__})
        _FAST["gamma_gamma"] = type("FastGammaGammaFitter", (lt.GammaGammaFitter,), {
            "_fit": _fast_fit, "_value_and_grad": staticmethod(gamma_gamma_value_and_grad), "__module__": __name__})
    return _FAST



# --------------------------------------------------------------------------- dates


def _date(value, what: str) -> dt.date:
    try:
        return pd.Timestamp(value).date()
    except (TypeError, ValueError) as exc:
        raise InputError(f"Date invalide pour « {what} » : « {value} »", hint="Écrivez la date sous la forme AAAA-MM-JJ") from exc


def calibration_dates(as_of, holdout_days: int = 180, calibration_end=None) -> tuple[dt.date, dt.date]:
    """Return (first holdout day, as_of) of a calibration/holdout split.

    Parameters
    ----------
    as_of : date-like
        First day not observed (end of the holdout, exclusive).
    holdout_days : int
        Length of the holdout in days, used when ``calibration_end`` is None.
    calibration_end : date-like, optional
        Last day of the calibration period (inclusive).

    Returns
    -------
    (date, date)
        ``holdout_start`` (= calibration_end + 1 day, exclusive end of calibration) and ``as_of``.
    """
    end = _date(as_of, "as_of")
    if calibration_end is None:
        start = end - dt.timedelta(days=int(holdout_days))
    else:
        start = _date(calibration_end, "calibration_end") + dt.timedelta(days=1)
    if start >= end:
        raise InputError(
            f"La période de validation est vide : la calibration finit le {start - dt.timedelta(days=1)} "
            f"et l'observation le {end - dt.timedelta(days=1)}",
            column="calibration_end",
            hint="Choisissez calibration_end avant as_of, ou un holdout_days plus court",
        )
    return start, end


# --------------------------------------------------------------------------- summaries (SQL)


def _purchases_sql(table: str, merge_same_day: bool, as_of: str = "?") -> str:
    """Return the SQL of one row per purchase ``(customer_id, g, day, value)`` before ``as_of``.

    ``as_of`` is the SQL parameter of the first day not observed (``?`` or ``$name``).

    ``g`` is the purchase grain (the day when ``merge_same_day``, else the timestamp),
    ``value`` the total spent in that purchase. No window function: the per-customer
    rank of a purchase is never materialised (the first purchase is found with
    ``min``/``arg_min`` where needed), which keeps the 10-million-row case at one hash
    aggregation per level.
    """
    grain = "CAST(ts AS DATE)" if merge_same_day else "ts"
    return f"""
        SELECT customer_id, g, CAST(g AS DATE) AS day, value
        FROM (
            SELECT customer_id, {grain} AS g, SUM(COALESCE(amount, 0)) AS value
            FROM {table}
            WHERE customer_id IS NOT NULL AND ts IS NOT NULL AND ts < CAST({as_of} AS TIMESTAMP)
            GROUP BY customer_id, g
        )
    """


def _check_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    missing = [c for c in ("customer_id", "ts", "amount") if c not in cols]
    if missing:
        raise InputError(f"La table {table} n'a pas les colonnes {missing}", file=table, column=missing[0],
                         hint="Chargez les transactions avec l'étape 01")


def summary(
    con: duckdb.DuckDBPyConnection,
    as_of,
    *,
    time_unit: str = "week",
    merge_same_day: bool = True,
    table: str = "transactions",
) -> pd.DataFrame:
    """Per-customer RFM summary for the purchase models, computed in DuckDB.

    Parameters
    ----------
    con : duckdb connection
        Holds ``table`` with columns ``customer_id, ts, amount``.
    as_of : date-like
        First day not observed (purchases with ``ts < as_of`` count).
    time_unit : {"day", "week", "month"}
        Unit of ``recency`` and ``T``.
    merge_same_day : bool
        Count purchases by customer-day (True) or by distinct timestamp (False).

    Returns
    -------
    DataFrame
        ``customer_id, frequency, recency, T, monetary, first_purchase`` (one row per
        customer with at least one purchase before ``as_of``; ``frequency`` int, times in
        ``time_unit``, ``monetary`` mean repeat purchase value, ``first_purchase`` date),
        sorted by ``customer_id``.
    """
    _check_table(con, table)
    unit = UNIT_DAYS[time_unit]
    end = _date(as_of, "as_of")
    sql = f"""
        WITH p AS ({_purchases_sql(table, merge_same_day)})
        SELECT customer_id,
               CAST(COUNT(*) - 1 AS BIGINT) AS frequency,
               date_diff('day', MIN(day), MAX(day)) / ? AS recency,
               date_diff('day', MIN(day), CAST(? AS DATE) - INTERVAL 1 DAY) / ? AS T,
               -- mean value of the repeat purchases: all purchases but the first one; rounded to
               -- 1e-6 so that the summation order of parallel threads (last bits) and the
               -- cancellation of the subtraction never reach the models
               CASE WHEN COUNT(*) > 1 THEN round((SUM(value) - arg_min(value, g)) / (COUNT(*) - 1), 6) ELSE 0 END AS monetary,
               MIN(day) AS first_purchase
        FROM p GROUP BY customer_id ORDER BY customer_id
    """
    # through Arrow: .df() builds a Python string per customer id (about 1 s of the
    # 2.5 s at 1.5 million customers); Arrow hands pandas its string array as is
    out = con.sql(sql, params=[end, unit, end, unit]).to_arrow_table().to_pandas(date_as_object=False)
    return _typed(out, SUMMARY_COLUMNS)


def calibration_holdout(
    con: duckdb.DuckDBPyConnection,
    as_of,
    *,
    holdout_days: int = 180,
    calibration_end=None,
    time_unit: str = "week",
    merge_same_day: bool = True,
    table: str = "transactions",
) -> pd.DataFrame:
    """Calibration summary and holdout outcome of every customer known at the end of calibration.

    Parameters
    ----------
    as_of, holdout_days, calibration_end
        See :func:`calibration_dates`.
    time_unit, merge_same_day, table
        See :func:`summary`.

    Returns
    -------
    DataFrame
        ``customer_id, frequency_cal, recency_cal, T_cal, monetary_cal, frequency_holdout,
        monetary_holdout, duration_holdout, first_purchase``: the calibration summary (as
        :func:`summary` at the first holdout day), the number of purchases in the holdout,
        their mean value (0 if none) and the holdout length in ``time_unit``.
    """
    start, end = calibration_dates(as_of, holdout_days, calibration_end)
    _check_table(con, table)
    unit = UNIT_DAYS[time_unit]
    # one pass: the purchases up to as_of, split by FILTER into the calibration summary (the
    # expressions of `summary` at `start`: a customer's first purchase, its day and value
    # are those of the calibration when it bought before `start`) and the holdout outcome
    cal = "day < $start"
    out = con.sql(
        f"""
        WITH p AS ({_purchases_sql(table, merge_same_day, "$end")})
        SELECT customer_id,
               CAST(COUNT(*) FILTER (WHERE {cal}) - 1 AS BIGINT) AS frequency,
               date_diff('day', MIN(day) FILTER (WHERE {cal}), MAX(day) FILTER (WHERE {cal})) / $unit AS recency,
               date_diff('day', MIN(day), $start - INTERVAL 1 DAY) / $unit AS T,
               CASE WHEN COUNT(*) FILTER (WHERE {cal}) > 1
                    THEN round((SUM(value) FILTER (WHERE {cal}) - arg_min(value, g))
                               / (COUNT(*) FILTER (WHERE {cal}) - 1), 6) ELSE 0 END AS monetary,
               MIN(day) AS first_purchase,
               CAST(COUNT(*) FILTER (WHERE NOT {cal}) AS BIGINT) AS frequency_holdout,
               coalesce(AVG(value) FILTER (WHERE NOT {cal}), 0.0) AS monetary_holdout
        FROM p GROUP BY customer_id HAVING COUNT(*) FILTER (WHERE {cal}) > 0 ORDER BY customer_id
        """,
        params={"end": end, "start": start, "unit": unit},
    ).to_arrow_table().to_pandas(date_as_object=False)
    out = _typed(out, [*SUMMARY_COLUMNS, "frequency_holdout", "monetary_holdout"])
    out = out.rename(columns={c: f"{c}_cal" for c in ("frequency", "recency", "T", "monetary")})
    out["frequency_holdout"] = out["frequency_holdout"].astype("int64")
    out["monetary_holdout"] = out["monetary_holdout"].astype(float)
    out["duration_holdout"] = (end - start).days / unit
    return out[CALHOLD_COLUMNS]


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.copy()
    out["customer_id"] = out["customer_id"].astype(str)
    out["frequency"] = out["frequency"].astype("int64")
    for c in ("recency", "T", "monetary"):
        out[c] = out[c].astype(float)
    out["first_purchase"] = pd.to_datetime(out["first_purchase"]).astype("datetime64[us]")
    return out[columns].reset_index(drop=True)


# --------------------------------------------------------------------------- fitting


@dataclass
class Fit:
    """A fitted model and its diagnostics.

    Attributes
    ----------
    model : str
        ``bgnbd``, ``pareto``, ``mbgnbd`` or ``gamma_gamma``.
    fitter : lifetimes fitter
        The fitted lifetimes object (predictions).
    params : dict
        Fitted parameters (``r, alpha, a, b`` / ``r, alpha, s, beta`` / ``p, q, v``);
        rates in ``time_unit``.
    loglik : float
        Total log-likelihood over customers (unscaled time, without penalizer).
    n_customers, n_groups : int
        Customers used and distinct rows actually fitted (grouping).
    converged : bool
    seconds : float
        Wall time of the fit.
    standard_errors : dict
        Standard errors from the Hessian (empty for Pareto/NBD, fitted without Hessian).
    time_unit : str
    tol : float
        Optimizer tolerance that converged (see :data:`FIT_TOLERANCES`).
    """

    model: str
    fitter: object
    params: dict
    loglik: float
    n_customers: int
    n_groups: int
    converged: bool
    seconds: float
    standard_errors: dict = field(default_factory=dict)
    time_unit: str = "week"
    tol: float = 1e-7

    def rows(self, prefix: str = "") -> list[tuple[str, str, float]]:
        """(model, param, value) rows: parameters, standard errors and diagnostics."""
        name = self.model + prefix
        out = [(name, k, float(v)) for k, v in self.params.items()]
        out += [(name, f"se_{k}", float(v)) for k, v in self.standard_errors.items()]
        out += [
            (name, "loglik", float(self.loglik)),
            (name, "n_customers", float(self.n_customers)),
            (name, "n_groups", float(self.n_groups)),
            (name, "converged", float(self.converged)),
            (name, "seconds", float(self.seconds)),
            (name, "unit_days", UNIT_DAYS[self.time_unit]),
        ]
        return out


def group_rows(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Distinct rows of ``columns`` with their count in ``weights`` (input unchanged)."""
    return frame.groupby(columns, as_index=False, sort=True).size().rename(columns={"size": "weights"})


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CheckError(f"{what} : colonnes manquantes {missing} (présentes : {list(frame.columns)})")


#: Tolerances tried in turn by :func:`fit_purchases` (BG/NBD, MBG/NBD). When nobody seems to drop out, the
#: BG/NBD likelihood is flat towards a -> 0, b -> infinity: BFGS then stops with
#: "precision loss" at a gradient of 1e-8 and lifetimes raises, although the likelihood is
#: at its maximum (Online Retail's calibration period on an Intel Xeon: -0.4014517894 at
#: 1e-7 failed, -0.4014517838 at 1e-6 converged; on an AMD EPYC 1e-7 converged).
FIT_TOLERANCES = (1e-7, 1e-6, 1e-5)


def fit_purchases(
    data: pd.DataFrame,
    model: str = "bgnbd",
    *,
    penalizer: float = 0.0,
    grouped: bool = True,
    time_unit: str = "week",
    columns: tuple[str, str, str] = ("frequency", "recency", "T"),
) -> Fit:
    """Fit a purchase-count model (BG/NBD, Pareto/NBD or MBG/NBD) with lifetimes.

    Parameters
    ----------
    data : DataFrame
        One row per customer with the ``columns`` (frequency, recency, T), e.g. from
        :func:`summary` or the ``_cal`` columns of :func:`calibration_holdout`.
    model : {"bgnbd", "pareto", "mbgnbd"}
    penalizer : float
        L2 penalty of lifetimes (0 = maximum likelihood, as in the papers).
    grouped : bool
        Fit the distinct (frequency, recency, T) rows weighted by their count – the same
        likelihood, much faster on large bases.
    time_unit : str
        Unit of recency and T (kept with the fit).

    Returns
    -------
    Fit
    """
    if model not in MODELS:
        raise InputError(f"Modèle de CLV inconnu « {model} »", column="clv_model", hint=f"Valeurs possibles : {', '.join(MODELS)}")
    f_col, r_col, t_col = columns
    _require(data, list(columns), "fit_purchases")
    if len(data) == 0:
        raise CheckError("Aucun client à modéliser : pas d'achat avant la date de référence")
    frame = data[list(columns)].rename(columns={f_col: "frequency", r_col: "recency", t_col: "T"})
    rows = group_rows(frame, ["frequency", "recency", "T"]) if grouped else frame.assign(weights=1)
    freq = rows["frequency"].to_numpy(dtype=np.int64)
    rec = rows["recency"].to_numpy(dtype=float)
    T = rows["T"].to_numpy(dtype=float)
    w = rows["weights"].to_numpy(dtype=np.int64)
    lt = _lifetimes()
    # BG/NBD: lifetimes' fitter with the written-out gradient (same optimum, several times faster)
    cls = {"bgnbd": _fast_fitters()["bgnbd"], "pareto": lt.ParetoNBDFitter, "mbgnbd": lt.ModifiedBetaGeoFitter}[model]
    kwargs = {"initial_params": np.ones(4), "iterative_fitting": 1} if model == "pareto" else {}
    t0 = time.perf_counter()
    converged = True
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # Pareto/NBD keeps lifetimes' own Nelder-Mead tolerance (1e-4)
        tolerances = FIT_TOLERANCES if model != "pareto" else (1e-4,)
        for tol in tolerances:
            fitter = cls(penalizer_coef=penalizer)
            try:
                fitter.fit(freq, rec, T, weights=w, tol=tol, **kwargs)
                break
            except lt.utils.ConvergenceError as exc:
                if tol == tolerances[-1]:
                    raise InputError(
                        f"Le modèle {MODEL_FR[model]} n'a pas convergé sur ces données", column="penalizer",
                        hint="Essayez un penalizer de 0,001 à 0,1 ou un autre modèle (clv_model)",
                    ) from exc
    seconds = time.perf_counter() - t0
    params = {k: float(v) for k, v in fitter.params_.items()}
    if model == "pareto":
        converged = bool(np.isfinite(fitter._negative_log_likelihood_))
        se = {}
    else:
        se = {k: float(v) for k, v in fitter.standard_errors_.items()}
    loglik = _loglik(fitter, model, params, freq, rec, T, w)
    return Fit(model, fitter, params, loglik, int(w.sum()), len(rows), converged, seconds, se, time_unit, tol)


def _loglik(fitter, model: str, params: dict, freq, rec, T, w) -> float:
    """Total log-likelihood in unscaled time, without penalizer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.array(list(params.values()), dtype=float)
        if model == "pareto":
            return float(np.sum(w * fitter._conditional_log_likelihood(values, freq, rec, T)))
        nll = fitter._negative_log_likelihood(np.log(values), freq, rec, T, w, 0.0)
        return float(-nll * w.sum())


def fit_spend(
    data: pd.DataFrame,
    *,
    penalizer: float = 0.0,
    grouped: bool = True,
    columns: tuple[str, str] = ("frequency", "monetary"),
) -> Fit:
    """Fit the Gamma-Gamma spend model on repeat customers.

    Parameters
    ----------
    data : DataFrame
        One row per customer with ``frequency`` (repeat purchases) and ``monetary``
        (mean repeat purchase value). Only rows with frequency > 0 and monetary > 0 are used.

    Returns
    -------
    Fit
        ``params`` p, q, v (v is the paper's gamma).
    """
    f_col, m_col = columns
    _require(data, list(columns), "fit_spend")
    frame = data.loc[(data[f_col] > 0) & (data[m_col] > 0), [f_col, m_col]].rename(columns={f_col: "frequency", m_col: "monetary"})
    if len(frame) < 10:
        raise InputError(
            f"Trop peu de clients réachetants ({len(frame)}) pour estimer le modèle de dépense Gamma-Gamma",
            hint="Allongez la période observée",
        )
    rows = group_rows(frame, ["frequency", "monetary"]) if grouped else frame.assign(weights=1)
    lt = _lifetimes()
    fitter = _fast_fitters()["gamma_gamma"](penalizer_coef=penalizer)
    freq = rows["frequency"].to_numpy(dtype=float)
    mon = rows["monetary"].to_numpy(dtype=float)
    w = rows["weights"].to_numpy(dtype=np.int64)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            fitter.fit(freq, mon, weights=w)
        except lt.utils.ConvergenceError as exc:
            raise InputError("Le modèle de dépense Gamma-Gamma n'a pas convergé", column="penalizer", hint="Essayez un penalizer de 0,001 à 0,1") from exc
        params = {k: float(v) for k, v in fitter.params_.items()}
        nll = fitter._negative_log_likelihood(np.log(list(params.values())), freq, mon, w, 0.0)
    se = {k: float(v) for k, v in fitter.standard_errors_.items()}
    return Fit("gamma_gamma", fitter, params, float(-nll * w.sum()), int(w.sum()), len(rows), True,
               time.perf_counter() - t0, se, "week")


# --------------------------------------------------------------------------- predictions


def _safe(fn, *args) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return np.asarray(fn(*args), dtype=float)
        except (OverflowError, FloatingPointError, ValueError, ZeroDivisionError):
            return np.full(np.broadcast(*[np.asarray(a) for a in args]).shape, np.nan)


def predict(fit: Fit, data: pd.DataFrame, horizon: float, columns: tuple[str, str, str] = ("frequency", "recency", "T")) -> pd.DataFrame:
    """Probability alive and expected repeat purchases over ``horizon`` for each customer.

    Predictions are computed once per distinct (frequency, recency, T). Values that the
    model cannot compute (NaN/inf, e.g. Pareto/NBD overflow for extreme customers) are
    *guarded*: replaced by the BG/NBD closed forms with the same mean purchase rate when
    possible, otherwise by the bound (p_alive 1, expected = (r + x) / (alpha + T) × horizon).

    Parameters
    ----------
    fit : Fit
        A purchase model from :func:`fit_purchases`.
    data : DataFrame
        Customers with ``columns`` (frequency, recency, T in the fit's time unit).
    horizon : float
        Prediction horizon in the fit's time unit.

    Returns
    -------
    DataFrame
        Same index as ``data``: ``p_alive`` (0–1), ``expected_purchases`` (≥ 0) and
        ``guarded`` (bool, the value was replaced).
    """
    keys = _Keys(data, columns)
    raw_p = keys.p_alive(fit)
    p, e, bad = _predict_unique(fit, keys, raw_p, horizon)
    return pd.DataFrame({"p_alive": keys.expand(p), "expected_purchases": keys.expand(e), "guarded": keys.expand(bad)},
                        index=data.index)


class _Keys:
    """Distinct (frequency, recency, T) rows of ``data`` and the row → distinct-row map.

    The model's predictions depend on these three numbers only: they are computed once
    per distinct row (in order of first occurrence) and expanded back to the customers.
    """

    def __init__(self, data: pd.DataFrame, columns: tuple[str, str, str]):
        keys = data[list(columns)]
        self.codes = keys.groupby(list(columns), sort=False, dropna=False).ngroup().to_numpy()
        first = np.unique(self.codes, return_index=True)[1]
        uniq = keys.iloc[first]
        self.x = uniq[columns[0]].to_numpy(dtype=float)
        self.tx = uniq[columns[1]].to_numpy(dtype=float)
        self.T = uniq[columns[2]].to_numpy(dtype=float)

    def p_alive(self, fit: Fit) -> np.ndarray:
        """Raw model probability alive per distinct row (not guarded)."""
        return _safe(fit.fitter.conditional_probability_alive, self.x, self.tx, self.T)

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-customer values from per-distinct-row ones."""
        return values[self.codes]


def _predict_unique(fit: Fit, keys: _Keys, raw_p: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guarded (p_alive, expected purchases over ``horizon``, guarded) per distinct row; see :func:`predict`."""
    x, tx, T = keys.x, keys.tx, keys.T
    p = raw_p.copy()
    e = _safe(fit.fitter.conditional_expected_number_of_purchases_up_to_time, horizon, x, tx, T)
    bad = ~np.isfinite(p) | ~np.isfinite(e) | (p < -1e-9) | (p > 1 + 1e-9) | (e < -1e-9)
    if bad.any():
        r, alpha = fit.params["r"], fit.params["alpha"]
        rate = (r + x[bad]) / (alpha + T[bad])
        p_fb = np.where(x[bad] > 0, 1.0, np.clip(np.nan_to_num(p[bad], nan=1.0), 0, 1))
        p[bad] = p_fb
        e[bad] = p_fb * rate * horizon
    return np.clip(p, 0.0, 1.0), np.clip(e, 0.0, None), bad


def expected_spend(spend: Fit, frequency, monetary) -> np.ndarray:
    """Gamma-Gamma expected mean purchase value given (frequency, monetary), ≥ 0.

    Customers without repeat purchase get the population mean ``p v / (q - 1)``.
    """
    p, q, v = spend.params["p"], spend.params["q"], spend.params["v"]
    x = np.asarray(frequency, dtype=float)
    m = np.clip(np.asarray(monetary, dtype=float), 0, None)
    if q <= 1:
        raise InputError("Le modèle Gamma-Gamma donne q ≤ 1 : dépense moyenne de la population infinie",
                         column="penalizer", hint="Ajoutez un penalizer ou vérifiez les montants extrêmes")
    wgt = p * x / (p * x + q - 1)
    return (1 - wgt) * (p * v / (q - 1)) + wgt * m


def monthly_rate(discount_rate_annual: float) -> float:
    """Monthly discount rate equivalent to an annual one: (1 + a)^(1/12) − 1."""
    return (1.0 + discount_rate_annual) ** (1.0 / 12.0) - 1.0


def discounted_purchases(fit: Fit, data: pd.DataFrame, months: int, monthly_discount: float,
                         units_per_month: float | None = None) -> np.ndarray:
    """Σ_m E[purchases in month m | history] / (1 + d)^m for m = 1..months.

    Parameters
    ----------
    data : DataFrame
        ``frequency, recency, T`` in the fit's time unit.
    units_per_month : float, optional
        Length of a month in the fit's unit (default 365.25/12 days expressed in it).

    Returns
    -------
    ndarray
        One discounted expected number of purchases per row of ``data``.
    """
    upm = units_per_month or DAYS_PER_MONTH / UNIT_DAYS[fit.time_unit]
    keys = _Keys(data, ("frequency", "recency", "T"))
    return keys.expand(_discounted_unique(fit, keys, keys.p_alive(fit), months, monthly_discount, upm))


def _discounted_unique(fit: Fit, keys: _Keys, raw_p: np.ndarray, months: int, monthly_discount: float,
                       upm: float) -> np.ndarray:
    """:func:`discounted_purchases` per distinct row of ``keys``."""
    total = np.zeros(len(keys.x))
    prev = np.zeros(len(keys.x))
    for m in range(1, int(months) + 1):
        cum = _predict_unique(fit, keys, raw_p, m * upm)[1]
        total += (cum - prev) / (1.0 + monthly_discount) ** m
        prev = cum
    return total


def customer_value(
    purchases: Fit,
    spend: Fit,
    data: pd.DataFrame,
    *,
    months: int = 12,
    discount_rate_annual: float = 0.10,
    margin_rate: float = 0.30,
) -> pd.DataFrame:
    """Per-customer p_alive, expected purchases and CLV (discounted margin) over ``months``.

    Parameters
    ----------
    purchases, spend : Fit
        From :func:`fit_purchases` and :func:`fit_spend`.
    data : DataFrame
        :func:`summary` output (``customer_id, frequency, recency, T, monetary``).
    months : int
        Horizon of the CLV.
    discount_rate_annual : float
        Annual discount rate, turned into the equivalent monthly rate.
    margin_rate : float
        Share of revenue kept as margin.

    Returns
    -------
    DataFrame
        ``customer_id, frequency, recency, T, monetary, p_alive, expected_purchases``
        (over the horizon), ``expected_spend`` (Gamma-Gamma mean purchase value),
        ``clv`` (discounted margin over the horizon), ``guarded``.
    """
    _require(data, ["customer_id", "frequency", "recency", "T", "monetary"], "customer_value")
    upm = DAYS_PER_MONTH / UNIT_DAYS[purchases.time_unit]
    keys = _Keys(data, ("frequency", "recency", "T"))  # predictions once per distinct (x, t_x, T)
    raw_p = keys.p_alive(purchases)
    p, e, bad = _predict_unique(purchases, keys, raw_p, months * upm)
    spend_hat = expected_spend(spend, data["frequency"], data["monetary"])
    disc = keys.expand(_discounted_unique(purchases, keys, raw_p, months, monthly_rate(discount_rate_annual), upm))
    out = data[["customer_id", "frequency", "recency", "T", "monetary"]].copy()
    out["p_alive"] = keys.expand(p)
    out["expected_purchases"] = keys.expand(e)
    out["expected_spend"] = spend_hat
    out["clv"] = margin_rate * spend_hat * disc
    out["guarded"] = keys.expand(bad)
    return out.reset_index(drop=True)


def spend_correlation(data: pd.DataFrame, threshold: float = CORR_THRESHOLD) -> dict:
    """Pearson correlation between frequency and mean repeat spend among repeat customers.

    Gamma-Gamma assumes spend per purchase independent of purchase frequency.

    Returns
    -------
    dict
        ``r`` (float, NaN if < 3 customers), ``n`` (repeat customers), ``threshold``,
        ``ok`` (|r| ≤ threshold) and ``message`` (French sentence).
    """
    rep = data.loc[(data["frequency"] > 0) & (data["monetary"] > 0)]
    r = float(np.corrcoef(rep["frequency"], rep["monetary"])[0, 1]) if len(rep) >= 3 else float("nan")
    ok = bool(np.isnan(r) or abs(r) <= threshold)
    rr = f"{r:.2f}".replace(".", ",")
    if np.isnan(r):
        msg = "Trop peu de clients réachetants pour vérifier l'indépendance fréquence–panier."
    elif ok:
        msg = (f"Corrélation fréquence–panier moyen r = {rr} sur {fr_number(len(rep))} clients réachetants : "
               f"sous le seuil de {str(threshold).replace('.', ',')}, l'hypothèse d'indépendance du modèle Gamma-Gamma est plausible.")
    else:
        msg = (f"Attention : corrélation fréquence–panier moyen r = {rr} sur {fr_number(len(rep))} clients réachetants, "
               f"au-delà du seuil de {str(threshold).replace('.', ',')}. Le modèle Gamma-Gamma suppose que le panier "
               "ne dépend pas de la fréquence d'achat : les CLV individuelles sont à lire avec prudence.")
    return {"r": r, "n": len(rep), "threshold": threshold, "ok": ok, "message": msg}


# --------------------------------------------------------------------------- holdout validation


def holdout_check(fit: Fit, calhold: pd.DataFrame, max_bucket: int = 7) -> dict:
    """Compare predicted and actual holdout purchases of the calibration customers.

    Parameters
    ----------
    fit : Fit
        Purchase model fitted on the ``_cal`` columns of ``calhold``.
    calhold : DataFrame
        :func:`calibration_holdout` output.
    max_bucket : int
        Calibration frequencies ≥ this are pooled ("7+").

    Returns
    -------
    dict
        ``customers`` (calhold + ``predicted_holdout``, ``p_alive_cal``), ``by_frequency``
        (DataFrame: ``bucket, customers, actual, predicted`` – means per customer –
        ``actual_total, predicted_total``), ``actual_total``, ``predicted_total`` (sum of
        conditional expectations), ``mae`` (mean absolute error per customer),
        ``total_error_pct`` ((predicted − actual) / actual), ``correlation`` (per customer,
        predicted vs actual), ``guarded`` (count).
    """
    cols = ("frequency_cal", "recency_cal", "T_cal")
    duration = float(calhold["duration_holdout"].iloc[0]) if len(calhold) else 0.0
    pred = predict(fit, calhold, duration, cols)
    cust = calhold.copy()
    cust["predicted_holdout"] = pred["expected_purchases"].to_numpy()
    cust["p_alive_cal"] = pred["p_alive"].to_numpy()
    bucket = cust["frequency_cal"].clip(upper=max_bucket)
    grp = cust.assign(bucket=bucket).groupby("bucket", as_index=False).agg(
        customers=("customer_id", "size"),
        actual_total=("frequency_holdout", "sum"),
        predicted_total=("predicted_holdout", "sum"),
    )
    grp["actual"] = grp["actual_total"] / grp["customers"]
    grp["predicted"] = grp["predicted_total"] / grp["customers"]
    grp["label"] = grp["bucket"].map(lambda b: f"{b}+" if b == max_bucket else str(b))
    actual = float(cust["frequency_holdout"].sum())
    predicted = float(cust["predicted_holdout"].sum())
    corr = float(np.corrcoef(cust["predicted_holdout"], cust["frequency_holdout"])[0, 1]) if len(cust) > 2 else float("nan")
    return {
        "customers": cust,
        "by_frequency": grp[["bucket", "label", "customers", "actual", "predicted", "actual_total", "predicted_total"]],
        "actual_total": actual,
        "predicted_total": predicted,
        "mae": float(np.mean(np.abs(cust["predicted_holdout"] - cust["frequency_holdout"]))),
        "total_error_pct": (predicted - actual) / actual if actual else float("nan"),
        "correlation": corr,
        "guarded": int(pred["guarded"].sum()),
        "duration": duration,
    }


def tracking(
    con: duckdb.DuckDBPyConnection,
    fit: Fit,
    calhold: pd.DataFrame,
    as_of,
    *,
    merge_same_day: bool = True,
    table: str = "transactions",
    step_days: int = 7,
) -> pd.DataFrame:
    """Weekly cumulative repeat purchases of the calibration cohort: actual vs model.

    Week 1 starts on the cohort's first purchase day. The expectation sums, over cohorts
    of the same first purchase day d, n_d × E[X(t)] with t the time from d to the last
    day of the week (the unconditional expectation of the fitted model, i.e. the
    "tracking" forecast of Fader, Hardie & Lee). The actual repeat purchases are all the
    purchases of the cohort (``calhold`` customers) but each customer's first one, counted
    on its ``first_purchase`` day: ``calhold`` must come from :func:`calibration_holdout`
    on the same table and ``merge_same_day``.

    Returns
    -------
    DataFrame
        ``week, end_date`` (last day of the week), ``actual_cum``, ``expected_cum``,
        ``actual``, ``expected`` (per week), ``holdout`` (bool: the week is after calibration).
    """
    end = _date(as_of, "as_of")
    cohort = calhold.groupby("first_purchase").size()
    first_days = pd.to_datetime(cohort.index).values.astype("datetime64[D]")
    start = first_days.min()
    n_weeks = int(np.ceil((np.datetime64(end) - start).astype(int) / step_days))
    # repeat purchases per week = every purchase of the cohort per week minus each
    # customer's first purchase (the one with the smallest grain, on its first_purchase day):
    # one aggregation of the purchases, no self-join on the first purchase
    register_frame(con, "_clv_cohort", calhold[["customer_id"]])
    try:
        weekly = to_frame(con.sql(
            f"""
            WITH p AS ({_purchases_sql(table, merge_same_day)})
            SELECT CAST(floor(date_diff('day', CAST(? AS DATE), p.day) / ?) AS BIGINT) + 1 AS week, COUNT(*) AS n
            FROM p SEMI JOIN _clv_cohort c ON c.customer_id = p.customer_id
            GROUP BY 1
            """,
            params=[end, pd.Timestamp(start).date(), step_days],
        ))
    finally:
        con.unregister("_clv_cohort")
    first_week = (pd.to_datetime(calhold["first_purchase"]).values.astype("datetime64[D]") - start).astype(int) // step_days + 1
    firsts = pd.Series(first_week).value_counts()
    weekly = weekly.set_index("week")["n"].astype("int64").sub(firsts, fill_value=0)
    weekly = weekly[weekly != 0].rename_axis("week").reset_index(name="n")
    weeks = np.arange(1, n_weeks + 1)
    last_day = start + (weeks * step_days - 1).astype("timedelta64[D]")
    last_day = np.minimum(last_day, np.datetime64(end) - np.timedelta64(1, "D"))
    elapsed = (last_day[:, None] - first_days[None, :]).astype(int)  # days
    unit = UNIT_DAYS[fit.time_unit]
    uniq = np.unique(elapsed[elapsed >= 0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ex = np.asarray(fit.fitter.expected_number_of_purchases_up_to_time(uniq / unit), dtype=float)
    ex = np.nan_to_num(ex, nan=0.0)
    lookup = np.zeros(elapsed.shape)
    pos = elapsed >= 0
    lookup[pos] = ex[np.searchsorted(uniq, elapsed[pos])]
    expected_cum = lookup @ cohort.to_numpy(dtype=float)
    actual = np.zeros(n_weeks)
    wk = weekly[(weekly["week"] >= 1) & (weekly["week"] <= n_weeks)]
    actual[wk["week"].to_numpy(dtype=int) - 1] = wk["n"].to_numpy(dtype=float)
    hold_start = calhold["T_cal"].max() * unit  # days from the earliest first purchase to the last calibration day
    out = pd.DataFrame({
        "week": weeks,
        "end_date": pd.to_datetime(last_day),
        "actual": actual,
        "expected": np.diff(np.concatenate([[0.0], expected_cum])),
        "actual_cum": np.cumsum(actual),
        "expected_cum": expected_cum,
    })
    out["holdout"] = (out["end_date"] - pd.Timestamp(start)).dt.days > round(hold_start)
    return out


# --------------------------------------------------------------------------- outputs


def model_fits_frame(run_id: str, as_of, fits: list[tuple[Fit, str]], extra: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Rows for the ``model_fits`` table.

    Parameters
    ----------
    fits : list of (Fit, suffix)
        e.g. ``[(fit, ""), (fit_cal, "_cal"), (spend, "")]``; the model name is
        ``fit.model + suffix``.
    extra : dict, optional
        ``{model: {param: value}}`` further diagnostics (holdout errors …).

    Returns
    -------
    DataFrame
        ``run_id, as_of, model, param, value``.
    """
    rows = [r for f, suffix in fits for r in f.rows(suffix)]
    for model, kv in (extra or {}).items():
        rows += [(model, k, float(v)) for k, v in kv.items()]
    out = pd.DataFrame(rows, columns=["model", "param", "value"])
    out.insert(0, "as_of", pd.Timestamp(_date(as_of, "as_of")))
    out.insert(0, "run_id", run_id)
    return out


def write_model_fits(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Replace this run's rows of the same models in ``model_fits``; return rows written."""
    _require(frame, ["run_id", "as_of", "model", "param", "value"], "model_fits")
    register_frame(con, "_fits_in", frame)
    try:
        con.execute("DELETE FROM model_fits WHERE (run_id, model) IN (SELECT DISTINCT run_id, model FROM _fits_in)")
        con.execute("INSERT INTO model_fits SELECT run_id, CAST(as_of AS DATE), model, param, CAST(value AS DOUBLE) FROM _fits_in")
    finally:
        con.unregister("_fits_in")
    return len(frame)


def kpis(values: pd.DataFrame, check: dict | None = None, corr: dict | None = None, currency: str = "EUR") -> pd.DataFrame:
    """KPI rows (``kpi, value, unit, dimension``) of the CLV step for ``crmlab.db.write_kpis``.

    Parameters
    ----------
    values : DataFrame
        :func:`customer_value` output.
    check : dict, optional
        :func:`holdout_check` output.
    corr : dict, optional
        :func:`spend_correlation` output.
    """
    rows = [
        ("clv_total", values["clv"].sum(), currency, ""),
        ("clv_moyenne", values["clv"].mean(), currency, ""),
        ("p_alive_moyenne", values["p_alive"].mean(), "part", ""),
        ("part_p_alive_sous_50", (values["p_alive"] < 0.5).mean(), "part", ""),
        ("achats_attendus_horizon", values["expected_purchases"].sum(), "achats", ""),
        ("predictions_corrigees", float(values["guarded"].sum()), "clients", ""),
    ]
    if check is not None:
        rows += [
            ("holdout_achats_reels", check["actual_total"], "achats", ""),
            ("holdout_achats_predits", check["predicted_total"], "achats", ""),
            ("holdout_erreur_totale", check["total_error_pct"], "part", ""),
            ("holdout_mae", check["mae"], "achats", ""),
            ("holdout_correlation", check["correlation"], "", ""),
        ]
    if corr is not None:
        rows.append(("correlation_frequence_panier", corr["r"], "", ""))
    return pd.DataFrame(rows, columns=["kpi", "value", "unit", "dimension"])


# --------------------------------------------------------------------------- charts


def _charts():
    import matplotlib.pyplot as plt

    from crmlab import charts

    return plt, charts


def chart_by_frequency(check: dict):
    """Bars of mean holdout purchases per customer, actual vs predicted, by calibration frequency."""
    plt, charts = _charts()
    import seaborn as sns

    g = check["by_frequency"]
    long = pd.concat([
        g[["label"]].assign(valeur=g["actual"], serie="réel"),
        g[["label"]].assign(valeur=g["predicted"], serie="prédit par le modèle"),
    ])
    fig, ax = plt.subplots()
    sns.barplot(data=long, x="label", y="valeur", hue="serie", ax=ax)
    charts.axis_fr(ax, "y", decimals=1)
    err = check["total_error_pct"]
    worst = g.loc[(g["predicted"] - g["actual"]).abs().idxmax()]
    title = (f"Le modèle prévoit {charts.fr_number(check['predicted_total'])} achats en validation pour "
             f"{charts.fr_number(check['actual_total'])} réels ({'+' if err > 0 else ''}{charts.fr_percent(err)}) ; "
             f"écart max. au groupe « {worst['label']} »")
    ax.legend(title=None)
    return charts.finish(fig, title, "achats répétés pendant la calibration", "achats par client en validation")


def chart_tracking(track: pd.DataFrame):
    """Cumulative repeat purchases per week: actual vs tracking forecast, calibration end marked."""
    plt, charts = _charts()
    fig, ax = plt.subplots()
    ax.plot(track["week"], track["actual_cum"], label="réel", color=charts.PALETTE[0])
    ax.plot(track["week"], track["expected_cum"], label="modèle", color=charts.PALETTE[1], linestyle="--")
    cal = track.loc[~track["holdout"], "week"]
    if len(cal) and track["holdout"].any():
        ax.axvline(cal.max() + 0.5, color="grey", linewidth=1)
        ax.text(cal.max() + 1, ax.get_ylim()[1] * 0.05, "début de la validation", color="grey", fontsize=9)
    charts.axis_fr(ax, "y")
    last = track.iloc[-1]
    err = (last["expected_cum"] - last["actual_cum"]) / last["actual_cum"] if last["actual_cum"] else float("nan")
    title = (f"Cumul fin semaine {int(last['week'])} : {charts.fr_number(last['expected_cum'])} achats prévus "
             f"pour {charts.fr_number(last['actual_cum'])} réels ({'+' if err > 0 else ''}{charts.fr_percent(err)})")
    ax.legend()
    return charts.finish(fig, title, "semaine depuis le premier achat de la cohorte", "achats répétés cumulés")


def chart_p_alive(values: pd.DataFrame):
    """Histogram of the probability that each customer is still active."""
    plt, charts = _charts()
    import seaborn as sns

    fig, ax = plt.subplots()
    sns.histplot(values["p_alive"], bins=20, binrange=(0, 1), ax=ax, color=charts.PALETTE[0])
    low = (values["p_alive"] < 0.5).mean()
    charts.axis_fr(ax, "x", "percent", decimals=0)
    charts.axis_fr(ax, "y")
    return charts.finish(fig, f"{charts.fr_percent(low, 0)} des clients ont moins d'une chance sur deux d'être encore actifs",
                         "probabilité d'être encore actif", "clients")


def chart_clv(values: pd.DataFrame, currency: str = "EUR"):
    """Share of the total CLV held by the top customers (concentration curve)."""
    plt, charts = _charts()
    v = np.sort(values["clv"].to_numpy())[::-1]
    share_cust = np.arange(1, len(v) + 1) / max(len(v), 1)
    share_val = np.cumsum(v) / v.sum() if v.sum() > 0 else np.zeros(len(v))
    fig, ax = plt.subplots()
    ax.plot(share_cust, share_val, color=charts.PALETTE[0])
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    k = max(int(round(0.2 * len(v))) - 1, 0)
    top20 = share_val[k] if len(v) else float("nan")
    charts.axis_fr(ax, "x", "percent", 0)
    charts.axis_fr(ax, "y", "percent", 0)
    return charts.finish(fig, f"Les 20 % de clients les plus précieux portent {charts.fr_percent(top20, 0)} de la valeur future",
                         "part des clients (du plus au moins précieux)", "part cumulée de la CLV")
