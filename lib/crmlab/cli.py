"""The ``crmlab`` command: ``crmlab run`` (the chain) and ``crmlab demo-data`` (the demo world).

Exit codes: 0 success, 2 bad input (params, ``--steps``, a step raising ``InputError``),
1 any other failure. Errors of crmlab are printed as ``Erreur : <message>`` on stderr,
without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from crmlab import __version__
from crmlab.errors import CrmlabError, InputError


class _FrenchFormatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):  # noqa: D102
        return super().add_usage(usage, actions, groups, prefix="Utilisation : ")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser speaking French, exiting with code 2 on a usage error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _FrenchFormatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = "arguments"
        self._optionals.title = "options"
        self.add_argument("-h", "--help", action="help", default=argparse.SUPPRESS, help="afficher cette aide et quitter")

    def error(self, message: str):  # noqa: D102
        self.print_usage(sys.stderr)
        message = (message.replace("the following arguments are required", "arguments obligatoires manquants")
                   .replace(": ", " : ", 1)
                   .replace("unrecognized arguments", "arguments non reconnus")
                   .replace("invalid choice", "choix invalide")
                   .replace("expected one argument", "une valeur est attendue")
                   )
        self.exit(2, f"Erreur : {message}\n")


def _number(text: str) -> float:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"nombre attendu (reçu « {text} »), par exemple 0.05") from None


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``crmlab`` (French help)."""
    parser = _Parser(
        prog="crmlab",
        description="crmlab – atelier Jupyter de méthode CRM en six étapes sur vos données clients.",
        epilog=(
            "Exemples :\n"
            "  crmlab demo-data                          générer les données de démonstration (data/demo)\n"
            "  crmlab run params/demo.yaml               exécuter la chaîne → runs/demo/index.html\n"
            "  crmlab run params/client.yaml --steps 01-02 -p run.as_of=2024-06-30\n\n"
            "Codes de sortie : 0 succès, 2 données ou paramètres à corriger, 1 autre erreur."
        ),
    )
    parser.add_argument("--version", action="version", version=f"crmlab {__version__}", help="afficher la version et quitter")
    sub = parser.add_subparsers(dest="command", title="commandes", metavar="COMMANDE", parser_class=_Parser)

    p_run = sub.add_parser(
        "run", prog="crmlab run", help="exécuter la chaîne des notebooks et écrire le dossier d'exécution",
        description="Valide tous les paramètres, puis exécute chaque étape disponible dans l'ordre "
                    "(papermill) et écrit le dossier d'exécution : notebooks exécutés, rapports HTML, "
                    "index.html et run.json. La première étape en échec arrête la chaîne.",
    )
    p_run.add_argument("params", metavar="PARAMS.yaml", help="fichier de paramètres (par ex. params/demo.yaml)")
    p_run.add_argument("--steps", metavar="ÉTAPES",
                       help="étapes à exécuter : codes, numéros, noms ou intervalles (01,03-06 ; 2 ; segmenter) ; défaut : toutes")
    p_run.add_argument("--out", metavar="DOSSIER", help="dossier d'exécution (défaut : runs/<run.name>/)")
    p_run.add_argument("-p", "--param", dest="overrides", action="append", default=[], metavar="BLOC.CLÉ=VALEUR",
                       help="remplacer un paramètre, par ex. -p run.as_of=2011-06-30 (répétable)")
    p_run.add_argument("--kernel", default="crmlab", metavar="NOYAU", help="noyau Jupyter (défaut : crmlab)")

    p_demo = sub.add_parser(
        "demo-data", prog="crmlab demo-data", help="générer les données de démonstration et leur vérité terrain",
        description="Écrit le monde de démonstration (deux systèmes sources, transactions, consentements, "
                    "campagnes, interactions, lot ultérieur) et sa vérité terrain dans truth/.",
    )
    p_demo.add_argument("--scale", type=_number, default=None, metavar="S", help="taille relative (1 = défaut ; 0,05 pour les tests)")
    p_demo.add_argument("--seed", type=int, default=None, metavar="N", help="graine du hasard (même graine ⇒ mêmes fichiers)")
    p_demo.add_argument("--out", default="data/demo", metavar="DOSSIER", help="dossier de sortie (défaut : data/demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crmlab`` command; returns (and exits with) the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            code = cmd_run(args)
        else:
            code = cmd_demo_data(args)
    except InputError as exc:
        print(f"Erreur : {exc}", file=sys.stderr)
        code = exc.exit_code
    except CrmlabError as exc:
        print(f"Erreur : {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("Interrompu.", file=sys.stderr)
        code = 1
    return code


def cmd_run(args: argparse.Namespace) -> int:
    """``crmlab run``: validate, run the chain, print progress and the index path."""
    from crmlab import runner
    from crmlab.charts import fr_number

    def echo(*a, **k):
        k.setdefault("flush", True)
        print(*a, **k)

    result = runner.run(args.params, steps=args.steps, out=args.out, overrides=args.overrides,
                        kernel_name=args.kernel, echo=echo)
    verdict = "Exécution réussie" if result.status == "ok" else "Exécution en échec"
    print(f"{verdict} en {fr_number(result.seconds, 1)} s – rapport : {result.index}")
    return result.exit_code


def cmd_demo_data(args: argparse.Namespace) -> int:
    """``crmlab demo-data``: generate the demo world and summarise what was written."""
    from crmlab.charts import fr_number

    try:
        from crmlab import demo
    except ModuleNotFoundError as exc:
        if exc.name != "crmlab.demo":
            raise
        raise CrmlabError("Le générateur de données de démonstration (crmlab.demo) n'est pas disponible") from None
    kwargs = {}
    if args.scale is not None:
        kwargs["scale"] = args.scale
    if args.seed is not None:
        kwargs["seed"] = args.seed
    defaults = {k: v.default for k, v in inspect.signature(demo.generate).parameters.items()
                if v.default is not inspect.Parameter.empty}
    out = Path(args.out)
    t0 = time.perf_counter()
    summary = demo.generate(out, **kwargs)
    seconds = time.perf_counter() - t0
    scale = kwargs.get("scale", defaults.get("scale"))
    seed = kwargs.get("seed", defaults.get("seed"))
    print(f"Données de démonstration écrites dans {out} en {fr_number(seconds, 1)} s "
          f"(échelle {fr_number(scale, 2) if isinstance(scale, (int, float)) else scale}, graine {seed}) :")
    if isinstance(summary, dict) and isinstance(summary.get("files"), dict):
        print(f"  {fr_number(summary.get('persons', 0))} personnes, {fr_number(summary.get('transactions', 0))} achats")
        for name, rows in summary["files"].items():
            print(f"  {name:<45} {fr_number(rows):>10} lignes")
    else:
        files = sorted(p for p in out.rglob("*") if p.is_file())
        for p in files:
            print(f"  {p.relative_to(out)} ({fr_number(p.stat().st_size / 1024, 0)} Ko)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
