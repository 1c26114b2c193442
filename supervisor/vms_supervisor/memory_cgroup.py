"""The memory cgroup the operator and the engine run in (a container's under `--memory`, a pod's, or a host slice):
its limit, and how many processes the kernel's OOM killer has ended in it. An engine that vanishes with a SIGKILL
nobody sent was, when that count rose meanwhile, killed for memory; the operator says so instead of "exited".

cgroup v2 keeps the count in `memory.events` (`oom_kill`), v1 in `memory.oom_control`; a container sees its own
cgroup at /sys/fs/cgroup, a host process finds its path in /proc/self/cgroup.
"""

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED_V1 = 1 << 60  # v1 reports "no limit" as a page-rounded LONG_MAX; anything this large means none


@dataclass(frozen=True)
class MemoryCgroup:
    directory: Path
    version: int  # 1 or 2

    def oom_kills(self) -> int | None:
        """Processes the OOM killer ended in this cgroup so far; None when the kernel does not say."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            fields = dict(line.split() for line in (self.directory / name).read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            return None
        return int(fields["oom_kill"]) if "oom_kill" in fields else None

    def limit_bytes(self) -> int | None:
        """The memory limit; None when there is none."""
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        try:
            text = (self.directory / name).read_text().strip()
        except OSError:
            return None
        if text == "max" or not text.isdigit() or int(text) >= UNLIMITED_V1:
            return None
        return int(text)


def own_memory_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> MemoryCgroup | None:
    """This process's memory cgroup, v1 or v2; None where neither can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):
            directory = root / "memory" / relative
            if (directory / "memory.oom_control").exists():
                return MemoryCgroup(directory, 1)
        if hierarchy == "0":
            for base in (root, root / "unified"):  # unified alone, or beside v1 controllers (hybrid)
                if (base / relative / "memory.events").exists():
                    return MemoryCgroup(base / relative, 2)
    return None


class OomWatch:
    """Whether the OOM killer struck since the engine last started."""

    def __init__(self, cgroup: MemoryCgroup | None) -> None:
        self.cgroup = cgroup
        self._at_start: int | None = None

    def oom_kills(self) -> int | None:
        return self.cgroup.oom_kills() if self.cgroup else None

    def limit_bytes(self) -> int | None:
        return self.cgroup.limit_bytes() if self.cgroup else None

    def engine_started(self) -> None:
        self._at_start = self.oom_kills()

    def why_ended(self) -> str | None:
        """ "killed by the kernel's OOM killer (...)" when the count rose since the engine started, else None."""
        now = self.oom_kills()
        if now is None or self._at_start is None or now <= self._at_start:
            return None
        limit = self.limit_bytes()
        within = f"memory limit {limit / 2**30:.1f} GiB" if limit else "no memory limit: the host ran out"
        return f"killed by the kernel's OOM killer ({within})"
