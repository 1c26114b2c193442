"""What the operator asks the engine over HTTP: /health, its Prometheus /metrics, and how many requests are in flight.

Plain urllib with short timeouts: an engine that is stopped (SIGSTOP) or wedged accepts the connection but never
answers, and that must count as unhealthy rather than hang the health loop.
"""

import re
import urllib.error
import urllib.request

IN_FLIGHT = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.M)


class EngineEndpoint:
    def __init__(self, host: str, port: int) -> None:
        # A server bound to every address is reached on loopback.
        reachable = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.base = f"http://{reachable}:{port}" if ":" not in reachable else f"http://[{reachable}]:{port}"

    def _get(self, path: str, timeout: float) -> str | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.read().decode() if response.status == 200 else None
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def healthy(self, timeout: float) -> bool:
        return self._get("/health", timeout) is not None

    def metrics(self, timeout: float = 2.0) -> str:
        """The engine's exposition text, or "" when it does not answer."""
        return self._get("/metrics", timeout) or ""

    def in_flight(self, timeout: float = 2.0) -> int | None:
        """Requests running or waiting in the engine; None when it does not answer."""
        text = self._get("/metrics", timeout)
        if text is None:
            return None
        return int(sum(float(value) for value in IN_FLIGHT.findall(text)))
