"""Tests of the ``crmlab`` command (run on the fake chain of conftest, demo-data wiring)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import crmlab
from crmlab import cli, params, runner
from crmlab.params import Param

FAKE_SCHEMA = {"fail": Param("str", "", "échec simulé", choices=("", "input", "check", "other"))}


@pytest.fixture
def fake_cli(monkeypatch, fake_chain, kernel_name, tmp_path):
    """The CLI sees the fake steps 01–03 (schema ``fail``) instead of the real chain."""
    monkeypatch.setattr(params, "step_schema", lambda code: FAKE_SCHEMA)
    monkeypatch.setattr(params, "block_check", lambda code, block, file: block)
    monkeypatch.setattr(runner, "chain_steps", lambda root=None: list(fake_chain))
    monkeypatch.chdir(tmp_path)
    params_file = tmp_path / "client" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump({
        "run": {"name": "essai", "as_of": "2024-06-30", "database": "base/crm.duckdb"},
        "constituer": {"fail": ""},
    }), encoding="utf-8")
    extra = [] if kernel_name == "crmlab" else ["--kernel", kernel_name]
    return params_file, extra


def test_run_success_default_out_and_progress(fake_cli, tmp_path, capsys):
    params_file, extra = fake_cli
    code = cli.main(["run", str(params_file), "--steps", "01,03", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("[01/03] Constituer la base clients … ✓ ") and lines[0].endswith(" s")
    assert lines[1].startswith("[03/03] Interagir … ✓ ")
    index = tmp_path / "runs" / "essai" / "index.html"
    assert lines[2].startswith("Exécution réussie en ") and lines[2].endswith(f"rapport : {index}")
    record = json.loads((index.parent / "run.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in record["steps"]] == ["ok", "skipped", "ok"]
    # relative database path resolved against the params file's folder, not the current folder
    assert record["params"]["run"]["database"] == str(params_file.parent / "base" / "crm.duckdb")
    assert (params_file.parent / "base" / "crm.duckdb").exists()
    assert record["params_file"] == str(params_file)


def test_run_input_error_in_a_step_exits_2(fake_cli, tmp_path, capsys):
    params_file, extra = fake_cli
    code = cli.main(["run", str(params_file), "--out", str(tmp_path / "sortie"), "-p", "segmenter.fail=input", *extra])
    out, err = capsys.readouterr()
    assert code == 2
    assert out.splitlines()[1].startswith("[02/03] Segmenter et cibler … ✗ ")
    assert "Erreur à l'étape 02 (Segmenter et cibler) : Colonne absente dans l'export" in err
    assert "Traceback" not in err
    assert "Exécution en échec" in out
    record = json.loads((tmp_path / "sortie" / "run.json").read_text(encoding="utf-8"))
    assert (record["exit_code"], [s["status"] for s in record["steps"]]) == (2, ["ok", "failed", "not_run"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "run.as_off=2024-01-01"], "Paramètre inconnu « run.as_off » (fichier « {f} »). Vouliez-vous dire « run.as_of » ?"),
        (["-p", "segmenter.fail=peut-être"], "Valeur « peut-être » non permise pour « segmenter.fail »"),
        (["-p", "run.seed=abc"], "Le paramètre « run.seed » doit être de type nombre entier"),
        (["-p", "run.as_of=30/02/2024"], "Date invalide pour « run.as_of »"),
        (["-p", "as_of"], "Option -p « as_of » mal formée"),
        (["--steps", "09"], "Étape inconnue « 09 »"),
    ],
    ids=["unknown-key", "bad-choice", "bad-type", "bad-date", "malformed-p", "bad-steps"],
)
def test_bad_params_exit_2_before_any_step(fake_cli, tmp_path, capsys, args, message):
    params_file, extra = fake_cli
    code = cli.main(["run", str(params_file), "--out", str(tmp_path / "sortie"), *args, *extra])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("Erreur : " + message.format(f=params_file))
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "sortie").exists()


def test_missing_params_file(capsys, tmp_path):
    assert cli.main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err == f"Erreur : Fichier de paramètres introuvable (fichier « {tmp_path / 'absent.yaml'} »)\n"


def test_help_is_french(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Utilisation : crmlab")
    assert "afficher cette aide et quitter" in out and "Codes de sortie" in out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("Utilisation : crmlab run ")
    assert "--steps ÉTAPES" in out and "-p BLOC.CLÉ=VALEUR" in out


def test_usage_errors_in_french(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run"])
    assert exc.value.code == 2
    assert "Erreur : arguments obligatoires manquants : PARAMS.yaml" in capsys.readouterr().err


def test_entry_point_installed():
    exe = Path(sys.executable).with_name("crmlab")
    if not exe.exists():
        pytest.skip("commande crmlab non installée dans cet environnement")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert (res.returncode, res.stdout.strip()) == (0, "crmlab 0.1.0")


def test_demo_data_calls_the_generator(monkeypatch, tmp_path, capsys):
    calls = []

    def generate(out, scale=1.0, seed=42):
        calls.append((Path(out), scale, seed))
        Path(out, "truth").mkdir(parents=True)
        Path(out, "truth", "model.json").write_text("{}")
        return {"persons": 1234, "transactions": 56789, "files": {"web_accounts.csv": 1500}}

    fake = types.ModuleType("crmlab.demo")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "crmlab.demo", fake)
    monkeypatch.setattr(crmlab, "demo", fake, raising=False)  # if the real one was imported already
    assert cli.main(["demo-data", "--scale", "0,05", "--seed", "7", "--out", str(tmp_path / "d")]) == 0
    assert calls == [(tmp_path / "d", 0.05, 7)]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Données de démonstration écrites dans {tmp_path / 'd'} en ")
    assert out[0].endswith("(échelle 0,05, graine 7) :")
    assert out[1] == "  1\u202f234 personnes, 56\u202f789 achats"
    assert out[2].startswith("  web_accounts.csv") and out[2].endswith("1\u202f500 lignes")
    assert cli.main(["demo-data", "--out", str(tmp_path / "e")]) == 0
    assert calls[-1] == (tmp_path / "e", 1.0, 42)  # the generator's own defaults
    assert "(échelle 1,00, graine 42)" in capsys.readouterr().out
