"""Every side effect the workflows perform: draft, send, record to the mirror."""

from sqlalchemy.ext.asyncio import AsyncEngine

from activities.delivery import DeliveryActivities
from activities.drafting import DraftingActivities
from activities.mirror import MirrorActivities
from followthrough.settings import Settings


def build_activities(settings: Settings, engine: AsyncEngine) -> list:
    return [
        DraftingActivities(settings).draft,
        DeliveryActivities(engine).send,
        MirrorActivities(engine).record,
    ]
