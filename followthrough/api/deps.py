"""Annotated dependencies: settings, database session, Temporal client, actor.

They are ``async def`` although they do not await: FastAPI runs plain ``def``
dependencies in a thread pool, a hand-off that costs more than the lookup.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio.client import Client

from followthrough.api.auth import PrincipalDep
from followthrough.config.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def get_actor(principal: PrincipalDep) -> str:
    """Who the caller is: the user an API key acts as, or in anonymous access X-Actor-Id."""
    return principal.actor_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ActorDep = Annotated[str, Depends(get_actor)]
