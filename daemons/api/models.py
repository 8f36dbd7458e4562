"""Response models: they make the OpenAPI 3.1 document (`/api/v1/openapi.json`) and check answers.

Bodies that are the daemons' own messages (a shadow document, an accepted update, a rollout
status) keep their PROTOCOL fields and allow more (`extra="allow"`), so a daemon adding a field
never breaks the API. A release is otaplanner's own record type (`Release`), one definition.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from otaplanner.records import Release


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    score: int | None
    status: str | None


class HealthDetail(Health):
    reasons: list[dict[str, Any]] = []


class DeviceItem(BaseModel):
    id: str
    hw: str | None
    fw: str | None
    connected: bool
    last_seen_at: int | None
    health: Health
    tags: dict[str, str]


class DevicePage(BaseModel):
    items: list[DeviceItem]
    next_cursor: str | None
    total: int


class ShadowDocument(Open):
    state: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    timestamp: int
    last_seen_at: int | None  # None: the device never spoke
    connected: bool


class OtaJob(BaseModel):
    rollout_id: str
    job_id: str | None
    state: str | None


class DeviceDetail(DeviceItem):
    health: HealthDetail
    shadow: ShadowDocument | None
    named_shadows: list[str]
    ota: OtaJob | None


class UpdateAccepted(Open):
    state: dict[str, Any]
    version: int
    timestamp: int


class DeleteAccepted(Open):
    version: int
    timestamp: int


class BulkAccepted(Open):
    matched: int


class RolloutCounts(BaseModel):
    running: int
    by_state: dict[str, int]


class FleetSummary(BaseModel):
    devices: int
    connected: dict[str, int]
    health: dict[str, int]
    hw: dict[str, int]
    fw: dict[str, int]
    rollouts: RolloutCounts


class ReleasePage(BaseModel):
    items: list[Release]
    next_cursor: str | None
    total: int


class RolloutStatus(Open):
    rollout_id: str
    version: str
    state: str
    stage: int
    stages: list[int]
    counts: dict[str, int]
    devices: int
    reason: str


class RolloutDetail(RolloutStatus):
    events: list[dict[str, Any]]


class RolloutPage(BaseModel):
    items: list[RolloutStatus]
    next_cursor: str | None
    total: int


class CommandAccepted(Open):
    rollout_id: str
    action: str


class Alert(Open):
    device_id: str
    status: str
    score: int


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None
    total: int


class HealthSummary(Open):
    counts: dict[str, int]


class DebugSession(BaseModel):
    session_id: str
    device_id: str
    link: str
    expires_at: int


class AuditEntry(Open):
    ts: int
    token: str | None
    role: str | None
    action: str
    target: str
    result: int


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None
    total: int


class Me(BaseModel):
    id: str
    name: str
    role: str
