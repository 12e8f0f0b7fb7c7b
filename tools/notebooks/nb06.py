"""Builder of notebooks/06_mesurer/mesurer.ipynb (run: python tools/build_notebooks.py 06)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from build_notebooks import code, md  # noqa: E402

TITLE = """
# Étape 06 – Mesurer

Une démarche CRM ne s'arrête pas à l'action : chaque étape a sa mesure, et c'est en les suivant
dans le temps qu'on sait si la relation client progresse. Ce rapport rassemble les cinq mesures
de la méthode :

| mesure | étape | question |
|---|---|---|
| **Organiser** | 01 constituer | la base est-elle complète ? |
| **Segmenter** | 02 segmenter | comment les segments évoluent-ils ? |
| **Interagir** | 03 interagir | chaque plan d'action a-t-il rapporté plus qu'il n'a coûté ? |
| **Collecter** | 04 collecter | combien de données chaque opération a-t-elle apportées ? |
| **Alimenter** | 05 alimenter | quel canal remplit les coordonnées ? |

Chaque indicateur est comparé à son **objectif** (paramètres `targets`) et à l'**exécution
précédente**.
"""

CELLS = [
    code("""
        from IPython.display import display

        from crmlab import charts, db, mesurer, params
        from crmlab import display as show

        charts.setup()
        p = params.for_notebook(globals(), "06")
        con = db.open_step(p.database, "06", p.run_id, p.as_of)

        responses = mesurer.campaign_responses(con, window_days=p.response_window_days, include_planned=p.include_planned)
        results = mesurer.campaign_results(responses, mesurer.campaigns_frame(con), margin_rate=p.margin_rate,
                                           channel_costs=p.channel_costs, min_group_size=p.min_group_size)
        mesurer.write_campaign_results(con, results, p.run_id)
        evolution = mesurer.segment_evolution(con, p)
        collected = mesurer.collect_measures(con)
        fill = mesurer.fill_before_after(con)
        own = mesurer.own_kpis(results)
        card = mesurer.scorecard(con, p.targets, extra=own[own.dimension == ""].assign(step="06"), run_id=p.run_id)
        own = mesurer.own_kpis(results, card)
        card = mesurer.scorecard(con, p.targets, extra=own[own.dimension == ""].assign(step="06"), run_id=p.run_id)
    """),
    md("""
        ## Synthèse

        Les phrases ci-dessous sont calculées à partir des chiffres de ce rapport : objectifs atteints
        ou manqués, ce qui s'améliore et ce qui se dégrade depuis l'exécution précédente, le plan
        d'action qui a payé.
    """),
    code("""
        show.bullets(mesurer.executive_summary(card, results, evolution, fill, currency=p.currency,
                                               alerts=mesurer.alerts_context(con)))
    """),
    md("""
        ## Tableau de bord des cinq mesures

        Chaque ligne est un indicateur clé d'une étape, tel qu'il a été mesuré lors de sa dernière
        exécution. « Atteint » compare la valeur à l'objectif fixé dans les paramètres ; la tendance la
        compare à l'exécution précédente (une amélioration va dans le sens de l'objectif). Le NPS se
        lit en points, de -100 à +100 (part des promoteurs moins part des détracteurs).
    """),
    code("""
        display(mesurer.scorecard_display(card, p.currency))
    """),
    md("""
        ## Organiser – la complétude de la base (étape 01)

        Part des clients dont chaque champ est renseigné : pas d'e-mailing sans e-mail, pas de SMS sans
        mobile, pas de courrier sans adresse.
    """),
    code("""
        organiser = mesurer.organiser_measures(con)
        if len(organiser):
            display(mesurer.organiser_chart(organiser))
        else:
            display(show.callout("L'étape 01 n'a pas encore enregistré de mesure de complétude.", "warn"))
    """),
    md("""
        ## Segmenter – l'évolution des segments (étape 02)

        Combien de clients chaque segment gagne ou perd, et d'où viennent ces mouvements. La matrice
        de migration se lit ligne par ligne : parmi les clients d'un segment à la première date, quelle
        part se retrouve dans chaque segment à la seconde.
    """),
    code("""
        if len(evolution["flows"]):
            display(mesurer.evolution_chart(evolution))
            display(mesurer.migration_chart(evolution))
            display(show.table(evolution["flows"], formats={c: "int" for c in ["before", "after", "change", "gained", "lost"]},
                               labels={"segment": "Segment", "before": "Avant", "after": "Après", "change": "Évolution",
                                       "gained": "Arrivés", "lost": "Partis"}))
            if evolution["source"] == "recomputed":
                display(show.callout("Un seul instantané de segments existe : les segments de la première date ont été recalculés "
                             "à partir des achats, avec le même schéma."))
        else:
            display(show.callout("Pas encore de segments enregistrés (étape 02) : l'évolution se mesurera à la prochaine exécution.", "warn"))
    """),
    md("""
        ## Interagir – la performance économique de chaque plan d'action (étapes 02–03)

        Chaque campagne a été envoyée à des clients **ciblés**, tandis qu'un **groupe témoin** tiré au
        hasard ne recevait rien. La différence de taux d'achat entre les deux groupes pendant la
        fenêtre de la campagne est l'**effet** de la campagne (uplift), donné avec son **intervalle de
        confiance à 95 %** : si l'intervalle ne contient pas zéro, l'effet est **significatif**.

        - **CA incrémental** = (CA moyen d'un ciblé − CA moyen d'un témoin) × nombre de ciblés ;
        - **ROI incrémental** = (marge incrémentale − coût) / coût, avec le taux de marge des paramètres.

        Un petit groupe témoin donne un intervalle large : l'effet est alors incertain, même s'il est
        fort en apparence.
    """),
    code("""
        if len(results):
            display(mesurer.results_display(results, p.currency))
            display(mesurer.uplift_chart(results))
            display(mesurer.roi_chart(results, p.currency))
            truth = mesurer.truth_check(results, p.truth_dir)
            if truth is not None:
                display(show.callout(f"Contrôle sur le monde de démonstration : l'effet réel de {charts.fr_percent(truth[0], 0)} "
                             "des campagnes se trouve dans l'intervalle à 95 % estimé.", "ok" if truth[0] >= 0.8 else "warn"))
        else:
            display(show.callout("Aucune campagne avec groupe témoin n'est encore mesurable.", "warn"))
    """),
    md("""
        ## Collecter – les données apportées par chaque opération (étape 04)

        Nombre de contacts entrants, de clients touchés et de données (coordonnées, consentements)
        apportées par opération et par canal.
    """),
    code("""
        if len(collected):
            display(show.table(collected, formats={c: "int" for c in ["collected", "customers", "prospects", "data_items"]},
                               labels={"operation": "Opération", "channel": "Canal", "collected": "Contacts",
                                       "customers": "Personnes", "prospects": "dont prospects", "data_items": "Données apportées"}))
            display(mesurer.collect_chart(collected))
        else:
            display(show.callout("Aucune interaction entrante enregistrée (étape 04).", "warn"))
    """),
    md("""
        ## Alimenter – le remplissage des coordonnées par canal (étape 05)

        Pour chaque coordonnée, la part des clients dont la valeur actuelle a été fournie par chaque
        canal, et le remplissage avant et après le dernier lot intégré.
    """),
    code("""
        alim = mesurer.alimenter_measures(con)
        if len(alim):
            display(mesurer.alimenter_chart(alim))
            display(show.table(fill[["label", "before", "after"]], formats={"before": "pct", "after": "pct"},
                               labels={"label": "Champ", "before": "Avant le lot", "after": "Après le lot"}))
        else:
            display(show.callout("L'étape 05 n'a pas encore été exécutée.", "warn"))
    """),
    md("""
        ## Contrôles et enregistrement

        Une ligne de résultat par campagne, chaque effet dans son intervalle, des effectifs positifs ;
        les indicateurs de cette étape sont enregistrés pour être suivis d'une exécution à l'autre.
    """),
    code("""
        db.write_kpis(con, own, run_id=p.run_id, step="06", as_of=p.as_of)
        mesurer.check_output(con, p.run_id)
        db.commit_step(con, "06", p.run_id)
        display(mesurer.scorecard_display(card[card.step == "06"], p.currency))
    """),
]
