"""image/sbgemm_standin.c, the sbgemm_ the emulated arm64 image preloads so that vLLM's aarch64 extension loads
next to the stand-in torch: it must compute what OpenBLAS's sbgemm_ computes (column-major, op = N or T, leading
dimensions wider than the matrix, alpha and beta, C only written when beta is 0) or vLLM would run on wrong numbers.
Built here with the host's C compiler; the image builds the same file for aarch64."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sbgemm(tmp_path_factory):
    compiler = shutil.which("g++")  # the kernels' compiler, which the tests need anyway; -x c: compiled as C
    assert compiler, "no g++ on PATH (the CPU kernels need it too)"
    library = tmp_path_factory.mktemp("sbgemm") / "libsbgemm_standin.so"
    source = ROOT / "image/sbgemm_standin.c"
    subprocess.run(
        [compiler, "-x", "c", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-o", library, source], check=True
    )
    return ctypes.CDLL(str(library)).sbgemm_


def _bfloat16(values: np.ndarray) -> np.ndarray:
    """The top halves of float32 values (truncated), as uint16: bfloat16's bits."""
    return (np.ascontiguousarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _as_float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _column_major(matrix: np.ndarray, leading: int) -> np.ndarray:
    """A Fortran-order buffer with `leading` >= rows elements per column (the extra rows hold garbage)."""
    rows, columns = matrix.shape
    buffer = np.full((columns, leading), 0x7FC0, np.uint16)  # bfloat16 NaN in the padding: reading it would show
    buffer[:, :rows] = matrix.T
    return buffer


def _call(function, transa: str, transb: str, a, lda, b, ldb, c, ldc, m, n, k, alpha, beta) -> None:
    ints = [ctypes.c_int(value) for value in (m, n, k, lda, ldb, ldc)]
    function(
        ctypes.c_char_p(transa.encode()),
        ctypes.c_char_p(transb.encode()),
        ctypes.byref(ints[0]),
        ctypes.byref(ints[1]),
        ctypes.byref(ints[2]),
        ctypes.byref(ctypes.c_float(alpha)),
        a.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(ints[3]),
        b.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(ints[4]),
        ctypes.byref(ctypes.c_float(beta)),
        c.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(ints[5]),
    )


@pytest.mark.parametrize("transa", ["N", "T", "t"])
@pytest.mark.parametrize("transb", ["N", "T", "C"])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 2.0)])
def test_sbgemm_matches_the_blas_definition(sbgemm, transa: str, transb: str, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(3)
    m, n, k = 5, 7, 19
    op_a = _bfloat16(rng.standard_normal((m, k)))
    op_b = _bfloat16(rng.standard_normal((k, n)))
    stored_a = op_a if transa == "N" else op_a.T
    stored_b = op_b if transb == "N" else op_b.T
    lda, ldb, ldc = stored_a.shape[0] + 3, stored_b.shape[0] + 2, m + 4
    c_before = rng.standard_normal((m, n)).astype(np.float32)
    if beta == 0.0:
        c_before[:] = np.nan  # BLAS: with beta 0, C is output only, its NaNs must not reach the result
    c = np.zeros((n, ldc), np.float32)
    c[:, :m] = c_before.T
    c[:, m:] = -1.0

    _call(
        sbgemm,
        transa,
        transb,
        _column_major(stored_a, lda),
        lda,
        _column_major(stored_b, ldb),
        ldb,
        c,
        ldc,
        m,
        n,
        k,
        alpha,
        beta,
    )

    product = _as_float(op_a).astype(np.float64) @ _as_float(op_b).astype(np.float64)
    expected = alpha * product + (beta * c_before if beta else 0.0)
    np.testing.assert_allclose(c[:, :m].T, expected, rtol=1e-5, atol=1e-5)
    assert np.all(c[:, m:] == -1.0), "sbgemm_ wrote past the m rows of a column of C"
