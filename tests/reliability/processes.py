"""Processes the reliability tests start and stop: the worker and the API as the commands users run,
with settings from the environment, and the SMTP inbox they send to."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from followthrough.config.settings import Settings
from tests.conftest import TEST_CODEC_ENV

ROOT = Path(__file__).resolve().parent.parent.parent


def process_env(settings: Settings, temporal_address: str, **extra: str) -> dict[str, str]:
    """The environment a worker or API process reads its settings from: the test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": temporal_address,
        "FOLLOWTHROUGH_TASK_QUEUE": settings.task_queue,
        "FOLLOWTHROUGH_DATABASE_URL": settings.database_url,
        "FOLLOWTHROUGH_DATA_DIR": str(settings.data_dir),
        "FOLLOWTHROUGH_OUTBOUND_ALLOW": json.dumps(settings.outbound_allow),  # receivers are on 127.0.0.1
        "FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true",
        "FOLLOWTHROUGH_LOG_LEVEL": "WARNING",
        "FOLLOWTHROUGH_TASK_SECRETS_FILE": str(settings.task_secrets_file or ""),
    } | TEST_CODEC_ENV
    return env | extra


def start(command: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "followthrough.cli", command], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL: no shutdown code runs, in-flight calls are cut off where they are."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
