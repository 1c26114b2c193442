"""What Ascend hardware this container can use: device nodes, visible-device variables, `npu-smi info`, CANN.

Read-only and quick; run at start-up (to resolve VMS_DEVICE=auto and tensor_parallel_size=auto) and served by
the admin API. `npu-smi info` prints a box-drawn table whose columns vary by chip generation (910B, A3 with
Phy-IDs, 310P without HBM); the parser keys on each chip's two rows rather than on fixed columns.
"""

import itertools
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

DAVINCI_NODE = re.compile(r"^davinci(\d+)$")
MANAGER_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")
VISIBLE_DEVICE_VARIABLES = ("ASCEND_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES")
CANN_VERSION_FILES = (
    "/usr/local/Ascend/ascend-toolkit/latest/version.cfg",
    "/usr/local/Ascend/ascend-toolkit/latest/compiler/version.info",
)
DRIVER_VERSION_FILE = "/usr/local/Ascend/driver/version.info"
HEALTHY = "OK"

_FIRST_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s*$")  # NPU id, chip name
_SECOND_ROW = re.compile(r"^\s*(\d+)(?:\s+(\d+))?\s*$")  # chip id [, phy id / device id]
_USED_TOTAL = re.compile(r"(\d+)\s*/\s*(\d+)")
_VERSION = re.compile(r"npu-smi\s+(\S+)")


@dataclass(frozen=True)
class Chip:
    npu: int
    chip: int
    name: str
    health: str
    power_w: float | None
    temperature_c: float | None
    hbm_used_mb: int | None
    hbm_total_mb: int | None
    bus_id: str

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY


@dataclass(frozen=True)
class NpuSmiReport:
    version: str | None
    chips: tuple[Chip, ...]
    error: str | None = None  # why no chips were read, when none were


@dataclass
class ProbeResult:
    device_nodes: list[int] = field(default_factory=list)
    manager_nodes: list[str] = field(default_factory=list)
    visible_devices: dict[str, str] = field(default_factory=dict)
    npu_smi: NpuSmiReport | None = None
    cann_version: str | None = None
    driver_version: str | None = None

    @property
    def healthy_chips(self) -> list[Chip]:
        return [chip for chip in (self.npu_smi.chips if self.npu_smi else ()) if chip.healthy]

    def usable(self) -> tuple[bool, str]:
        """Whether the Ascend path can run here, and if not, the first reason why."""
        if not self.device_nodes:
            return False, "no /dev/davinci* device nodes (run the container with --device /dev/davinciN)"
        if self.npu_smi is None or not self.npu_smi.chips:
            reason = self.npu_smi.error if self.npu_smi else "npu-smi was not run"
            return False, f"npu-smi reports no chips ({reason})"
        if not self.healthy_chips:
            states = ", ".join(f"NPU {c.npu} chip {c.chip}: {c.health}" for c in self.npu_smi.chips)
            return False, f"no chip is healthy ({states})"
        if self.cann_version is None:
            return False, "the CANN toolkit is not installed (/usr/local/Ascend/ascend-toolkit)"
        return True, f"{len(self.healthy_chips)} healthy chip(s), CANN {self.cann_version}"

    def to_json(self) -> dict:
        usable, reason = self.usable()
        return {**asdict(self), "usable": usable, "reason": reason}


def parse_npu_smi(output: str) -> NpuSmiReport:
    """Chips from `npu-smi info` output; an empty or unreadable table gives no chips and says why."""
    version_match = _VERSION.search(output)
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in output.splitlines()]
    rows = [row for row in rows if len(row) >= 3]
    chips = []
    for first, second in itertools.pairwise(rows):
        head, tail = _FIRST_ROW.match(first[0]), _SECOND_ROW.match(second[0])
        if not head or not tail or not re.fullmatch(r"[A-Za-z]+", first[1]):
            continue
        power, temperature = (_number(value) for value in ([*first[2].split(), "", ""])[:2])
        memory = _USED_TOTAL.findall(second[2])
        hbm = memory[1] if len(memory) > 1 else None  # 310P has on-chip memory only, no HBM column
        chips.append(
            Chip(
                npu=int(head.group(1)),
                chip=int(tail.group(1)),
                name=head.group(2),
                health=first[1],
                power_w=power,
                temperature_c=temperature,
                hbm_used_mb=int(hbm[0]) if hbm else None,
                hbm_total_mb=int(hbm[1]) if hbm else None,
                bus_id=second[1],
            )
        )
    error = None
    if not chips:
        error = "empty output" if not output.strip() else f"no chip rows in the table: {output.strip()[:120]!r}"
    return NpuSmiReport(version_match.group(1) if version_match else None, tuple(chips), error)


def run_npu_smi(timeout: float = 10.0) -> NpuSmiReport:
    executable = shutil.which("npu-smi")
    if executable is None:
        return NpuSmiReport(None, (), "npu-smi is not installed or not on PATH")
    try:
        result = subprocess.run([executable, "info"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return NpuSmiReport(None, (), f"npu-smi failed: {error}")
    report = parse_npu_smi(result.stdout)
    if result.returncode != 0 and not report.chips:
        return NpuSmiReport(report.version, (), f"npu-smi exited {result.returncode}: {result.stderr.strip()[:200]}")
    return report


def probe(
    dev: Path = Path("/dev"),
    environ: dict[str, str] | None = None,
    cann_files: tuple[str, ...] = CANN_VERSION_FILES,
    driver_file: str = DRIVER_VERSION_FILE,
) -> ProbeResult:
    """The host as this process sees it; the paths are parameters so that tests can build fake hosts."""
    environ = os.environ if environ is None else environ
    nodes = sorted(int(m.group(1)) for p in _list(dev) if (m := DAVINCI_NODE.match(p.name)))
    return ProbeResult(
        device_nodes=nodes,
        manager_nodes=[name for name in MANAGER_NODES if (dev / name).exists()],
        visible_devices={name: environ[name] for name in VISIBLE_DEVICE_VARIABLES if name in environ},
        npu_smi=run_npu_smi() if nodes else NpuSmiReport(None, (), "no device nodes, npu-smi not run"),
        cann_version=_read_version(cann_files),
        driver_version=_read_version((driver_file,)),
    )


def _list(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "-" (second chip of a card) or "NA"


def _read_version(paths: tuple[str, ...]) -> str | None:
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        match = re.search(r"(?:version|Version)\s*[=:]\s*\[?([\w.\-]+)", text)
        if match:
            return match.group(1)
    return None
