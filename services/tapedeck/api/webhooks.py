"""`GET /api/webhooks/deliveries`: what the deliverer did with each event (docs/api.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Security
from fastapi.params import Depends as Dependency
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tapedeck.api.auth import Auth
from tapedeck.api.models import ms_to_datetime
from tapedeck.api.routes import answers
from tapedeck.settings import Settings
from tapedeck.webhooks.deliverer import Deliverer
from tapedeck.webhooks.policy import Delivery


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class AttemptView(_Model):
    at: datetime
    status: int | None = Field(description="HTTP status; null when no answer came")
    error: str


class DeliveryView(_Model):
    event_id: str = Field(description="the webhook-id the receiver sees")
    event_type: str
    session_id: str
    endpoint: str
    state: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str
    attempts: list[AttemptView] = Field(description="the latest attempts, oldest first")


class DeliveryList(_Model):
    delivered_by: Literal["web", "operator", "off"] = Field(
        description="the process that delivers; only the web process (embedded mode) lists "
        "deliveries here, the operator exposes its metrics"
    )
    items: list[DeliveryView]


def delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        event_id=d.event_id,
        event_type=d.event_type,
        session_id=d.session_id,
        endpoint=d.endpoint,
        state=d.state,
        attempt_count=d.attempt_count,
        next_attempt_at=ms_to_datetime(d.next_at_ms) if d.state == "pending" else None,
        last_error=d.last_error,
        attempts=[
            AttemptView(at=ms_to_datetime(a.at_ms), status=a.status, error=a.error)
            for a in d.attempts
        ],
    )


def webhook_router(settings: Settings, auth: Auth, deliverer: Deliverer | None) -> APIRouter:
    router = APIRouter(prefix="/api")
    guarded: list[Dependency] = [Depends(auth.require)]
    if settings.api_token:
        guarded.append(Security(HTTPBearer(auto_error=False, scheme_name="bearer")))

    @router.get(
        "/webhooks/deliveries",
        dependencies=guarded,
        responses=answers(auth=bool(settings.api_token)),
        response_model_by_alias=True,
        tags=["webhooks"],
    )
    async def list_deliveries(
        limit: int = Query(100, ge=1, le=1000),
        state: Literal["pending", "delivered", "failed"] | None = None,
    ) -> DeliveryList:
        """Webhook deliveries, unsettled first, then settled ones newest first, with each
        one's latest attempts and last error."""
        found = deliverer.snapshot() if deliverer is not None else []
        if state is not None:
            found = [d for d in found if d.state == state]
        return DeliveryList(
            delivered_by=settings.webhook_delivered_by(),
            items=[delivery_view(d) for d in found[:limit]],
        )

    return router
