"""What the admin API needs from the operator: a narrow interface, so the API does not know about processes."""

from typing import Protocol


class Operator(Protocol):
    def ready(self) -> bool:
        """The engine answers and the operator is not draining."""

    def has_started(self) -> bool:
        """The engine has been ready at least once."""

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
