"""Builder of notebooks/05_alimenter/alimenter.ipynb (run: python tools/build_notebooks.py 05)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from build_notebooks import code, md  # noqa: E402

TITLE = """
# Étape 05 – Alimenter la base

Une base clients vieillit vite : on déménage, on change d'opérateur ou d'adresse e-mail, on se
désabonne d'une lettre d'information. Chaque mois, des achats arrivent des caisses et du site, des
fiches sont créées ou modifiées, et les contacts entrants de l'étape 04 (appels, formulaires, visites)
apportent de nouvelles coordonnées. **Alimenter**, c'est faire entrer ces données dans la base sans
rien casser, et **vérifier régulièrement** qu'elle reste à jour.

Ce carnet :
1. intègre le nouveau lot de fichiers, une seule fois (un fichier déjà intégré est ignoré), et
   refuse en bloc un fichier qui ne respecte pas le format attendu ;
2. applique les mises à jour de coordonnées selon des **règles explicites**, et garde la trace de
   chaque changement dans un **historique** qui permet de revenir en arrière ;
3. contrôle la **qualité** (e-mails, téléphones, codes postaux) et la **fraîcheur** des coordonnées ;
4. mesure l'indicateur **« Alimenter »** : la part des coordonnées remplie par chaque canal.
"""

CELLS = [
    code("""
        from IPython.display import display

        from crmlab import alimenter, charts, db, params
        from crmlab import display as show

        charts.setup()
        p = params.for_notebook(globals(), "05")
        con = db.open_step(p.database, "05", p.run_id, p.as_of)
        show.callout(f"Exécution **{p.run_id}** – base « {p.database} ».")
    """),
    md("""
        ## 1. Intégrer le nouveau lot

        Les fichiers du lot sont décrits dans les paramètres (`alimenter.sources`), comme à l'étape 01 :
        un nom de source, un type (achats, fiches clients, consentements…), un chemin et la
        correspondance des colonnes. Deux garanties :

        - **une seule fois** : l'empreinte de chaque fichier est notée dans le registre des
          chargements ; relancer l'étape sur le même lot ne change rien ;
        - **tout ou rien** : si un fichier ne respecte pas le format attendu (colonne absente, trop de
          valeurs illisibles, identifiants en double), le lot entier est refusé avec un message qui dit
          quoi corriger, et la base reste exactement dans son état d'avant.

        Les lignes isolées qui ne peuvent pas être utilisées (date illisible, montant non numérique)
        sont rejetées une à une et listées ; elles ne sont jamais perdues en silence.
    """),
    code("""
        result = alimenter.feed(con, p)
        display(alimenter.files_display(result))
    """),
    md("""
        ## 2. Les règles de mise à jour

        Quand une nouvelle valeur arrive pour un client déjà connu, il faut décider si elle remplace
        l'ancienne. Les règles appliquées, champ par champ :

        1. une valeur **invalide** (e-mail mal formé, numéro impossible) n'est jamais appliquée : elle
           est signalée ;
        2. une valeur **identique** (à la casse et aux accents près) **confirme** la donnée : elle
           compte pour sa fraîcheur ;
        3. sinon, la valeur de la source **la plus fiable** l'emporte (rangs `source_priority` des
           paramètres), et à fiabilité égale **la plus récente** ;
        4. une valeur vide n'efface jamais une valeur renseignée ;
        5. une **désinscription** (opt-out) s'applique **immédiatement**, quelle que soit la source et
           même si une inscription du même lot est plus récente : le droit d'opposition prime. Une
           réinscription n'est retenue que si elle est postérieure à la désinscription connue.

        Chaque changement est écrit dans l'**historique des contacts** (ancienne et nouvelle valeur,
        canal, source, date).
    """),
    code("""
        display(alimenter.outcomes_display(result))
        display(alimenter.examples_display(result, n=12))
    """),
    md("""
        ### L'historique à l'œuvre

        Grâce à l'historique, on peut reconstituer la fiche d'un client **à n'importe quelle date**,
        et donc expliquer d'où vient chaque valeur ou revenir en arrière après une erreur
        (`crmlab.history.rollback`). Voici la fiche du client le plus modifié par ce lot, avant et
        après (valeurs masquées).
    """),
    code("""
        display(alimenter.trace_display(con, result))
    """),
    md("""
        ## 3. Qualité des coordonnées

        Une coordonnée fausse coûte cher : un e-mail qui rebondit, un SMS qui n'arrive pas, un
        courrier retourné. On vérifie la **syntaxe des e-mails** (sans interroger le réseau), la
        **validité des numéros de téléphone** (indicatif, longueur, plages attribuées) et le **format
        des codes postaux** selon le pays. Les valeurs invalides sont listées, pas effacées : c'est au
        service client de les corriger lors du prochain contact.
    """),
    code("""
        invalid_summary, invalid_examples, invalid_base = alimenter.invalid_display(result, con, p)
        display(invalid_summary)
        display(invalid_examples)
    """),
    md("""
        ## 4. Fraîcheur

        Une coordonnée est **confirmée** quand une source datée la fournit ou la répète : une mise à
        jour de compte, une fiche de caisse, un formulaire, un appel. Au-delà de `freshness_months`
        mois sans confirmation, on ne peut plus s'y fier : ces clients sont à relancer pour vérifier
        leurs coordonnées.
    """),
    code("""
        fresh_share, stale, reference = alimenter.freshness(con, p)
        display(show.callout(
            f"**{charts.fr_percent(fresh_share)}** des clients ont des coordonnées confirmées depuis moins de "
            f"{p.freshness_months} mois (au {reference:%d/%m/%Y}) ; {charts.fr_number(len(stale))} sont à faire confirmer.",
            "ok" if fresh_share >= 0.8 else "warn",
        ))
        display(alimenter.stale_display(stale, p.list_size))
    """),
    md("""
        ## 5. Mesurer : le remplissage par canal (« Alimenter »)

        Pour chaque coordonnée, quel canal a fourni la valeur actuelle ? Cette mesure montre quels
        points de contact nourrissent vraiment la base, et où concentrer les efforts de collecte.
        Le tableau compare aussi le remplissage avant et après ce lot.
    """),
    code("""
        by_channel = alimenter.fill_by_channel(con)
        display(alimenter.channel_chart(by_channel))
        display(alimenter.fill_display(result))
        show.bullets(alimenter.findings(result, fresh_share, stale, p.freshness_months, by_channel))
    """),
    md("""
        ## 6. Contrôles et enregistrement

        Avant d'enregistrer, l'étape vérifie son propre résultat : identifiants clients uniques,
        chaque fiche rattachée à un seul client existant, chaque achat rattaché, chaque élément du
        lot intégré une seule fois. Si un contrôle échoue, rien n'est enregistré.
    """),
    code("""
        kpis = alimenter.kpis(result, fresh_share, stale, by_channel, invalid_base)
        db.write_kpis(con, kpis, run_id=p.run_id, step="05", as_of=p.as_of)
        alimenter.check_output(con)
        db.commit_step(con, "05", p.run_id)
        display(alimenter.kpis_display(kpis))
    """),
]
