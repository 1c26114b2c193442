"""supervisord event listener: when the operator program dies, shut supervisord down and leave a marker.

Without the operator nobody watches the engine, so the whole run must end; `vms serve` sees the marker and exits
1, and the container's orchestrator restarts it. Exits of the engine are the operator's business and ignored.
The protocol (READY, header line, payload, RESULT) is supervisord's event listener protocol.
"""

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vms_supervisor.json_logs import say
from vms_supervisor.supervisor_client import SupervisorClient, SupervisorGone
from vms_supervisor.supervisord_config import OPERATOR_PROGRAM

MARKER = "operator-exited"


def marker_path(run_dir: Path) -> Path:
    return run_dir / MARKER


def parse_fields(text: str) -> dict[str, str]:
    return dict(field.split(":", 1) for field in text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vms-watchdog")
    parser.add_argument("--run-dir", type=Path, required=True)
    run_dir = parser.parse_args(argv).run_dir
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        header_line = sys.stdin.readline()
        if not header_line:
            return 0
        header = parse_fields(header_line)
        payload = parse_fields(sys.stdin.read(int(header["len"])).split("\n", 1)[0])
        if payload.get("processname") == OPERATOR_PROGRAM:
            marker_path(run_dir).write_text(f"{header['eventname']} {payload}\n")
            json_format = os.environ.get("VMS_LOG_FORMAT", "text").strip().lower() == "json"
            say(f"the operator exited ({header['eventname']}); stopping", json_format, source="vms watchdog")
            with contextlib.suppress(SupervisorGone):  # already on its way down
                SupervisorClient(run_dir).shutdown()
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
