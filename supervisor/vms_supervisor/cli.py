"""`vms`: the command line of the appliance (`vms model prepare`, `vms serve`)."""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vms_supervisor.default_model import (
    DEFAULT_MODEL_NAME,
    ModelPrepareError,
    default_model_dir,
    prepare_default_model,
)
from vms_supervisor.engine_command import EngineOptions, check_model, engine_argv

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options belong to the harness's own parser
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ModelPrepareError, FileNotFoundError, ValueError) as error:
        print(f"vms: error: {error}", file=sys.stderr)
        return USAGE_ERROR


def _prepare(args: argparse.Namespace) -> int:
    path = prepare_default_model(args.gguf, args.output, force=args.force)
    print(path)
    return 0


def _serve(args: argparse.Namespace) -> int:
    model_dir = args.model
    if model_dir is None:
        model_dir = prepare_default_model()
    check_model(model_dir)
    options = EngineOptions(
        model_dir=model_dir,
        served_model_name=args.served_model_name or (DEFAULT_MODEL_NAME if args.model is None else str(model_dir)),
        host=args.host,
        port=args.port,
        max_model_len=args.max_model_len,
        extra_args=tuple(args.engine_args[1:] if args.engine_args[:1] == ["--"] else args.engine_args),
    )
    command = engine_argv(options)
    print("vms: starting", " ".join(command), file=sys.stderr, flush=True)
    os.execv(command[0], command)  # vLLM takes over this process, so signals reach it directly


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

    serve = commands.add_parser("serve", help="serve a model with vLLM's OpenAI-compatible server")
    serve.add_argument(
        "--model",
        type=Path,
        default=Path(os.environ["VMS_MODEL"]) if os.environ.get("VMS_MODEL") else None,
        help="local Hugging Face model directory (default: $VMS_MODEL, else the embedded default model)",
    )
    serve.add_argument("--served-model-name", default=None, help="model name in the API (default: the model's)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-model-len", type=int, default=2048)
    serve.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: extra arguments for vLLM")
    serve.set_defaults(handler=_serve)

    commands.add_parser(  # listed in --help; main() hands its arguments to the harness
        "bench", help="benchmark vms against vLLM's CPU backend and llama.cpp (vms bench --help)", add_help=False
    )
    return parser
