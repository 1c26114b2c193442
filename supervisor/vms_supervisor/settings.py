"""Every operator setting, read from `VMS_*` environment variables (the container's whole configuration surface).

A bad value stops start-up with one line per problem naming the variable, the value and what is allowed
(`SettingsError`). The README's environment table is generated from this class (`settings_table`), and a test
fails when the two drift apart.
"""

import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ByteSize, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "VMS_"

# vLLM flags that the operator sets from its own settings; VMS_ENGINE_ARGS may not repeat them.
MANAGED_ENGINE_FLAGS = (
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    "--max-model-len",
    "--kv-cache-memory-bytes",
    "--dtype",
    "--quantization",
    "--tensor-parallel-size",
    "--data-parallel-size",
    "--distributed-executor-backend",
)

Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    role: Literal["serve", "ray-worker"] = Field(
        "serve",
        description="serve: the OpenAI server and its engine (the head of a multi-node deployment); ray-worker: a "
        "Ray node lending this host's NPUs (or CPU cores) to a head's engine, with probes on VMS_ADMIN_PORT",
    )
    model: Path | None = Field(None, description="Hugging Face model directory; unset: the embedded SmolLM2-135M")
    served_model_name: str | None = Field(None, description="model name in the API; unset: the model's")
    device: Literal["auto", "ascend", "cpu"] = Field(
        "auto", description="auto: Ascend when usable chips and CANN are present, else CPU with a warning"
    )
    visible_devices: str | None = Field(None, description="comma-separated NPU ids to use, e.g. 0,1; unset: all")
    tensor_parallel_size: str = Field(
        "auto",
        description="ranks per engine, each on its NPU (or its share of the CPU cores); auto: the number of healthy "
        "probed chips (1 on CPU)",
    )
    data_parallel_size: Annotated[int, Field(ge=1)] = Field(
        1, description="engine replicas behind the one API, each with VMS_TENSOR_PARALLEL_SIZE ranks"
    )
    distributed_executor_backend: Literal["mp", "ray"] = Field(
        "mp",
        description="how the engine starts its ranks: mp, processes on this host; ray, Ray actors on the nodes of "
        "a Ray cluster (VMS_RAY_ADDRESS, or a Ray head this container starts)",
    )
    ray_address: str | None = Field(
        None,
        description="a Ray cluster's head, host:port: the head a ray-worker joins (required there); with "
        "VMS_DISTRIBUTED_EXECUTOR_BACKEND=ray, an existing cluster to use (unset: vms starts a head on VMS_RAY_PORT)",
    )
    ray_port: Annotated[int, Field(ge=1, le=65535)] = Field(6379, description="port of the Ray head vms starts")
    ray_node_ranks: str = Field(
        "auto",
        description="ranks this container's Ray node takes; auto: its NPUs on Ascend (Ray counts them), 1 on CPU",
    )
    max_model_len: Annotated[int, Field(ge=16)] = Field(2048, description="longest prompt + output, in tokens")
    kv_cache_memory: ByteSize = Field(
        ByteSize(1 << 30), description="KV cache size, bytes or with a unit (512MiB, 4GiB)"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="storage type of weights and KV cache; auto follows the checkpoint as vLLM does (a float32 "
        "checkpoint is served as bfloat16); the CPU path accumulates in float32 whatever it is",
    )
    quantization: Literal["none", "int8_per_channel_weight_only", "int8_per_channel"] = Field(
        "none",
        description="int8 weights quantized at load: int8_per_channel_weight_only (W8A16, vLLM's name) or "
        "int8_per_channel (W8A8); a compressed-tensors int8 checkpoint is recognised without it",
    )
    host: str = Field("127.0.0.1", description="address both servers bind to (the image sets 0.0.0.0)")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(8000, description="OpenAI-compatible API port")
    admin_port: Annotated[int, Field(ge=1, le=65535)] = Field(8081, description="admin API and probes port")
    admin_host: str | None = Field(
        None, description="address the admin API and probes bind to; unset: VMS_HOST (127.0.0.1 keeps them local)"
    )
    admin_token: SecretStr | None = Field(None, description="bearer token for /admin endpoints")
    admin_token_file: Path | None = Field(None, description="file holding the admin token (e.g. a mounted secret)")
    engine_start_timeout: Seconds = Field(600.0, description="seconds the engine may take to answer /health")
    health_interval: Seconds = Field(5.0, description="seconds between engine health checks")
    health_failure_threshold: Annotated[int, Field(ge=1)] = Field(
        3, description="consecutive failed checks before the engine is restarted"
    )
    restart_backoff_initial: Seconds = Field(1.0, description="seconds before the first restart")
    restart_backoff_max: Seconds = Field(60.0, description="longest wait between restarts, in seconds")
    restart_backoff_factor: Annotated[float, Field(ge=1)] = Field(2.0, description="backoff growth per restart")
    crash_loop_limit: Annotated[int, Field(ge=1)] = Field(
        5, description="restarts within the crash-loop window that mark the engine failed"
    )
    crash_loop_window: Seconds = Field(300.0, description="crash-loop window, in seconds")
    drain_timeout: Seconds = Field(30.0, description="seconds in-flight requests may finish after SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="operator and engine logs")
    log_format: Literal["text", "json"] = Field(
        "text", description="json: every log line of the run one JSON object (time, level, source, message)"
    )
    engine_log_max_bytes: ByteSize = Field(
        ByteSize(50 << 20), description="size at which the engine log (VMS_RUN_DIR/logs/engine.log) is rotated"
    )
    engine_log_backups: Annotated[int, Field(ge=1)] = Field(5, description="rotated engine logs kept")
    engine_args: str = Field("", description="extra vLLM arguments, shell-quoted (not the flags set above)")
    run_dir: Path | None = Field(
        None, description="supervisord config, socket and logs; unset: a fresh temporary directory per start"
    )

    @field_validator(
        "log_level",
        "log_format",
        "device",
        "dtype",
        "quantization",
        "role",
        "distributed_executor_backend",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("tensor_parallel_size", "ray_node_ranks", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text != "auto" and not (text.isdigit() and int(text) >= 1):
            raise ValueError("expected auto or an integer >= 1")
        return text

    @field_validator("ray_address")
    @classmethod
    def _head_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("expected the Ray head as host:port, e.g. 10.0.0.1:6379")
        return value.strip()

    @field_validator("visible_devices")
    @classmethod
    def _device_ids(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ids = [part.strip() for part in value.split(",") if part.strip()]
        if not ids or not all(part.isdigit() for part in ids):
            raise ValueError("expected comma-separated NPU ids such as 0,1,2")
        return ",".join(ids)

    @field_validator("engine_args")
    @classmethod
    def _engine_args(cls, value: str) -> str:
        try:
            arguments = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"not valid shell quoting ({error})") from None
        managed = sorted({arg.split("=", 1)[0] for arg in arguments} & set(MANAGED_ENGINE_FLAGS))
        if managed:
            raise ValueError(f"{', '.join(managed)} is set by vms itself; use its VMS_ variable instead")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.restart_backoff_max < self.restart_backoff_initial:
            raise ValueError("VMS_RESTART_BACKOFF_MAX must be at least VMS_RESTART_BACKOFF_INITIAL")
        if self.port == self.admin_port:
            raise ValueError("VMS_PORT and VMS_ADMIN_PORT must differ")
        if self.admin_token is not None and self.admin_token_file is not None:
            raise ValueError("VMS_ADMIN_TOKEN and VMS_ADMIN_TOKEN_FILE are both set: set one of them")
        if self.role == "ray-worker" and self.ray_address is None:
            raise ValueError("VMS_ROLE=ray-worker needs VMS_RAY_ADDRESS, the Ray head to join (host:port)")
        return self

    @property
    def admin_address(self) -> str:
        return self.admin_host or self.host

    def engine_arguments(self) -> list[str]:
        return shlex.split(self.engine_args)

    def token(self) -> str | None:
        """The admin token, read from its file when one is configured."""
        if self.admin_token_file is not None:
            try:
                token = self.admin_token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise SettingsError(
                    [f"VMS_ADMIN_TOKEN_FILE={self.admin_token_file}: cannot read it ({error})"]
                ) from None
            if not token:
                # An empty secret would leave the admin API open while the operator believes it is protected.
                raise SettingsError([f"VMS_ADMIN_TOKEN_FILE={self.admin_token_file}: the file is empty"])
            return token
        return self.admin_token.get_secret_value() if self.admin_token else None

    def redacted(self) -> dict[str, Any]:
        """The effective settings as VMS_ variables, secrets replaced by ***."""
        values = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***"
            values[env_name(name)] = None if value is None else str(value)
        return values


class SettingsError(Exception):
    """One line per invalid variable; `vms` prints them and exits with code 2."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, `overrides` (command-line flags) winning; SettingsError when invalid."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        described = {}
        for problem in error.errors():  # one line per variable, the first problem found
            described.setdefault(tuple(problem.get("loc") or ()), _describe(problem))
        raise SettingsError(list(described.values())) from None


def _describe(problem: dict) -> str:
    location = problem.get("loc") or ()
    if not location:  # a cross-field rule: its message names the variables
        return problem["msg"].removeprefix("Value error, ")
    field_name = str(location[0])
    message = problem["msg"].removeprefix("Value error, ")
    allowed = _allowed(field_name)
    return f"{env_name(field_name)}={problem.get('input')!r}: {message}" + (f" (allowed: {allowed})" if allowed else "")


def _allowed(field_name: str) -> str:
    """A numeric field's bounds, read from its constraints (pydantic's own message already lists choices)."""
    limits = {type(bound).__name__: bound for bound in Settings.model_fields[field_name].metadata}
    if "Ge" in limits and "Le" in limits:
        return f"{limits['Ge'].ge}-{limits['Le'].le}"
    if "Ge" in limits:
        return f"a number >= {limits['Ge'].ge}"
    if "Gt" in limits:
        return f"a number > {limits['Gt'].gt}"
    return ""


def settings_table() -> str:
    """The README's environment reference, generated from `Settings`."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else ("empty" if default == "" else str(default))
        lines.append(f"| `{env_name(name)}` | {shown} | {field.description} |")
    return "\n".join(lines)
