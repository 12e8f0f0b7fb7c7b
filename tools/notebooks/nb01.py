"""Builder of notebooks/01_constituer/constituer.ipynb (run tools/build_notebooks.py 01)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_notebooks import code, md  # noqa: E402

TITLE = """
# Étape 01 – Constituer la base clients

Un CRM ne vaut que par sa base : avant de segmenter, de cibler ou de mesurer quoi que ce soit,
il faut **rassembler** les données clients éparpillées dans les différents systèmes de
l'entreprise (boutique web, cartes de fidélité des magasins, service client…) et n'en faire
**qu'une fiche par personne réelle**.

Ce carnet :
1. charge les fichiers sources décrits dans les paramètres, en signalant chaque ligne inutilisable ;
2. écarte volontairement les données qui ne servent aucun objectif CRM (**minimisation**) ;
3. rapproche les fiches d'une même personne pour construire le **référentiel client unique** (RCU) ;
4. mesure la complétude de la base : c'est l'indicateur **« Organiser »** de l'étape 06.
"""

CELLS = [
    code(
        """
        from IPython.display import display

        from crmlab import charts, constituer, db, params
        from crmlab import display as show

        p = params.for_notebook(globals(), "01")
        charts.setup()
        con = db.open_step(p.database, "01", p.run_id, p.as_of)
        show.callout(f"Exécution **{p.run_id}** – base « {p.database} ».")
        """
    ),
    md(
        """
        ## 1. Charger les sources

        Chaque source est un fichier exporté d'un système (CSV, Excel, Parquet…) et une
        **correspondance de colonnes** : pour chaque champ canonique de crmlab (`email`,
        `ts`, `amount`…), l'expression qui le calcule à partir des colonnes du fichier.
        Les exports français (séparateur `;`, virgule décimale, encodage Windows, dates
        `jj/mm/aaaa`) sont reconnus sans réglage.

        Un **registre des chargements** garde l'empreinte (SHA-256) de chaque fichier déjà
        chargé : relancer l'étape sur le même fichier n'ajoute rien, on peut donc
        réexécuter la chaîne sans risque de doublons.
        """
    ),
    code(
        """
        loads = constituer.load_sources(con, p)
        display(constituer.files_table(loads))
        show.bullets(constituer.load_findings(loads))
        """
    ),
    md(
        """
        ### Lignes écartées et lignes rejetées

        Deux cas très différents :
        - une ligne **écartée** l'est volontairement, par une règle des paramètres
          (par exemple les factures d'annulation) ;
        - une ligne **rejetée** ne peut pas être utilisée telle quelle (date illisible, montant
          non numérique, client non identifié). Elle n'est jamais perdue en silence : elle est
          comptée par motif, conservée dans la table `rejects` et exportée pour correction.
        """
    ),
    code(
        """
        display(constituer.exclusions_table(loads))
        display(constituer.rejects_table(loads))
        display(constituer.reject_examples(con, p))
        show.callout(constituer.export_rejects(con, p))
        """
    ),
    md(
        """
        ## 2. Minimisation : ne garder que l'utile

        Le RGPD impose de ne collecter que les données **nécessaires** à la finalité : un mot de
        passe chiffré, une adresse IP ou une couleur préférée n'aident pas à mieux servir un
        client et exposent l'entreprise en cas de fuite. La liste `keep_fields` des paramètres
        fixe les champs clients conservés ; toutes les autres colonnes présentes dans les
        sources sont **laissées de côté volontairement**, et listées ci-dessous pour que ce
        choix soit visible et discutable.
        """
    ),
    code(
        """
        constituer.apply_minimisation(con, p)
        display(constituer.not_kept_table(loads, p))
        """
    ),
    md(
        """
        ## 3. Le référentiel client unique (RCU)

        Une même personne a souvent plusieurs fiches : un compte sur le site, une carte de
        fidélité en magasin, parfois deux comptes. Tant qu'elles restent séparées, son
        historique est coupé en morceaux, ses scores RFM et sa valeur sont sous-estimés et elle
        risque de recevoir deux fois la même offre.

        Le **RCU** rapproche ces fiches et construit une **fiche de référence** (« golden
        record ») par personne. À ne pas confondre :
        - une **CDP** (Customer Data Platform) collecte et qualifie les données en amont, en
          continu, depuis tous les points de contact ;
        - le **RCU** fusionne les données d'un même client en un profil unique ;
        - le **CRM** exploite ce profil pour agir : visualiser, segmenter, activer les canaux.

        Les rapprochements se font après **normalisation** (casse, accents, espaces ; e-mails
        en minuscules ; téléphones au format international E.164), d'abord sur des clés sûres
        (même e-mail, même téléphone avec un nom compatible), puis par comparaison approchée des
        noms, adresses et dates de naissance. Chaque lien garde la règle ou le score qui l'a
        créé, et aucune fiche source n'est jamais supprimée : une fusion se défait.
        """
    ),
    code(
        """
        view = constituer.build_customer_view(con, p)
        display(show.bullets(constituer.view_findings(view)))
        display(constituer.rules_table(view))
        """
    ),
    md(
        """
        ### Quel seuil de ressemblance ?

        Plus le seuil est bas, plus on fusionne de fiches : on retrouve davantage de doublons,
        mais on risque de mélanger deux personnes différentes. Le tableau montre l'effet du
        seuil ; quand la vérité terrain est connue (monde de démonstration), la **précision**
        (part des fusions justes) et le **rappel** (part des vrais doublons retrouvés) sont
        calculés. Les paires incertaines sont exportées pour qu'une personne tranche.
        """
    ),
    code(
        """
        display(constituer.threshold_table(view))
        display(constituer.threshold_chart(view))
        show.callout(constituer.review_note(view))
        """
    ),
    code(
        """
        display(constituer.merged_examples(view))
        """
    ),
    md(
        """
        ### Règles de survie de la fiche de référence

        Pour chaque champ, la valeur retenue vient de la source **la plus fiable** (priorité
        fixée dans les paramètres), puis de la fiche **la plus récemment mise à jour** ; une
        valeur vide ne remplace jamais une valeur renseignée.
        """
    ),
    code(
        """
        show.callout(view.rules)
        """
    ),
    md(
        """
        ## 4. Mesurer : complétude de la base (« Organiser »)

        Une base n'est utile que si les champs dont dépendent les actions sont remplis :
        pas d'e-mailing sans e-mail, pas de SMS sans mobile, pas de courrier sans adresse.
        La complétude est la part des clients dont chaque champ conservé est renseigné.
        """
    ),
    code(
        """
        completeness = constituer.completeness(con, p)
        display(constituer.completeness_chart(completeness))
        show.callout(constituer.completeness_sentence(completeness))
        """
    ),
    md(
        """
        ## 5. Contrôles et enregistrement

        L'étape vérifie son propre résultat avant de l'enregistrer : un identifiant client
        unique, chaque fiche source rattachée à exactement un client, chaque achat rattaché à un
        client existant. Si un contrôle échoue, rien n'est enregistré et la base reste dans son
        état d'avant l'étape.
        """
    ),
    code(
        """
        kpis = constituer.kpis(con, p, loads, view, completeness)
        db.write_kpis(con, kpis, run_id=p.run_id, step="01", as_of=p.as_of)
        constituer.check_output(con, p)
        db.commit_step(con, "01", p.run_id)
        display(constituer.kpis_table(kpis))
        """
    ),
]
