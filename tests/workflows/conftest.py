"""Settings for workflow tests: the SQLite mirror and a fresh task queue per test."""

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.config.settings import Settings
from tests.conftest import make_settings


@pytest.fixture
def settings(sqlite_engine: AsyncEngine, tmp_path: Path) -> Settings:
    return make_settings(str(sqlite_engine.url), tmp_path)
