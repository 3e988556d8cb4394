"""The package's layers hold: `lint-imports` checks the contracts in pyproject.toml ([tool.importlinter]), among
them that the services import no FastAPI or Starlette and that neither they, the activities nor the workflows
import followthrough.api; and the contracts that name what workflows and the domain may not import name every
layer there is, and every module of the package sits in a layer."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "followthrough"


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    run = _lint()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for name in ("services import no fastapi/starlette",
                 "activities, services and workflows do not import followthrough.api"):
        assert f"{name} KEPT" in run.stdout, run.stdout[-4000:]


def test_a_contract_the_code_breaks_fails_the_check(tmp_path: Path):
    # The same analysis with a contract the code does break (the API imports FastAPI) must fail: the check
    # above reads the real import graph.
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "followthrough"\ninclude_external_packages = true\n\n'
                      '[[tool.importlinter.contracts]]\nname = "api imports no fastapi"\ntype = "forbidden"\n'
                      'source_modules = ["followthrough.api"]\nforbidden_modules = ["fastapi"]\n')
    run = _lint("--config", str(config))
    assert run.returncode != 0, run.stdout[-4000:]
    assert "api imports no fastapi BROKEN" in run.stdout, run.stdout[-4000:]


def test_every_module_sits_in_a_layer_and_the_forbidden_lists_name_every_layer():
    layers = _contracts()[next(n for n in _contracts() if n.startswith("Layers:"))]["layers"]
    in_layers = {name.strip() for layer in layers for name in layer.split("|")}
    top = {f"followthrough.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {f"followthrough.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert top == in_layers, (f"modules at the package's top outside the layers: {sorted(top - in_layers)}; "
                              f"layers naming nothing: {sorted(in_layers - top)}")
    for name in ("Workflows import only the domain", "The domain imports nothing else of ours and does no I/O"):
        contract = _contracts()[name]
        allowed = {"followthrough.domain", *contract["source_modules"]}
        missing = sorted(top - allowed - set(contract["forbidden_modules"]))
        assert not missing, f"add {missing} to the forbidden modules of the contract {name!r} in pyproject.toml"
