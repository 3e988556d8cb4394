"""The Alembic migration creates exactly the schema the SQLModel tables declare."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from datetime import datetime, timezone

from sqlalchemy import insert, select

from followthrough.db import tables  # noqa: F401
from followthrough.db.approval_records import approvers_key
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.db.tables import Approval


async def test_migrated_schema_matches_the_models(engine):
    def diff(connection):
        return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_approvals_recorded_before_ids_were_checked_get_unambiguous_keys(tmp_path):
    # An approval of "bob|alice" (one id, before such ids were refused) was keyed like one of bob and alice.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'legacy.db'}")
    await upgrade(engine, "0015")
    now = datetime.now(timezone.utc)
    rows = {"legacy": (["bob|alice"], [], "|bob|alice|"), "plain": (["carol"], ["finance"], "|carol|role:finance|"),
            "anyone": ([], [], "")}
    async with engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no task rows: only the approvals matter here
        for approval_id, (approvers, roles, key) in rows.items():
            await conn.execute(insert(Approval.__table__).values(
                id=approval_id, task_id="t-1", tenant_id="acme", run_number=1, status="pending", required=1,
                approvers=approvers, approver_roles=roles, approvers_key=key, flags=[], requested_at=now))
        await conn.commit()
    await upgrade(engine)
    async with engine.connect() as conn:
        keys = dict((await conn.execute(select(Approval.id, Approval.approvers_key))).all())
        in_alices_queue = (await conn.execute(select(Approval.id).where(Approval.approvers_key.like("%|alice|%")))).all()
    await engine.dispose()
    assert keys["legacy"] == approvers_key(["bob|alice"]) != "|bob|alice|"
    assert keys["plain"] == "|carol|role:finance|" and keys["anyone"] == ""
    assert in_alices_queue == []
