// Fused CPU kernels for vms, loaded by MindSpore as Custom "aot" operators (see kernels/cpu.py).
//
// Why: in MindSpore 2.10's PyNative mode every operator launch costs ~40 us on CPU whatever its size, and a
// Llama decoder layer written with basic ops needs ~45 of them. These kernels do a layer's element-wise and
// attention work in 4 launches; the matmuls stay MindSpore's.
//
// Calling convention (MindSpore's aot ABI): params holds the inputs, then the outputs; shapes[i] and ndims[i]
// describe params[i]. All tensors are contiguous; floats are float32 and indices int32.
// KV caches are head-major, [kv_heads, slots, head_dim]: slot = block_id * block_size + offset, as vLLM counts.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Eight independent accumulators so that the compiler vectorises the reduction without -ffast-math.
inline float Dot(const float *a, const float *b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int lane = 0; lane < 8; ++lane) acc[lane] += a[i + lane] * b[i + lane];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void RmsNormRow(const float *x, const float *weight, float eps, int64_t n, float *out) {
  const float inv_rms = 1.0f / std::sqrt(Dot(x, x, n) / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv_rms * weight[i];
}

// Hugging Face's rotate-half rotary embedding: out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
inline void RotateHalf(const float *x, const float *cos, const float *sin, int64_t dim, float *out) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float first = x[i], second = x[i + half];
    out[i] = first * cos[i] - second * sin[i];
    out[i + half] = second * cos[i + half] + first * sin[i + half];
  }
}

// One head of q or k: optionally RMS-normalised over head_dim (Qwen3's q_norm / k_norm), then rotated.
inline void NormRotate(const float *x, const float *norm_weight, float eps, const float *cos, const float *sin,
                       int64_t dim, float *scratch, float *out) {
  if (norm_weight != nullptr) {
    RmsNormRow(x, norm_weight, eps, dim, scratch);
    x = scratch;
  }
  RotateHalf(x, cos, sin, dim, out);
}

// qkv [T, (H + 2K) * D], cos/sin tables [P, D], positions [T], slots [T], k_cache/v_cache [K, S, D]
// -> q [T, H, D] rotated; k rotated and v written into the caches at each token's slot (slot < 0: not written).
int RopeAndCache(void **params, int64_t **shapes, const float *q_norm, const float *k_norm, float eps, int out) {
  const float *qkv = static_cast<const float *>(params[0]);
  const float *cos_table = static_cast<const float *>(params[1]);
  const float *sin_table = static_cast<const float *>(params[2]);
  const int32_t *positions = static_cast<const int32_t *>(params[3]);
  const int32_t *slots = static_cast<const int32_t *>(params[4]);
  float *k_cache = static_cast<float *>(params[5]);
  float *v_cache = static_cast<float *>(params[6]);
  float *q_out = static_cast<float *>(params[out]);
  const int64_t tokens = shapes[0][0], width = shapes[0][1];
  const int64_t kv_heads = shapes[5][0], num_slots = shapes[5][1], dim = shapes[5][2];
  const int64_t heads = shapes[out][1];
  if (width != (heads + 2 * kv_heads) * dim) return 1;
  std::vector<float> scratch(dim);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = qkv + t * width;
    const float *cos = cos_table + static_cast<int64_t>(positions[t]) * dim;
    const float *sin = sin_table + static_cast<int64_t>(positions[t]) * dim;
    for (int64_t h = 0; h < heads; ++h) {
      NormRotate(row + h * dim, q_norm, eps, cos, sin, dim, scratch.data(), q_out + (t * heads + h) * dim);
    }
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= num_slots) continue;
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      const int64_t cache_row = (kh * num_slots + slot) * dim;
      NormRotate(row + (heads + kh) * dim, k_norm, eps, cos, sin, dim, scratch.data(), k_cache + cache_row);
      std::memcpy(v_cache + cache_row, row + (heads + kv_heads + kh) * dim, dim * sizeof(float));
    }
  }
  return 0;
}

}  // namespace

extern "C" {

// x [N, D], weight [D], eps [1] -> out [N, D]
int RmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
            void *extra) {
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[3]);
  const int64_t rows = shapes[0][0], dim = shapes[0][1];
  for (int64_t r = 0; r < rows; ++r) RmsNormRow(x + r * dim, weight, eps, dim, out + r * dim);
  return 0;
}

// x [N, D], residual [N, D], weight [D], eps [1] -> normed [N, D], x + residual [N, D]
int AddRmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  const float *x = static_cast<const float *>(params[0]);
  const float *residual = static_cast<const float *>(params[1]);
  const float *weight = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *normed = static_cast<float *>(params[4]);
  float *sum = static_cast<float *>(params[5]);
  const int64_t rows = shapes[0][0], dim = shapes[0][1];
  for (int64_t i = 0; i < rows * dim; ++i) sum[i] = x[i] + residual[i];
  for (int64_t r = 0; r < rows; ++r) RmsNormRow(sum + r * dim, weight, eps, dim, normed + r * dim);
  return 0;
}

// See RopeAndCache: qkv, cos, sin, positions, slots, k_cache, v_cache -> q
int RopeCache(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  return RopeAndCache(params, shapes, nullptr, nullptr, 0.0f, 7);
}

// As RopeCache with per-head RMSNorm of q and k first: ..., q_norm [D], k_norm [D], eps [1] -> q
int QkNormRopeCache(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  const float eps = *static_cast<const float *>(params[9]);
  return RopeAndCache(params, shapes, static_cast<const float *>(params[7]), static_cast<const float *>(params[8]),
                      eps, 10);
}

// q [T, H, D], k_cache/v_cache [K, S, D], positions [T], token_requests [T], context_slots [R, C], scale [1]
// -> out [T, H * D]. Token t of request r attends to context positions 0..positions[t] of r (causal and paged):
// their cache slots are context_slots[r, :]. Heads h = kh * G + g share KV head kh, so each K/V row is read once
// for all G of them.
int PagedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                   void *extra) {
  const float *q = static_cast<const float *>(params[0]);
  const float *k_cache = static_cast<const float *>(params[1]);
  const float *v_cache = static_cast<const float *>(params[2]);
  const int32_t *positions = static_cast<const int32_t *>(params[3]);
  const int32_t *token_requests = static_cast<const int32_t *>(params[4]);
  const int32_t *context_slots = static_cast<const int32_t *>(params[5]);
  const float scale = *static_cast<const float *>(params[6]);
  float *out = static_cast<float *>(params[7]);
  const int64_t tokens = shapes[0][0], heads = shapes[0][1], dim = shapes[0][2];
  const int64_t kv_heads = shapes[1][0], num_slots = shapes[1][1];
  const int64_t context = shapes[5][1];
  const int64_t group = heads / kv_heads;
  std::vector<float> scores;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t visible = std::min<int64_t>(static_cast<int64_t>(positions[t]) + 1, context);
    const int32_t *slots = context_slots + static_cast<int64_t>(token_requests[t]) * context;
    scores.resize(group * visible);
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      const float *q_group = q + (t * heads + kh * group) * dim;
      const float *k_head = k_cache + kh * num_slots * dim;
      const float *v_head = v_cache + kh * num_slots * dim;
      for (int64_t j = 0; j < visible; ++j) {
        const float *k_row = k_head + static_cast<int64_t>(slots[j]) * dim;
        for (int64_t g = 0; g < group; ++g) scores[g * visible + j] = Dot(q_group + g * dim, k_row, dim) * scale;
      }
      float *out_group = out + (t * heads + kh * group) * dim;
      std::fill(out_group, out_group + group * dim, 0.0f);
      std::vector<float> inv_sum(group);
      for (int64_t g = 0; g < group; ++g) {
        float *row = scores.data() + g * visible;
        const float max_score = *std::max_element(row, row + visible);
        float sum = 0.0f;
        for (int64_t j = 0; j < visible; ++j) sum += (row[j] = std::exp(row[j] - max_score));
        inv_sum[g] = 1.0f / sum;
      }
      for (int64_t j = 0; j < visible; ++j) {
        const float *v_row = v_head + static_cast<int64_t>(slots[j]) * dim;
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * visible + j];
          float *o = out_group + g * dim;
          for (int64_t d = 0; d < dim; ++d) o[d] += p * v_row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t d = 0; d < dim; ++d) out_group[g * dim + d] *= inv_sum[g];
      }
    }
  }
  return 0;
}

// gate_up [N, 2I] -> silu(gate) * up [N, I]
int SiluMul(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
            void *extra) {
  const float *gate_up = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[1]);
  const int64_t rows = shapes[0][0], size = shapes[0][1] / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float *gate = gate_up + r * 2 * size;
    const float *up = gate + size;
    float *o = out + r * size;
    for (int64_t i = 0; i < size; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
  return 0;
}

// k_cache/v_cache [K, S, D], src [N], dst [N] -> done [1]: copies slot src[i] to dst[i] for every KV head
// (vLLM's copy-on-write of shared blocks). The caches are updated in place.
int CopySlots(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  const int32_t *src = static_cast<const int32_t *>(params[2]);
  const int32_t *dst = static_cast<const int32_t *>(params[3]);
  const int64_t kv_heads = shapes[0][0], num_slots = shapes[0][1], dim = shapes[0][2];
  const int64_t count = shapes[2][0];
  for (int cache = 0; cache < 2; ++cache) {
    float *base = static_cast<float *>(params[cache]);
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      float *head = base + kh * num_slots * dim;
      for (int64_t i = 0; i < count; ++i) std::memcpy(head + dst[i] * dim, head + src[i] * dim, dim * sizeof(float));
    }
  }
  *static_cast<float *>(params[4]) = 0.0f;
  return 0;
}

}  // extern "C"
