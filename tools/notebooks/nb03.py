"""Builder of notebooks/03_interagir/interagir.ipynb (run tools/build_notebooks.py 03)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_notebooks import code, md  # noqa: E402

TITLE = """
# Étape 03 – Interagir : le bon canal pour le bon client

Segmenter ne sert à rien si l'on envoie ensuite le même message, par le même canal, à tout
le monde. Interagir, c'est choisir **pour chaque cible** le canal qui rapporte le plus par
rapport à ce qu'il coûte : un e-mail coûte quelques centimes, un appel d'un conseiller
plusieurs euros ; un appel n'est rentable que s'il déclenche nettement plus d'achats.

Ce carnet :
1. mesure, sur les **campagnes passées qui avaient un groupe témoin**, quel segment répond à
   quel canal (et ce que l'on ne peut pas encore conclure) ;
2. construit le **plan d'action** des cibles de l'étape 02 : un canal par client, parmi ceux
   auxquels il a consenti et par lesquels on peut le joindre, dans un budget ;
3. écrit les **fichiers de ciblage** pour les outils d'envoi, sans témoins ni clients sans
   consentement ;
4. dresse la liste des clients à **appeler avant qu'il ne soit trop tard** (anticiper et réagir).
"""

CELLS = [
    code(
        """
        from IPython.display import display

        from crmlab import charts, db, interagir, params, uplift
        from crmlab import display as show

        p = params.for_notebook(globals(), "03")
        charts.setup()
        con = db.open_step(p.database, "03", p.run_id, p.as_of)
        interagir.resolve_as_of(con, p)
        show.callout(f"Exécution **{p.run_id}** – date de référence {p.as_of}.")
        """
    ),
    md(
        """
        ## 1. Quel segment répond à quel canal ?

        Pour savoir ce qu'une campagne a **vraiment** apporté, on compare les clients ciblés à un
        **groupe témoin** tiré au hasard dans la même population et volontairement non contacté.
        Le témoin achète aussi (par habitude, grâce aux soldes…) : seul l'écart entre les deux
        groupes, l'**uplift**, est dû à la campagne.

        - *Réponse* : un achat dans les `response_window_days` jours qui suivent le début de la campagne.
        - *Segment* : celui du client **au début de la campagne**, recalculé à partir de ses achats
          d'alors (grille R × F de l'étape 02), pas celui d'aujourd'hui.
        - *Intervalle à 95 %* (méthode de Newcombe) : la zone où se trouve vraisemblablement l'effet
          réel. S'il contient zéro, l'effet n'est pas démontré.
        - Une case avec moins de `min_cell_size` clients dans l'un des deux groupes est **signalée**
          et n'est pas utilisée telle quelle : sur 20 témoins, un achat de plus ou de moins change
          le taux de 5 points.
        """
    ),
    code(
        """
        responses = interagir.campaign_responses(con, p)
        table = interagir.channel_uplift(responses, p)
        best = interagir.best_channels(table)
        display(interagir.uplift_display(table, p.currency))
        """
    ),
    code(
        """
        display(interagir.uplift_chart(table))
        show.bullets(interagir.uplift_findings(table, best, p))
        """
    ),
    md(
        """
        ### Maîtrise des coûts ou offre individualisée ?

        Deux logiques s'affrontent. La **maîtrise des coûts** privilégie les canaux peu chers et
        massifs (e-mail, SMS) : on touche beaucoup de monde pour peu, même si chacun répond peu.
        L'**offre individualisée** (appel d'un conseiller, courrier personnalisé) coûte cher par
        contact et ne se justifie que pour des clients à forte valeur qui y répondent nettement
        mieux. La règle de décision ci-dessous tranche client par client :

        > valeur attendue d'un contact = taux de marge × chiffre d'affaires incrémental attendu − coût du contact

        Le chiffre d'affaires incrémental attendu d'un segment × canal est l'uplift du taux d'achat
        multiplié par le panier moyen des clients ciblés qui ont acheté. Un canal sans mesure
        fiable pour le segment n'est pas utilisé : mieux vaut le **tester** avec un groupe témoin
        que de parier.
        """
    ),
    code(
        """
        estimates = interagir.channel_estimates(table, p.channel_costs)
        targets = interagir.planned_targets(con, p.as_of)
        members = interagir.plan_members(con, p, targets)
        assign = interagir.choose_channels(members, estimates, p.channel_costs,
                                           margin_rate=p.plan_margin_rate, budget=p.budget)
        summary = interagir.plan_summary(assign, targets, p.plan_margin_rate)
        display(interagir.plan_display(summary, p.currency))
        show.bullets(interagir.plan_findings(summary, assign, p))
        """
    ),
    md(
        """
        Chaque cible garde son **groupe témoin** (tiré à l'étape 02) : ses membres reçoivent « leur »
        canal sur le papier, mais ne sont pas contactés. C'est ce qui permettra à l'étape 06 de
        mesurer l'effet réel de chaque canal du plan.
        """
    ),
    code(
        """
        display(show.table(interagir.reasons_table(assign, targets), formats={"Clients": "int"}))
        """
    ),
    md(
        """
        ### Et si les coûts ou le budget changeaient ?

        Dans JupyterLab, modifiez le coût d'un canal ou fixez un budget (0 = pas de plafond) : le
        plan se recalcule. Avec un budget, les contacts au **meilleur rendement attendu** (marge
        attendue par euro dépensé) passent en premier. Le tableau ci-dessus reste la version
        enregistrée, celle des paramètres.
        """
    ),
    code(
        """
        interagir.plan_explorer(members, estimates, targets, p)
        """
    ),
    md(
        """
        ## 2. Enregistrer le plan et écrire les fichiers de ciblage

        Chaque cible × canal devient une **campagne prévue** (statut `planned`) avec ses ciblés et
        ses témoins : la prochaine exécution pourra la mesurer. Les fichiers pour les outils
        d'envoi (CSV en UTF-8 avec BOM et `;`, qu'Excel en français ouvre directement) ne
        contiennent que **les champs utiles au canal** (pas de téléphone dans un fichier
        d'e-mails), **jamais un témoin**, **jamais un client sans consentement** pour ce canal ou
        sans adresse valide. Une cellule qui commence par `=`, `+`, `-` ou `@` est précédée d'une
        apostrophe pour qu'un tableur ne l'exécute pas comme une formule (un numéro `+33…`
        s'affiche normalement).
        """
    ),
    code(
        """
        campaigns, contacts = interagir.plan_campaigns(assign, targets, p)
        interagir.store_plan(con, campaigns, contacts, p)
        files = interagir.export_plan(con, contacts, p)
        display(interagir.exports_display(files))
        """
    ),
    md(
        """
        ## 3. Anticiper et réagir

        Certains clients ne doivent pas attendre la prochaine campagne : un client précieux dont la
        **probabilité d'être encore actif** vient de chuter, un **détracteur** qui l'a dit dans une
        enquête récente, un **ticket SAV** resté ouvert. La liste ci-dessous (données personnelles
        masquées) est exportée en entier pour le service client et les vendeurs.
        """
    ),
    code(
        """
        alert_list = interagir.alerts(con, p)
        display(interagir.alerts_display(alert_list, 15, p.currency))
        display(show.bullets(interagir.alert_findings(alert_list, con)))
        show.callout(interagir.export_alerts(alert_list, p))
        """
    ),
    md(
        """
        ## 4. Contrôles et enregistrement

        Avant d'enregistrer, l'étape vérifie ses propres résultats : chaque campagne prévue a un
        canal et un coût, chaque client ciblé a consenti au canal, personne n'est à la fois ciblé
        et témoin, le budget est respecté, aucun fichier ne contient de témoin ni de client sans
        consentement.
        """
    ),
    code(
        """
        kpis = interagir.kpis(table, summary, alert_list, files)
        db.write_kpis(con, kpis, run_id=p.run_id, step="03", as_of=p.as_of)
        interagir.check_output(con, p, files)
        db.commit_step(con, "03", p.run_id)
        display(interagir.kpis_table(kpis, p.currency))
        """
    ),
]
