"""`vms doctor`: what on this host would stop the NPU path, and whether serving works at all.

It reuses the operator's probe (device nodes, npu-smi, CANN and driver versions) and device choice, adds what
only a diagnosis needs (CANN's environment, node permissions, MindSpore's own `run_check()`, the plugin's
registration, the architecture the native libraries are built for) and judges the versions against the supported
table (compatibility.py). One line per finding; exit code 1 when something blocks serving.
"""

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from vms_supervisor.compatibility import matching_stack
from vms_supervisor.device import DeviceError, choose_device
from vms_supervisor.native_arch import describe, mismatches, this_machine
from vms_supervisor.npu_probe import MANAGER_NODES, ProbeResult, probe
from vms_supervisor.operator import versions
from vms_supervisor.settings import Settings, SettingsError, load_settings

CANN_ENV_VARIABLES = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
PLUGIN_GROUP, PLUGIN_NAME = "vllm.platform_plugins", "vms"
RUN_CHECK_TIMEOUT_S = 300
MARKS = {"ok": ("✓", "32"), "info": ("·", "36"), "warn": ("!", "33"), "fail": ("✗", "31")}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok, info, warn or fail (fail: serving is blocked)
    detail: str


def cann_findings(host: ProbeResult, environ: Mapping[str, str], npu_wanted: bool) -> list[Finding]:
    missing = "fail" if npu_wanted else "info"
    if host.cann_version is None:
        return [Finding("CANN toolkit", missing, "not installed (/usr/local/Ascend/ascend-toolkit)")]
    sourced = any(environ.get(name) for name in CANN_ENV_VARIABLES)
    return [
        Finding("CANN toolkit", "ok", f"version {host.cann_version}"),
        Finding(
            "CANN environment",
            "ok" if sourced else "warn",
            "set_env.sh sourced" if sourced else f"set_env.sh not sourced: run `source {SET_ENV}`",
        ),
    ]


def device_findings(host: ProbeResult, dev: Path, npu_wanted: bool) -> list[Finding]:
    missing = "fail" if npu_wanted else "info"
    findings = [
        Finding(
            "Ascend driver",
            "ok" if host.driver_version else missing,
            f"version {host.driver_version}" if host.driver_version else "not installed",
        )
    ]
    if not host.device_nodes:
        return [*findings, Finding("NPU device nodes", missing, f"no {dev}/davinci* (pass --device /dev/davinciN)")]
    nodes = [f"davinci{n}" for n in host.device_nodes] + list(MANAGER_NODES)
    denied = [name for name in nodes if (dev / name).exists() and not os.access(dev / name, os.R_OK | os.W_OK)]
    absent = [name for name in MANAGER_NODES if name not in host.manager_nodes]
    problems = []
    if denied:
        problems.append(f"no read/write access to {', '.join(denied)}")
    if absent:
        problems.append(f"missing {', '.join(absent)}")
    findings.append(
        Finding(
            "NPU device nodes",
            "fail" if problems else "ok",
            "; ".join(problems) or f"{', '.join(nodes)} present and accessible",
        )
    )
    report = host.npu_smi
    if report is None or not report.chips:
        return [*findings, Finding("npu-smi", "fail", report.error if report else "not run")]
    for chip in report.chips:
        memory = f", HBM {chip.hbm_used_mb}/{chip.hbm_total_mb} MB" if chip.hbm_total_mb else ""
        findings.append(
            Finding(
                f"NPU {chip.npu} chip {chip.chip}",
                "ok" if chip.healthy else "warn",
                f"{chip.name}, health {chip.health}, {chip.temperature_c} C{memory}",
            )
        )
    return findings


def plugin_findings(environ: Mapping[str, str]) -> list[Finding]:
    entry_points = [ep for ep in metadata.entry_points(group=PLUGIN_GROUP) if ep.name == PLUGIN_NAME]
    if not entry_points:
        return [Finding("vms plugin", "fail", f"not registered in {PLUGIN_GROUP} (is the vms package installed?)")]
    selected = entry_points[0].load()()
    if selected is None:
        return [Finding("vms plugin", "warn", "registered but disabled by VMS_DISABLE: vLLM runs its own platform")]
    return [Finding("vms plugin", "ok", f"registered ({entry_points[0].value}), selects {selected}")]


def architecture_finding() -> Finding:
    """The CPU architecture, and whether the installed MindSpore, vLLM and torch are built for it (MindSpore's wheel
    does not say: it is tagged for every platform)."""
    machine = this_machine()
    found = mismatches(machine)
    if found:
        return Finding("architecture", "fail", describe(found[0], machine))
    return Finding("architecture", "ok", f"{machine}; MindSpore's, vLLM's and torch's native libraries match it")


def mindspore_run_check(device: str) -> Finding:
    """MindSpore's own installation check on the chosen device, in a child process (it prints, and may hang)."""
    target = "Ascend" if device == "ascend" else "CPU"
    code = f"import mindspore as ms; ms.set_device({target!r}); ms.run_check()"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_CHECK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Finding("MindSpore run_check", "fail", f"no answer within {RUN_CHECK_TIMEOUT_S} s on {target}")
    output = (result.stdout + result.stderr).strip()
    passed = result.returncode == 0 and "successfully" in output
    last = [line for line in output.splitlines() if "MindSpore" in line or "Error" in line][-1:] or [output[-200:]]
    return Finding("MindSpore run_check", "ok" if passed else "fail", f"{target}: {last[0].strip()}")


def diagnose(
    host: ProbeResult, settings: Settings, environ: Mapping[str, str], dev: Path, run_check=mindspore_run_check
) -> list[Finding]:
    npu_wanted = settings.device == "ascend"
    findings = [*cann_findings(host, environ, npu_wanted), *device_findings(host, dev, npu_wanted)]
    installed = versions()
    findings += [
        Finding("MindSpore", "ok" if installed["mindspore"] else "fail", installed["mindspore"] or "missing"),
        Finding("vLLM", "ok" if installed["vllm"] else "fail", installed["vllm"] or "missing"),
        architecture_finding(),
        *plugin_findings(environ),
    ]
    try:
        choice = choose_device(settings, host)
    except DeviceError as error:
        return [*findings, Finding("serving", "fail", str(error))]
    findings.append(run_check(choice.device))
    stack = matching_stack(choice.device, host.cann_version, installed["mindspore"], installed["vllm"], this_machine())
    findings.append(
        Finding(
            "compatibility",
            "ok" if stack else "warn",
            f"supported: {stack.hardware} ({stack.status})"
            if stack
            else "this (CANN, MindSpore, vLLM) combination is not in the supported table",
        )
    )
    if choice.device == "ascend":
        return [
            *findings,
            Finding(
                "serving",
                "fail",
                "the Ascend compute path of vms_plugin is not built yet; VMS_DEVICE=cpu serves on the CPU",
            ),
        ]
    usable, reason = host.usable()
    npu_note = "" if usable else f"; no usable Ascend NPU ({reason})"
    return [*findings, Finding("serving", "ok", f"CPU serving works{npu_note}")]


def render(findings: Sequence[Finding], color: bool) -> str:
    lines = []
    for finding in findings:
        mark, code = MARKS[finding.status]
        text = f"{mark} {finding.check}: {finding.detail}"
        lines.append(f"\033[{code}m{text}\033[0m" if color else text)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vms doctor", description="why the NPU path would not work here")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        settings_findings = []
    except SettingsError as error:
        settings = Settings.model_construct(device="auto", tensor_parallel_size="auto")
        settings_findings = [Finding("settings", "fail", problem) for problem in error.problems]
    findings = settings_findings + diagnose(probe(), settings, os.environ, Path("/dev"))
    blocked = any(finding.status == "fail" for finding in findings)
    if args.json:
        print(json.dumps({"serving_blocked": blocked, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(render(findings, color))
    return 1 if blocked else 0
