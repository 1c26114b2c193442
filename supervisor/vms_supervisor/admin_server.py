"""The HTTP server of the admin API and probes, beside the process's own work (the operator's loop, or a Ray
node's watch)."""

import signal
import threading
import time
from collections.abc import Callable

from vms_supervisor.settings import Settings


def serve_admin_api(app, settings: Settings):
    """uvicorn serving `app` in a thread (the main thread keeps the signals); returns the server once it listens."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.admin_address,
        port=settings.admin_port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        # JSON logs: uvicorn's records go to the process's root handler (json_logs.py) instead of its own format.
        **({"log_config": None} if settings.log_format == "json" else {}),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="admin-api", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the admin API could not listen on {settings.admin_address}:{settings.admin_port}")
        time.sleep(0.05)
    return server, thread


def stop_on_signals(readiness_off: Callable[[], None]) -> threading.Event:
    """An event set by SIGTERM or SIGINT, which first call `readiness_off`: probes must fail from the signal on,
    even while the main loop is in the middle of a check."""
    stop = threading.Event()

    def on_signal(*_) -> None:
        readiness_off()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return stop
