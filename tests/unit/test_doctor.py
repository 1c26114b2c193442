"""`vms doctor` on this CPU host (for real) and on fake Ascend hosts: device nodes in a temporary /dev, a fake
`npu-smi` on PATH printing real fixture outputs, fake CANN and driver version files."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import VMS

from vms_supervisor.compatibility import supported_table
from vms_supervisor.doctor import Finding, diagnose
from vms_supervisor.npu_probe import MANAGER_NODES, probe
from vms_supervisor.settings import Settings

FIXTURES = Path(__file__).with_name("npu_smi")
README = Path(__file__).parents[2] / "README.md"


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VMS, "doctor", *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_on_this_cpu_host_it_says_no_npu_and_that_cpu_serving_works() -> None:
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ serving: CPU serving works; no usable Ascend NPU (no /dev/davinci* device nodes" in result.stdout
    assert "✓ MindSpore run_check: CPU:" in result.stdout and "successfully" in result.stdout
    assert "· CANN toolkit: not installed" in result.stdout
    assert "\033[" not in result.stdout  # no colours when stdout is not a terminal


def test_json_output_and_a_blocking_setting_gives_a_non_zero_exit() -> None:
    result = doctor("--json", VMS_DEVICE="ascend")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["serving_blocked"] is True
    serving = [f for f in report["findings"] if f["check"] == "serving"]
    assert serving == [
        {
            "check": "serving",
            "status": "fail",
            "detail": "VMS_DEVICE=ascend but no /dev/davinci* device nodes (run the container with "
            "--device /dev/davinciN)",
        }
    ]


def test_invalid_settings_are_findings_not_a_crash() -> None:
    result = doctor(VMS_PORT="99999")
    assert result.returncode == 1
    assert re.search(r"✗ settings: VMS_PORT=.*99999", result.stdout)


def fake_ascend_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture: str, manager_nodes=MANAGER_NODES):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci0", "davinci1", *manager_nodes):
        (dev / name).touch(mode=0o666)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npu_smi = bin_dir / "npu-smi"
    npu_smi.write_text(f"#!/bin/sh\ncat {FIXTURES / fixture}\n")
    npu_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "version.cfg").write_text("version=8.1.RC1\n")
    (tmp_path / "driver.info").write_text("Version=24.1.rc3\n")
    host = probe(
        dev=dev, environ={}, cann_files=(str(tmp_path / "version.cfg"),), driver_file=str(tmp_path / "driver.info")
    )
    return host, dev


def no_run_check(device: str) -> Finding:
    return Finding("MindSpore run_check", "ok", f"skipped in this test ({device})")


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


def test_a_healthy_atlas_800i_a2_is_read_but_the_ascend_path_is_reported_missing(tmp_path, monkeypatch) -> None:
    host, dev = fake_ascend_host(tmp_path, monkeypatch, "atlas_800i_a2_910b4_8chips.txt")
    findings = by_check(diagnose(host, Settings(device="ascend"), {}, dev, run_check=no_run_check))
    assert findings["CANN toolkit"] == Finding("CANN toolkit", "ok", "version 8.1.RC1")
    assert findings["CANN environment"].status == "warn" and "source" in findings["CANN environment"].detail
    assert findings["Ascend driver"].detail == "version 24.1.rc3"
    assert findings["NPU device nodes"].status == "ok"
    chips = [f for name, f in findings.items() if name.startswith("NPU ") and "chip" in name]
    assert len(chips) == 8 and all(chip.status == "ok" for chip in chips)
    assert "910B4" in chips[0].detail
    assert findings["serving"].status == "fail" and "not built yet" in findings["serving"].detail


def test_cann_environment_counts_as_sourced_when_its_variables_are_set(tmp_path, monkeypatch) -> None:
    host, dev = fake_ascend_host(tmp_path, monkeypatch, "atlas_800i_a2_910b4_8chips.txt")
    environ = {"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest"}
    findings = by_check(diagnose(host, Settings(device="cpu"), environ, dev, run_check=no_run_check))
    assert findings["CANN environment"].status == "ok"
    assert findings["serving"] == Finding("serving", "ok", "CPU serving works")


def test_a_chip_in_alarm_and_a_missing_manager_node_are_named(tmp_path, monkeypatch) -> None:
    host, dev = fake_ascend_host(
        tmp_path, monkeypatch, "a3_ascend910_phy_id_one_alarm.txt", manager_nodes=("davinci_manager",)
    )
    findings = diagnose(host, Settings(device="auto"), {}, dev, run_check=no_run_check)
    nodes = by_check(findings)["NPU device nodes"]
    assert nodes.status == "fail" and "missing devmm_svm, hisi_hdc" in nodes.detail
    warned = [f for f in findings if f.status == "warn" and f.check.startswith("NPU ")]
    assert warned and all("Alarm" in f.detail or "Warning" in f.detail for f in warned)


def test_readme_supported_table_is_generated_from_the_compatibility_table() -> None:
    section = re.search(
        r"<!-- supported-table:start -->\n(.*?)\n<!-- supported-table:end -->", README.read_text(), re.S
    )
    assert section, "README.md lost its supported-table markers"
    assert section.group(1) == supported_table(), "README's table drifted: paste compatibility.supported_table()"


def test_a_cpu_host_is_judged_against_its_own_architectures_row() -> None:
    from vms_supervisor.compatibility import matching_stack

    assert matching_stack("cpu", None, "2.10.0", "0.32.0+cpu", "aarch64").machine == "aarch64"
    assert matching_stack("cpu", None, "2.10.0", "0.32.0+cpu", "x86_64").machine == "x86_64"
    assert matching_stack("cpu", None, "2.10.0", "0.32.0+cpu", "riscv64") is None
