"""The console page (GET /): plain HTML, CSS and a script shipped in the package, no build step, nothing loaded from
another host. The page itself is open, like a login page; everything it shows comes from the token-guarded admin
endpoints, called by its script with the token the user typed (kept in the tab's sessionStorage only)."""

from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

FILES = {"index.html": "text/html", "console.css": "text/css", "console.js": "text/javascript"}

# Only this origin, for everything; no inline script or style, no form may submit anywhere (the login form is read
# by the script), no framing. Checked by the browser test, which also sees every request the page makes.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _file(name: str) -> Response:
    body = resources.files("vms_admin").joinpath("console", name).read_bytes()
    return Response(body, media_type=f"{FILES[name]}; charset=utf-8", headers=SECURITY_HEADERS)


def add_console(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return _file("index.html")

    @app.get("/console/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name == "index.html" or name not in FILES:
            raise HTTPException(404, f"no console file '{name}'")
        return _file(name)
