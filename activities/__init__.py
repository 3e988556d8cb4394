"""Every side effect the workflows perform: draft, send, record to the mirror."""

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.delivery import DeliveryActivities
from activities.drafting import DraftingActivities
from activities.mirror import MirrorActivities
from followthrough.secrets import SecretStore
from followthrough.settings import Settings


def build_activities(settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient) -> list:
    secrets = SecretStore(settings.secrets_file)
    return [
        DraftingActivities(settings, engine).draft,
        DeliveryActivities(settings, engine, http, secrets).send,
        MirrorActivities(engine).record,
    ]
