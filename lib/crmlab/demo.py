"""The demo world: a seeded, realistic company with two source systems and known truth.

:func:`generate` writes, into one folder, the exports a French retailer would hand over
(web shop accounts and orders, store loyalty cards and receipts as French Excel CSV
exports, consents, past campaigns with control groups, inbound interactions, a later
batch for step 05) and, under ``truth/``, what really happened: which records are the
same person, the generating model parameters, the true campaign uplifts, the malformed
rows.

The generative story
--------------------
* Persons buy according to the BG/NBD story (Fader, Hardie & Lee 2005), time unit the
  week: purchase rate ``lambda ~ Gamma(r, alpha)`` (``alpha`` is a rate), dropout
  probability ``p ~ Beta(a, b)``; the first purchase happens at the acquisition time
  ``t0`` (spread over 2023-01-01 .. 2025-12-31, denser at the start); repeat purchases
  follow a Poisson process of rate ``lambda`` and after each repeat purchase the person
  becomes inactive with probability ``p``. This is exactly lifetimes'
  ``beta_geometric_nbd_model`` generator, drawn vectorially: with ``N ~ Poisson(lambda T)``
  and ``K ~ Geometric(p)``, the person makes ``x = min(N, K)`` repeat purchases at the
  ``x`` first order statistics of ``N`` uniforms on ``[t0, t0 + T]``.
* Spend per transaction follows Gamma-Gamma: ``nu ~ Gamma(q, v)`` (``v`` a rate) per
  person, each amount ``~ Gamma(p, nu)``.
* Campaigns add a few extra purchases (treated contacts buy once more within the campaign
  window with probability ``p_extra``, which depends on segment x channel). They amount
  to well under 1 % of the transactions, so fitting BG/NBD + Gamma-Gamma on the whole
  history still recovers the generating parameters closely; their exact number is in
  ``truth/campaigns.csv`` (``n_extra_purchases``) and they are flagged in
  ``truth/persons.csv`` (``n_campaign_purchases``).
* A few account holders never buy (``n_purchases = 0`` in ``truth/persons.csv``); they
  are outside the BG/NBD population.

Determinism: one ``numpy.random.Generator`` (and ``random.Random`` instances seeded from
it for string noise) drive everything; files carry no generation timestamp; floats are
written with fixed formats; the Excel file is repacked with fixed zip dates and document
properties. Same seed and scale => byte-identical files.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import random
import re
import unicodedata
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import rankdata

# --------------------------------------------------------------------------- constants

OBSERVATION_START = "2023-01-01"
OBSERVATION_END = "2025-12-31"
BATCH2_END = "2026-01-31"
_S = np.timedelta64(1, "s")
_T_START = np.datetime64("2023-01-01T00:00:00", "s")
_T_END = np.datetime64("2026-01-01T00:00:00", "s")  # exclusive end of the observation
_T_B2 = np.datetime64("2026-02-01T00:00:00", "s")  # exclusive end of batch 2
_WEEK_S = 7 * 86400
SPAN_WEEKS = float((_T_END - _T_START) / _S) / _WEEK_S
B2_WEEKS = float((_T_B2 - _T_END) / _S) / _WEEK_S

#: Generating parameters (weekly time unit). Mean rate r / alpha = 0.27 purchase/week;
#: mean dropout probability a / (a + b) = 0.12 after each repeat purchase.
BGNBD = {"r": 0.65, "alpha": 2.4, "a": 1.2, "b": 9.0}
#: Gamma-Gamma spend: mean spend per transaction p * v / (q - 1) = 60 EUR.
GAMMA_GAMMA = {"p": 4.0, "q": 5.0, "v": 60.0}
#: Acquisition times t0 = span * U ** ACQ_SKEW (U uniform): more customers early on.
ACQ_SKEW = 1.6
#: Shares of persons by systems they are known in.
SHARE_BOTH, SHARE_WEB_ONLY = 0.35, 0.40  # the rest (25 %) are store-only
SHARE_SECOND_RECORD = 0.03  # persons with 2 records in the same system
SHARE_NO_PURCHASE = 0.04  # web accounts that never order (relative to buyers)
SHARE_ANONYMOUS = 0.04  # store receipts without card (non-members)

CATEGORIES = ["Femme", "Homme", "Enfant", "Chaussures", "Maison", "Beauté", "Sport"]
WEB_PAYMENTS = ["carte", "paypal", "apple_pay", "carte_cadeau"]
WEB_PAYMENT_P = [0.62, 0.25, 0.09, 0.04]
STORE_PAYMENTS = ["CB", "Espèces", "Chèque", "Carte cadeau", "CB sans contact"]
STORE_PAYMENT_P = [0.52, 0.14, 0.04, 0.04, 0.26]
STORES = [  # code, name, city index in _CITIES
    (101, "Paris Rivoli"), (102, "Lyon Part-Dieu"), (103, "Marseille Prado"),
    (104, "Bordeaux Sainte-Catherine"), (105, "Lille Euralille"), (106, "Nantes Atlantis"),
    (107, "Toulouse Capitole"), (108, "Strasbourg Halles"),
]
CHANNELS = ["email", "sms", "courrier", "telephone"]
COST_PER_CONTACT = {"email": 0.01, "sms": 0.07, "courrier": 0.95, "telephone": 4.50}

SEGMENTS = [
    "Champions", "Fidèles", "Fidèles potentiels", "Nouveaux clients", "Prometteurs",
    "À surveiller", "Sur le point de s'endormir", "À risque", "À ne pas perdre",
    "En hibernation",
]

#: Probability that a treated contact makes one extra purchase in the window, by
#: channel x segment: e-mail works on active/loyal customers, SMS on recent ones, mail on
#: older/lapsed ones, phone on high-value ones. Unlisted pairs: 0.005.
P_EXTRA = {
    "email": {"Champions": 0.12, "Fidèles": 0.07, "Fidèles potentiels": 0.05, "À risque": 0.015},
    "sms": {"Fidèles potentiels": 0.08, "Nouveaux clients": 0.09, "Prometteurs": 0.07, "Sur le point de s'endormir": 0.01},
    "courrier": {"En hibernation": 0.05, "À risque": 0.12, "À ne pas perdre": 0.10},
    "telephone": {"À ne pas perdre": 0.20, "Champions": 0.15},
}

#: Past campaigns: id, name, channel, segment, offer, start, days, control share.
CAMPAIGNS = [
    ("C2401", "Vente privée de printemps", "email", "Champions", "-20 % sur la collection", "2024-02-05", 21, 0.15),
    ("C2402", "Flash SMS week-end", "sms", "Fidèles potentiels", "-10 % ce week-end", "2024-03-11", 14, 0.20),
    ("C2403", "On ne vous oublie pas", "courrier", "En hibernation", "Bon de 15 EUR dès 50 EUR", "2024-04-15", 42, 0.15),
    ("C2404", "Appel clients précieux", "telephone", "À ne pas perdre", "Invitation soirée privée", "2024-06-03", 30, 0.20),
    ("C2405", "Double points rentrée", "email", "Fidèles", "Points fidélité doublés", "2024-09-09", 21, 0.10),
    ("C2406", "Offre découverte", "sms", "Prometteurs", "Livraison offerte", "2024-10-14", 14, 0.15),
    ("C2407", "Black Friday relance", "email", "À risque", "-30 % sur une sélection", "2024-11-25", 14, 0.10),
    ("C2501", "Catalogue printemps", "courrier", "À risque", "Catalogue + bon de 10 EUR", "2025-03-10", 42, 0.15),
    ("C2502", "Réveil des dormeurs", "sms", "Sur le point de s'endormir", "-15 % ce week-end", "2025-05-19", 14, 0.15),
    ("C2503", "Appel rentrée VIP", "telephone", "Champions", "Avant-première collection", "2025-09-08", 30, 0.20),
    ("C2504", "Newsletter fidélité", "email", "Fidèles potentiels", "Cadeau dès 60 EUR", "2025-10-13", 21, 0.10),
]

# --------------------------------------------------------------------------- name lists

_FEMALE = (
    "Marie Nathalie Isabelle Sylvie Catherine Françoise Sophie Valérie Christine Sandrine "
    "Céline Stéphanie Véronique Camille Julie Laure Aurélie Émilie Chloé Léa Manon Inès "
    "Zoé Hélène Élodie Mélanie Anaïs Gaëlle Noémie Maëlle Juliette Louise Jeanne Alice "
    "Clémence Pauline Agnès Brigitte Monique Josiane Océane Margaux Lucie Anne-Sophie "
    "Marie-Claire Annick Solène Mathilde Sarah Nadia"
).split()
_MALE = (
    "Jean Pierre Michel Philippe Alain Nicolas Christophe Patrick Laurent Frédéric "
    "Stéphane Sébastien Julien Thomas David Éric Olivier Antoine Hugo Lucas Théo Louis "
    "Raphaël Gabriel Arthur Jérôme Benoît François Hervé Loïc Gaël Mathieu Bruno Denis "
    "Yves Jacques Bernard Thierry Cédric Romain Maxime Kevin Quentin Jean-Pierre "
    "Jean-François Jean-Marc Noël Mehdi Karim Yannick"
).split()
_LAST = (
    "Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel "
    "Lefèvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine "
    "Rousseau Vincent Muller Lefebvre Faure André Mercier Blanc Guérin Boyer Garnier "
    "Chevalier François Legrand Gauthier Garcia Perrin Robin Clément Morin Nicolas Henry "
    "Roussel Mathieu Gautier Masson Marchand Duval Denis Dumont Marie Lemaire Noël Meyer "
    "Dufour Meunier Brun Blanchard Giraud Joly Rivière Lucas Brunet Gaillard Barbier Arnaud "
    "Martinez Gérard Roche Renard Schmitt Roy Leroux Colin Vidal Caron Picard Roger Fabre "
    "Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoît Rey "
    "Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger "
    "Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury "
    "Royer Klein Jacquet Adam Paris Poirier Marty Aubry Guyot Carré Charles Renault "
    "Charpentier Ménard Maillard Baron Bertin Bailly Hervé Schneider Fernandez Collet Léger "
    "Bouvier Julien Prévost Millet Perrot Daniel Cousin Germain Breton Besson Langlois Rémy "
    "Pelletier Lévêque Perrier Leblanc Barré Lebrun Marchal Weber Mallet Hamon Boulanger "
    "Jacob Monnier Michaud Rodriguez Guichard Gillet Étienne Grondin Poulain Tessier "
    "Chauvin Bouchet Gay Lemaître Bénard Gosselin Rousset"
).split() + ["Le Gall", "Le Roux", "Le Goff", "Da Silva", "Dos Santos", "N'Diaye", "D'Almeida", "De La Fontaine"]
# name, postal code, landline prefix, weight (rough population)
_CITIES = [
    ("Paris", "75011", "01", 40), ("Paris", "75015", "01", 40), ("Paris", "75018", "01", 30),
    ("Lyon", "69003", "04", 25), ("Lyon", "69007", "04", 15), ("Marseille", "13008", "04", 25),
    ("Toulouse", "31000", "05", 22), ("Nice", "06000", "04", 15), ("Nantes", "44000", "02", 15),
    ("Strasbourg", "67000", "03", 13), ("Montpellier", "34000", "04", 14), ("Bordeaux", "33000", "05", 18),
    ("Lille", "59000", "03", 18), ("Rennes", "35000", "02", 11), ("Reims", "51100", "03", 9),
    ("Saint-Étienne", "42000", "04", 9), ("Le Havre", "76600", "02", 8), ("Toulon", "83000", "04", 8),
    ("Grenoble", "38000", "04", 8), ("Dijon", "21000", "03", 8), ("Angers", "49000", "02", 7),
    ("Nîmes", "30000", "04", 7), ("Villeurbanne", "69100", "04", 7), ("Clermont-Ferrand", "63000", "04", 7),
    ("Le Mans", "72000", "02", 7), ("Aix-en-Provence", "13100", "04", 7), ("Brest", "29200", "02", 7),
    ("Tours", "37000", "02", 7), ("Amiens", "80000", "03", 6), ("Limoges", "87000", "05", 6),
    ("Annecy", "74000", "04", 6), ("Perpignan", "66000", "04", 6), ("Boulogne-Billancourt", "92100", "01", 6),
    ("Metz", "57000", "03", 6), ("Besançon", "25000", "03", 6), ("Orléans", "45000", "02", 6),
    ("Rouen", "76000", "02", 6), ("Mulhouse", "68100", "03", 5), ("Caen", "14000", "02", 5),
    ("Nancy", "54000", "03", 5), ("Argenteuil", "95100", "01", 5), ("Montreuil", "93100", "01", 5),
    ("Roubaix", "59100", "03", 5), ("Avignon", "84000", "04", 4), ("Poitiers", "86000", "05", 4),
    ("Versailles", "78000", "01", 4), ("Créteil", "94000", "01", 4), ("Pau", "64000", "05", 4),
    ("La Rochelle", "17000", "05", 4), ("Colombes", "92700", "01", 4), ("Vitry-sur-Seine", "94400", "01", 4),
    ("Béziers", "34500", "04", 3), ("Chambéry", "73000", "04", 3), ("Évry-Courcouronnes", "91000", "01", 3),
    ("Valence", "26000", "04", 3), ("Quimper", "29000", "02", 3), ("Troyes", "10000", "03", 3),
    ("Bourg-en-Bresse", "01000", "04", 3), ("Saint-Malo", "35400", "02", 2), ("Châteauroux", "36000", "02", 2),
    ("Ajaccio", "20000", "04", 2), ("Mâcon", "71000", "03", 2), ("Laval", "53000", "02", 2),
]
_STREET_TYPES = [("rue", 50), ("avenue", 15), ("boulevard", 8), ("place", 4), ("chemin", 6), ("allée", 6), ("impasse", 5), ("route", 6)]
_STREET_NAMES = [
    "Victor Hugo", "de la République", "Jean Jaurès", "Pasteur", "Gambetta", "du Général de Gaulle",
    "des Lilas", "des Tilleuls", "de la Gare", "du Moulin", "des Écoles", "de l'Église",
    "Voltaire", "Émile Zola", "Jules Ferry", "de la Paix", "du Château", "des Roses",
    "Saint-Michel", "Sainte-Anne", "des Vignes", "de Verdun", "Carnot", "Anatole France",
    "de la Liberté", "du Stade", "des Acacias", "Molière", "de Bretagne", "Aristide Briand",
    "Paul Bert", "du Maréchal Foch", "des Peupliers", "de la Fontaine", "Jean Moulin",
    "des Marronniers", "Nationale", "de Paris", "du Port", "des Cerisiers",
]
_ABBREV = {"rue": ["r.", "R"], "avenue": ["av.", "ave", "av"], "boulevard": ["bd", "bld", "boul."],
           "place": ["pl.", "pl"], "chemin": ["ch.", "chem."], "allée": ["all.", "allee"],
           "impasse": ["imp.", "imp"], "route": ["rte", "rte."]}
_DOMAINS = [("gmail.com", 38), ("orange.fr", 14), ("hotmail.fr", 11), ("yahoo.fr", 7), ("free.fr", 7),
            ("laposte.net", 5), ("sfr.fr", 5), ("outlook.fr", 5), ("wanadoo.fr", 4), ("icloud.com", 4)]
_COLORS = ["bleu", "rouge", "vert", "noir", "blanc", "violet", "jaune", "rose", "gris", "orange"]


# --------------------------------------------------------------------------- segments

def rf_scores(values: np.ndarray, *, higher_is_better: bool = True, bins: int = 5) -> np.ndarray:
    """Quantile scores 1..``bins`` of ``values`` with the average-rank rule.

    Parameters
    ----------
    values : ndarray
        One value per customer (recency in days, frequency in purchase days …).
    higher_is_better : bool
        ``True``: the largest values get score ``bins``; ``False``: the smallest do
        (recency: most recent = 5).
    bins : int
        Number of scores.

    Returns
    -------
    ndarray of int
        ``ceil(bins * rank / n)`` where ``rank`` is the average rank (ties share the mean
        of their ranks, as ``Series.rank(method="average")``) of the value, oriented so
        that better is larger. Equivalent to ``pd.cut(s.rank(pct=True), [0, .2, .4, .6,
        .8, 1], labels=[1, 2, 3, 4, 5])`` for 5 bins. Tied customers always share a score.
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return np.zeros(0, dtype=int)
    rank = rankdata(v if higher_is_better else -v, method="average")
    # 2*rank is an integer: exact integer arithmetic for ceil(bins * rank / n)
    num = (bins * np.rint(2 * rank)).astype(np.int64)
    return np.clip(-((-num) // (2 * n)), 1, bins).astype(int)


def rf_segment(recency_days: np.ndarray, frequency: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recency x frequency segment of each customer (the default grid of step 02).

    Parameters
    ----------
    recency_days : ndarray
        Days between the customer's last purchase and the reference date (>= 0), one per
        customer with at least one purchase before the date.
    frequency : ndarray
        Number of distinct purchase days before the reference date (>= 1).

    Returns
    -------
    r_score, f_score, segment : ndarray, ndarray, ndarray of str
        Scores 1..5 from :func:`rf_scores` (recency: 5 = most recent; frequency: 5 = most
        purchase days) and the segment label: R5&F4-5 "Champions"; R3-4&F4-5 "Fidèles";
        R4-5&F2-3 "Fidèles potentiels"; R5&F1 "Nouveaux clients"; R4&F1 "Prometteurs";
        R3&F3 "À surveiller"; R3&F1-2 "Sur le point de s'endormir"; R1-2&F3-4 "À risque";
        R1-2&F5 "À ne pas perdre"; R1-2&F1-2 "En hibernation".
    """
    r = rf_scores(recency_days, higher_is_better=False)
    f = rf_scores(frequency, higher_is_better=True)
    grid = np.empty((6, 6), dtype=object)
    for rr in range(1, 6):
        for ff in range(1, 6):
            grid[rr, ff] = _segment_label(rr, ff)
    return r, f, grid[r, f].astype(str)


def _segment_label(r: int, f: int) -> str:
    if r == 5 and f >= 4:
        return "Champions"
    if r in (3, 4) and f >= 4:
        return "Fidèles"
    if r >= 4 and f in (2, 3):
        return "Fidèles potentiels"
    if r == 5 and f == 1:
        return "Nouveaux clients"
    if r == 4 and f == 1:
        return "Prometteurs"
    if r == 3 and f == 3:
        return "À surveiller"
    if r == 3:
        return "Sur le point de s'endormir"
    if f in (3, 4):
        return "À risque"
    if f == 5:
        return "À ne pas perdre"
    return "En hibernation"


# --------------------------------------------------------------------------- helpers

def strip_accents(text: str) -> str:
    """Return ``text`` without diacritics (``Hélène`` -> ``Helene``)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=4096)
def _slug(text: str) -> str:
    return re.sub(r"[^a-z]", "", strip_accents(text).lower())


def _weights(pairs_w: list) -> np.ndarray:
    w = np.asarray(pairs_w, dtype=float)
    return w / w.sum()


def _records(df: pd.DataFrame) -> list[dict]:
    """Fast ``df.to_dict("records")`` (plain Python values, NaN kept)."""
    cols = list(df.columns)
    values = [df[c].to_numpy(dtype=object).tolist() for c in cols]
    return [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]


def _typo(s: str, rnd: random.Random) -> str:
    """One keyboard slip: swap two letters, drop, double or replace one."""
    if len(s) < 3:
        return s
    i = rnd.randrange(1, len(s) - 1)
    op = rnd.random()
    if op < 0.35 and s[i].isalpha() and s[i + 1].isalpha():
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op < 0.6:
        return s[:i] + s[i + 1:]
    if op < 0.8:
        return s[:i] + s[i] + s[i:]
    near = {"a": "z", "e": "r", "i": "o", "o": "i", "n": "m", "m": "n", "t": "r", "r": "t", "s": "d", "l": "k", "u": "y"}
    c = s[i].lower()
    return s[:i] + near.get(c, c) + s[i + 1:]


def _fmt_phone(digits: str, style: int) -> str:
    """French phone ``0612345678`` in one of the usual writings."""
    if not digits:
        return ""
    pairs = [digits[k:k + 2] for k in range(0, 10, 2)]
    if style == 0:
        return digits
    if style == 1:
        return " ".join(pairs)
    if style == 2:
        return ".".join(pairs)
    if style == 3:
        return "+33 " + digits[1] + " " + " ".join(pairs[1:])
    if style == 4:
        return "+33" + digits[1:]
    return "-".join(pairs)


def _email_variant(email: str, rnd: random.Random) -> str:
    """Write the same mailbox differently: case, gmail dots, ``+tag``."""
    local, _, domain = email.partition("@")
    u = rnd.random()
    if domain == "gmail.com" and u < 0.35:
        return local.replace(".", "") + "@" + domain if "." in local else local[:2] + "." + local[2:] + "@" + domain
    if u < 0.6:
        return f"{local}+{rnd.choice(['promo', 'shop', 'news', 'achats'])}@{domain}"
    if u < 0.8:
        return email.upper() if rnd.random() < 0.3 else local.capitalize() + "@" + domain
    return email


def _abbrev_address(addr: str, rnd: random.Random) -> str:
    parts = addr.split(" ", 2)
    if len(parts) >= 2 and parts[1] in _ABBREV:
        parts[1] = rnd.choice(_ABBREV[parts[1]])
    out = " ".join(parts)
    out = out.replace("Saint-", "St-").replace("Sainte-", "Ste-") if rnd.random() < 0.5 else out
    if rnd.random() < 0.3:
        out = out.replace(" ", ", ", 1)
    return out


def _case_name(s: str, u: float, upper_share: float, lower_share: float) -> str:
    if u < upper_share:
        return s.upper()
    if u < upper_share + lower_share:
        return s.lower()
    return s


def _dt_days(t_weeks: np.ndarray) -> np.ndarray:
    """Continuous time in weeks since 2023-01-01 -> datetime64[s] (midnight of that day)."""
    days = np.floor(np.asarray(t_weeks) * 7).astype(np.int64)
    return _T_START + (days * 86400) * _S


# --------------------------------------------------------------------------- persons

def _make_persons(rng: np.random.Generator, rnd: random.Random, n: int, prefix: str, start: int = 1) -> pd.DataFrame:
    """Identity of ``n`` persons: names, birth date, address, phones, e-mail.

    Returns columns person_id, gender (F/M), first_name, last_name, birth_date
    (datetime64[s]), city, postal_code, prefix, address, mobile, landline, email.
    """
    female = rng.random(n) < 0.56
    fw = 1 / (np.arange(len(_FEMALE)) + 4.0) ** 0.8
    mw = 1 / (np.arange(len(_MALE)) + 4.0) ** 0.8
    lw = 1 / (np.arange(len(_LAST)) + 3.0) ** 0.9
    fi = rng.choice(len(_FEMALE), n, p=fw / fw.sum())
    mi = rng.choice(len(_MALE), n, p=mw / mw.sum())
    first = np.where(female, np.asarray(_FEMALE, dtype=object)[fi], np.asarray(_MALE, dtype=object)[mi])
    last = np.asarray(_LAST, dtype=object)[rng.choice(len(_LAST), n, p=lw / lw.sum())]
    age_days = np.clip(rng.normal(44, 14, n), 18, 88) * 365.25
    birth = np.datetime64("2025-06-30", "D") - age_days.astype(np.int64) * np.timedelta64(1, "D")
    ci = rng.choice(len(_CITIES), n, p=_weights([c[3] for c in _CITIES]))
    st = rng.choice(len(_STREET_TYPES), n, p=_weights([s[1] for s in _STREET_TYPES]))
    sn = rng.integers(0, len(_STREET_NAMES), n)
    num = rng.integers(1, 120, n)
    bis = rng.random(n) < 0.04
    mob = rng.integers(10_000_000, 100_000_000, n)
    mob_pre = np.where(rng.random(n) < 0.7, "06", "07")
    has_mob = rng.random(n) < 0.88
    land = rng.integers(10_000_000, 100_000_000, n)
    has_land = rng.random(n) < 0.35
    dom = rng.choice(len(_DOMAINS), n, p=_weights([d[1] for d in _DOMAINS]))
    pat = rng.integers(0, 6, n)
    nn = rng.integers(1, 99, n)
    rows = []
    for i in range(n):
        c = _CITIES[ci[i]]
        addr = f"{num[i]}{' bis' if bis[i] else ''} {_STREET_TYPES[st[i]][0]} {_STREET_NAMES[sn[i]]}"
        f, la = _slug(first[i]), _slug(last[i])
        local = [f"{f}.{la}", f"{f}{la}", f"{f[0]}{la}", f"{f}.{la}{nn[i]}", f"{la}.{f}", f"{f}_{la}{nn[i]}"][pat[i]]
        rows.append((
            f"{prefix}{start + i:06d}", "F" if female[i] else "M", first[i], last[i], c[0], c[1], c[2], addr,
            f"{mob_pre[i]}{mob[i]:08d}" if has_mob[i] else "",
            f"{c[2]}{land[i]:08d}" if has_land[i] else "",
            f"{local}@{_DOMAINS[dom[i]][0]}",
        ))
    df = pd.DataFrame(rows, columns=["person_id", "gender", "first_name", "last_name", "city", "postal_code",
                                     "prefix", "address", "mobile", "landline", "email"])
    df.insert(4, "birth_date", birth.astype("datetime64[s]"))
    return _uniquify_emails(df, rnd)


def _mailbox(e: str) -> str:
    """Return the mailbox an address reaches: Gmail ignores dots in the local part."""
    local, _, dom = e.partition("@")
    if dom in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
    return f"{local}@{dom}"


def _uniquify_emails(df: pd.DataFrame, rnd: random.Random) -> pd.DataFrame:
    """Give every person a distinct mailbox (two people never share one, dots included)."""
    out = df.copy()
    seen: set[str] = set()
    emails = out["email"].tolist()
    for i, e in enumerate(emails):
        while _mailbox(e) in seen:
            local, _, dom = e.partition("@")
            e = f"{local}{rnd.randrange(1, 999)}@{dom}"
        seen.add(_mailbox(e))
        emails[i] = e
    out["email"] = emails
    return out


def _add_lookalikes(persons: pd.DataFrame, rng: np.random.Generator, rnd: random.Random) -> pd.DataFrame:
    """Households (same name, address, landline, sometimes e-mail) and namesakes elsewhere.

    Adds column ``household_of`` (person_id of the household's first member or "").
    """
    p = persons.copy()
    n = len(p)
    p["household_of"] = ""
    idx = rng.permutation(n)
    n_house = int(0.04 * n)
    heads, members = idx[:n_house], idx[n_house:2 * n_house]
    cols = ["last_name", "city", "postal_code", "prefix", "address"]
    p.iloc[members, [p.columns.get_loc(c) for c in cols]] = p.iloc[heads, [p.columns.get_loc(c) for c in cols]].to_numpy()
    land = p["landline"].to_numpy(dtype=object).copy()
    share_land = rng.random(n_house) < 0.7
    head_land = np.where(land[heads] == "", p["prefix"].to_numpy()[heads] + "45" + (rng.integers(100000, 999999, n_house)).astype(str), land[heads])
    land[heads] = np.where(share_land, head_land, land[heads])
    land[members] = np.where(share_land, head_land, land[members])
    p["landline"] = land
    hof = p["household_of"].to_numpy(dtype=object)
    hof[members] = p["person_id"].to_numpy()[heads]
    p["household_of"] = hof
    # a family e-mail shared by both for some households
    emails = p["email"].to_numpy(dtype=object)
    fam = rng.random(n_house) < 0.2
    for h, m in zip(heads[fam], members[fam], strict=True):
        shared = f"famille.{_slug(p.at[h, 'last_name'])}{rnd.randrange(1, 99)}@{rnd.choice(['orange.fr', 'free.fr', 'sfr.fr', 'wanadoo.fr'])}"
        emails[h] = emails[m] = shared
    p["email"] = emails
    # namesakes: same first and last name, another person, another city
    n_same = int(0.02 * n)
    src, dst = idx[2 * n_house:2 * n_house + n_same], idx[2 * n_house + n_same:2 * n_house + 2 * n_same]
    p.iloc[dst, p.columns.get_loc("first_name")] = p.iloc[src, p.columns.get_loc("first_name")].to_numpy()
    p.iloc[dst, p.columns.get_loc("last_name")] = p.iloc[src, p.columns.get_loc("last_name")].to_numpy()
    p.iloc[dst, p.columns.get_loc("gender")] = p.iloc[src, p.columns.get_loc("gender")].to_numpy()
    return p


# --------------------------------------------------------------------------- purchases

def _bgnbd_draw(rng: np.random.Generator, n: int, span: float, skew: float) -> dict:
    """Draw persons' BG/NBD and Gamma-Gamma latent variables and their repeat purchases.

    Returns a dict of arrays: t0, T, lam, p, K (repeat purchase after which the person
    drops out), x (repeat purchases in [t0, t0+T]), nu, and the repeat purchases
    ``owner`` (person index) and ``t`` (weeks since 2023-01-01).
    """
    m = BGNBD
    t0 = span * rng.random(n) ** skew
    T = span - t0
    lam = rng.gamma(m["r"], 1.0 / m["alpha"], n)
    p = rng.beta(m["a"], m["b"], n)
    K = rng.geometric(p)
    npois = rng.poisson(lam * T)
    x = np.minimum(npois, K)
    nu = rng.gamma(GAMMA_GAMMA["q"], 1.0 / GAMMA_GAMMA["v"], n)
    owner, t = _first_order_stats(rng, x, npois, T)
    return {"t0": t0, "T": T, "lam": lam, "p": p, "K": K, "x": x, "nu": nu, "owner": owner, "t": t0[owner] + t}


def _first_order_stats(rng: np.random.Generator, x: np.ndarray, n: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw the ``x_i`` smallest of ``n_i`` uniforms on ``[0, length_i]``, for every i, vectorised.

    Uses U_(k) = S_k / S_(n+1) with S the partial sums of i.i.d. exponentials, and
    S_(n+1) = S_x + Gamma(n + 1 - x).
    """
    owner = np.repeat(np.arange(len(x)), x)
    e = rng.exponential(size=int(x.sum()))
    cs = np.cumsum(e)
    ends = np.cumsum(x)
    starts = ends - x
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0.0)
    s = cs - np.repeat(before, x)
    sx = np.zeros(len(x))
    has = x > 0
    sx[has] = cs[ends[has] - 1] - before[has]
    g = rng.gamma(np.maximum(n - x + 1, 1).astype(float))
    return owner, s / (sx + g)[owner] * length[owner]


# --------------------------------------------------------------------------- records

def _render_record(p: dict, source: str, rnd: random.Random, second: bool) -> dict:
    """One customer record as a system would hold it, with that system's noise."""
    web = source == "web"
    first, last = p["first_name"], p["last_name"]
    typo_p = (0.02 if web else 0.05) + (0.15 if second else 0.0)
    if rnd.random() < (0.03 if web else 0.12) + (0.1 if second else 0):
        first, last = strip_accents(first), strip_accents(last)
    if rnd.random() < typo_p:
        last = _typo(last, rnd)
    if rnd.random() < typo_p / 2:
        first = _typo(first, rnd)
    if web:
        u = rnd.random()
        first = _case_name(first, u, 0.03, 0.08)
        last = _case_name(last, u, 0.05, 0.08)
    else:
        last = last.upper() if rnd.random() < 0.7 else last
        first = first.upper() if rnd.random() < 0.1 else first
    if rnd.random() < (0.01 if web else 0.03) + (0.06 if second else 0):
        first, last = last, first
    email = p["email"]
    if second:
        u = rnd.random()
        if web and u < 0.45:
            local, _, dom = email.partition("@")
            email = f"{local}{rnd.randrange(1, 99)}@{rnd.choice(['gmail.com', 'outlook.fr', 'yahoo.fr'])}"
        else:
            email = _email_variant(email, rnd)
    elif rnd.random() < 0.12:
        email = _email_variant(email, rnd)
    if not web:
        if rnd.random() < 0.45:
            email = ""
        elif rnd.random() < 0.04:
            email = email.replace("@gmail.com", "@gmial.com").replace(".fr", ".ff") if rnd.random() < 0.5 else email.replace("@", "@@")
    phone_digits = p["mobile"] if (p["mobile"] and (web or rnd.random() < 0.75 or not p["landline"])) else p["landline"]
    if rnd.random() < (0.3 if web else 0.12):
        phone_digits = ""
    style = rnd.choice([0, 1, 3, 4, 3]) if web else rnd.choice([1, 1, 2, 0, 5, 2])
    address = p["address"]
    if rnd.random() < (0.1 if web else 0.4) + (0.2 if second else 0):
        address = _abbrev_address(address, rnd)
    if not web and rnd.random() < 0.5:
        address = address.upper()
    missing_addr = rnd.random() < (0.04 if web else 0.1)
    city = p["city"]
    if rnd.random() < (0.05 if web else 0.25):
        city = strip_accents(city).upper() if not web else city.lower()
    birth = p["birth_date"] if rnd.random() < (0.6 if web else 0.75) else None
    return {
        "first_name": first, "last_name": last, "email": email, "phone": _fmt_phone(phone_digits, style),
        "phone_kind": "mobile" if phone_digits and phone_digits == p["mobile"] else ("fixe" if phone_digits else ""),
        "address": "" if missing_addr else address, "postal_code": "" if missing_addr else p["postal_code"],
        "city": "" if missing_addr and rnd.random() < 0.5 else city, "birth_date": birth,
        "gender": p["gender"] if (web and rnd.random() < 0.8) or not web else "",
    }


# --------------------------------------------------------------------------- writing

def _write_csv(df: pd.DataFrame, path: Path, *, sep: str = ",", encoding: str = "utf-8", crlf: bool = False) -> None:
    """Write a frame of strings/ints deterministically (no index, minimal quoting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    df.to_csv(buf, sep=sep, index=False, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL)
    path.write_bytes(buf.getvalue().encode(encoding))


def _copy_to_csv(con: duckdb.DuckDBPyConnection, sql: str, path: Path, *, sep: str, encoding: str, crlf: bool) -> None:
    """Write a DuckDB query to CSV, then transcode (cp1252 …) and set line endings, streaming."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.csv")
    con.execute(f"COPY ({sql}) TO '{tmp.as_posix()}' (HEADER, DELIMITER '{sep}')")
    if encoding.lower().replace("-", "") in ("utf8",) and not crlf:
        tmp.replace(path)
        return
    with open(tmp, encoding="utf-8", newline="") as src, open(path, "wb") as dst:
        while True:
            chunk = src.read(1 << 22)
            if not chunk:
                break
            if crlf:
                chunk = chunk.replace("\n", "\r\n")
            dst.write(chunk.encode(encoding))
    tmp.unlink()


def _fr_date(ts: pd.Series, with_time: bool = False) -> pd.Series:
    s = pd.to_datetime(ts)
    out = s.dt.strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")
    return out.fillna("")


def _iso(ts: pd.Series, fmt: str = "%Y-%m-%dT%H:%M:%S") -> pd.Series:
    return pd.to_datetime(ts).dt.strftime(fmt).fillna("")


# --------------------------------------------------------------------------- world

class _World:
    """State shared by the generation stages (internal)."""

    def __init__(self, out: Path, scale: float, seed: int) -> None:
        self.out = out
        self.scale = scale
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.rnd = random.Random(int(self.rng.integers(2**62)))
        self.summary: dict = {"seed": seed, "scale": scale, "files": {}}

    def note(self, rel: str, rows: int) -> None:
        self.summary["files"][rel] = int(rows)


def generate(out: str | Path, scale: float = 1.0, seed: int = 42) -> dict:
    """Write the demo world into ``out``.

    Parameters
    ----------
    out : path
        Destination folder (created). Existing files of the world are overwritten.
    scale : float
        Size factor: 1.0 = about 6,000 buying persons and 55,000 transactions; the
        number of persons, transactions and interactions grows linearly.
    seed : int
        Seed of every draw. Same seed and scale give byte-identical files.

    Returns
    -------
    dict
        ``{"seed", "scale", "files": {relative path: data rows}, "persons",
        "transactions"}``.
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    w = _World(Path(out), float(scale), int(seed))
    w.out.mkdir(parents=True, exist_ok=True)
    _stage_persons(w)
    _stage_records(w)
    _stage_transactions(w)
    _stage_consents(w)
    _stage_campaigns(w)
    _write_records(w)
    _write_transactions(w)
    _stage_interactions(w)
    _stage_batch2(w)
    _write_truth(w)
    w.summary["persons"] = int(len(w.persons))
    w.summary["transactions"] = int(w.summary["files"]["web_orders.csv"] + w.summary["files"]["store_receipts.csv"])
    return w.summary


def _stage_persons(w: _World) -> None:
    rng = w.rng
    n = max(60, int(round(6000 * w.scale)))
    n_nb = max(3, int(round(SHARE_NO_PURCHASE * n)))
    persons = _make_persons(rng, w.rnd, n + n_nb, "P")
    persons = _add_lookalikes(persons, rng, w.rnd)
    d = _bgnbd_draw(rng, n, SPAN_WEEKS, ACQ_SKEW)
    buyer = np.r_[np.ones(n, bool), np.zeros(n_nb, bool)]
    t0 = np.r_[d["t0"], SPAN_WEEKS * rng.random(n_nb)]
    persons["buyer"] = buyer
    persons["t0"] = t0
    for k in ("lam", "p", "nu", "K", "x", "T"):
        persons[k] = np.r_[d[k], np.full(n_nb, np.nan)]
    # systems: both / web only / store only; non-buyers are web accounts
    u = rng.random(n + n_nb)
    mem = np.where(u < SHARE_BOTH, 2, np.where(u < SHARE_BOTH + SHARE_WEB_ONLY, 0, 1))  # 0 web, 1 store, 2 both
    mem[~buyer] = 0
    persons["membership"] = mem
    first_store = np.where(mem == 2, rng.random(n + n_nb) < 0.5, mem == 1)
    persons["first_channel"] = np.where(first_store, 1, 0)
    persons["second_open"] = np.where(mem == 2, t0 + rng.random(n + n_nb) ** 2 * (SPAN_WEEKS - t0) * 0.6, np.inf)
    persons["store_share"] = rng.beta(2, 2, n + n_nb)
    persons["home_store"] = rng.integers(0, len(STORES), n + n_nb)
    persons["fav_cat"] = rng.choice(len(CATEGORIES), n + n_nb, p=[0.3, 0.14, 0.12, 0.14, 0.12, 0.1, 0.08])
    w.persons = persons
    # base purchases: first purchase at t0 + repeat purchases
    w.tx_owner = np.r_[np.arange(n), d["owner"]]
    w.tx_t = np.r_[d["t0"], d["t"]]
    w.tx_campaign = np.zeros(len(w.tx_owner), dtype=np.int16)  # 0 = organic, k = campaign k


def _stage_records(w: _World) -> None:
    """Build the customer records of both systems (ids in creation order) and their owners."""
    rng, rnd, P = w.rng, w.rnd, w.persons
    n = len(P)
    mem = P["membership"].to_numpy()
    t0 = P["t0"].to_numpy()
    first_ch = P["first_channel"].to_numpy()
    # record table: person, system (0 web / 1 store), opening time (weeks), rank
    rec_person, rec_sys, rec_open, rec_second = [], [], [], []
    ids = np.arange(n)
    # first record in the first channel: account created a little before the first purchase
    rec_person.append(ids)
    rec_sys.append(first_ch)
    rec_open.append(np.maximum(t0 - rng.exponential(0.3, n) * (first_ch == 0), 0))
    rec_second.append(np.zeros(n, bool))
    both = ids[mem == 2]
    rec_person.append(both)
    rec_sys.append(1 - first_ch[both])
    rec_open.append(P["second_open"].to_numpy()[both])
    rec_second.append(np.zeros(len(both), bool))
    # a second record in the same system (new account, lost card)
    dup = ids[rng.random(n) < SHARE_SECOND_RECORD]
    dup_sys = np.where(mem[dup] == 2, rng.integers(0, 2, len(dup)), np.where(mem[dup] == 1, 1, 0))
    base_open = np.where(dup_sys == first_ch[dup], t0[dup], P["second_open"].to_numpy()[dup])
    rec_person.append(dup)
    rec_sys.append(dup_sys)
    rec_open.append(base_open + rng.random(len(dup)) * (SPAN_WEEKS - base_open))
    rec_second.append(np.ones(len(dup), bool))
    R = pd.DataFrame({
        "person": np.concatenate(rec_person), "sys": np.concatenate(rec_sys).astype(int),
        "open_t": np.concatenate(rec_open), "second": np.concatenate(rec_second),
    })
    R = R.sort_values(["sys", "open_t", "person"], kind="mergesort").reset_index(drop=True)
    seq = R.groupby("sys").cumcount().to_numpy()
    R["key"] = np.where(R["sys"] == 0, (100001 + seq).astype(str), [f"29{9000000 + 37 * s + 11:010d}" for s in seq])
    R["source"] = np.where(R["sys"] == 0, "web", "magasin")
    R["person_id"] = P["person_id"].to_numpy()[R["person"].to_numpy()]
    secs = rng.integers(0, 86400, len(R))
    R["created_at"] = _dt_days(R["open_t"].to_numpy()) + (np.where(R["sys"] == 0, secs, 9 * 3600 + secs % (10 * 3600)) * _S)
    R = R.sort_values(["sys", "open_t", "person"], kind="mergesort").reset_index(drop=True)
    # rendered fields
    cols = _records(P)
    rendered = [_render_record(cols[pp], "web" if s == 0 else "magasin", rnd, sec)
                for pp, s, sec in zip(R["person"].to_numpy(), R["sys"].to_numpy(), R["second"].to_numpy(), strict=True)]
    R = pd.concat([R, pd.DataFrame(rendered)], axis=1)
    w.records = R


def _record_of(w: _World, owner: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the record (in w.records) a purchase at time ``t`` by ``owner`` lands on."""
    P, R = w.persons, w.records
    mem = P["membership"].to_numpy()[owner]
    first = P["first_channel"].to_numpy()[owner]
    second_open = P["second_open"].to_numpy()[owner]
    share = P["store_share"].to_numpy()[owner]
    pick_store = np.where(u < share, 1, 0)
    sys = np.where(mem == 2, np.where(t < second_open, first, pick_store), np.where(mem == 1, 1, 0))
    # primary record per (person, sys) = first opened; secondary = opened later, used after
    n = len(P)
    prim = np.full((n, 2), -1, dtype=np.int64)
    sec = np.full((n, 2), -1, dtype=np.int64)
    sec_open = np.full((n, 2), np.inf)
    rp, rs, ro, r2 = (R["person"].to_numpy(), R["sys"].to_numpy(), R["open_t"].to_numpy(), R["second"].to_numpy())
    idx = np.arange(len(R))
    prim[rp[~r2], rs[~r2]] = idx[~r2]
    sec[rp[r2], rs[r2]] = idx[r2]
    sec_open[rp[r2], rs[r2]] = ro[r2]
    # a system without primary record (second record only) cannot happen, but be safe
    p_idx = prim[owner, sys]
    s_idx = sec[owner, sys]
    use_sec = (s_idx >= 0) & (t >= sec_open[owner, sys])
    return np.where(use_sec, s_idx, np.where(p_idx >= 0, p_idx, s_idx))


def _stage_transactions(w: _World) -> None:
    """Attach channel/record, timestamp, amount, category … to the base purchases."""
    w.tx_u = w.rng.random(len(w.tx_owner))
    w.tx_amount = _amounts(w, w.tx_owner)


def _amounts(w: _World, owner: np.ndarray) -> np.ndarray:
    nu = w.persons["nu"].to_numpy()[owner]
    z = w.rng.gamma(GAMMA_GAMMA["p"], 1.0 / nu)
    return np.maximum(np.round(z, 2), 0.5)


# --------------------------------------------------------------------------- consents

def _stage_consents(w: _World) -> None:
    """Record-level consent per channel: opt-in at creation, maybe an opt-out later.

    Sets ``w.consent`` (DataFrame: record, channel, init (bool), optout_t (weeks or inf)).
    """
    rng, R = w.rng, w.records
    rows = []
    # postal mail and phone marketing are opt-out in France (high consent), e-mail/SMS opt-in
    base = {"email": 0.70, "sms": 0.55, "courrier": 0.85, "telephone": 0.60}
    for ch in CHANNELS:
        n = len(R)
        init = rng.random(n) < base[ch]
        opt_t = np.where(init & (rng.random(n) < 0.18), R["open_t"].to_numpy() + rng.random(n) * (SPAN_WEEKS - R["open_t"].to_numpy()), np.inf)
        rows.append(pd.DataFrame({"record": np.arange(n), "channel": ch, "init": init, "optout_t": opt_t}))
    w.consent = pd.concat(rows, ignore_index=True)


def _reachable(w: _World, channel: str, t: float) -> np.ndarray:
    """Index of the first record per person reachable on ``channel`` at time ``t`` (or -1)."""
    R = w.records
    c = w.consent[w.consent["channel"] == channel]
    ok = c["init"].to_numpy() & (c["optout_t"].to_numpy() > t) & (R["open_t"].to_numpy() <= t)
    field = {"email": R["email"] != "", "sms": R["phone_kind"] == "mobile",
             "courrier": R["address"] != "", "telephone": R["phone"] != ""}[channel].to_numpy()
    ok &= field
    out = np.full(len(w.persons), -1, dtype=np.int64)
    idx = np.flatnonzero(ok)[::-1]  # reversed so the first record wins the assignment
    out[R["person"].to_numpy()[idx]] = idx
    return out


# --------------------------------------------------------------------------- campaigns

def _segments_at(w: _World, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Persons with >= 1 purchase before ``t`` and their RF segment at ``t``."""
    if getattr(w, "day_keys", None) is None:  # sorted distinct (person, purchase day)
        w.day_keys = np.unique(w.tx_owner.astype(np.int64) * 10_000 + np.floor(w.tx_t * 7).astype(np.int64))
    cut = int(np.floor(t * 7))
    keys = w.day_keys[w.day_keys % 10_000 < cut]
    po = keys // 10_000
    if len(po) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str)
    ends = np.r_[np.flatnonzero(np.diff(po)), len(po) - 1]
    persons = po[ends]
    freq = np.diff(np.r_[-1, ends])
    rec = cut - keys[ends] % 10_000
    _, _, seg = rf_segment(rec, freq)
    return persons, seg


def _stage_campaigns(w: _World) -> None:
    rng = w.rng
    P = w.persons
    mean_spend = GAMMA_GAMMA["p"] / P["nu"].to_numpy()
    camp_rows, contact_rows, truth_rows = [], [], []
    for k, (cid, name, ch, seg_name, offer, start, days, ctrl) in enumerate(CAMPAIGNS, start=1):
        s_t = (np.datetime64(start, "s") - _T_START) / _S / _WEEK_S
        e_t = s_t + days / 7
        persons, seg = _segments_at(w, s_t)
        target = persons[seg == seg_name]
        reach = _reachable(w, ch, s_t)
        target = target[reach[target] >= 0]
        target = target[rng.permutation(len(target))]
        n_ctrl = int(round(ctrl * len(target)))
        control, treated = np.sort(target[:n_ctrl]), np.sort(target[n_ctrl:])
        p_extra = P_EXTRA[ch].get(seg_name, 0.005)
        # counterfactual response (purchase in window) of the whole target
        in_win = (w.tx_t >= s_t) & (w.tx_t < e_t)
        bought = np.zeros(len(P), bool)
        bought[w.tx_owner[in_win]] = True
        base_rate = float(bought[target].mean()) if len(target) else 0.0
        extra = treated[rng.random(len(treated)) < p_extra]
        t_extra = s_t + rng.random(len(extra)) * (e_t - s_t)
        w.tx_owner = np.r_[w.tx_owner, extra]
        w.tx_t = np.r_[w.tx_t, t_extra]
        w.tx_campaign = np.r_[w.tx_campaign, np.full(len(extra), k, dtype=np.int16)]
        cand = np.unique(extra.astype(np.int64) * 10_000 + np.floor(t_extra * 7).astype(np.int64))
        pos = np.searchsorted(w.day_keys, cand)
        found = (pos < len(w.day_keys)) & (w.day_keys[np.minimum(pos, len(w.day_keys) - 1)] == cand)
        new_keys = cand[~found]
        w.day_keys = np.insert(w.day_keys, np.searchsorted(w.day_keys, new_keys), new_keys)
        camp_rows.append((cid, name, ch, seg_name, offer, start,
                          str(np.datetime64(start, "D") + np.timedelta64(days - 1, "D")), f"{COST_PER_CONTACT[ch]:.2f}"))
        rec = w.records
        hour = {"email": "10:00:00", "sms": "11:30:00", "courrier": "08:00:00", "telephone": "14:00:00"}[ch]
        for grp, who in (("cible", treated), ("temoin", control)):
            r_idx = reach[who]
            contact_rows.append(pd.DataFrame({
                "campaign_id": cid, "source": rec["source"].to_numpy()[r_idx],
                "customer_key": rec["key"].to_numpy()[r_idx], "groupe": grp,
                "contacted_at": f"{start}T{hour}", "_person": who,
            }))
        truth_rows.append({
            "campaign_id": cid, "segment": seg_name, "channel": ch, "p_extra": p_extra,
            "base_rate": round(base_rate, 6),
            "uplift_rate": round(p_extra * (1 - base_rate), 6),
            "uplift_revenue": round(p_extra * float(mean_spend[target].mean()) if len(target) else 0.0, 4),
            "n_treated": len(treated), "n_control": len(control), "n_extra_purchases": len(extra),
        })
    w.campaigns = pd.DataFrame(camp_rows, columns=["campaign_id", "name", "channel", "segment", "offer", "start_date", "end_date", "cost_per_contact"])
    contacts = pd.concat(contact_rows, ignore_index=True)
    w.contacts = contacts.sort_values(["campaign_id", "customer_key", "source"], kind="mergesort").reset_index(drop=True)
    w.campaign_truth = pd.DataFrame(truth_rows)
    _write_csv(w.campaigns, w.out / "campaigns.csv")
    _write_csv(w.contacts.drop(columns="_person"), w.out / "campaign_contacts.csv")
    w.note("campaigns.csv", len(w.campaigns))
    w.note("campaign_contacts.csv", len(w.contacts))


# --------------------------------------------------------------------------- customer files

_WEB_COLS = ["account_id", "email", "first_name", "last_name", "gender", "phone", "street", "zip", "city", "country",
             "birth_date", "created_at", "updated_at", "newsletter_optin", "sms_optin", "password_hash", "last_ip",
             "favorite_color", "user_agent"]
_STORE_COLS = ["N° carte", "Civilité", "Nom", "Prénom", "Téléphone", "E-mail", "Adresse", "Code postal", "Ville",
               "Date de naissance", "Date d'adhésion", "Magasin d'inscription", "Points fidélité", "Solde avoir",
               "Accord SMS", "Accord courrier"]


def _consent_now(w: _World, channel: str, t: float = np.inf) -> np.ndarray:
    c = w.consent[w.consent["channel"] == channel]
    return (c["init"].to_numpy() & (c["optout_t"].to_numpy() > t)) if np.isfinite(t) else (c["init"].to_numpy() & ~np.isfinite(c["optout_t"].to_numpy()))


def _web_frame(w: _World, R: pd.DataFrame, email_c: np.ndarray, sms_c: np.ndarray, updated: np.ndarray) -> pd.DataFrame:
    rng = w.rng
    n = len(R)
    h = rng.integers(0, 2**62, n, dtype=np.int64)
    return pd.DataFrame({
        "account_id": R["key"].to_numpy(), "email": R["email"].to_numpy(), "first_name": R["first_name"].to_numpy(),
        "last_name": R["last_name"].to_numpy(), "gender": R["gender"].to_numpy(), "phone": R["phone"].to_numpy(),
        "street": R["address"].to_numpy(), "zip": R["postal_code"].to_numpy(), "city": R["city"].to_numpy(),
        "country": np.where(R["address"].to_numpy() != "", "FR", ""),
        "birth_date": _iso(R["birth_date"], "%Y-%m-%d").to_numpy(),
        "created_at": _iso(R["created_at"]).to_numpy(), "updated_at": _iso(pd.Series(updated)).to_numpy(),
        "newsletter_optin": np.where(email_c, "true", "false"), "sms_optin": np.where(sms_c, "true", "false"),
        "password_hash": [f"$2b$12${v:016x}{(v * 7919) % (1 << 62):016x}" for v in h.tolist()],
        "last_ip": [f"{80 + v % 120}.{(v >> 8) % 256}.{(v >> 16) % 256}.{(v >> 24) % 254 + 1}" for v in h.tolist()],
        "favorite_color": np.asarray(_COLORS, dtype=object)[h % len(_COLORS)],
        "user_agent": np.where(h % 3 == 0, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)", np.where(h % 3 == 1, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (Linux; Android 14)")),
    }, columns=_WEB_COLS)


def _store_frame(w: _World, R: pd.DataFrame, sms_c: np.ndarray, mail_c: np.ndarray, n_tx: np.ndarray) -> pd.DataFrame:
    rng = w.rng
    n = len(R)
    civ = np.where(R["gender"].to_numpy() == "F", "Mme", "M.")
    civ = np.where(rng.random(n) < 0.05, "", civ)
    store_of = w.persons["home_store"].to_numpy()[R["person"].to_numpy()]
    avoir = np.where(rng.random(n) < 0.15, np.round(rng.gamma(2, 8, n), 2), 0.0)
    return pd.DataFrame({
        "N° carte": R["key"].to_numpy(), "Civilité": civ, "Nom": R["last_name"].to_numpy(), "Prénom": R["first_name"].to_numpy(),
        "Téléphone": R["phone"].to_numpy(), "E-mail": R["email"].to_numpy(), "Adresse": R["address"].to_numpy(),
        "Code postal": R["postal_code"].to_numpy(), "Ville": R["city"].to_numpy(),
        "Date de naissance": _fr_date(R["birth_date"]).to_numpy(), "Date d'adhésion": _fr_date(R["created_at"]).to_numpy(),
        "Magasin d'inscription": [STORES[s][1] for s in store_of],
        "Points fidélité": (n_tx * 12 + rng.integers(0, 60, n)).astype(int),
        "Solde avoir": [f"{v:.2f}".replace(".", ",") for v in avoir],
        "Accord SMS": np.where(sms_c, "Oui", "Non"), "Accord courrier": np.where(mail_c, "Oui", "Non"),
    }, columns=_STORE_COLS)


def _write_records(w: _World) -> None:
    R = w.records
    web = R["sys"].to_numpy() == 0
    # last update: latest of creation and consent change (weeks)
    opt = w.consent.pivot(index="record", columns="channel", values="optout_t").to_numpy().copy()
    opt[~np.isfinite(opt)] = -1
    upd_t = np.maximum(R["open_t"].to_numpy(), opt.max(axis=1))
    jitter = w.rng.integers(0, 86400, len(R))
    updated = np.maximum(_dt_days(upd_t) + jitter * _S, R["created_at"].to_numpy())
    email_c, sms_c, mail_c = _consent_now(w, "email"), _consent_now(w, "sms"), _consent_now(w, "courrier")
    # campaign extras were appended after the base draws: give them u and amount
    n = len(w.tx_owner)
    w.tx_u = np.r_[w.tx_u, w.rng.random(n - len(w.tx_u))]
    w.tx_amount = np.r_[w.tx_amount, _amounts(w, w.tx_owner[len(w.tx_amount):])]
    rec_tx = _record_of(w, w.tx_owner, w.tx_t, w.tx_u)
    n_tx = np.bincount(rec_tx, minlength=len(R))
    wf = _web_frame(w, R[web].reset_index(drop=True), email_c[web], sms_c[web], updated[web])
    sf = _store_frame(w, R[~web].reset_index(drop=True), sms_c[~web], mail_c[~web], n_tx[~web])
    _write_csv(wf, w.out / "web_accounts.csv")
    _write_csv(sf, w.out / "store_cards.csv", sep=";", encoding="cp1252", crlf=True)
    w.note("web_accounts.csv", len(wf))
    w.note("store_cards.csv", len(sf))
    # consents.csv: current state per record and channel
    c = w.consent.copy()
    c["source"] = R["source"].to_numpy()[c["record"]]
    c["customer_key"] = R["key"].to_numpy()[c["record"]]
    c["opted_in"] = np.where(c["init"] & ~np.isfinite(c["optout_t"]), "oui", "non")
    when = np.where(np.isfinite(c["optout_t"]), c["optout_t"], R["open_t"].to_numpy()[c["record"]])
    c["updated_at"] = pd.Series(_dt_days(when)).dt.strftime("%Y-%m-%d").to_numpy()
    # records that never answered a channel's question: no row (about a third of refusals)
    keep = c["init"].to_numpy() | (w.rng.random(len(c)) < 0.65)
    c = c[keep].sort_values(["source", "customer_key", "channel"], kind="mergesort")
    cols = ["source", "customer_key", "channel", "opted_in", "updated_at"]
    _write_csv(c[cols], w.out / "consents.csv")
    w.note("consents.csv", len(c))
    w.rec_tx = rec_tx


# --------------------------------------------------------------------------- transaction files

def _tx_frame(w: _World, owner, t, campaign, amount, u, rec, order_base: int) -> dict:
    """Timestamps, channel data and ids for purchases (vectorised)."""
    rng, R, P = w.rng, w.records, w.persons
    n = len(owner)
    sys = R["sys"].to_numpy()[rec]
    day = _dt_days(t)
    web_sec = (rng.beta(2.2, 1.6, n) * 86400).astype(np.int64)  # evening peak
    store_sec = (9 * 3600 + rng.beta(2.0, 2.0, n) * 10.5 * 3600).astype(np.int64)
    ts = day + np.where(sys == 0, web_sec, store_sec) * _S
    fav = P["fav_cat"].to_numpy()[owner]
    cat = np.where(rng.random(n) < 0.55, fav, rng.integers(0, len(CATEGORIES), n))
    qty = 1 + rng.poisson(amount / 45.0)
    web_pay = rng.choice(len(WEB_PAYMENTS), n, p=WEB_PAYMENT_P)
    store_pay = rng.choice(len(STORE_PAYMENTS), n, p=STORE_PAYMENT_P)
    store = np.where(rng.random(n) < 0.85, P["home_store"].to_numpy()[owner], rng.integers(0, len(STORES), n))
    return {"owner": owner, "rec": rec, "sys": sys, "ts": ts, "amount": amount, "cat": cat, "qty": qty,
            "web_pay": web_pay, "store_pay": store_pay, "store": store, "campaign": campaign}


def _write_tx_files(w: _World, f: dict, folder: Path, rel: str, n_anon: int, n_bad: int, t_lo: float, t_hi: float,
                    order_start: int, ticket_start: int) -> pd.DataFrame:
    """Write web_orders.csv and store_receipts.csv for purchases ``f`` into ``folder``.

    Adds anonymous store receipts and malformed rows. Returns the bad rows (file, line,
    row, reason).
    """
    rng, R = w.rng, w.records
    keys = R["key"].to_numpy()
    web = f["sys"] == 0
    # ---- web orders
    o = np.flatnonzero(web)
    o = o[np.lexsort((f["rec"][o], f["ts"][o]))]
    web_df = pd.DataFrame({
        "order_id": np.arange(order_start, order_start + len(o)), "account_id": keys[f["rec"][o]],
        "ts": f["ts"][o], "amount": f["amount"][o], "items": f["qty"][o],
        "payment_method": np.asarray(WEB_PAYMENTS, dtype=object)[f["web_pay"][o]],
        "category": np.asarray(CATEGORIES, dtype=object)[f["cat"][o]],
        "shipping": np.where(f["amount"][o] >= 50, 0.0, 4.9), "bad": 0,
    })
    web_df = _inject_bad(rng, web_df, n_bad, id_col="order_id")
    # ---- store receipts
    s = np.flatnonzero(~web)
    a_t = t_lo + rng.random(n_anon) * (t_hi - t_lo)
    a_amount = np.maximum(np.round(rng.gamma(GAMMA_GAMMA["p"], 1.0 / rng.gamma(GAMMA_GAMMA["q"], 1.0 / GAMMA_GAMMA["v"], n_anon)), 2), 0.5)
    a_ts = _dt_days(a_t) + (9 * 3600 + rng.beta(2, 2, n_anon) * 10.5 * 3600).astype(np.int64) * _S
    st = pd.DataFrame({
        "card": np.r_[keys[f["rec"][s]], np.full(n_anon, "", dtype=object)],
        "ts": np.r_[f["ts"][s], a_ts], "amount": np.r_[f["amount"][s], a_amount],
        "qty": np.r_[f["qty"][s], 1 + rng.poisson(a_amount / 45.0)],
        "pay": np.r_[f["store_pay"][s], rng.choice(len(STORE_PAYMENTS), n_anon, p=STORE_PAYMENT_P)],
        "cat": np.r_[f["cat"][s], rng.integers(0, len(CATEGORIES), n_anon)],
        "store": np.r_[f["store"][s], rng.integers(0, len(STORES), n_anon)],
    })
    st = st.iloc[np.lexsort((st["card"].to_numpy(), st["ts"].to_numpy()))].reset_index(drop=True)
    code = np.asarray([c for c, _ in STORES])[st["store"].to_numpy()]
    st["seq"] = pd.Series(code).groupby(code).cumcount().to_numpy() + ticket_start
    st["code"] = code
    st["store_name"] = np.asarray([nm for _, nm in STORES], dtype=object)[st["store"].to_numpy()]
    st["pay_name"] = np.asarray(STORE_PAYMENTS, dtype=object)[st["pay"].to_numpy()]
    st["cat_name"] = np.asarray(CATEGORIES, dtype=object)[st["cat"].to_numpy()]
    st["bad"] = 0
    st = _inject_bad(rng, st, n_bad, id_col="seq")
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("web_df", web_df)
        con.register("st", st)
        _copy_to_csv(con, """
            SELECT CAST(order_id AS VARCHAR) AS order_id, account_id,
                   CASE bad WHEN 1 THEN 'not-a-date' ELSE strftime(ts, '%Y-%m-%dT%H:%M:%S') END AS order_date,
                   CASE bad WHEN 2 THEN 'N/A' ELSE printf('%.2f', amount) END AS total,
                   items, payment_method, category, printf('%.2f', shipping) AS shipping_fee,
                   'EUR' AS currency
            FROM web_df ORDER BY _row""", folder / "web_orders.csv", sep=",", encoding="utf-8", crlf=False)
        _copy_to_csv(con, """
            SELECT printf('%d-%07d', code, seq) AS "N° ticket",
                   CASE bad WHEN 1 THEN strftime(ts, '%d/%m/%Y') || ' 25:61' ELSE strftime(ts, '%d/%m/%Y %H:%M') END AS "Date",
                   store_name AS "Magasin", card AS "N° carte", cat_name AS "Rayon", qty AS "Nb articles",
                   CASE bad WHEN 2 THEN '#VALEUR!' ELSE replace(printf('%.2f', amount), '.', ',') END AS "Montant TTC",
                   pay_name AS "Mode de paiement"
            FROM st ORDER BY _row""", folder / "store_receipts.csv", sep=";", encoding="cp1252", crlf=True)
    finally:
        con.close()
    w.note(f"{rel}web_orders.csv", len(web_df))
    w.note(f"{rel}store_receipts.csv", len(st))
    bad = []
    for fname, df in ((f"{rel}web_orders.csv", web_df), (f"{rel}store_receipts.csv", st)):
        rows = np.flatnonzero(df["bad"].to_numpy() > 0)
        for r in rows:
            bad.append((fname, int(r) + 2, int(r) + 1, "date illisible" if df["bad"].iat[r] == 1 else "montant non numérique"))
    w.tx_files = getattr(w, "tx_files", {})
    w.tx_files[rel] = (web_df, st)
    return pd.DataFrame(bad, columns=["file", "line", "row", "reason"])


def _inject_bad(rng: np.random.Generator, df: pd.DataFrame, n_bad: int, id_col: str) -> pd.DataFrame:
    """Append ``n_bad`` corrupted copies of random rows (new ids), placed at their time."""
    base = df.copy()
    base["_real"] = True
    if n_bad and len(df):
        pick = np.sort(rng.choice(len(df), min(n_bad, len(df)), replace=False))
        extra = df.iloc[pick].copy()
        extra["bad"] = 1 + (np.arange(len(extra)) % 2)
        extra[id_col] = np.arange(len(extra)) + (df[id_col].max() + 1)
        extra["_real"] = False
        base = pd.concat([base, extra], ignore_index=True)
        base = base.iloc[np.lexsort((base[id_col].to_numpy(), base["ts"].to_numpy()))].reset_index(drop=True)
    base["_row"] = np.arange(len(base))
    return base


def _write_transactions(w: _World) -> None:
    n = len(w.tx_owner)
    u, amount, rec = w.tx_u, w.tx_amount, w.rec_tx
    f = _tx_frame(w, w.tx_owner, w.tx_t, w.tx_campaign, amount, u, rec, 1)
    n_store = int((f["sys"] == 1).sum())
    n_anon = int(round(SHARE_ANONYMOUS * n_store / (1 - SHARE_ANONYMOUS)))
    n_bad = max(3, int(round(0.0005 * n)))
    w.bad_rows = _write_tx_files(w, f, w.out, "", n_anon, n_bad, 0.0, SPAN_WEEKS, 1_000_001, 1)
    w.tx = f


# --------------------------------------------------------------------------- interactions

_INT_COUNTS = {"appels.csv": 900, "formulaires_web.csv": 700, "emails.csv": 900, "enquete_satisfaction.csv": 1200,
               "visites_magasin.csv": 1000, "formulaires_papier.xlsx": 250, "sav_tickets.csv": 500}


def _stage_interactions(w: _World) -> None:
    rng, rnd, P, R = w.rng, w.rnd, w.persons, w.records
    folder = w.out / "interactions"
    folder.mkdir(parents=True, exist_ok=True)
    n_pro = max(10, int(round(0.05 * len(P))))
    prospects = _make_persons(rng, rnd, n_pro, "X")
    prospects["person_id"] = [f"PR{i + 1:05d}" for i in range(n_pro)]
    pdict = _records(P)
    xdict = _records(prospects)
    # records per person, for store card numbers and known e-mails
    cards: dict[int, str] = {}
    for pp, key, sys in zip(R["person"].to_numpy(), R["key"].to_numpy(), R["sys"].to_numpy(), strict=True):
        if sys == 1 and pp not in cards:
            cards[int(pp)] = key
    orders = w.tx_files[""][0]
    web_orders_of = orders[orders["_real"]].groupby("account_id")["order_id"].last().to_dict()
    web_key = {int(pp): key for pp, key, sys in zip(R["person"].to_numpy(), R["key"].to_numpy(), R["sys"].to_numpy(), strict=True) if sys == 0}
    truth = []

    def who(n: int) -> list[tuple[dict, str, str]]:
        """Draw n (identity, person_id, prospect_id): ~10 % prospects."""
        out = []
        pros = rng.random(n) < 0.10
        pi = rng.integers(0, len(P), n)
        xi = rng.integers(0, n_pro, n)
        for k in range(n):
            if pros[k]:
                out.append((xdict[xi[k]], "", xdict[xi[k]]["person_id"]))
            else:
                out.append((pdict[pi[k]], pdict[pi[k]]["person_id"], ""))
        return out

    def when(ident: dict, n_days_min: int = 0) -> np.datetime64:
        t0 = ident.get("t0")
        lo = float(t0) if t0 is not None and t0 == t0 else 0.0
        t = lo + rnd.random() * (SPAN_WEEKS - lo)
        return _dt_days(np.array([t]))[0] + np.int64(rnd.randrange(8 * 3600, 20 * 3600)) * _S

    def scale_n(name: str) -> int:
        return max(5, int(round(_INT_COUNTS[name] * w.scale)))

    def new_mobile() -> str:
        return f"0{rnd.choice('67')}{rnd.randrange(10_000_000, 100_000_000):08d}"

    def new_email(ident: dict) -> str:
        return f"{_slug(ident['first_name'])}.{_slug(ident['last_name'])}{rnd.randrange(100, 999)}@{rnd.choice(['gmail.com', 'proton.me', 'orange.fr'])}"

    def new_address() -> tuple[str, str, str]:
        c = rnd.choice(_CITIES)
        return f"{rnd.randrange(1, 150)} {rnd.choice(_STREET_TYPES)[0]} {rnd.choice(_STREET_NAMES)}", c[1], c[0]

    def name_noise(s: str, p_typo: float = 0.04) -> str:
        if rnd.random() < p_typo:
            s = _typo(s, rnd)
        if rnd.random() < 0.15:
            s = strip_accents(s)
        return s

    # ---- call centre
    rows = []
    motifs = ["Suivi de commande", "Réclamation", "Information produit", "Carte de fidélité",
              "Modification de coordonnées", "Ne plus être démarché"]
    for k, (idt, pid, xid) in enumerate(who(scale_n("appels.csv")), start=1):
        ts = when(idt)
        mot = rnd.choices(motifs, weights=[30, 20, 25, 12, 8, 5])[0]
        phone = idt["mobile"] or idt["landline"]
        caller = _fmt_phone(phone, 4) if phone and rnd.random() < 0.92 else "Masqué"
        new_mail = new_addr = ("", "", "")
        changed, consent = [], ""
        if mot == "Modification de coordonnées" and pid:
            if rnd.random() < 0.5:
                new_mail = (new_email(idt), "", "")
                changed.append("email")
            else:
                new_addr = new_address()
                changed.append("address")
        if mot == "Ne plus être démarché":
            consent = "telephone:non"
        rows.append({
            "N° appel": f"A{k:07d}", "Date": str(ts)[:10], "Heure": str(ts)[11:16], "Numéro appelant": caller,
            "Nom client": f"{name_noise(idt['last_name']).upper()} {name_noise(idt['first_name'])}" if rnd.random() < 0.9 else "",
            "Motif": mot, "Durée (s)": rnd.randrange(40, 900), "Conseiller": rnd.choice(["Karine", "Yanis", "Sophie", "Marc", "Lina"]),
            "Nouvel e-mail": new_mail[0], "Nouvelle adresse": new_addr[0], "Nouveau code postal": new_addr[1], "Nouvelle ville": new_addr[2],
        })
        truth.append(("appels.csv", f"A{k:07d}", pid, xid, "|".join(changed), consent))
    _write_csv(pd.DataFrame(rows), folder / "appels.csv", sep=";", encoding="utf-8-sig")
    w.note("interactions/appels.csv", len(rows))

    # ---- web forms (CSV export of the site's form tool)
    rows = []
    for k, (idt, pid, xid) in enumerate(who(scale_n("formulaires_web.csv")), start=1):
        ts = when(idt)
        form = rnd.choices(["contact", "newsletter", "jeu_concours", "rendez_vous"], weights=[40, 25, 20, 15])[0]
        email, phone, changed, consent = idt["email"], _fmt_phone(idt["mobile"], rnd.choice([0, 1, 3])), [], ""
        if pid and rnd.random() < 0.12:
            if rnd.random() < 0.5:
                phone = _fmt_phone(new_mobile(), 1)
                changed.append("phone")
            else:
                email = new_email(idt)
                changed.append("email")
        if rnd.random() < 0.1:
            email = _email_variant(email, rnd)
        newsletter = form == "newsletter" or rnd.random() < 0.3
        if newsletter:
            consent = "email:oui"
        rec = {"id": f"F{k:07d}", "submitted_at": str(ts).replace(" ", "T"), "form": form, "email": email,
               "first_name": name_noise(idt["first_name"], 0.02), "last_name": name_noise(idt["last_name"], 0.02),
               "phone": phone if form != "newsletter" else "", "postal_code": idt["postal_code"] if rnd.random() < 0.7 else "",
               "message": {"contact": "Bonjour, j'ai une question sur ma commande.", "newsletter": "",
                           "jeu_concours": "Participation au jeu concours", "rendez_vous": "Demande de rendez-vous conseil"}[form],
               "newsletter": "true" if newsletter else "false"}
        rows.append(rec)
        truth.append(("formulaires_web.csv", f"F{k:07d}", pid, xid, "|".join(changed), consent))
    _write_csv(pd.DataFrame(rows), folder / "formulaires_web.csv")
    w.note("interactions/formulaires_web.csv", len(rows))

    # ---- e-mail log
    rows = []
    subjects = [("Question sur ma commande n°{o}", 35), ("Retour produit", 20), ("Désinscription", 10),
                ("Demande de facture", 15), ("Problème de livraison", 15), ("Mot de passe oublié", 5)]
    for k, (idt, pid, xid) in enumerate(who(scale_n("emails.csv")), start=1):
        ts = when(idt)
        subj = rnd.choices([s for s, _ in subjects], weights=[wt for _, wt in subjects])[0]
        order = web_orders_of.get(web_key.get(int(idt["person_id"][1:]) - 1, ""), "") if pid else ""
        subj = subj.format(o=order if order != "" else rnd.randrange(1_000_001, 1_050_000))
        email = idt["email"] if rnd.random() < 0.9 else _email_variant(idt["email"], rnd)
        frm = f"{idt['first_name']} {idt['last_name']} <{email}>" if rnd.random() < 0.7 else email
        rows.append({"message_id": f"<m{k:07d}@mail.boutique.fr>", "received_at": str(ts).replace(" ", "T"), "from": frm,
                     "to": "service-client@boutique.fr", "subject": subj, "mailbox": "SAV" if "Retour" in subj or "livraison" in subj else "Clients"})
        truth.append(("emails.csv", f"<m{k:07d}@mail.boutique.fr>", pid, xid, "", "email:non" if subj == "Désinscription" else ""))
    _write_csv(pd.DataFrame(rows), folder / "emails.csv")
    w.note("interactions/emails.csv", len(rows))

    # ---- satisfaction survey (NPS, CSAT)
    rows = []
    comments = ["", "", "Très bon accueil", "Livraison trop lente", "Produits de qualité", "Prix un peu élevés",
                "Vendeuse très aimable", "Site difficile à utiliser", "Je recommande !", "Retour compliqué"]
    for k, (idt, pid, xid) in enumerate(who(scale_n("enquete_satisfaction.csv")), start=1):
        ts = when(idt)
        happy = rnd.random()
        nps = min(10, max(0, int(round(rnd.gauss(7.6 if happy > 0.2 else 4.0, 1.8)))))
        csat = min(5, max(1, int(round(1 + nps / 2.5 + rnd.gauss(0, 0.5)))))
        rows.append({"response_id": f"S{k:07d}", "date": str(ts)[:10], "email": idt["email"], "nps": nps, "csat": csat,
                     "canal": rnd.choice(["web", "magasin"]), "commentaire": rnd.choice(comments)})
        truth.append(("enquete_satisfaction.csv", f"S{k:07d}", pid, xid, "", ""))
    _write_csv(pd.DataFrame(rows), folder / "enquete_satisfaction.csv")
    w.note("interactions/enquete_satisfaction.csv", len(rows))

    # ---- store visits (French export, cp1252)
    rows = []
    for k, (idt, pid, xid) in enumerate(who(scale_n("visites_magasin.csv")), start=1):
        ts = when(idt)
        card = cards.get(int(idt["person_id"][1:]) - 1, "") if pid else ""
        with_card = card and rnd.random() < 0.7
        rows.append({"N° visite": f"V{k:07d}", "Date": pd.Timestamp(ts).strftime("%d/%m/%Y %H:%M"),
                     "Magasin": rnd.choice(STORES)[1], "N° carte": card if with_card else "",
                     "Nom": "" if with_card else name_noise(idt["last_name"]).upper(),
                     "Prénom": "" if with_card else name_noise(idt["first_name"]),
                     "Téléphone": "" if with_card else _fmt_phone(idt["mobile"] or idt["landline"], 2),
                     "Objet": rnd.choice(["Essayage", "Retrait commande", "Conseil", "Retour", "Retouche"])})
        truth.append(("visites_magasin.csv", f"V{k:07d}", pid, xid, "", ""))
    _write_csv(pd.DataFrame(rows), folder / "visites_magasin.csv", sep=";", encoding="cp1252", crlf=True)
    w.note("interactions/visites_magasin.csv", len(rows))

    # ---- typed-in paper forms (xlsx)
    rows = []
    for k, (idt, pid, xid) in enumerate(who(scale_n("formulaires_papier.xlsx")), start=1):
        ts = when(idt)
        addr, cp, city = idt["address"], idt["postal_code"], idt["city"]
        changed = []
        if pid and rnd.random() < 0.15:
            addr, cp, city = new_address()
            changed.append("address")
        courrier, mail = rnd.random() < 0.6, rnd.random() < 0.5
        rows.append({"N° bulletin": f"B{k:06d}", "Date": dt.date.fromisoformat(str(ts)[:10]),
                     "Civilité": "Mme" if idt["gender"] == "F" else "M.", "Nom": name_noise(idt["last_name"], 0.12).upper(),
                     "Prénom": name_noise(idt["first_name"], 0.08), "Adresse": _abbrev_address(addr, rnd) if rnd.random() < 0.5 else addr,
                     "Code postal": cp, "Ville": city, "Téléphone": _fmt_phone(idt["mobile"] or idt["landline"], rnd.choice([1, 2, 0])),
                     "E-mail": idt["email"] if rnd.random() < 0.75 else "", "Offres par courrier": "X" if courrier else "",
                     "Offres par e-mail": "X" if mail else "", "Magasin": rnd.choice(STORES)[1]})
        truth.append(("formulaires_papier.xlsx", f"B{k:06d}", pid, xid, "|".join(changed),
                      f"courrier:{'oui' if courrier else 'non'}|email:{'oui' if mail else 'non'}"))
    _write_xlsx(pd.DataFrame(rows), folder / "formulaires_papier.xlsx", "Saisie")
    w.note("interactions/formulaires_papier.xlsx", len(rows))

    # ---- after-sales tickets
    rows = []
    for k, (idt, pid, xid) in enumerate(who(scale_n("sav_tickets.csv")), start=1):
        ts = when(idt)
        closed = ts < _T_END - np.timedelta64(20, "D") or rnd.random() < 0.5
        closed_at = ts + np.int64(rnd.randrange(3600, 20 * 86400)) * _S
        if closed_at >= _T_END:
            closed = False
        order = web_orders_of.get(web_key.get(int(idt["person_id"][1:]) - 1, ""), "") if pid else ""
        rows.append({"ticket_id": f"T{k:06d}", "opened_at": str(ts).replace(" ", "T"),
                     "closed_at": str(closed_at).replace(" ", "T") if closed else "", "status": "closed" if closed else "open",
                     "customer_name": f"{idt['first_name']} {idt['last_name']}", "customer_email": idt["email"] if rnd.random() < 0.85 else "",
                     "customer_phone": _fmt_phone(idt["mobile"], 3) if rnd.random() < 0.5 else "",
                     "order_ref": order, "topic": rnd.choice(["Produit défectueux", "Colis non reçu", "Remboursement", "Échange taille", "Garantie"]),
                     "satisfaction": rnd.randrange(1, 6) if closed and rnd.random() < 0.6 else ""})
        truth.append(("sav_tickets.csv", f"T{k:06d}", pid, xid, "", ""))
    _write_csv(pd.DataFrame(rows), folder / "sav_tickets.csv")
    w.note("interactions/sav_tickets.csv", len(rows))
    w.interactions_truth = pd.DataFrame(truth, columns=["file", "row_key", "person_id", "prospect_id", "new_fields", "consent_change"])
    w.prospects = prospects


def _write_xlsx(df: pd.DataFrame, path: Path, sheet: str) -> None:
    """Write an xlsx whose bytes depend only on the data (fixed dates in zip and properties)."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append(list(df.columns))
    for row in df.itertuples(index=False):
        ws.append([None if v == "" else v for v in row])
    for cell in ws["B"][1:]:
        cell.number_format = "DD/MM/YYYY"
    fixed = dt.datetime(2026, 1, 1)
    wb.properties.creator = "crmlab demo"
    wb.properties.created = fixed
    wb.properties.modified = fixed
    buf = io.BytesIO()
    wb.save(buf)
    buf.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in sorted(zin.namelist()):
            data = zin.read(name)
            if name == "docProps/core.xml":
                data = re.sub(rb"<dcterms:(created|modified)([^>]*)>[^<]*</dcterms:", rb"<dcterms:\1\2>2026-01-01T00:00:00Z</dcterms:", data)
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            zout.writestr(info, data)
    path.write_bytes(out.getvalue())


# --------------------------------------------------------------------------- batch 2

def _stage_batch2(w: _World) -> None:
    """January 2026: continued purchases, contact updates, consent changes, new customers."""
    rng, rnd, P, R = w.rng, w.rnd, w.persons, w.records
    folder = w.out / "batch2"
    folder.mkdir(parents=True, exist_ok=True)
    buyer = P["buyer"].to_numpy()
    K, x = P["K"].to_numpy(), P["x"].to_numpy()
    alive = buyer & (np.nan_to_num(x, nan=0) < np.nan_to_num(K, nan=0))
    idx = np.flatnonzero(alive)
    lam = P["lam"].to_numpy()[idx]
    npois = rng.poisson(lam * B2_WEEKS)
    x2 = np.minimum(npois, (K[idx] - x[idx]).astype(np.int64))
    own_local, t_rel = _first_order_stats(rng, x2, npois, np.full(len(idx), B2_WEEKS))
    owner = idx[own_local]
    t = SPAN_WEEKS + t_rel
    # contact updates of existing records
    n_rec = len(R)
    chg = np.flatnonzero(rng.random(n_rec) < 0.04)
    changes = []
    U = _records(R.iloc[chg])
    for rr in U:
        field = rnd.choice(["email", "phone", "address"])
        old = rr[field]
        if field == "email":
            new = f"{_slug(rr['first_name']) or 'client'}.{_slug(rr['last_name']) or 'client'}{rnd.randrange(10, 99)}@{rnd.choice(['gmail.com', 'proton.me', 'free.fr'])}"
        elif field == "phone":
            new = _fmt_phone(f"0{rnd.choice('67')}{rnd.randrange(10_000_000, 100_000_000):08d}", 1 if rr["sys"] == 1 else 3)
            rr["phone_kind"] = "mobile"
        else:
            c = rnd.choice(_CITIES)
            new = f"{rnd.randrange(1, 150)} {rnd.choice(_STREET_TYPES)[0]} {rnd.choice(_STREET_NAMES)}"
            rr["postal_code"], rr["city"] = c[1], c[0]
        rr[field] = new
        changes.append((rr["source"], rr["key"], rr["person_id"], field, old, new))
    upd = _T_END + (rng.integers(0, 30 * 86400, len(chg))) * _S
    # new customers: half brand-new persons, half existing persons opening the other system
    n_new = max(4, int(round(0.02 * len(P))))
    n_brand = n_new // 2
    newp = _make_persons(rng, rnd, n_brand, "P", start=len(P) + 1)
    newp["t0"] = SPAN_WEEKS + rng.random(n_brand) * B2_WEEKS
    mem = P["membership"].to_numpy()
    single = np.flatnonzero(buyer & (mem != 2))
    existing = np.sort(rng.choice(single, min(n_new - n_brand, len(single)), replace=False))
    new_rows = []
    n_web = int((R["sys"] == 0).sum())
    n_card = int((R["sys"] == 1).sum())
    ndict = _records(newp)
    pdict = _records(P)
    new_sys = rng.integers(0, 2, n_brand)
    specs = [(ndict[i], int(new_sys[i]), float(ndict[i]["t0"])) for i in range(n_brand)]
    specs += [(pdict[i], 1 - (0 if mem[i] == 0 else 1), SPAN_WEEKS + rng.random() * B2_WEEKS) for i in existing]
    specs.sort(key=lambda s: s[2])
    for ident, sys, t_open in specs:
        rr = _render_record(ident, "web" if sys == 0 else "magasin", rnd, False)
        if sys == 0:
            n_web += 1
            key = str(100000 + n_web)
        else:
            key = f"29{9000000 + 37 * n_card + 11:010d}"
            n_card += 1
        rr.update({"key": key, "sys": sys, "source": "web" if sys == 0 else "magasin", "person_id": ident["person_id"],
                   "open_t": t_open, "created_at": _dt_days(np.array([t_open]))[0] + np.int64(rnd.randrange(9 * 3600, 19 * 3600)) * _S,
                   "person": -1, "second": False})
        new_rows.append(rr)
    NR = pd.DataFrame(new_rows)
    # updated and new records, per system, in the same formats as batch 1
    U = pd.DataFrame(U, columns=R.columns)
    U["updated"] = upd
    NR["updated"] = NR["created_at"]
    both = pd.concat([U, NR], ignore_index=True)
    web = both["sys"].to_numpy() == 0
    opt_e = rng.random(len(both)) < 0.6
    opt_s = rng.random(len(both)) < 0.35
    wf = _web_frame(w, both[web].reset_index(drop=True), opt_e[web], opt_s[web], both["updated"].to_numpy()[web])
    sf = _store_frame(w, both[~web].reset_index(drop=True), opt_s[~web], opt_e[~web], np.zeros(int((~web).sum()), dtype=int))
    _write_csv(wf, folder / "web_accounts.csv")
    _write_csv(sf, folder / "store_cards.csv", sep=";", encoding="cp1252", crlf=True)
    w.note("batch2/web_accounts.csv", len(wf))
    w.note("batch2/store_cards.csv", len(sf))
    # consent changes: opt-outs of currently opted-in records, a few opt-ins
    c = w.consent
    cur = c["init"].to_numpy() & ~np.isfinite(c["optout_t"].to_numpy())
    flip = (cur & (rng.random(len(c)) < 0.03)) | (~cur & (rng.random(len(c)) < 0.005))
    cc = c[flip]
    cons = pd.DataFrame({
        "source": R["source"].to_numpy()[cc["record"]], "customer_key": R["key"].to_numpy()[cc["record"]],
        "channel": cc["channel"].to_numpy(), "opted_in": np.where(cur[flip], "non", "oui"),
        "updated_at": pd.Series(_T_END + rng.integers(0, 31, len(cc)) * np.timedelta64(1, "D")).dt.strftime("%Y-%m-%d").to_numpy(),
    })
    new_cons = pd.DataFrame({
        "source": NR["source"].to_numpy(), "customer_key": NR["key"].to_numpy(), "channel": "email",
        "opted_in": np.where(rng.random(len(NR)) < 0.6, "oui", "non"), "updated_at": pd.Series(NR["created_at"]).dt.strftime("%Y-%m-%d").to_numpy(),
    })
    cons = pd.concat([cons, new_cons]).sort_values(["source", "customer_key", "channel"], kind="mergesort")
    _write_csv(cons, folder / "consents.csv")
    w.note("batch2/consents.csv", len(cons))
    # transactions: continued purchases on the existing records + brand-new persons' first purchases
    R_all = pd.concat([R, NR[R.columns.intersection(NR.columns)]], ignore_index=True)
    amount = _amounts(w, owner)
    u = rng.random(len(owner))
    rec = _record_of(w, owner, t, u)
    brand = NR.index[NR["person_id"].isin(newp["person_id"])].to_numpy()
    rec = np.r_[rec, len(R) + brand]
    nu_new = rng.gamma(GAMMA_GAMMA["q"], 1.0 / GAMMA_GAMMA["v"], len(brand))
    amount = np.r_[amount, np.maximum(np.round(rng.gamma(GAMMA_GAMMA["p"], 1.0 / nu_new), 2), 0.5)]
    t = np.r_[t, NR["open_t"].to_numpy()[brand]]
    owner_all = np.r_[owner, np.zeros(len(brand), dtype=np.int64)]
    saved = w.records
    w.records = R_all
    f = _tx_frame(w, owner_all, t, np.zeros(len(t), dtype=np.int16), amount, u, rec, 1)
    w.records = saved
    ow, st = w.tx_files[""]
    w.records = R_all
    bad2 = _write_tx_files(w, f, folder, "batch2/", max(1, int(round(SHARE_ANONYMOUS * (f["sys"] == 1).sum()))), 0,
                           SPAN_WEEKS, SPAN_WEEKS + B2_WEEKS, int(ow["order_id"].max()) + 1, int(st["seq"].max()) + 1)
    w.records = saved
    w.batch2_changes = pd.DataFrame(changes, columns=["source", "source_key", "person_id", "field", "old_value", "new_value"])
    w.batch2_changes["changed_at"] = pd.Series(upd).dt.strftime("%Y-%m-%dT%H:%M:%S").to_numpy()
    w.batch2_new = NR[["source", "key", "person_id"]].rename(columns={"key": "source_key"})
    w.batch2_new["new_person"] = NR["person_id"].isin(newp["person_id"]).to_numpy()
    w.bad_rows = pd.concat([w.bad_rows, bad2], ignore_index=True)


# --------------------------------------------------------------------------- truth

def _write_truth(w: _World) -> None:
    tdir = w.out / "truth"
    tdir.mkdir(parents=True, exist_ok=True)
    R, P = w.records, w.persons
    dup = pd.DataFrame({"source": R["source"], "source_key": R["key"], "person_id": R["person_id"]})
    dup = dup.sort_values(["source", "source_key"], kind="mergesort")
    _write_csv(dup, tdir / "duplicates.csv")
    model = {
        "time_unit": "week",
        "bgnbd": BGNBD,
        "gamma_gamma": GAMMA_GAMMA,
        "observation_start": OBSERVATION_START,
        "observation_end": OBSERVATION_END,
        "batch2_end": BATCH2_END,
        "seed": w.seed,
        "scale": w.scale,
        "notes": ("lambda ~ Gamma(shape r, rate alpha); p ~ Beta(a, b); dropout after each repeat purchase "
                  "with probability p; spend ~ Gamma(shape p, rate nu), nu ~ Gamma(shape q, rate v). "
                  "Campaign-induced extra purchases: see campaigns.csv n_extra_purchases."),
        "n_campaign_purchases": int((w.tx_campaign > 0).sum()),
    }
    (tdir / "model.json").write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_csv(w.campaign_truth, tdir / "campaigns.csv")
    _write_csv(w.bad_rows.sort_values(["file", "line"], kind="mergesort"), tdir / "bad_rows.csv")
    _write_csv(w.interactions_truth, tdir / "interactions.csv")
    _write_csv(w.batch2_changes, tdir / "batch2_changes.csv")
    _write_csv(w.batch2_new, tdir / "batch2_duplicates.csv")
    n_org = np.bincount(w.tx_owner[w.tx_campaign == 0], minlength=len(P))
    n_cmp = np.bincount(w.tx_owner[w.tx_campaign > 0], minlength=len(P))
    persons = pd.DataFrame({
        "person_id": P["person_id"], "household_of": P["household_of"],
        "t0_weeks": P["t0"].map(lambda v: f"{v:.6f}"), "T_weeks": P["T"].map(lambda v: "" if v != v else f"{v:.6f}"),
        "lambda": P["lam"].map(lambda v: "" if v != v else f"{v:.6g}"), "p_dropout": P["p"].map(lambda v: "" if v != v else f"{v:.6g}"),
        "nu": P["nu"].map(lambda v: "" if v != v else f"{v:.6g}"),
        "n_repeat": P["x"].map(lambda v: "" if v != v else str(int(v))),
        "alive_at_end": np.where(P["buyer"], np.where(P["x"] < P["K"], "1", "0"), ""),
        "n_purchases": n_org, "n_campaign_purchases": n_cmp,
    })
    _write_csv(persons, tdir / "persons.csv")
    (tdir / "README.txt").write_text(_TRUTH_README, encoding="utf-8")
    for name in ("duplicates.csv", "campaigns.csv", "bad_rows.csv", "interactions.csv", "persons.csv",
                 "batch2_changes.csv", "batch2_duplicates.csv"):
        w.note(f"truth/{name}", sum(1 for _ in open(tdir / name, encoding="utf-8")) - 1)


_TRUTH_README = """Vérité terrain du monde de démo (générée par crmlab demo-data)

duplicates.csv        source, source_key, person_id : la personne réelle derrière chaque fiche client (lot 1)
model.json            paramètres générateurs BG/NBD (r, alpha, a, b) et Gamma-Gamma (p, q, v), unité : semaine
persons.csv           variables latentes de chaque personne (lambda, p_dropout, nu, achats, vivant au 31/12/2025)
campaigns.csv         effet vrai de chaque campagne : p_extra (achat supplémentaire des ciblés), base_rate
                      (taux d'achat sans campagne), uplift_rate = p_extra x (1 - base_rate), uplift_revenue
                      (EUR par contact), effectifs cible/témoin
bad_rows.csv          lignes volontairement malformées (fichier, ligne physique avec l'en-tête en ligne 1, ligne de données)
interactions.csv      personne (ou prospect) derrière chaque interaction entrante, champs nouveaux, changements de consentement
batch2_changes.csv    changements de coordonnées du lot 2 (janvier 2026)
batch2_duplicates.csv nouvelles fiches du lot 2 et leur personne (new_person = personne jamais vue)
"""
