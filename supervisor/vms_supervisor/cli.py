"""`vms`: the command line of the appliance (`vms model prepare`, `vms serve`, `vms config`, `vms doctor`,
`vms bench`).

`vms serve` and `vms config` read the VMS_* settings (settings.py); their flags override the variables.
"""

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from vms_supervisor.default_model import (
    DEFAULT_MODEL_NAME,
    ModelPrepareError,
    default_model_dir,
    prepare_default_model,
)
from vms_supervisor.device import DeviceChoice, DeviceError, choose_device
from vms_supervisor.engine_command import check_model, engine_argv, engine_environment, served_name
from vms_supervisor.json_logs import say
from vms_supervisor.memory_budget import memory_budget
from vms_supervisor.npu_probe import probe
from vms_supervisor.ray_node import ray_start_argv, starts_ray_head
from vms_supervisor.ray_worker import run_ray_worker
from vms_supervisor.serve import RunDirError, run_supervisord, temporary_directory
from vms_supervisor.settings import Settings, SettingsError, env_name, load_settings

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options belong to the harness's own parser
        return _bench(argv[1:])
    if argv[:1] == ["doctor"]:
        from vms_supervisor.doctor import main as doctor_main

        return doctor_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as error:
        for problem in error.problems:
            print(f"vms: error: {problem}", file=sys.stderr)
        return USAGE_ERROR
    except (ModelPrepareError, DeviceError, RunDirError, FileNotFoundError, ValueError) as error:
        print(f"vms: error: {error}", file=sys.stderr)
        return USAGE_ERROR


def _prepare(args: argparse.Namespace) -> int:
    temporary_directory()
    path = prepare_default_model(args.gguf, args.output, force=args.force)
    print(path)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """VMS_* settings with the command line's flags winning; the flags are also put into the environment, which
    the operator program (started by supervisord) reads its settings from."""
    overrides = {
        "model": args.model,
        "served_model_name": args.served_model_name,
        "host": args.host,
        "port": args.port,
        "admin_port": args.admin_port,
        "max_model_len": args.max_model_len,
        "engine_args": shlex.join(args.engine_args[1:] if args.engine_args[:1] == ["--"] else args.engine_args),
    }
    given = {name: value for name, value in overrides.items() if value not in (None, "")}
    settings = load_settings(**given)
    os.environ.update({env_name(name): str(value) for name, value in given.items()})
    return settings


def _device(settings: Settings) -> DeviceChoice:
    """The device to serve on; its warning is the caller's to print once every check has passed."""
    choice = choose_device(settings, probe())
    if choice.device == "ascend":
        raise DeviceError("the Ascend path of vms_plugin is not built yet; set VMS_DEVICE=cpu to serve on the CPU")
    return choice


def _serve(args: argparse.Namespace) -> int:
    """Check everything that can be checked before a process starts, then hand over to supervisord."""
    settings = _settings(args)
    settings.token()  # an unreadable token file stops the start here, with exit code 2
    choice = _device(settings)
    if settings.role == "ray-worker":
        _warn(choice, settings)
        return run_ray_worker(settings, choice.device)
    model_dir = _checked_model(settings)
    _warn(choice, settings)
    command = engine_argv(settings, model_dir, choice.tensor_parallel_size)
    json_format = settings.log_format == "json"
    say(
        f"serving {served_name(settings)} on http://{settings.host}:{settings.port}/v1 "
        f"(admin API and probes on http://{settings.admin_address}:{settings.admin_port})",
        json_format,
    )
    say(f"engine: {shlex.join(command)}", json_format)
    return run_supervisord(settings, command, choice.device)


def _warn(choice: DeviceChoice, settings: Settings) -> None:
    if choice.warning:
        say(choice.warning, settings.log_format == "json", "warning")


def _checked_model(settings: Settings) -> Path:
    """The model directory to serve, its config read and its architecture supported; errors name VMS_MODEL."""
    temporary_directory()  # preparation and the run need one: said before anything else is done
    model_dir = settings.model or prepare_default_model()
    try:
        check_model(model_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"VMS_MODEL={model_dir}: {error}") from None
    return model_dir


def _config(args: argparse.Namespace) -> int:
    """Print the effective settings (secrets redacted) and the engine command line, without starting anything."""
    settings = _settings(args)
    settings.token()  # an unreadable token file is a configuration error too
    choice = _device(settings)
    _warn(choice, settings)
    for name, value in settings.redacted().items():
        print(f"{name}={'' if value is None else value}")
    print(
        f"device: {choice.device}, tensor parallel size {choice.tensor_parallel_size}, "
        f"data parallel size {settings.data_parallel_size}"
    )
    if settings.role == "ray-worker":
        print("ray node:", shlex.join(ray_start_argv(settings, choice.device, head=False)))
        return 0
    if starts_ray_head(settings):
        print("ray head:", shlex.join(ray_start_argv(settings, choice.device, head=True)))
    model_dir = settings.model or default_model_dir()
    budget = memory_budget(
        model_dir,
        settings.dtype,
        settings.quantization != "none",
        int(settings.kv_cache_memory),
        choice.device,
        choice.tensor_parallel_size,
        settings.data_parallel_size,
    )
    prepare = "" if settings.model else " (vms model prepare makes them)"
    missing = f"unknown: no *.safetensors in {model_dir}{prepare}"
    print("memory:", budget.describe() if budget else missing)
    environment = [f"{name}={value}" for name, value in engine_environment(settings).items()]
    command = engine_argv(settings, model_dir, choice.tensor_parallel_size)
    print("engine:", " ".join(environment + command))
    return 0


def _bench(bench_args: Sequence[str]) -> int:
    from vms_bench.cli import main as bench_main  # the harness is heavy (matplotlib, psutil): only when asked

    return bench_main(list(bench_args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vms", description="vLLM with MindSpore: serve models on Ascend or CPU.")
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="manage models").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help=f"convert the embedded {DEFAULT_MODEL_NAME} GGUF into the model cache")
    prepare.add_argument("--gguf", type=Path, default=None, help="GGUF file to convert (default: the embedded one)")
    prepare.add_argument("--output", type=Path, default=None, help=f"target directory (default: {default_model_dir()})")
    prepare.add_argument("--force", action="store_true", help="convert again even if the directory is complete")
    prepare.set_defaults(handler=_prepare)

    serve = commands.add_parser(
        "serve", help="serve a model: vLLM's OpenAI server under supervisord, with the operator and admin API"
    )
    config = commands.add_parser("config", help="print the effective VMS_* settings and the engine command line")
    for command in (serve, config):
        command.add_argument("--model", type=Path, default=None, help="model directory (overrides VMS_MODEL)")
        command.add_argument("--served-model-name", default=None, help="overrides VMS_SERVED_MODEL_NAME")
        command.add_argument("--host", default=None, help="overrides VMS_HOST (default 127.0.0.1)")
        command.add_argument("--port", type=int, default=None, help="overrides VMS_PORT (default 8000)")
        command.add_argument("--admin-port", type=int, default=None, help="overrides VMS_ADMIN_PORT (default 8081)")
        command.add_argument("--max-model-len", type=int, default=None, help="overrides VMS_MAX_MODEL_LEN")
        command.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: vLLM arguments (VMS_ENGINE_ARGS)")
    serve.set_defaults(handler=_serve)
    config.set_defaults(handler=_config)

    commands.add_parser(  # listed in --help; main() hands its arguments to vms_supervisor.doctor
        "doctor",
        help="check this host for the NPU path: CANN, driver, devices, npu-smi, MindSpore, vLLM, plugin",
        add_help=False,
    )
    commands.add_parser(  # listed in --help; main() hands its arguments to the harness
        "bench", help="benchmark vms against vLLM's CPU backend and llama.cpp (vms bench --help)", add_help=False
    )
    return parser
