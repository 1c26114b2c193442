/* sbgemm_standin.c — OpenBLAS's bfloat16 GEMM (sbgemm_) as a plain loop, for the emulated arm64 image only.

   vLLM's aarch64 extension (vllm/_C.abi3.so) is linked against the OpenBLAS that the torch 2.13.0+cpu wheel
   carries and needs its sbgemm_ symbol to load at all. arm64-base.sh's stand-in torch (PyPI's CUDA build, see its
   header) brings NVIDIA's NVPL BLAS instead, which has no sbgemm_, so vLLM cannot start. This library supplies the
   one missing symbol with OpenBLAS's semantics (column-major Fortran interface, bfloat16 inputs, float32
   accumulation and output), slowly and correctly. An image built with the real torch+cpu wheel does not carry it.

   C := alpha * op(A) * op(B) + beta * C, op(X) = X or X^T; when beta is 0, C is only written (BLAS convention). */
#include <stdint.h>
#include <string.h>

static float bf16_to_float(uint16_t half) {
    uint32_t bits = (uint32_t)half << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static int transposed(const char *trans) { return *trans == 'T' || *trans == 't' || *trans == 'C' || *trans == 'c'; }

void sbgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k, const float *alpha,
             const uint16_t *a, const int *lda, const uint16_t *b, const int *ldb, const float *beta, float *c,
             const int *ldc) {
    const int ta = transposed(transa), tb = transposed(transb);
    for (int j = 0; j < *n; ++j) {
        for (int i = 0; i < *m; ++i) {
            float sum = 0.0f;
            for (int p = 0; p < *k; ++p) {
                const uint16_t a_ip = ta ? a[p + (long)i * *lda] : a[i + (long)p * *lda];
                const uint16_t b_pj = tb ? b[j + (long)p * *ldb] : b[p + (long)j * *ldb];
                sum += bf16_to_float(a_ip) * bf16_to_float(b_pj);
            }
            float *out = &c[i + (long)j * *ldc];
            *out = *alpha * sum + (*beta == 0.0f ? 0.0f : *beta * *out);
        }
    }
}
