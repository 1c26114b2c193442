"""The supervisord configuration of one `vms serve` run: image/supervisord.conf with this run's values.

Commands are shell-quoted for supervisord's parser and their percent signs doubled, so a model path or a
vLLM argument containing spaces or '%' reaches the program unchanged.
"""

import shlex
import sys
from pathlib import Path
from string import Template

from vms_supervisor.engine_command import engine_environment
from vms_supervisor.ray_node import ray_start_argv, starts_ray_head
from vms_supervisor.settings import Settings

TEMPLATE = Path(__file__).with_name("supervisord.conf")  # a link to image/supervisord.conf
ENGINE_PROGRAM = "engine"
OPERATOR_PROGRAM = "operator"
ENGINE_STOP_SECONDS = 20  # vLLM's own shutdown takes a few seconds; then the whole process group is killed
RAY_HEAD_PROGRAM = "ray-head"
# The Ray head of an engine whose ranks go through Ray (VMS_DISTRIBUTED_EXECUTOR_BACKEND=ray, no VMS_RAY_ADDRESS):
# started with supervisord, before the operator starts the engine, and stopped after the engine.
RAY_HEAD_SECTION = """
[program:${name}]
command=${command}
priority=50
autostart=true
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=40
stopasgroup=true
killasgroup=true
stdout_logfile=${run_dir}/logs/ray-head.log
redirect_stderr=true
"""


def socket_path(run_dir: Path) -> Path:
    return run_dir / "supervisor.sock"


def engine_log_path(run_dir: Path) -> Path:
    return run_dir / "logs" / "engine.log"


def _command(argv: list[str]) -> str:
    return shlex.join(argv).replace("%", "%%")


def _environment(variables: dict[str, str]) -> str:
    """supervisord's KEY="value",... form; the values are the operator's own words, without quotes."""
    return ",".join(f'{name}="{value}"' for name, value in variables.items()).replace("%", "%%")


def render(settings: Settings, run_dir: Path, engine_argv: list[str], device: str) -> Path:
    """Write `run_dir`/supervisord.conf (and the logs directory) and return the config's path."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    python = sys.executable
    values = {
        "run_dir": str(run_dir).replace("%", "%%"),
        "supervisord_log_level": "debug" if settings.log_level == "debug" else "info",
        "operator_command": _command(
            [python, "-m", "vms_supervisor.operator", "--run-dir", str(run_dir), "--device", device]
        ),
        "operator_stop_seconds": str(int(settings.drain_timeout) + 10),
        "engine_command": _command(engine_argv),
        "engine_environment": _environment(engine_environment(settings)),
        "engine_stop_seconds": str(ENGINE_STOP_SECONDS),
        "engine_log_max_bytes": str(int(settings.engine_log_max_bytes)),
        "engine_log_backups": str(settings.engine_log_backups),
        "watchdog_command": _command([python, "-m", "vms_supervisor.watchdog", "--run-dir", str(run_dir)]),
    }
    text = Template(TEMPLATE.read_text()).substitute(values)
    if starts_ray_head(settings):
        text += Template(RAY_HEAD_SECTION).substitute(
            name=RAY_HEAD_PROGRAM,
            command=_command(ray_start_argv(settings, device, head=True)),
            run_dir=values["run_dir"],
        )
    config = run_dir / "supervisord.conf"
    config.write_text(text)
    return config
