"""What the admin API needs from the operator: a narrow interface, so the API does not know about processes."""

from typing import Protocol


class Probed(Protocol):
    """What the probes read: the operator's engine, or a ray-worker's Ray node."""

    def ready(self) -> bool:
        """Serving, and not draining."""

    def has_started(self) -> bool:
        """Ready at least once."""

    def status(self) -> dict:
        """At least state and last_error (and draining while a drain is under way)."""


class Operator(Probed, Protocol):
    def admin_token(self) -> str | None: ...

    def status(self) -> dict:
        """state, engine pid, uptime, restarts, last_error, model, device, versions."""

    def devices(self) -> dict: ...

    def config(self) -> dict:
        """The effective settings, secrets redacted."""

    def control(self, action: str) -> None:
        """start, stop or restart the engine."""

    def log_tail(self, lines: int) -> str: ...

    def engine_metrics(self) -> str:
        """The engine's own Prometheus exposition, or "" when it does not answer."""
