"""The memory cgroup reading on fake cgroup trees (v1, v2, hybrid), and the OOM watch's verdict. A real OOM kill
in a real cgroup is tests/reliability/test_memory_limit.py."""

from pathlib import Path

import pytest

from vms_supervisor.lifecycle import Lifecycle, Policy
from vms_supervisor.memory_cgroup import MemoryCgroup, OomWatch, own_memory_cgroup


def fake_tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return tmp_path / "proc-cgroup", root


def test_v1_memory_controller_with_its_limit_and_kills(tmp_path: Path) -> None:
    proc, root = fake_tree(
        tmp_path,
        "5:devices:/\n4:memory:/pod/abc\n0::/\n",
        {
            "memory/pod/abc/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "memory/pod/abc/memory.limit_in_bytes": f"{3 * 2**30}\n",
        },
    )
    cgroup = own_memory_cgroup(proc, root)
    assert cgroup == MemoryCgroup(root / "memory" / "pod" / "abc", 1)
    assert (cgroup.oom_kills(), cgroup.limit_bytes()) == (2, 3 * 2**30)


def test_v1_without_a_limit_reports_none(tmp_path: Path) -> None:
    proc, root = fake_tree(
        tmp_path,
        "4:memory:/\n",
        {"memory/memory.oom_control": "oom_kill 0\n", "memory/memory.limit_in_bytes": "9223372036854771712\n"},
    )
    assert own_memory_cgroup(proc, root).limit_bytes() is None


@pytest.mark.parametrize("base", ["", "unified/"])
def test_v2_alone_or_beside_v1_controllers(tmp_path: Path, base: str) -> None:
    events = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"
    files = {f"{base}system.slice/vms/memory.events": events, f"{base}system.slice/vms/memory.max": "max\n"}
    proc, root = fake_tree(tmp_path, "0::/system.slice/vms\n", files)
    cgroup = own_memory_cgroup(proc, root)
    assert cgroup.version == 2 and cgroup.oom_kills() == 1 and cgroup.limit_bytes() is None


def test_no_readable_cgroup_is_none(tmp_path: Path) -> None:
    proc, root = fake_tree(tmp_path, "0::/\n", {})
    assert own_memory_cgroup(proc, root) is None
    assert own_memory_cgroup(tmp_path / "missing", root) is None
    assert OomWatch(None).why_ended() is None


def test_the_watch_names_the_oom_killer_only_when_it_struck_since_the_engine_started(tmp_path: Path) -> None:
    directory = tmp_path / "memory"
    directory.mkdir()
    (directory / "memory.events").write_text("oom_kill 3\n")
    (directory / "memory.max").write_text(f"{6 * 2**30}\n")
    watch = OomWatch(MemoryCgroup(directory, 2))
    watch.engine_started()
    assert watch.why_ended() is None  # kills before this engine started are not its cause
    (directory / "memory.events").write_text("oom_kill 4\n")
    assert watch.why_ended() == "killed by the kernel's OOM killer (memory limit 6.0 GiB)"
    (directory / "memory.max").write_text("max\n")
    assert watch.why_ended() == "killed by the kernel's OOM killer (no memory limit: the host ran out)"


def test_the_lifecycle_gives_the_cause_with_the_process_that_ended() -> None:
    engine = Lifecycle(Policy(60, 3, 1, 8, 2, 4, 100))
    engine.start(0)
    engine.observe(1, True, True)
    engine.observe(2, True, True, lost_process="engine core (pid 7)", why_ended="killed by the kernel's OOM killer")
    assert engine.last_error == "engine core (pid 7) exited: killed by the kernel's OOM killer"
