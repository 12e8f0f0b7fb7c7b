"""Parameters: load a params YAML, apply ``-p`` overrides, validate, hand them to notebooks.

The schema of each block is declared once, as :class:`Param` objects: the ``run`` block
here, each step's block in its step module (``crmlab.constituer.PARAMS`` …). The same
declaration validates a params file, generates each notebook's ``parameters`` cell and
documents the params reference of the README.
"""

from __future__ import annotations

import datetime as dt
import difflib
import glob
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crmlab.errors import ParamsError


@dataclass(frozen=True)
class Param:
    """Declaration of one parameter.

    Attributes
    ----------
    kind : str
        One of ``str, int, float, bool, date, path, list, dict``. ``date`` is an ISO
        ``YYYY-MM-DD`` string; ``path`` a file or folder path resolved against the params
        file's folder.
    default : Any
        Default value (a literal; ``None`` allowed when ``nullable``).
    doc : str
        French description, shown as the comment of the notebook parameter.
    nullable : bool
        ``None`` is accepted.
    choices : tuple, optional
        Allowed values.
    min, max : float, optional
        Bounds for numbers.
    must_exist : bool
        For paths: the file must exist (globs must match).
    check : callable, optional
        ``check(value, key) -> value`` for structured values (lists of sources …);
        raises :class:`ParamsError`.
    paths_in : callable, optional
        ``paths_in(value, base) -> value``: resolve the relative paths a structured
        value holds against ``base``.
    """

    kind: str
    default: Any
    doc: str
    nullable: bool = False
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    must_exist: bool = False
    check: Callable[[Any, str], Any] | None = field(default=None, compare=False)
    paths_in: Callable[[Any, Path], Any] | None = field(default=None, compare=False)


def _memory_limit(value: Any, key: str) -> str:
    text = str(value).strip()
    if text.lower() == "auto" or re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", text, re.IGNORECASE):
        return text
    raise ParamsError(f"« {key} » = « {text} » n'est pas une quantité de mémoire",
                      hint="Indiquez auto, ou une quantité comme 4GB ou 2500MB")


RUN_PARAMS: dict[str, Param] = {
    "name": Param("str", "demo", "nom de l'exécution (dossier runs/<nom>/)"),
    "as_of": Param("date", None, "date de référence des analyses (AAAA-MM-JJ) ; vide = lendemain du dernier achat", nullable=True),
    "database": Param("path", "../../data/demo/crmlab.duckdb", "base clients DuckDB (créée si absente)"),
    "seed": Param("int", 42, "graine du hasard (tirages, groupes témoins, modèles)", min=0),
    "currency": Param("str", "EUR", "devise des montants", choices=("EUR", "USD", "GBP", "CHF")),
    "language": Param("str", "fr", "langue des rapports", choices=("fr",)),
    "run_id": Param("str", "", "identifiant de l'exécution ; vide = généré"),
    "truth_dir": Param("path", None, "dossier de vérité terrain du monde de démo (facultatif)", nullable=True),
    "out_dir": Param("path", None, "dossier de l'exécution (exports, fichiers de revue) ; vide = dossier de la base", nullable=True),
    "memory_limit": Param("str", "auto", "mémoire maximale de la base DuckDB au-delà de laquelle elle passe par le disque "
                          "(auto = moitié de la RAM, 1,5 Gio au plus ; ou par exemple 4GB)", check=_memory_limit),
}

# code, block name, module, notebook (relative to the project root)
STEPS: list[tuple[str, str, str, str]] = [
    ("01", "constituer", "crmlab.constituer", "notebooks/01_constituer/constituer.ipynb"),
    ("02", "segmenter", "crmlab.segmenter", "notebooks/02_segmenter/segmenter.ipynb"),
    ("03", "interagir", "crmlab.interagir", "notebooks/03_interagir/interagir.ipynb"),
    ("04", "collecter", "crmlab.collecter", "notebooks/04_collecter/collecter.ipynb"),
    ("05", "alimenter", "crmlab.alimenter", "notebooks/05_alimenter/alimenter.ipynb"),
    ("06", "mesurer", "crmlab.mesurer", "notebooks/06_mesurer/mesurer.ipynb"),
]

STEP_TITLES = {
    "01": "Constituer la base clients",
    "02": "Segmenter et cibler",
    "03": "Interagir",
    "04": "Collecter",
    "05": "Alimenter",
    "06": "Mesurer",
}


def step_code(step: str) -> str:
    """Return the two-digit code of a step given as code (``"1"``, ``"01"``) or name."""
    for code, name, _, _ in STEPS:
        if step in (code, name, code.lstrip("0")):
            return code
    raise ParamsError(f"Étape inconnue « {step} »", hint=f"Étapes possibles : {', '.join(c for c, *_ in STEPS)}")


def step_name(code: str) -> str:
    """Return the block name (``constituer`` …) of a step code."""
    return {c: n for c, n, _, _ in STEPS}[step_code(code)]


def step_schema(code: str) -> dict[str, Param] | None:
    """Return the ``PARAMS`` of a step's module, or ``None`` if the step is not built yet."""
    module = {c: m for c, _, m, _ in STEPS}[step_code(code)]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, "PARAMS", None)


def block_check(code: str, block: dict, file: str | None) -> dict:
    """Cross-key checks of a step block: the step module's ``check_block(block)``, if any."""
    module = importlib.import_module({c: m for c, _, m, _ in STEPS}[step_code(code)])
    hook = getattr(module, "check_block", None)
    if hook is None:
        return block
    try:
        return hook(block)
    except ParamsError as exc:
        if file and not exc.file:
            exc.file = file
            exc.args = (str(exc),)
        raise


def available_steps(root: Path | None = None) -> list[str]:
    """Codes of the steps whose module and notebook both exist."""
    root = root or project_root()
    return [c for c, _, _, nb in STEPS if (root / nb).exists() and step_schema(c) is not None]


def project_root() -> Path:
    """Folder of the project (holds ``notebooks/`` and ``params/``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "notebooks").is_dir() and (parent / "pyproject.toml").exists():
            return parent
    return Path.cwd()


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a params YAML file into a dict, with French errors."""
    p = Path(path)
    if not p.exists():
        raise ParamsError("Fichier de paramètres introuvable", file=str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ParamsError(
            f"Fichier de paramètres illisible (YAML) : {getattr(exc, 'problem', exc)}",
            file=str(path),
            row=(mark.line + 1) if mark else None,
        ) from exc
    if not isinstance(data, dict):
        raise ParamsError("Le fichier de paramètres doit contenir des blocs « run: », « constituer: »…", file=str(path))
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a copy of ``data``."""
    out = _deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ParamsError(f"Option -p « {item} » mal formée", hint="Écrivez -p bloc.clé=valeur, par exemple -p run.as_of=2011-06-30")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ParamsError(f"Option -p « {item} » : la clé doit être de la forme bloc.clé", hint="Par exemple -p segmenter.rfm_bins=4")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dt.date):
            value = value.isoformat()
        out.setdefault(parts[0], {})
        if not isinstance(out[parts[0]], dict):
            out[parts[0]] = {}
        out[parts[0]][parts[1]] = value
    return out


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def closest(word: str, candidates: list[str]) -> str | None:
    """Closest candidate to a mistyped key, if any is close enough."""
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def validate_block(block: dict, schema: dict[str, Param], block_name: str, base: Path, file: str | None) -> dict:
    """Validate one block and return it complete (defaults filled, paths resolved).

    Unknown keys raise :class:`ParamsError` that suggests the closest valid key.
    """
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ParamsError(f"Le bloc « {block_name} » doit être un dictionnaire clé: valeur", file=file)
    out = {}
    for key in block:
        if key not in schema:
            near = closest(str(key), list(schema))
            hint = f"Vouliez-vous dire « {block_name}.{near} » ?" if near else f"Clés valides : {', '.join(schema)}"
            raise ParamsError(f"Paramètre inconnu « {block_name}.{key} »", file=file, hint=hint)
    for key, spec in schema.items():
        value = block.get(key, _deepcopy(spec.default))
        out[key] = coerce(value, spec, f"{block_name}.{key}", base, file)
    return out


def coerce(value: Any, spec: Param, key: str, base: Path, file: str | None) -> Any:
    """Check and convert one value against its declaration."""
    if value is None or (spec.kind in ("date", "path") and value == ""):
        if spec.nullable:
            return None
        if spec.kind == "str" and spec.default == "":
            return ""
        raise ParamsError(f"Le paramètre « {key} » est obligatoire", file=file, hint=spec.doc)
    kind = spec.kind
    bad = ParamsError(f"Le paramètre « {key} » doit être de type {_KIND_FR[kind]} (reçu : {value!r})", file=file, hint=spec.doc)
    if kind == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        value = str(value)
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            f = float(value)
        except ValueError:
            raise bad from None
        if f != int(f):
            raise bad
        value = int(f)
    elif kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            value = float(str(value).replace(",", ".")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise bad from None
    elif kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "oui", "yes", "1", "false", "non", "no", "0"):
            value = value.lower() in ("true", "oui", "yes", "1")
        if not isinstance(value, bool):
            raise bad
    elif kind == "date":
        value = parse_date(value, key, file)
    elif kind == "path":
        if not isinstance(value, str):
            raise bad
        value = resolve_path(value, base)
        if spec.must_exist and not glob.glob(value):
            raise ParamsError(f"Fichier introuvable pour « {key} » : {value}", file=file, hint="Vérifiez le chemin (relatif au dossier du fichier de paramètres)")
    elif kind == "list":
        if not isinstance(value, list):
            raise bad
    elif kind == "dict":
        if not isinstance(value, dict):
            raise bad
    if spec.choices is not None and value not in spec.choices:
        raise ParamsError(f"Valeur « {value} » non permise pour « {key} »", file=file, hint=f"Valeurs possibles : {', '.join(map(str, spec.choices))}")
    if spec.min is not None and value < spec.min:
        raise ParamsError(f"« {key} » = {value} est inférieur au minimum {spec.min}", file=file, hint=spec.doc)
    if spec.max is not None and value > spec.max:
        raise ParamsError(f"« {key} » = {value} est supérieur au maximum {spec.max}", file=file, hint=spec.doc)
    if spec.paths_in is not None:
        value = spec.paths_in(value, base)
    if spec.check is not None:
        value = spec.check(value, key)
    return value


_KIND_FR = {
    "str": "texte", "int": "nombre entier", "float": "nombre", "bool": "booléen (true/false)",
    "date": "date AAAA-MM-JJ", "path": "chemin de fichier", "list": "liste", "dict": "dictionnaire",
}


def parse_date(value: Any, key: str = "date", file: str | None = None) -> str:
    """Return an ISO date string from ``YYYY-MM-DD`` (or a date), with a French error."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise ParamsError(f"Date invalide pour « {key} » : « {value} »", file=file, hint="Écrivez la date sous la forme AAAA-MM-JJ, par exemple 2024-06-30")


def resolve_path(value: str, base: Path) -> str:
    """Resolve a path against ``base`` unless absolute; ``~`` is expanded."""
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = base / p
    return os.path.normpath(str(p))


@dataclass
class RunParams:
    """Validated parameters of a run: the ``run`` block and one block per step."""

    file: str | None
    run: dict
    steps: dict[str, dict]
    raw: dict

    def for_step(self, code: str) -> dict:
        """Papermill parameters of one step: ``run`` keys plus that step's keys."""
        return {**self.run, **self.steps.get(step_code(code), {})}


def load(path: str | os.PathLike, overrides: list[str] | None = None) -> RunParams:
    """Load, override and validate a params file (every block), before any step runs.

    Raises
    ------
    ParamsError
        Unknown block or key (with the closest valid one), wrong type, missing file …
    """
    file = str(path)
    data = apply_overrides(read_yaml(path), overrides or [])
    base = Path(path).resolve().parent
    blocks = {"run"} | {name for _, name, _, _ in STEPS}
    for key in data:
        if key not in blocks:
            near = closest(str(key), sorted(blocks))
            raise ParamsError(
                f"Bloc inconnu « {key} »", file=file,
                hint=f"Vouliez-vous dire « {near} » ?" if near else f"Blocs valides : {', '.join(sorted(blocks))}",
            )
    run = validate_block(data.get("run") or {}, RUN_PARAMS, "run", base, file)
    steps = {}
    for code, name, _, _ in STEPS:
        schema = step_schema(code)
        if schema is None:
            if data.get(name):
                steps[code] = dict(data[name])
            continue
        _check_collisions(schema, name)
        steps[code] = block_check(code, validate_block(data.get(name) or {}, schema, name, base, file), file)
    return RunParams(file=file, run=run, steps=steps, raw=data)


def _check_collisions(schema: dict[str, Param], name: str) -> None:
    both = set(schema) & set(RUN_PARAMS)
    if both:
        raise ParamsError(f"Conflit de noms entre run et {name} : {sorted(both)}")


# --------------------------------------------------------------------------- notebooks


class NotebookParams(dict):
    """Validated parameters seen from a notebook, with attribute access (``p.as_of``)."""

    __getattr__ = dict.__getitem__


def for_notebook(ns: dict, step: str) -> NotebookParams:
    """Collect, validate and complete the parameters of a notebook.

    Parameters
    ----------
    ns : dict
        The notebook's ``globals()``: the values of the ``parameters`` cell, possibly
        overridden by papermill. Blocks injected by ``papermill -f params.yaml``
        (``run = {...}``, ``segmenter = {...}``) are applied on top.
    step : str
        Step code or name.

    Returns
    -------
    NotebookParams
        Every ``run`` and step parameter; ``run_id`` generated when empty. Relative
        paths of individual parameters are resolved against the current folder (the
        notebook's); those of injected blocks against the project's ``params/`` folder.
    """
    code = step_code(step)
    name = step_name(code)
    schema = step_schema(code) or {}
    base = Path.cwd()
    run_block = {k: ns[k] for k in RUN_PARAMS if k in ns}
    step_block = {k: ns[k] for k in schema if k in ns}
    run_base = step_base = base
    # `papermill -f params/x.yaml` injects whole blocks (run = {...}, segmenter = {...}); their
    # relative paths are relative to the params file, which papermill does not tell: params
    # files live in the project's params/ folder.
    params_dir = project_root() / "params"
    if isinstance(ns.get("run"), dict):
        run_block = {**_resolved(run_block, RUN_PARAMS, base), **ns["run"]}
        run_base = params_dir
    if isinstance(ns.get(name), dict):
        step_block = {**_resolved(step_block, schema, base), **ns[name]}
        step_base = params_dir
    run = validate_block(run_block, RUN_PARAMS, "run", run_base, None)
    block = block_check(code, validate_block(step_block, schema, name, step_base, None), None)
    if not run["run_id"]:
        run["run_id"] = new_run_id(run["name"])
    from crmlab import db  # the step's connection gets the run's memory cap

    db.configure(memory_limit=run["memory_limit"])
    return NotebookParams({**run, **block})


def _resolved(block: dict, schema: dict[str, Param], base: Path) -> dict:
    """Make the relative paths of a block's values absolute against ``base`` (before merging)."""
    out = dict(block)
    for key, value in block.items():
        spec = schema.get(key)
        if spec is None or value is None:
            continue
        if spec.kind == "path" and isinstance(value, str) and value:
            out[key] = resolve_path(value, base)
        elif spec.paths_in is not None:
            out[key] = spec.paths_in(value, base)
    return out


def new_run_id(name: str) -> str:
    """Make a run identifier: ``<name>-<YYYYmmddTHHMMSS>``."""
    return f"{name}-{dt.datetime.now():%Y%m%dT%H%M%S}"


def parameters_cell(code: str, defaults: dict | None = None) -> str:
    """Source of a notebook's ``parameters`` cell: every parameter as an annotated literal.

    Parameters
    ----------
    code : str
        Step code.
    defaults : dict, optional
        Values replacing the declared defaults (e.g. demo paths relative to the notebook).
    """
    defaults = defaults or {}
    schema = step_schema(code) or {}
    lines = ["# Paramètres de l'exécution (bloc run:)"]
    for block in (RUN_PARAMS, schema):
        for key, spec in block.items():
            value = defaults.get(key, spec.default)
            # papermill's parser wants a plain annotation and no "=" in the comment
            doc = spec.doc.replace("=", ":")
            lines.append(f"{key}: {_ANN[spec.kind]} = {_literal(value)}  # {doc}")
        if block is RUN_PARAMS:
            lines.append(f"# Paramètres de l'étape (bloc {step_name(code)}:)")
    return "\n".join(lines)


_ANN = {"str": "str", "int": "int", "float": "float", "bool": "bool", "date": "str", "path": "str", "list": "list", "dict": "dict"}


def _literal(value: Any) -> str:
    text = repr(value)
    return re.sub(r"\s+", " ", text)
