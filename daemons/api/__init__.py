"""The operator HTTP API and web console (docs/API.md): `fleet-api`, `python -m daemons.api`.

FastAPI on uvicorn, chosen over bare Starlette because the API is mostly typed request/response
bodies: FastAPI generates the OpenAPI 3.1 document from the same pydantic models that validate
requests (422 problem details for free), and its dependency injection carries authentication and
roles per route (`Viewer`, `Operator`, `Admin` in deps.py). Starlette underneath serves the console's
static files, the debug WebSocket and the artifact files (FileResponse: Range, 206, 416).

Modules: app (assembly, /healthz, /metrics), deps (context, auth, paging), auth (tokens, sessions),
audit, bridge (the one MQTT client), fleetindex (filtered pages from Redis indexes), routes_devices,
routes_ota, routes_ops (health, debug, audit, console session), debug (sessions, logs), links.

Where API.md is silent (as AWS IoT / Mender / hawkBit do, and written down in docs/API.md):
- `GET /health/summary` (healthwatch's retained summary) and `DELETE /devices/{id}/debug` (close a
  session early) are extensions; `/api/v1/session` logs the console in with a token.
- A daemon that does not answer within the route's time is a 503 (as "the broker is away").
"""
