"""The database the reliability tests use."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import POSTGRES_URL


@pytest.fixture
def mirror_engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """One database per reliability test, PostgreSQL when configured (many processes writing at once), else
    SQLite: these tests are about processes dying, not about the database, and each takes a while."""
    return request.getfixturevalue("postgres_engine" if POSTGRES_URL else "sqlite_engine")
