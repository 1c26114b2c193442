"""What the aarch64 runs of the kernel tests (the builds of tests/arm64/emulated.py in test_cpu_kernels.py's BUILDS)
can catch that the x86 ones cannot: NEON's tile (half a 64-column panel, kPanelTileVecs in cpu_kernels.cc) is
aarch64's own, so a mutation of it that leaves every x86 build right must fail them."""

from pathlib import Path

import numpy as np
import pytest
from arm64.emulated import EmulatedKernel
from test_cpu_kernels import packed

# The second half of each panel written over the first, in both tiles (float weights' and bfloat16 pairs'): an offset
# that is 0 on x86, whose tiles hold whole panels.
MUTATION = (
    "StoreVec(out + r * out_stride + (first + v) * kLanes, acc[r][v]);",
    "StoreVec(out + r * out_stride + v * kLanes, acc[r][v]);",
)


@pytest.fixture(scope="module")
def mutated_source(tmp_path_factory) -> Path:
    from vms_plugin.kernels.build import SOURCE

    text = SOURCE.read_text()
    assert text.count(MUTATION[0]) == 2, "the mutated lines moved: update MUTATION"
    path = tmp_path_factory.mktemp("mutant") / "cpu_kernels.cc"
    path.write_text(text.replace(*MUTATION))
    return path


def linear(operator, x: np.ndarray, parameter, bias: np.ndarray) -> np.ndarray:
    from mindspore import Tensor

    return operator(Tensor(x), parameter, Tensor(bias), Tensor(np.zeros(1, np.float32))).asnumpy()


@pytest.mark.parametrize("rows", [1, 3, 7])
def test_a_broken_neon_tile_fails_the_aarch64_runs_and_no_x86_build(mutated_source: Path, rows: int) -> None:
    from vms_plugin.kernels.build import build_library
    from vms_plugin.kernels.cpu import kernel_operator

    rng = np.random.default_rng(5)
    weight, parameter = packed(rng.standard_normal((128, 40)).astype(np.float32), "float32")
    bias = rng.standard_normal(128).astype(np.float32)
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    expected = x @ weight.T + bias

    native = kernel_operator("Linear", build_library(mutated_source))
    np.testing.assert_allclose(linear(native, x, parameter, bias), expected, atol=1e-4)
    for build in ("aarch64-kunpeng920", "aarch64-armv8"):
        np.testing.assert_allclose(linear(EmulatedKernel("Linear", build), x, parameter, bias), expected, atol=1e-4)
        wrong = linear(EmulatedKernel("Linear", build, mutated_source), x, parameter, bias)
        assert not np.allclose(wrong, expected, atol=1e-4), f"the mutant passed on {build}"


KUNPENG_920_CPUINFO = """processor\t: 0
BogoMIPS\t: 200.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma dcpop asimddp
CPU implementer\t: 0x48
CPU part\t: 0xd01
"""


def test_the_kernel_cache_is_keyed_by_aarch64_features_as_by_x86_flags(monkeypatch) -> None:
    """A Kunpeng 920 and an Armv8.0 host sharing a home directory must not share a -march=native library."""
    from vms_plugin.kernels import build

    features = build.cpu_features(KUNPENG_920_CPUINFO)
    assert features.startswith("Features") and "asimddp" in features
    assert build.cpu_features("processor\t: 0\nflags\t\t: fpu avx2\n") == "flags\t\t: fpu avx2"
    monkeypatch.setattr(build, "_cpu_flags", lambda: features)
    kunpeng = build.library_path()
    monkeypatch.setattr(build, "_cpu_flags", lambda: "Features\t: fp asimd")
    assert build.library_path() != kunpeng
