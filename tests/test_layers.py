"""The package's layers hold: `lint-imports` checks the contracts in pyproject.toml ([tool.importlinter]), and
the contracts that name what workflows and the domain may not import name every module there is."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "followthrough"


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_forbidden_lists_name_every_module_of_the_package():
    modules = {f"followthrough.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {f"followthrough.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    for name in ("Workflows import only the domain", "The domain imports nothing else of ours and does no I/O"):
        contract = _contracts()[name]
        allowed = {"followthrough.domain", *contract["source_modules"]}
        missing = sorted(modules - allowed - set(contract["forbidden_modules"]))
        assert not missing, f"add {missing} to the forbidden modules of the contract {name!r} in pyproject.toml"
