"""Builder of notebooks/02_segmenter/segmenter.ipynb (run: python tools/build_notebooks.py 02).

The behaviour and CLV cells come from tools/notebooks/nb02_clv.py (``CELLS_BEHAVIOUR``,
``CELLS_CLV``) when that file exists; they must leave ``clusters_df`` (customer_id,
cluster) and ``clv_df`` (customer_id, p_alive, clv, expected_purchases). Without it the
notebook sets both to ``None`` and the report says the models were not computed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from build_notebooks import code, md  # noqa: E402


def _clv_cells() -> tuple[list, list]:
    path = HERE / "nb02_clv.py"
    if not path.exists():
        return [], []
    spec = importlib.util.spec_from_file_location("nb02_clv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, "CELLS_BEHAVIOUR", [])), list(getattr(module, "CELLS_CLV", []))


CELLS_BEHAVIOUR, CELLS_CLV = _clv_cells()

TITLE = """
# Étape 02 – Segmenter et cibler

**À quoi sert la segmentation ?** Tous les clients ne se ressemblent pas et ne valent pas la même chose.
Segmenter, c'est les regrouper selon leur comportement d'achat pour **traiter chaque groupe de la façon
qui lui convient** : remercier les meilleurs, faire revenir ceux qui s'éloignent, ne pas dépenser pour
ceux qui sont partis. Ce rapport répond à trois questions :

1. **Qui sont nos clients ?** – segments RFM (récence, fréquence, montant), groupes de comportement ;
2. **Que valent-ils ?** – contribution de chaque segment au chiffre d'affaires, valeur future (CLV),
   probabilité d'être encore actif, mouvements entre segments ;
3. **Qui cibler ?** – les cibles de la prochaine campagne, chacune avec son groupe témoin.
"""

_INTRO = [
    code("""
        from crmlab import charts, db, segmenter, widgets
        from crmlab import display as show

        charts.setup()
        p = segmenter.notebook_params(globals())
        con = db.open_step(p.database, "02", p.run_id, p.as_of)
    """),
    md("## Ce qu'il faut retenir"),
    code("""
        constats = display(show.callout("Les constats s'affichent ici à la fin de l'exécution du carnet."), display_id=True)
    """),
]

_RFM = [
    md("""
        ## 1. La segmentation RFM

        RFM résume l'historique d'achat de chaque client en trois nombres :

        - **R – récence** : depuis combien de temps le client n'a-t-il pas acheté ? Un client récent est un client
          qui se souvient de nous ; c'est le meilleur indicateur d'un prochain achat.
        - **F – fréquence** : combien de fois a-t-il acheté ? Un client fréquent a pris l'habitude.
        - **M – montant** : combien dépense-t-il ?

        Chaque nombre est transformé en **note** (1 = le moins bon, 5 = le meilleur) en comparant le client aux
        autres : les 20 % les plus récents ont R = 5, etc. Les définitions exactes de cette exécution :
    """),
    code("""
        display(show.bullets(segmenter.definitions(p)))
        rfm_df = segmenter.customers_rfm(con, p)
        segments_avant = segmenter.segments_before(con, p)  # pour la section 5
    """),
    md("""
        ### Lire la grille récence × fréquence

        Chaque case croise une note de récence (en colonne) et une note de fréquence (en ligne) ; le nom du
        segment est écrit dans la case. En haut à droite les **Champions** (achat récent et fréquent), en bas à
        gauche les clients **en hibernation**. Les clients « À ne pas perdre » (en haut à gauche) achetaient
        beaucoup mais plus depuis longtemps : c'est là que l'on perd le plus.
    """),
    code("""
        segmenter.chart_grid(rfm_df, p.rfm_bins)
    """),
    code("""
        show.callout(segmenter.grid_sentence(rfm_df))
    """),
    md("""
        ### Atelier : et si l'on changeait les notes ?

        Le nombre de notes et le schéma de segments sont des choix. Dans JupyterLab, faites varier le nombre de
        notes et le schéma ci-dessous et regardez comment la taille, le chiffre d'affaires et la valeur des
        segments changent. (Dans le rapport HTML, seul le tableau des paramètres de l'exécution apparaît.)
    """),
    code("""
        widgets.show_rfm_explorer(rfm_df, p)
    """),
]

_BEHAVIOUR_INTRO = [
    md("""
        ## 2. Les groupes de comportement

        RFM ne dit pas *comment* les clients achètent. Les groupes de comportement rassemblent les clients qui
        achètent de la même façon (canal, panier, ancienneté, catégories, moyens de paiement…), par un algorithme
        de regroupement (k-means) sur des variables standardisées.
    """),
]

_CLV_INTRO = [
    md("""
        ## 3. La valeur future des clients (CLV)

        Le passé ne suffit pas : un client peut avoir beaucoup acheté et être parti. Un modèle probabiliste
        (BG/NBD) estime pour chaque client la **probabilité d'être encore actif** et le **nombre d'achats à venir** ;
        un second modèle (Gamma-Gamma) estime son panier. Leur produit, actualisé et multiplié par la marge, donne
        la **valeur future (CLV)**.
    """),
]

_NO_BEHAVIOUR = code("""
    clusters_df = None  # groupes de comportement non calculés dans cette version du carnet
""")
_NO_CLV = code("""
    clv_df = None  # CLV non calculée dans cette version du carnet
""")

_RANKING = [
    md("""
        ## 4. Que vaut chaque segment ?

        Le tableau classe les segments par leur **contribution au chiffre d'affaires**. Le panier moyen, la
        fréquence et le taux de réachat (part des clients ayant commandé au moins deux fois) décrivent leur
        comportement ; la probabilité d'activité et la CLV moyenne, leur avenir.
    """),
    code("""
        clients = segmenter.attach_models(rfm_df, clv_df, clusters_df)
        classement = segmenter.ranking(clients)
        show.table(classement, segmenter.RANKING_FORMATS, segmenter.RANKING_LABELS, currency=p.currency)
    """),
    code("""
        segmenter.chart_ranking(classement)
    """),
    code("""
        show.callout(segmenter.ranking_sentence(classement))
    """),
    md("""
        ### La concentration du chiffre d'affaires

        La courbe range les clients du meilleur au moins bon et cumule leur chiffre d'affaires. Plus elle monte
        vite, plus la valeur dépend d'une poignée de clients – et plus il est important de les garder.
    """),
    code("""
        courbe, top20 = segmenter.concentration(clients)
        segmenter.chart_concentration(courbe, top20)
    """),
]

_MIGRATION = [
    md("""
        ## 5. Les mouvements entre segments

        Les segments d'aujourd'hui sont comparés à ceux d'il y a quelques mois (paramètre `comparison_months`),
        calculés avec les mêmes définitions sur les achats connus à cette date. Chaque ligne se lit : « parmi les
        clients qui étaient dans ce segment, quelle part est aujourd'hui dans chaque segment ? ». La ligne
        « Pas encore client » montre où arrivent les nouveaux clients.
    """),
    code("""
        mouvements = segmenter.migration(con, p, clients, segments_avant)
        segmenter.chart_migration(mouvements, p.comparison_months)
    """),
    code("""
        show.table(mouvements["flows"].head(12), {"customers": "int", "revenue_before": "money", "revenue_after": "money"},
                   {"before": "Avant", "after": "Aujourd'hui", "customers": "Clients",
                    "revenue_before": f"CA des {p.comparison_months} mois précédents",
                    "revenue_after": f"CA des {p.comparison_months} derniers mois"}, currency=p.currency)
    """),
]

_TARGETS = [
    md("""
        ## 6. Les cibles de la prochaine campagne

        Une cible choisit des clients par segment, groupe de comportement, CLV ou probabilité d'activité
        (paramètre `targets`). **Pourquoi un groupe témoin ?** Une partie des clients ciblés, tirée au hasard, ne
        reçoit pas l'offre. À la fin de la campagne, la différence d'achat entre les clients contactés et les
        témoins mesure ce que la campagne a *réellement* apporté : sans témoin, on attribuerait à la campagne des
        achats qui auraient eu lieu de toute façon. Le tirage est fait **segment par segment** pour que les deux
        groupes aient la même composition, et il est reproductible (graine `seed`).
    """),
    code("""
        campagnes, contacts = segmenter.plan_targets(con, p, clients)
        show.table(campagnes[["name", "target", "offer", "n_selected", "n_treatment", "n_control", "revenue", "mean_clv"]],
                   {"n_selected": "int", "n_treatment": "int", "n_control": "int", "revenue": "money", "mean_clv": "money"},
                   {"name": "Cible", "target": "Sélection", "offer": "Offre", "n_selected": "Clients",
                    "n_treatment": "Contactés", "n_control": "Témoins", "revenue": "CA", "mean_clv": "CLV moyenne"},
                   currency=p.currency)
    """),
    md("""
        ### Atelier : construire une cible

        Choisissez des segments (et, s'ils sont calculés, des groupes, un seuil de CLV, une plage de probabilité
        d'activité) : la taille de la cible, son chiffre d'affaires et sa valeur se mettent à jour.
    """),
    code("""
        widgets.show_target_builder(clients, p)
    """),
]

_END = [
    md("""
        ## 7. Enregistrement et contrôles

        Le carnet enregistre l'instantané des segments à la date d'analyse, les cibles prévues et les indicateurs,
        puis vérifie son propre travail avant de valider : tout ou rien.
    """),
    code("""
        segmenter.write_snapshot(con, clients, as_of=p.as_of, run_id=p.run_id)
        indicateurs = segmenter.kpi_frame(clients, classement, top20, mouvements, campagnes, currency=p.currency,
                                          revenue_months=p.revenue_months, fits=segmenter.model_fits(con, p.run_id),
                                          extra=__EXTRA_KPIS__)
        segmenter.write_kpis(con, indicateurs, run_id=p.run_id, as_of=p.as_of)
        controles = segmenter.run_checks(con, p, classement, contacts, campagnes)
        db.commit_step(con, "02", p.run_id)
        con.close()
        show.bullets(controles)
    """),
    code("""
        # the findings go to the top of the report (section « Ce qu'il faut retenir »)
        constats.update(show.bullets(segmenter.findings(
            clients, classement, top20, mouvements, campagnes, as_of=p.as_of, currency=p.currency,
            revenue_months=p.revenue_months, comparison_months=p.comparison_months)))
    """),
    md("""
        **Étape suivante – 03 Interagir** : les cibles préparées ici reçoivent un plan de contact par canal,
        selon les consentements de chaque client.
    """),
]

_EXTRA = [name for name, cells in (("cluster_kpis", CELLS_BEHAVIOUR), ("clv_kpis", CELLS_CLV)) if cells]
_END[1].source = _END[1].source.replace("__EXTRA_KPIS__", "[" + ", ".join(_EXTRA) + "]")

CELLS = [
    *_INTRO,
    *_RFM,
    *((_BEHAVIOUR_INTRO + CELLS_BEHAVIOUR) if CELLS_BEHAVIOUR else []),
    *((_CLV_INTRO + CELLS_CLV) if CELLS_CLV else []),
    *([] if CELLS_BEHAVIOUR else [_NO_BEHAVIOUR]),
    *([] if CELLS_CLV else [_NO_CLV]),
    *_RANKING,
    *_MIGRATION,
    *_TARGETS,
    *_END,
]
