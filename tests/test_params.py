"""Tests of the params machinery and of the contract between params files and notebooks.

- loading, ``-p`` overrides, validation messages, relative path resolution;
- every key of every ``params/*.yaml`` is a declared parameter of its step's notebook;
- every notebook's first code cell is the tagged ``parameters`` cell and declares exactly
  the run keys plus its step's ``PARAMS``, as commented literals, without imports.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from crmlab import params
from crmlab.errors import ParamsError
from crmlab.params import Param

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = sorted(p for p in (ROOT / "params").glob("*.yaml") if not p.name.startswith(("_", ".")))  # skip temp files
NOTEBOOKS = {code: ROOT / nb for code, _, _, nb in params.STEPS}
NAMES = {name: code for code, name, _, _ in params.STEPS}

FAKE = {
    "rfm_bins": Param("int", 5, "nombre de classes", min=2, max=10),
    "ratio": Param("float", 0.5, "part", min=0, max=1),
    "active": Param("bool", True, "actif"),
    "mode": Param("str", "auto", "mode", choices=("auto", "manuel")),
    "review_file": Param("path", None, "fichier de revue", nullable=True),
    "fields": Param("list", ["email"], "champs"),
}


@pytest.fixture
def fake_schema(monkeypatch):
    """Every step has the FAKE schema (independent of the real step modules)."""
    monkeypatch.setattr(params, "step_schema", lambda code: FAKE)
    monkeypatch.setattr(params, "block_check", lambda code, block, file: block)


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- loading


def test_defaults_and_values(fake_schema, tmp_path):
    f = write(tmp_path / "p.yaml", {"run": {"name": "client", "as_of": "2024-06-30"}, "segmenter": {"rfm_bins": 4}})
    rp = params.load(f)
    assert rp.run["name"] == "client" and rp.run["as_of"] == "2024-06-30" and rp.run["seed"] == 42
    assert rp.steps["02"] == {"rfm_bins": 4, "ratio": 0.5, "active": True, "mode": "auto", "review_file": None,
                              "fields": ["email"]}
    step = rp.for_step("segmenter")
    assert step["rfm_bins"] == 4 and step["name"] == "client" and step["currency"] == "EUR"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"run": {"nmae": "x"}}, "Paramètre inconnu « run.nmae ».*Vouliez-vous dire « run.name » \\?"),
        ({"segmenter": {"rfm_bin": 4}}, "Paramètre inconnu « segmenter.rfm_bin ».*Vouliez-vous dire « segmenter.rfm_bins » \\?"),
        ({"segmentr": {}}, "Bloc inconnu « segmentr ».*Vouliez-vous dire « segmenter » \\?"),
        ({"run": {"zzz": 1}}, "Paramètre inconnu « run.zzz ».*Clés valides : name, as_of"),
    ],
    ids=["run-typo", "step-typo", "block-typo", "no-close-key"],
)
def test_unknown_keys_suggest_the_closest(fake_schema, tmp_path, data, match):
    f = write(tmp_path / "p.yaml", data)
    with pytest.raises(ParamsError, match=match):
        params.load(f)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"run": {"seed": "abc"}}, "« run.seed » doit être de type nombre entier \\(reçu : 'abc'\\)"),
        ({"run": {"seed": 1.5}}, "« run.seed » doit être de type nombre entier"),
        ({"run": {"seed": -1}}, "« run.seed » = -1 est inférieur au minimum 0"),
        ({"run": {"currency": "XYZ"}}, "Valeur « XYZ » non permise pour « run.currency ».*EUR, USD"),
        ({"run": {"as_of": "2024-13-01"}}, "Date invalide pour « run.as_of » : « 2024-13-01 ».*AAAA-MM-JJ"),
        ({"segmenter": {"ratio": 1.5}}, "« segmenter.ratio » = 1.5 est supérieur au maximum 1"),
        ({"segmenter": {"active": "peut-être"}}, "« segmenter.active » doit être de type booléen"),
        ({"segmenter": {"fields": "email"}}, "« segmenter.fields » doit être de type liste"),
        ({"segmenter": {"rfm_bins": True}}, "« segmenter.rfm_bins » doit être de type nombre entier"),
        ({"run": {"name": None}}, "Le paramètre « run.name » est obligatoire"),
        ({"run": ["a"]}, "Le bloc « run » doit être un dictionnaire"),
        ({"run": {"memory_limit": "beaucoup"}}, "« run.memory_limit » = « beaucoup » n'est pas une quantité de mémoire"),
    ],
    ids=["int-text", "int-float", "min", "choice", "date", "max", "bool", "list", "bool-as-int", "missing",
         "not-a-dict", "memory"],
)
def test_wrong_values(fake_schema, tmp_path, data, match):
    f = write(tmp_path / "p.yaml", data)
    with pytest.raises(ParamsError, match=match):
        params.load(f)


def test_french_dates_and_numbers_are_accepted(fake_schema, tmp_path):
    f = write(tmp_path / "p.yaml", {"run": {"as_of": "30/06/2024"}, "segmenter": {"ratio": "0,25", "active": "non"}})
    rp = params.load(f)
    assert (rp.run["as_of"], rp.steps["02"]["ratio"], rp.steps["02"]["active"]) == ("2024-06-30", 0.25, False)


def test_dotted_overrides(fake_schema, tmp_path):
    f = write(tmp_path / "p.yaml", {"run": {"name": "client", "seed": 1}, "segmenter": {"rfm_bins": 4}})
    rp = params.load(f, ["run.as_of=2011-06-30", "run.seed=7", "segmenter.rfm_bins=3", "segmenter.fields=[email, phone]",
                         "segmenter.mode=manuel"])
    assert rp.run["as_of"] == "2011-06-30" and rp.run["seed"] == 7
    assert rp.steps["02"]["rfm_bins"] == 3 and rp.steps["02"]["fields"] == ["email", "phone"]
    assert rp.steps["02"]["mode"] == "manuel"
    assert params.load(f).steps["02"]["rfm_bins"] == 4  # the file itself is unchanged


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("run.as_of", "Option -p « run.as_of » mal formée.*-p bloc.clé=valeur"),
        ("seed=3", "la clé doit être de la forme bloc.clé"),
        ("a.b.c=1", "la clé doit être de la forme bloc.clé"),
        ("run.sed=3", "Paramètre inconnu « run.sed ».*« run.seed »"),
        ("segmenter.rfm_bins=beaucoup", "« segmenter.rfm_bins » doit être de type nombre entier"),
    ],
    ids=["no-equal", "no-block", "too-deep", "typo", "type"],
)
def test_bad_overrides(fake_schema, tmp_path, override, match):
    f = write(tmp_path / "p.yaml", {"run": {"name": "x"}})
    with pytest.raises(ParamsError, match=match):
        params.load(f, [override])


def test_relative_paths_resolve_against_the_params_folder(fake_schema, tmp_path, monkeypatch):
    client = tmp_path / "clients" / "acme"
    f = write(client / "params.yaml", {"run": {"database": "base/crm.duckdb", "truth_dir": "/abs/verite"},
                                       "segmenter": {"review_file": "../revue.csv"}})
    elsewhere = tmp_path / "ailleurs"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rp = params.load(os.path.relpath(f, elsewhere))
    assert rp.run["database"] == str(client / "base" / "crm.duckdb")
    assert rp.run["truth_dir"] == "/abs/verite"
    assert rp.steps["02"]["review_file"] == str(tmp_path / "clients" / "revue.csv")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert params.load(f, ["run.database=~/x.duckdb"]).run["database"] == str(tmp_path / "x.duckdb")
    # a -p path is relative to the params file too, like the file's own values
    assert params.load(f, ["run.database=y.duckdb"]).run["database"] == str(client / "y.duckdb")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match="Fichier de paramètres introuvable"):
        params.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: [x\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="Fichier de paramètres illisible \\(YAML\\).*ligne"):
        params.load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("juste du texte\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="doit contenir des blocs"):
        params.load(scalar)


def test_for_notebook_applies_injected_blocks(fake_schema, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"name": "demo", "seed": 3, "rfm_bins": 5, "database": "db.duckdb",
          "run": {"name": "papermill-f"}, "segmenter": {"rfm_bins": 6}}
    p = params.for_notebook(ns, "02")
    assert (p.name, p.seed, p.rfm_bins) == ("papermill-f", 3, 6)
    assert p.database == str(tmp_path / "db.duckdb")
    assert p.run_id.startswith("papermill-f-")


# --------------------------------------------------------------------------- notebooks


def parameters_cell(notebook: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(str(notebook), as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{notebook.name} n'a pas de cellule de code"
    return code_cells[0]


def declared(notebook: Path) -> dict[str, object]:
    """Names and literal values of the parameters cell (parsed with ast)."""
    cell = parameters_cell(notebook)
    out = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.AnnAssign | ast.Assign), f"{notebook.name}: instruction non permise : {ast.unparse(node)}"
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        out[target.id] = ast.literal_eval(node.value)
    return out


def built_notebooks() -> list[str]:
    return [code for code, nb in NOTEBOOKS.items() if nb.exists() and params.step_schema(code) is not None]


@pytest.mark.parametrize("code", built_notebooks() or [pytest.param("--", marks=pytest.mark.skip("aucun notebook"))])
def test_parameters_cell_declares_exactly_run_and_step_params(code):
    notebook = NOTEBOOKS[code]
    cell = parameters_cell(notebook)
    assert cell.metadata.get("tags") == ["parameters"], "la première cellule de code doit porter le tag parameters"
    names = declared(notebook)
    expected = set(params.RUN_PARAMS) | set(params.step_schema(code))
    assert set(names) == expected, (f"en trop : {sorted(set(names) - expected)}", f"manquants : {sorted(expected - set(names))}")
    for line in cell.source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # " in line, f"paramètre sans commentaire : {line}"
    assert names["run_id"] == ""  # a run id is generated per execution


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=[p.name for p in PARAMS_FILES])
def test_every_yaml_key_is_a_notebook_parameter(params_file):
    data = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    checked = 0
    for block, values in data.items():
        assert block == "run" or block in NAMES, f"bloc inconnu « {block} » dans {params_file.name}"
        codes = [NAMES[block]] if block != "run" else list(NAMES.values())
        for code in codes:
            if not NOTEBOOKS[code].exists():
                continue
            names = declared(NOTEBOOKS[code])
            unknown = sorted(set(values or {}) - set(names))
            assert not unknown, f"{params_file.name}: {block}.{unknown} non déclarés dans {NOTEBOOKS[code].name}"
            checked += 1
    if not checked:
        pytest.skip(f"aucun notebook des blocs de {params_file.name} n'existe encore")


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=[p.name for p in PARAMS_FILES])
def test_params_files_validate(params_file):
    try:
        rp = params.load(params_file)
    except ParamsError as exc:
        if "introuvable" in str(exc):  # demo data not generated yet, or shared data set absent
            pytest.skip(f"données absentes : {exc}")
        raise
    assert rp.run["name"]
