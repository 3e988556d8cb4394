#!/usr/bin/env python3
"""Set up a virtual environment when needed, then run followthrough.

    python3 run.py dev       # Temporal dev server + worker + API (followthrough dev)
    python3 run.py test      # the test suite (extra arguments go to pytest)
    python3 run.py <command> # any other `followthrough` command

The environment lives in .venv and is rebuilt whenever pyproject.toml changes.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def _fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> None:
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if sys.version_info < (3, 11):
        sys.exit(f"followthrough needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    print("setting up .venv (first run or dependencies changed) ...", flush=True)
    if not (BIN / "python").exists():
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(_fingerprint())


def ensure_test_tools() -> None:
    """The suite validates docker-compose.yml with Compose itself and drives the
    inbox page in headless Chromium; install Debian's docker-compose where
    neither it nor the Docker plugin exists, and Debian's chromium where missing."""
    missing = []
    if not shutil.which("docker-compose"):
        docker = shutil.which("docker")
        if not (docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0):
            missing.append("docker-compose")
    if not os.path.exists("/usr/bin/chromium"):
        missing.append("chromium")
    if not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print(f"note: {' and '.join(missing)} not installed; the tests that need them say how to install them",
              flush=True)
        return
    print(f"installing {', '.join(missing)} (Debian packages) for the compose validation and browser tests ...",
          flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "env": os.environ | {"DEBIAN_FRONTEND": "noninteractive"}}
    subprocess.run(["apt-get", "update", "-q"], **quiet)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], **quiet)


def main(args: list[str]) -> int:
    if not args:
        print(__doc__)
        return 2
    ensure_environment()
    if args[0] == "test":
        ensure_test_tools()
        command = [str(BIN / "python"), "-m", "pytest", *args[1:]]
    else:
        command = [str(BIN / "followthrough"), *args]
    os.chdir(ROOT)
    if os.name == "posix":
        # Become the command, so Ctrl-C and SIGTERM reach it directly.
        os.execv(command[0], command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
