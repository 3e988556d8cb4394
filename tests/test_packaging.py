"""What `pip install .` (the Dockerfile's install) puts in site-packages: every file the packages read at run
time, so an installed API and worker start as the source tree does."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("followthrough", "api", "activities", "workflows")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the tracked files only (as a fresh clone has them), in a copy outside the work
    tree so the build leaves nothing in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    archive = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=ROOT, input=listed,
                             capture_output=True, check=True).stdout
    (tmp / "src").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp / "src")], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                    "-w", str(tmp), str(tmp / "src")], check=True, cwd=tmp)
    [built] = tmp.glob("followthrough-*.whl")
    return built


def test_the_wheel_carries_every_file_the_packages_hold(wheel):
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    with zipfile.ZipFile(wheel) as built:
        shipped = set(built.namelist())
    missing = [path for path in tracked if path not in shipped]
    assert not missing, f"pyproject.toml's package-data leaves out {missing}"


def test_the_installed_api_serves_its_inbox_assets(wheel, tmp_path):
    # Installed on its own (no editable source tree before it on the path), as the image has it.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, cwd=tmp_path)
    script = """
import api, worker
from fastapi.testclient import TestClient
from api.main import create_app
from followthrough.settings import Settings
assert api.__file__.startswith(SITE), api.__file__
app = create_app(Settings(database_url="sqlite+aiosqlite:///" + SITE + "/m.db", codec="off", anonymous_access=True))
client = TestClient(app)
for path in ("/ui/inbox.css", "/ui/live.js"):
    answer = client.get(path)
    assert answer.status_code == 200 and answer.text, (path, answer.status_code)
print("ok")
""".replace("SITE", repr(str(target)))
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
