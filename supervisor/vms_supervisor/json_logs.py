"""VMS_LOG_FORMAT=json: every line a run writes is one JSON object, for log shippers (Fluent Bit, Vector, Loki).

Fields: `time` (UTC, ISO 8601), `level`, `source` (vms, operator, admin-api, watchdog, or for the engine vLLM's
`file:line`), `message`, and `request_id` where the line names one of vLLM's request ids (with vLLM's
--enable-log-requests each request's lines do). The engine is not configured for it: the operator already echoes
the engine's log (log_files.py), and turns each line into an object there, vLLM's own format (`INFO 12-05
17:10:32 [worker.py:104] ...`) read into its level and source, any other line (a progress bar, a native
library's output) kept whole as the message.
"""

import json
import logging
import re
import sys
from datetime import UTC, datetime

# vLLM's log line: an optional "(process name pid=N) ", level, month-day time, [file:line], message.
_VLLM_LINE = re.compile(
    r"^(?:\((?P<process>[^)]*)\) )?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[(?P<where>[^\]]+)\] (?P<message>.*)$"
)
# vLLM's request ids: cmpl-..., chatcmpl-..., embd-... (the OpenAI server's) and the engine's own.
_REQUEST_ID = re.compile(r"\b((?:chatcmpl|cmpl|embd|req)-[0-9A-Za-z][\w-]*)")


def line(message: str, level: str = "info", source: str = "vms", time: datetime | None = None) -> str:
    """One JSON object (no newline)."""
    entry = {
        "time": (time or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "level": level.lower(),
        "source": source,
        "message": message,
    }
    request = _REQUEST_ID.search(message)
    if request:
        entry["request_id"] = request.group(1)
    return json.dumps(entry, ensure_ascii=False)


def engine_line(text: str) -> str:
    """A line of the engine's log as a JSON object: one that is one already stays as it is."""
    text = text.rstrip("\n")
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text
        except ValueError:
            pass
    parsed = _VLLM_LINE.match(text)
    if parsed is None:
        return line(text, "info", "engine")
    source = " ".join(part for part in ("engine", parsed["where"], parsed["process"]) if part)
    return line(parsed["message"], parsed["level"], source)


class JsonFormatter(logging.Formatter):
    """Python logging records as `line`s; `source` names the process (the logger's name says the rest)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        time = datetime.fromtimestamp(record.created, UTC)
        return line(message, record.levelname, f"{self.source} {record.name}", time)


def say(message: str, json_format: bool, level: str = "info", source: str = "vms") -> None:
    """A line of the vms command itself on stderr: `vms: message` as text, or one JSON object."""
    if json_format:
        print(line(message, level, source), file=sys.stderr, flush=True)
    else:
        prefix = "" if level == "info" else f"{level}: "
        print(f"{source}: {prefix}{message}", file=sys.stderr, flush=True)
