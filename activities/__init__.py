"""Every side effect the workflows perform: draft, send, record to the mirror."""

from sqlalchemy.ext.asyncio import AsyncEngine

from activities.delivery import DeliveryActivities
from activities.drafting import DraftingActivities
from activities.mirror import MirrorActivities
from followthrough.database import session_factory
from followthrough.settings import Settings


def build_activities(settings: Settings, engine: AsyncEngine) -> list:
    sessions = session_factory(engine)
    return [
        DraftingActivities(settings).draft,
        DeliveryActivities(sessions).send,
        MirrorActivities(engine).record,
    ]
