"""The admin API: Kubernetes probes (open) and admin endpoints (bearer token), served by the operator process.

The app only reads and drives an `Operator` (see `operator_view.py`), so it can be tested on its own and the
operator keeps all process handling.
"""

import hmac

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from vms_admin.console import add_console
from vms_admin.metrics import render_metrics
from vms_admin.operator_view import Operator, Probed

MAX_LOG_LINES = 10_000
MAX_BODY_BYTES = 64 * 1024  # no admin endpoint takes a body; anything large is refused before it is read

# Documented in the OpenAPI schema, so that clients (and the schema fuzzing in tests/reliability) know every status.
NOT_READY = {503: {"description": "not ready (or not yet started): the body says the state and why"}}
ADMIN_DENIED = {
    401: {"description": "no bearer token"},
    403: {"description": "wrong bearer token, or admin endpoints disabled (no token configured)"},
    413: {"description": f"request body over {MAX_BODY_BYTES} bytes"},
}


def add_probes(app: FastAPI, watched: Probed) -> None:
    """Kubernetes' liveness, readiness and startup probes, open to all."""

    def probe(ok: bool) -> JSONResponse:
        status = watched.status()
        reason = "draining: shutting down" if status.get("draining") else status["last_error"]
        body = {"status": "ok" if ok else "unavailable", "state": status["state"], "reason": reason}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/health/live", tags=["probes"])
    @app.get("/v2/health/live", tags=["probes"], include_in_schema=False)
    def live() -> JSONResponse:
        """200 while the process runs: what it watches is restarted by it, not by Kubernetes."""
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready", tags=["probes"], responses=NOT_READY)
    @app.get("/v2/health/ready", tags=["probes"], include_in_schema=False)
    def ready() -> JSONResponse:
        """200 only while the engine (or the Ray node) serves and no drain is under way."""
        return probe(watched.ready())

    @app.get("/health/startup", tags=["probes"], responses=NOT_READY)
    def startup() -> JSONResponse:
        """200 once ready at least once."""
        return probe(watched.has_started())


def create_probe_app(watched: Probed) -> FastAPI:
    """The probes alone: what a Ray worker node (VMS_ROLE=ray-worker) serves."""
    app = FastAPI(title="vms ray-worker", description="Health probes of a vms Ray worker node")
    add_probes(app, watched)
    return app


def create_app(operator: Operator) -> FastAPI:
    app = FastAPI(title="vms admin", description="Health probes and administration of the vms engine")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    add_probes(app, operator)
    add_console(app)

    def authorised(request: Request) -> None:
        expected = operator.admin_token()
        if expected is None:
            raise HTTPException(403, "admin endpoints are disabled: set VMS_ADMIN_TOKEN or VMS_ADMIN_TOKEN_FILE")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(403, "wrong bearer token")

    admin = [Depends(authorised)]

    @app.get("/admin/status", dependencies=admin, tags=["admin"], responses=ADMIN_DENIED)
    def status() -> dict:
        return operator.status()

    @app.get("/admin/devices", dependencies=admin, tags=["admin"], responses=ADMIN_DENIED)
    def devices() -> dict:
        return operator.devices()

    @app.get("/admin/config", dependencies=admin, tags=["admin"], responses=ADMIN_DENIED)
    def config() -> dict:
        return operator.config()

    @app.post(
        "/admin/engine/{action}",
        dependencies=admin,
        tags=["admin"],
        responses={**ADMIN_DENIED, 404: {"description": "unknown action; allowed: start, stop, restart"}},
    )
    def engine(action: str) -> dict:
        if action not in ("start", "stop", "restart"):
            raise HTTPException(404, f"unknown engine action '{action}'; allowed: start, stop, restart")
        operator.control(action)
        return operator.status()

    @app.get(
        "/admin/logs", dependencies=admin, tags=["admin"], response_class=PlainTextResponse, responses=ADMIN_DENIED
    )
    def logs(lines: int = Query(200, ge=1, le=MAX_LOG_LINES)) -> str:
        """The engine log's last lines (continued into rotated files), at most 1 MiB, the admin token blanked."""
        return operator.log_tail(lines)

    @app.get("/metrics", dependencies=admin, tags=["admin"], response_class=PlainTextResponse, responses=ADMIN_DENIED)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(render_metrics(operator), media_type="text/plain; version=0.0.4")

    return app
