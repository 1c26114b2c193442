"""Every admin route but the probes, the schema and the console's static files needs the token: the routes are
enumerated from the app itself, so a route added later cannot slip through. Oversized bodies are refused unread."""

import pytest
from fastapi.testclient import TestClient

from vms_admin.app import MAX_BODY_BYTES, create_app

OPEN = {
    "/health/live",
    "/health/ready",
    "/health/startup",
    "/v2/health/live",
    "/v2/health/ready",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/",  # the console page and its script and style: static files with no data; the data needs the token
    "/console/console.js",
}
TOKEN = "reliability-token"


@pytest.fixture
def app():
    from unit.test_admin_api import InMemoryOperator

    return create_app(InMemoryOperator(TOKEN))


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route, path parameters filled with an allowed value."""
    routes = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                routes.append((method, route.path.replace("{action}", "restart").replace("{name}", "console.js")))
    return routes


def test_the_enumeration_sees_every_kind_of_route(app) -> None:
    paths = {path for _, path in every_route(app)}
    assert {"/admin/status", "/admin/engine/restart", "/admin/logs", "/metrics", "/health/ready"} <= paths


def test_every_route_but_probes_and_schema_needs_the_token(app) -> None:
    client = TestClient(app)
    for method, path in every_route(app):
        without = client.request(method, path)
        wrong = client.request(method, path, headers={"Authorization": "Bearer not-it"})
        if path in OPEN:
            assert without.status_code not in (401, 403), (method, path)
        else:
            assert (without.status_code, wrong.status_code) == (401, 403), (method, path)
            assert TOKEN not in without.text + wrong.text


def test_the_token_is_never_shown(app) -> None:
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in every_route(app):
        if method == "GET":
            assert TOKEN not in client.get(path, headers=headers).text, path


def test_an_oversized_body_is_refused_before_it_is_read(app) -> None:
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    big = client.post("/admin/engine/restart", headers=headers, content=b"x" * (MAX_BODY_BYTES + 1))
    assert big.status_code == 413 and str(MAX_BODY_BYTES) in big.json()["detail"]
    assert client.post("/admin/engine/restart", headers=headers).status_code == 200
