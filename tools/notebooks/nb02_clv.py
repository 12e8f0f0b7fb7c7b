"""Cells of step 02 for the behavioural clusters and the CLV models (spliced in by nb02.py).

The cells before these define ``p`` (validated params, ``p.as_of`` resolved), ``con`` (the
step's connection inside its transaction), ``show`` (crmlab.display), ``charts`` (set up)
and ``display``. They leave:

- ``clusters_df`` (customer_id, cluster, cluster_id, features) and ``cluster_kpis``;
- ``clv_df`` (customer_id, frequency, recency, T, monetary, p_alive, expected_purchases,
  expected_spend, clv, guarded) and ``clv_kpis``; fitted parameters are written to
  ``model_fits``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_notebooks import code, md  # noqa: E402

CELLS_BEHAVIOUR = [
    md("""
        ### Comment les groupes sont formés

        Pour chaque client, on calcule quelques variables de comportement : nombre de commandes, panier moyen,
        ancienneté, jours depuis le dernier achat, et la part de ses achats dans chaque canal, catégorie et moyen
        de paiement (quand les transactions les renseignent). Les montants et les nombres de commandes sont pris
        en logarithme (un client à 100 commandes ne doit pas écraser les autres), puis chaque variable est
        **standardisée** (moyenne 0, écart-type 1) pour qu'aucune ne compte plus qu'une autre du seul fait de son unité.

        L'algorithme k-means cherche ensuite k groupes de clients proches entre eux. Le nombre de groupes est soit
        fixé (`clusters_k`), soit choisi par la **silhouette** : une note de −1 à 1 qui mesure si chaque client
        est plus proche de son groupe que du groupe voisin (plus elle est haute, plus les groupes sont nets).
    """),
    code("""
        import pandas as pd

        from crmlab import behaviour

        comportement = behaviour.features(con, p.as_of)
        groupes = behaviour.cluster(comportement, k=p.clusters_k, k_max=p.clusters_k_max, seed=p.seed,
                                    groups=p.cluster_features)
        portraits = behaviour.describe(comportement, groupes, currency=p.currency)
        clusters_df = behaviour.assign(comportement, groupes, portraits)
        cluster_kpis = behaviour.kpis(portraits, groupes)
        if len(groupes.silhouette):
            display(behaviour.chart_silhouette(groupes))
            meilleure = groupes.silhouette.sort_values("silhouette", ascending=False)
            ecart = meilleure["silhouette"].iloc[0] - (meilleure["silhouette"].iloc[1] if len(meilleure) > 1 else 0)
            display(show.callout(
                f"La silhouette est la plus haute pour {groupes.k} groupes "
                f"({charts.fr_number(meilleure['silhouette'].iloc[0], 2)}), "
                + ("nettement devant les autres choix." if ecart > 0.05 else
                   f"de peu ({charts.fr_number(ecart, 2)} d'avance) : d'autres découpages seraient presque aussi nets.")))
        else:
            display(show.callout(f"Nombre de groupes fixé par le paramètre clusters_k : {groupes.k}."))
    """),
    md("""
        ### Le portrait de chaque groupe

        La carte ci-dessous donne, pour chaque groupe (en ligne) et chaque variable (en colonne), l'écart de la
        moyenne du groupe à la moyenne de tous les clients, en écarts-types : rouge = nettement au-dessus,
        bleu = nettement en dessous. Le nom de chaque groupe vient de sa variable la plus distinctive ; la phrase
        qui le décrit lit les variables qui s'écartent d'au moins un demi-écart-type.
    """),
    code("""
        display(behaviour.chart_profiles(portraits, groupes))
        show.bullets([
            f"**{r.cluster}** – {charts.fr_number(r.customers)} clients ({charts.fr_percent(r.share, 0)}) : {r.description}"
            for r in portraits.itertuples()
        ])
    """),
]

CELLS_CLV = [
    md("""
        ### Ce que suppose le modèle d'achat

        Le modèle **BG/NBD** (Fader, Hardie et Lee, 2005) raconte la vie d'un client en trois phrases :

        1. tant qu'il est actif, un client achète au hasard, à son propre rythme (certains une fois par an,
           d'autres chaque semaine) ;
        2. après chaque achat, il peut partir pour de bon, avec une probabilité qui lui est propre ;
        3. on ne voit jamais le départ : on voit seulement qu'il n'achète plus.

        Le modèle n'utilise que trois nombres par client : sa **fréquence** (achats répétés, après le premier),
        sa **récence** (date de son dernier achat, comptée depuis le premier) et son **ancienneté** T. Un client
        qui achetait chaque semaine et n'a rien acheté depuis trois mois est probablement parti ; un client qui
        achète deux fois par an et n'est pas venu depuis trois mois est sans doute encore là.
    """),
    md("""
        ### Pourquoi une période de validation

        Un modèle qui décrit bien le passé peut mal prévoir l'avenir. On le vérifie en le mettant à l'épreuve :
        on l'ajuste sur une **période de calibration**, en cachant la fin de l'historique (la **période de
        validation**), puis on compare ce qu'il prévoit pour cette période à ce qui s'est réellement passé.
    """),
    code("""
        from crmlab import clv

        calibration = clv.calibration_holdout(con, p.as_of, holdout_days=p.holdout_days,
                                              calibration_end=p.calibration_end, time_unit=p.time_unit,
                                              merge_same_day=p.merge_same_day)
        modele_cal = clv.fit_purchases(calibration, p.clv_model, penalizer=p.penalizer, time_unit=p.time_unit,
                                       columns=("frequency_cal", "recency_cal", "T_cal"))
        validation = clv.holdout_check(modele_cal, calibration)
        suivi = clv.tracking(con, modele_cal, calibration, p.as_of, merge_same_day=p.merge_same_day)
        debut_validation, _ = clv.calibration_dates(p.as_of, p.holdout_days, p.calibration_end)
        show.callout(
            f"Calibration jusqu'au {(debut_validation - pd.Timedelta(days=1)):%d/%m/%Y} sur "
            f"{charts.fr_number(len(calibration))} clients ; validation sur "
            f"{charts.fr_number(validation['duration'], 1)} {clv.UNIT_FR[p.time_unit]} jusqu'à la veille du {pd.Timestamp(p.as_of):%d/%m/%Y}. "
            f"Modèle {clv.MODEL_FR[p.clv_model]} ajusté en {charts.fr_number(modele_cal.seconds, 1)} s "
            f"sur {charts.fr_number(modele_cal.n_groups)} profils distincts (fréquence, récence, ancienneté)."
        )
    """),
    md("""
        ### Le modèle suit-il les achats semaine après semaine ?

        La courbe continue compte, semaine après semaine, les achats répétés réels des clients de la calibration ;
        la courbe pointillée, ceux que le modèle attendait. À gauche du trait, le modèle a vu les données ; à droite,
        il prévoit sans les avoir vues.
    """),
    code("""
        display(clv.chart_tracking(suivi))
        fin = suivi.iloc[-1]
        hors = suivi[suivi["holdout"]]
        prevu_val = hors["expected"].sum()
        reel_val = hors["actual"].sum()
        ecart_val = (prevu_val - reel_val) / reel_val if reel_val else float("nan")
        show.callout(
            f"Sur la période de validation, le modèle attendait {charts.fr_number(prevu_val)} achats répétés ; "
            f"il y en a eu {charts.fr_number(reel_val)} ({'+' if ecart_val > 0 else ''}{charts.fr_percent(ecart_val)}). "
            + ("La prévision d'ensemble est fiable à 10 % près." if abs(ecart_val) <= 0.10 else
               "L'écart dépasse 10 % : l'activité a changé (saisonnalité, campagnes, nouveaux produits) ou le modèle "
               "ne convient pas à ces données ; les prévisions individuelles sont à prendre comme un classement plutôt "
               "que comme des volumes.")
        )
    """),
    md("""
        ### Prévu et réel, client par client

        On regroupe les clients selon leur nombre d'achats répétés pendant la calibration (0, 1, …, 7 et plus) et
        on compare, pour chaque groupe, le nombre moyen d'achats prévu pendant la validation à la réalité.
    """),
    code("""
        display(clv.chart_by_frequency(validation))
        display(show.table(validation["by_frequency"][["label", "customers", "actual", "predicted"]],
                           {"customers": "int", "actual": "float", "predicted": "float"},
                           {"label": "Achats répétés (calibration)", "customers": "Clients",
                            "actual": "Achats réels / client", "predicted": "Achats prévus / client"}))
        show.callout(
            f"Erreur moyenne par client : {charts.fr_number(validation['mae'], 2)} achat ; erreur sur le total : "
            f"{'+' if validation['total_error_pct'] > 0 else ''}{charts.fr_percent(validation['total_error_pct'])}. "
            f"La corrélation entre achats prévus et réels, client par client, est de "
            f"{charts.fr_number(validation['correlation'], 2)} : "
            + ("le modèle classe bien les clients." if validation["correlation"] >= 0.5 else
               "le modèle ne classe les clients que grossièrement.")
        )
    """),
    md("""
        ### Probabilité d'être encore actif

        Le modèle est maintenant ajusté sur **tout** l'historique jusqu'à la date d'analyse. Pour chaque client, il
        donne la **probabilité d'être encore actif** (p_alive) : la chance qu'il n'ait pas quitté l'enseigne, compte
        tenu de son rythme habituel et du temps écoulé depuis son dernier achat. Ce n'est pas une probabilité
        d'acheter demain : un client actif mais qui achète une fois par an a une p_alive élevée et peu d'achats attendus.
    """),
    code("""
        resume = clv.summary(con, p.as_of, time_unit=p.time_unit, merge_same_day=p.merge_same_day)
        modele = clv.fit_purchases(resume, p.clv_model, penalizer=p.penalizer, time_unit=p.time_unit)
        depense = clv.fit_spend(resume, penalizer=p.penalizer)
        correlation = clv.spend_correlation(resume)
        display(show.table(
            pd.DataFrame({"modèle": [clv.MODEL_FR[f.model] for f in (modele, depense) for _ in f.params],
                          "paramètre": [k for f in (modele, depense) for k in f.params],
                          "valeur": [v for f in (modele, depense) for v in f.params.values()],
                          "erreur type": [f.standard_errors.get(k, float("nan")) for f in (modele, depense) for k in f.params]}),
            {"valeur": "float", "erreur type": "float"}))
        show.callout(correlation["message"], "ok" if correlation["ok"] else "warn")
    """),
    md("""
        ### La valeur future à 12 mois (CLV)

        La **CLV** d'un client est la marge que l'on peut attendre de lui sur l'horizon choisi
        (`clv_horizon_months`) : pour chaque mois, le nombre d'achats attendus (modèle d'achat) × le panier attendu
        (modèle Gamma-Gamma, qui rapproche le panier observé du client de la moyenne quand on l'a vu acheter peu
        de fois) × le taux de marge. Chaque mois est **actualisé** : 100 € dans un an valent moins que 100 €
        aujourd'hui (taux annuel `discount_rate_annual`, converti en taux mensuel). Ce n'est pas une promesse de
        chiffre d'affaires : c'est un ordre de grandeur, utile pour classer les clients et dimensionner les budgets.
    """),
    code("""
        clv_df = clv.customer_value(modele, depense, resume, months=p.clv_horizon_months,
                                    discount_rate_annual=p.discount_rate_annual, margin_rate=p.margin_rate)
        display(clv.chart_p_alive(clv_df))
        display(clv.chart_clv(clv_df, p.currency))
        part_actifs = (clv_df["p_alive"] >= 0.5).mean()
        tri = clv_df["clv"].sort_values(ascending=False)
        top10 = tri.head(max(1, len(tri) // 10)).sum() / tri.sum() if tri.sum() > 0 else float("nan")
        show.callout(
            f"{charts.fr_percent(part_actifs, 0)} des clients ont au moins une chance sur deux d'être encore actifs. "
            f"Valeur future totale à {p.clv_horizon_months} mois : {charts.fr_money(clv_df['clv'].sum(), p.currency)} de marge "
            f"actualisée, soit {charts.fr_money(clv_df['clv'].mean(), p.currency, 2)} par client en moyenne ; "
            f"les 10 % de clients les plus précieux en portent {charts.fr_percent(top10, 0)}."
        )
    """),
    code("""
        clv_kpis = clv.kpis(clv_df, validation, correlation, currency=p.currency)
        ajustements = clv.model_fits_frame(
            p.run_id, p.as_of, [(modele, ""), (depense, ""), (modele_cal, "_cal")],
            extra={modele_cal.model + "_cal": {"holdout_mae": validation["mae"],
                                               "holdout_total_error_pct": validation["total_error_pct"],
                                               "holdout_correlation": validation["correlation"],
                                               "holdout_actual": validation["actual_total"],
                                               "holdout_predicted": validation["predicted_total"]},
                   "gamma_gamma": {"frequency_spend_corr": correlation["r"]}})
        clv.write_model_fits(con, ajustements)
        corriges = int(clv_df["guarded"].sum())
        show.callout(
            (f"{charts.fr_number(corriges)} client(s) aux historiques extrêmes ont une prévision que le modèle ne sait "
             "pas calculer (dépassement numérique) : elle est remplacée par une borne prudente (client actif, rythme "
             "observé)." if corriges else "Toutes les prévisions individuelles ont pu être calculées par le modèle.")
            + f" {len(ajustements)} paramètres et diagnostics enregistrés dans la table model_fits."
        )
    """),
]
