"""The NPU probe on real `npu-smi info` layouts (tests/unit/npu_smi/README.md names their sources)."""

from pathlib import Path

import pytest

from vms_supervisor.device import DeviceError, choose_device
from vms_supervisor.npu_probe import NpuSmiReport, ProbeResult, parse_npu_smi, probe
from vms_supervisor.settings import Settings

FIXTURES = Path(__file__).with_name("npu_smi")


def parsed(name: str) -> NpuSmiReport:
    return parse_npu_smi((FIXTURES / name).read_text())


def test_atlas_800i_a2_eight_910b_chips() -> None:
    report = parsed("atlas_800i_a2_910b4_8chips.txt")
    assert report.version == "24.1.1"
    assert [chip.npu for chip in report.chips] == list(range(8))
    first = report.chips[0]
    assert (first.name, first.health, first.power_w, first.temperature_c) == ("910B4", "OK", 88.2, 30.0)
    assert (first.hbm_used_mb, first.hbm_total_mb, first.bus_id) == (2683, 32768, "0000:C1:00.0")
    assert all(chip.healthy for chip in report.chips)


def test_two_chips_per_card_with_warning_and_alarm() -> None:
    report = parsed("a3_ascend910_phy_id_one_alarm.txt")
    assert [(chip.npu, chip.chip, chip.health) for chip in report.chips] == [
        (0, 0, "OK"),
        (0, 1, "OK"),
        (1, 0, "Warning"),
        (1, 1, "Alarm"),
    ]
    assert report.chips[1].power_w is None  # the second chip of a card prints "-"
    assert report.chips[3].temperature_c == 71.0
    assert [chip.healthy for chip in report.chips] == [True, True, False, False]


def test_310p_has_no_hbm_column() -> None:
    report = parsed("atlas_300i_duo_310p3.txt")
    assert [(chip.npu, chip.chip, chip.name) for chip in report.chips] == [(2, 0, "310P3"), (2, 1, "310P3")]
    assert report.chips[0].power_w is None and report.chips[0].hbm_total_mb is None


@pytest.mark.parametrize(("name", "reason"), [("empty.txt", "empty output"), ("garbled.txt", "no chip rows")])
def test_empty_or_garbled_output_reads_no_chips_and_says_why(name: str, reason: str) -> None:
    report = parsed(name)
    assert report.chips == () and reason in report.error


def test_this_cpu_host_has_no_npu(tmp_path: Path) -> None:
    result = probe(dev=tmp_path, environ={})
    assert result.device_nodes == [] and not result.usable()[0]
    assert "no /dev/davinci* device nodes" in result.usable()[1]


def test_device_nodes_and_visible_devices_are_found(tmp_path: Path) -> None:
    for name in ("davinci0", "davinci3", "davinci_manager", "hisi_hdc"):
        (tmp_path / name).touch()
    result = probe(dev=tmp_path, environ={"ASCEND_VISIBLE_DEVICES": "0,3"})
    assert result.device_nodes == [0, 3]
    assert result.manager_nodes == ["davinci_manager", "hisi_hdc"]
    assert result.visible_devices == {"ASCEND_VISIBLE_DEVICES": "0,3"}
    assert result.npu_smi.chips == ()  # no npu-smi on this host: said, not faked


def ascend_host(fixture: str, cann: str | None = "8.0.0") -> ProbeResult:
    return ProbeResult(device_nodes=[0, 1], npu_smi=parsed(fixture), cann_version=cann)


def test_auto_picks_ascend_with_one_engine_chip_per_healthy_chip() -> None:
    choice = choose_device(Settings(), ascend_host("a3_ascend910_phy_id_one_alarm.txt"))
    assert (choice.device, choice.tensor_parallel_size) == ("ascend", 2)


def test_auto_falls_back_to_cpu_with_a_warning() -> None:
    choice = choose_device(Settings(), ascend_host("atlas_800i_a2_910b4_8chips.txt", cann=None))
    assert choice.device == "cpu" and "CANN toolkit is not installed" in choice.warning


def test_ascend_without_a_usable_chip_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="VMS_DEVICE=ascend but npu-smi reports no chips"):
        choose_device(Settings(device="ascend"), ascend_host("garbled.txt"))


def test_tensor_parallel_larger_than_the_healthy_chips_is_refused() -> None:
    with pytest.raises(DeviceError, match="only 2 healthy chip"):
        choose_device(Settings(tensor_parallel_size="4"), ascend_host("a3_ascend910_phy_id_one_alarm.txt"))


def test_cpu_ranks_are_one_unless_asked_and_never_more_than_the_cores() -> None:
    no_npu = ProbeResult(device_nodes=[])
    assert choose_device(Settings(device="cpu"), no_npu, cpu_cores=8).tensor_parallel_size == 1
    four = Settings(device="cpu", tensor_parallel_size="4")
    assert choose_device(four, no_npu, cpu_cores=8).tensor_parallel_size == 4
    with pytest.raises(DeviceError, match="VMS_TENSOR_PARALLEL_SIZE=4 but this host gives vms 2 CPU core"):
        choose_device(four, no_npu, cpu_cores=2)
