"""Every side effect the workflows perform: draft, send, notify, plan subtasks, record to the mirror,
run a definition."""

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from followthrough.activities.agent import AgentActivities
from followthrough.activities.definitions import DefinitionActivities
from followthrough.activities.delivery import DeliveryActivities
from followthrough.activities.drafting import DraftingActivities
from followthrough.activities.mirror import MirrorActivities
from followthrough.activities.notifications import NotificationActivities
from followthrough.activities.planning import PlanningActivities
from followthrough.activities.transports import build_transports
from followthrough.infra.outbound import guarded_client
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings


def build_activities(settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient, temporal: Client,
                     outbound: httpx.AsyncClient | None = None) -> list:
    """``http`` reaches the endpoints the operator configured (the LLM); ``outbound`` the targets tasks and
    subscriptions name, through the SSRF guard (by default a guarded client on settings.outbound_allow)."""
    secrets = SecretStore(settings.secrets_file)
    transports = build_transports()
    outbound = outbound or guarded_client(settings.outbound_allow)
    return [
        DraftingActivities(settings, engine, http, secrets).draft,
        DeliveryActivities(settings, engine, outbound, secrets, transports).send,
        NotificationActivities(settings, engine, outbound, secrets, transports["webhook"]).notify,
        MirrorActivities(engine).record,
        PlanningActivities(settings, engine).plan,
        DefinitionActivities(settings, engine, temporal).run,
        *AgentActivities(settings, engine, http, outbound, secrets, temporal, transports).all(),
    ]
