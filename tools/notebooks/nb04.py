"""Builder of notebooks/04_collecter/collecter.ipynb (run tools/build_notebooks.py 04)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_notebooks import code, md  # noqa: E402

TITLE = """
# Étape 04 – Collecter : ce que les contacts entrants nous apprennent

Chaque fois qu'une personne appelle, écrit, remplit un formulaire, répond à une enquête ou
passe en magasin, elle dit quelque chose d'elle : une nouvelle adresse, un numéro de mobile,
son avis, son accord (ou son refus) pour être sollicitée. Collecter, c'est **ne rien perdre de
ces contacts** : les rattacher au bon client, accueillir les inconnus comme **prospects**, et
mesurer ce que chaque opération rapporte en connaissance client.

Ce carnet :
1. lit les exports des différents outils (centre d'appels, formulaires web, boîte e-mail,
   enquêtes, visites en magasin, bulletins papier, tickets SAV), chacun dans son format ;
2. rattache chaque contact à un client avec les règles de l'étape 01, et crée des prospects ;
3. mesure la collecte par opération et par canal (indicateurs « Collecter ») ;
4. calcule la satisfaction (NPS, CSAT) par segment et par canal.
"""

CELLS = [
    code(
        """
        from IPython.display import display

        from crmlab import charts, collecter, db, params
        from crmlab import display as show

        p = params.for_notebook(globals(), "04")
        charts.setup()
        con = db.open_step(p.database, "04", p.run_id, p.as_of)
        show.callout(f"Exécution **{p.run_id}** – base « {p.database} ».")
        """
    ),
    md(
        """
        ## 1. Les contacts entrants et ce qu'ils apprennent

        | Source | Ce qu'elle apprend |
        |---|---|
        | Centre d'appels | motifs de contact, changements de coordonnées, refus de démarchage |
        | Formulaires web | e-mail, mobile, code postal, inscription à la newsletter |
        | Boîte e-mail du service client | adresse e-mail réelle, motifs (livraison, retours), désinscriptions |
        | Enquêtes de satisfaction | NPS (0–10) et CSAT (1–5) : la voix du client |
        | Visites en magasin | fréquentation, carte de fidélité présentée ou non |
        | Bulletins papier | adresse postale, accord pour le courrier |
        | Tickets SAV | problèmes ouverts, satisfaction après résolution |

        Chaque fichier est décrit dans les paramètres par une **correspondance de colonnes** vers
        les champs communs (canal, nature, date, opération, note, coordonnées, consentement). Une
        enquête dont chaque réponse porte plusieurs notes (ici NPS et CSAT) est déclarée **une seule
        fois**, avec `scores: {nps: …, csat: …}` : une réponse est un seul contact (la personne n'est
        comptée qu'une fois) et chacune de ses notes compte dans son indicateur. Une
        ligne invalide (canal inconnu, note illisible ou hors échelle, date manquante) arrête l'étape avec un
        message qui nomme le fichier, la colonne et la ligne — ou, avec `bad_rows: rejeter`, est
        écartée et comptée.

        **Minimisation (RGPD)** : le texte libre (messages, commentaires) peut contenir n'importe
        quoi, y compris des données sensibles (santé, opinions). Il n'est conservé que si
        `keep_text: true`, c'est-à-dire si une finalité précise le justifie ; il n'apparaît jamais
        dans ce rapport, pas plus que les e-mails ou téléphones complets.
        """
    ),
    code(
        """
        files, rejected = collecter.collect(con, p)
        display(show.table(files, formats={"rows_read": "int", "rows_kept": "int", "rows_rejected": "int"},
                           labels={"source": "Source", "file": "Fichier", "status": "État", "rows_read": "Lignes lues",
                                   "rows_kept": "Gardées", "rows_rejected": "Rejetées"}))
        display(collecter.rejected_display(rejected))
        """
    ),
    md(
        """
        ## 2. Qui est derrière chaque contact ?

        Les règles sont celles du référentiel client unique (étape 01), appliquées après
        normalisation : numéro de carte s'il est donné, **même e-mail**, ou **même téléphone et nom
        compatible** (un fixe familial seul ne suffit jamais). Une personne inconnue qui laisse un
        e-mail ou un téléphone devient un **prospect** : une fiche est créée pour elle, et ses
        contacts suivants s'y rattacheront. Un contact sans e-mail ni téléphone (numéro masqué, nom
        seul) reste anonyme : il compte dans le volume, pas dans la connaissance client.
        """
    ),
    code(
        """
        display(show.table(collecter.rules_table(con), formats={"Contacts": "int"}))
        """
    ),
    md(
        """
        ### Les données apportées

        Une **donnée apportée** est un champ de contact (e-mail, téléphone, adresse, code postal,
        ville) que la fiche du client n'avait pas (*nouveau*) ou avait avec une autre valeur
        (*modifié*). Chaque changement est consigné dans l'historique des contacts ; l'étape 05
        décidera de la valeur à retenir. Les accords et refus exprimés sont enregistrés
        immédiatement dans les consentements : un « ne plus être démarché » s'applique dès la
        prochaine campagne.
        """
    ),
    code(
        """
        display(show.table(collecter.items_table(con)))
        display(show.table(collecter.consent_changes(con)))
        """
    ),
    md(
        """
        ## 3. Mesurer la collecte (« Collecter »)

        Par opération et par canal : contacts collectés, personnes touchées, nouveaux prospects,
        données apportées, taux de rapprochement à une fiche connue et lignes écartées. Un canal
        mal rapproché est un canal où l'on ne demande pas assez l'e-mail ou la carte de fidélité.
        """
    ),
    code(
        """
        measures = collecter.collect_measures(con, rejected)
        totals = collecter.collect_totals(con)
        display(collecter.measures_display(measures))
        """
    ),
    md(
        """
        ## 4. Satisfaction : NPS et CSAT

        - **NPS** (Net Promoter Score) : part des promoteurs (9–10) moins part des détracteurs
          (0–6), de −100 à +100.
        - **CSAT** : part des notes 4 ou 5 sur 5.

        Chaque valeur est donnée avec son intervalle à 95 % et son nombre de réponses : un NPS sur
        20 réponses peut varier de 40 points d'un mois à l'autre sans que rien ne change.
        """
    ),
    code(
        """
        sat_segment = collecter.satisfaction(con, p, "segment")
        sat_channel = collecter.satisfaction(con, p, "channel")
        display(collecter.satisfaction_display(sat_segment, "Segment"))
        display(collecter.satisfaction_chart(sat_segment))
        """
    ),
    code(
        """
        display(collecter.satisfaction_display(sat_channel, "Canal"))
        show.bullets(collecter.findings(measures, totals, sat_segment))
        """
    ),
    md(
        """
        ## 5. Contrôles et enregistrement

        Identifiants de contact uniques, chaque contact rattaché pointe vers un client existant,
        chaque note dans son échelle, chaque prospect rattaché à sa fiche, aucun texte libre gardé
        sans `keep_text`. Si un contrôle échoue, rien n'est enregistré.
        """
    ),
    code(
        """
        kpis = collecter.kpis(measures, totals, sat_segment, sat_channel)
        db.write_kpis(con, kpis, run_id=p.run_id, step="04", as_of=p.as_of)
        collecter.check_output(con, p)
        db.commit_step(con, "04", p.run_id)
        display(collecter.kpis_table(kpis))
        """
    ),
]
