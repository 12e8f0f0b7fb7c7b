"""Print the params reference (markdown) from the Param declarations.

The ``run`` block comes from :data:`crmlab.params.RUN_PARAMS`, each step block from the
``PARAMS`` of its module; steps not built yet are listed as such.

Usage: ``python tools/params_reference.py`` (prints to stdout), or
``python tools/params_reference.py --readme`` to rewrite the section of README.md between
the markers ``<!-- params-reference:start -->`` and ``<!-- params-reference:end -->``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from crmlab import params  # noqa: E402

START = "<!-- params-reference:start -->"
END = "<!-- params-reference:end -->"

KIND_FR = {
    "str": "texte", "int": "entier", "float": "nombre", "bool": "oui/non", "date": "date",
    "path": "chemin", "list": "liste", "dict": "dictionnaire",
}


def _default(spec: params.Param) -> str:
    value = spec.default
    if value is None or value == "" or value == [] or value == {}:
        return "–"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    text = str(value)
    return f"`{text}`" if len(text) <= 40 else "(voir la déclaration)"


def _constraints(spec: params.Param) -> str:
    parts = []
    if spec.choices:
        parts.append(" / ".join(f"`{c}`" for c in spec.choices))
    if spec.min is not None and spec.max is not None:
        parts.append(f"{spec.min:g} à {spec.max:g}")
    elif spec.min is not None:
        parts.append(f"≥ {spec.min:g}")
    elif spec.max is not None:
        parts.append(f"≤ {spec.max:g}")
    if spec.nullable and "facultatif" not in spec.doc:
        parts.append("facultatif")
    if spec.must_exist:
        parts.append("doit exister")
    return ", ".join(parts)


def table(schema: dict[str, params.Param], block: str) -> list[str]:
    """Markdown table of one block."""
    lines = ["| clé | type | défaut | description |", "|---|---|---|---|"]
    for key, spec in schema.items():
        doc = spec.doc.replace("|", "\\|")
        extra = _constraints(spec)
        lines.append(f"| `{block}.{key}` | {KIND_FR.get(spec.kind, spec.kind)} | {_default(spec)} | "
                     f"{doc}{' (' + extra + ')' if extra else ''} |")
    return lines


def reference() -> str:
    """The whole reference, one section per block."""
    out = [
        "Généré par `python tools/params_reference.py` à partir des déclarations `PARAMS` : ne pas modifier à la main.",
        "",
        "#### Bloc `run:` (commun à toutes les étapes)",
        "",
        *table(params.RUN_PARAMS, "run"),
    ]
    for code, name, module, _ in params.STEPS:
        out += ["", f"#### Bloc `{name}:` – étape {code}, {params.STEP_TITLES[code]}", ""]
        schema = params.step_schema(code)
        if schema is None:
            out.append(f"Étape pas encore disponible (module `{module}` absent).")
        else:
            out += table(schema, name)
    return "\n".join(out) + "\n"


def update_readme(readme: Path = ROOT / "README.md") -> None:
    """Replace the reference section of the README (between the markers)."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"Marqueurs {START} / {END} absents de {readme}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{reference()}{END}{tail}", encoding="utf-8")
    print(f"référence des paramètres mise à jour dans {readme.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--readme" in sys.argv[1:]:
        update_readme()
    else:
        sys.stdout.write(reference())
