"""/subscriptions: a tenant's webhooks for task notifications."""

import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from followthrough.api.auth import PrincipalDep, require
from followthrough.api.deps import SessionDep, SettingsDep
from followthrough.api.errors import NOT_FOUND, ApiError, not_found
from followthrough.api.paging import LimitQuery, OffsetQuery, next_offset, page_size
from followthrough.api.tenancy import listing_tenant, tenant_for
from followthrough.api.schemas import SubscriptionCreate, SubscriptionListPublic, SubscriptionPublic
from followthrough.infra.outbound import OutboundPolicy
from followthrough.domain.principals import Role
from followthrough.db.tables import Subscription
from followthrough.infra.task_secrets import TaskSecretsFileInvalid, task_secrets_for

router = APIRouter(dependencies=[require(Role.ADMIN)], prefix="/subscriptions", tags=["subscriptions"],
                   responses=NOT_FOUND)


@router.post("", status_code=201, response_model=SubscriptionPublic)
async def create_subscription(body: SubscriptionCreate, session: SessionDep,
                              principal: PrincipalDep, settings: SettingsDep) -> SubscriptionPublic:
    # The early check of the SSRF guard; every delivery is checked again on the addresses the host resolves to.
    if (refusal := OutboundPolicy.from_entries(settings.outbound_allow).refusal_for_url(body.url)) is not None:
        raise RequestValidationError([{"type": "outbound_refused", "loc": ("body", "url"), "msg": refusal,
                                       "input": str(body.url)}])
    tenant = tenant_for(principal, body)
    # The signing secret is one of the tenant's task secrets, for the subscription's host (like a webhook task's).
    try:
        refusal = task_secrets_for(settings).refusal(tenant, body.secret, str(body.url))
    except TaskSecretsFileInvalid:
        raise ApiError(503, "the task secrets file is invalid; an operator must fix it",
                       headers={"Retry-After": "30"}) from None
    if refusal is not None:
        raise RequestValidationError([{"type": "secret_unavailable", "loc": ("body", "secret"), "msg": refusal,
                                       "input": body.secret}])
    row = Subscription(id=str(uuid.uuid4()), tenant_id=tenant, url=str(body.url),
                       events=body.events, secret=body.secret, description=body.description, active=True,
                       created_at=datetime.now(timezone.utc))
    session.add(row)
    await session.commit()
    return SubscriptionPublic.model_validate(row.model_dump())


@router.get("", response_model=SubscriptionListPublic)
async def list_subscriptions(session: SessionDep, settings: SettingsDep, principal: PrincipalDep,
                             tenant_id: str | None = None, limit: LimitQuery = None,
                             offset: OffsetQuery = 0) -> SubscriptionListPublic:
    limit = page_size(settings, limit)
    tenant_id = listing_tenant(principal, tenant_id)
    query = select(Subscription).where(Subscription.active.is_(True))
    if tenant_id is not None:
        query = query.where(Subscription.tenant_id == tenant_id)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.order_by(Subscription.created_at, Subscription.id)
                                  .limit(limit).offset(offset))).scalars().all()
    return SubscriptionListPublic(items=[SubscriptionPublic.model_validate(r.model_dump()) for r in rows],
                                  total=total, limit=limit, offset=offset,
                                  next_offset=next_offset(offset, limit, total))


async def _active(session: SessionDep, subscription_id: str) -> Subscription:
    row = await session.get(Subscription, subscription_id) if len(subscription_id) <= 36 else None
    if row is None or not row.active:
        raise not_found("subscription", subscription_id)
    return row


@router.get("/{subscription_id}", response_model=SubscriptionPublic)
async def get_subscription(subscription_id: str, session: SessionDep) -> SubscriptionPublic:
    return SubscriptionPublic.model_validate((await _active(session, subscription_id)).model_dump())


@router.delete("/{subscription_id}", status_code=204)
async def delete_subscription(subscription_id: str, session: SessionDep) -> Response:
    row = await _active(session, subscription_id)
    row.active = False  # kept for the record of what was delivered to it
    await session.commit()
    return Response(status_code=204)
