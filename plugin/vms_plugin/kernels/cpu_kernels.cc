// Fused CPU kernels for vms, loaded by MindSpore as Custom "aot" operators (see kernels/cpu.py).
//
// Why: in MindSpore 2.10's PyNative mode every operator launch costs 40-170 us on CPU whatever its size, and its
// matmul streams a single row's weights at ~10 GB/s. So a whole decoder layer is one kernel here (DecoderLayer:
// norms, the four linear layers, rotary, KV-cache write, paged attention, SiLU), 30 launches per step for a
// 30-layer model instead of ~280, with the linear layers on weights packed for sequential streaming (Linear).
// The pieces are exported too (RmsNorm, AddRmsNorm, RopeCache, PagedAttention, Linear) for the final norm, the
// output projection and tests.
//
// Calling convention (MindSpore's aot ABI): params holds the inputs, then the outputs; shapes[i] and ndims[i]
// describe params[i]. All tensors are contiguous; floats are float32 and indices int32.
// KV caches are head-major, [kv_heads, slots, head_dim]: slot = block_id * block_size + offset, as vLLM counts.
// Linear weights W [N, K] (out, in features) are packed into panels [ceil(N / 64), K, 64]: panel p holds columns
// 64p..64p+63 of W^T, zero padded, so one panel's rows are read front to back (kernels/pack.py packs them).
// Work is shared between the process's cores with OpenMP: linear layers by panel, attention by token.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

typedef float Vec __attribute__((vector_size(64), aligned(4)));  // 16 floats: one AVX-512 or two AVX2 registers
constexpr int64_t kLanes = 16;

inline Vec LoadVec(const float *p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

inline void StoreVec(float *p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }

// The 16 lanes summed as a tree (halves, quarters, then four scalars): a lane-by-lane loop is a chain of 15
// dependent adds, and attention does one of these per score.
inline float HorizontalSum(Vec v) {
  typedef float Half __attribute__((vector_size(32), aligned(4)));
  typedef float Quarter __attribute__((vector_size(16), aligned(4)));
  Half low, high;
  std::memcpy(&low, &v, sizeof(Half));
  std::memcpy(&high, reinterpret_cast<const char *>(&v) + sizeof(Half), sizeof(Half));
  const Half half = low + high;
  Quarter first, second;
  std::memcpy(&first, &half, sizeof(Quarter));
  std::memcpy(&second, reinterpret_cast<const char *>(&half) + sizeof(Quarter), sizeof(Quarter));
  const Quarter quarter = first + second;
  return (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
}

// Four independent vector accumulators: no dependency chain between FMAs, no -ffast-math needed.
inline float Dot(const float *a, const float *b, int64_t n) {
  Vec acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    for (int v = 0; v < 4; ++v) acc[v] += LoadVec(a + i + v * kLanes) * LoadVec(b + i + v * kLanes);
  }
  for (; i + kLanes <= n; i += kLanes) acc[0] += LoadVec(a + i) * LoadVec(b + i);
  float sum = HorizontalSum((acc[0] + acc[1]) + (acc[2] + acc[3]));
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

// ---------------------------------------------------------------------------------------------------------
// Linear layers: out [M, N] = x [M, K] @ W^T + bias, W packed (see the top of the file).

constexpr int kPanelVecs = 4;
constexpr int64_t kPanel = kPanelVecs * kLanes;  // 64 columns per panel

// ROWS rows of x times one panel: ROWS x 64 accumulators stay in registers while the panel streams by.
template <int ROWS>
inline void PanelTile(const float *x, int64_t k_size, const float *panel, const float *bias, float *out,
                      int64_t out_stride) {
  Vec acc[ROWS][kPanelVecs];
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelVecs; ++v) acc[r][v] = LoadVec(bias + v * kLanes);
  }
  for (int64_t k = 0; k < k_size; ++k) {
    Vec w[kPanelVecs];
    for (int v = 0; v < kPanelVecs; ++v) w[v] = LoadVec(panel + k * kPanel + v * kLanes);
    for (int r = 0; r < ROWS; ++r) {
      const float xs = x[r * k_size + k];
      for (int v = 0; v < kPanelVecs; ++v) acc[r][v] += xs * w[v];
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelVecs; ++v) StoreVec(out + r * out_stride + v * kLanes, acc[r][v]);
  }
}

// Rows per tile: 6 x 4 accumulators + 4 weight vectors fill AVX-512's 32 registers; AVX2 has 16 of half width.
#ifdef __AVX512F__
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 2;
#endif

// Rows of x in tiles of kTileRows (the rest one at a time) against one panel, written to out[:, 0:64].
inline void PanelRows(const float *x, int64_t m, int64_t k_size, const float *panel, const float *bias, float *out,
                      int64_t out_stride) {
  int64_t r = 0;
  for (; r + kTileRows <= m; r += kTileRows) {
    PanelTile<kTileRows>(x + r * k_size, k_size, panel, bias, out + r * out_stride, out_stride);
  }
  for (; r + 2 <= m; r += 2) PanelTile<2>(x + r * k_size, k_size, panel, bias, out + r * out_stride, out_stride);
  if (r < m) PanelTile<1>(x + r * k_size, k_size, panel, bias, out + r * out_stride, out_stride);
}

void PackedLinear(const float *x, int64_t m, int64_t k_size, const float *packed, int64_t n, const float *bias,
            float *out) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const float zeros[kPanel] = {};
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t column = p * kPanel, width = std::min(kPanel, n - column);
    const float *panel = packed + p * k_size * kPanel;
    if (width == kPanel) {
      PanelRows(x, m, k_size, panel, bias == nullptr ? zeros : bias + column, out + column, n);
      continue;
    }
    // The last panel is zero padded: compute it whole, keep its real columns.
    float bias_part[kPanel] = {};
    if (bias != nullptr) std::copy(bias + column, bias + n, bias_part);
    std::vector<float> tile(m * kPanel);
    PanelRows(x, m, k_size, panel, bias_part, tile.data(), kPanel);
    for (int64_t r = 0; r < m; ++r) std::copy_n(tile.data() + r * kPanel, width, out + r * n + column);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Attention pieces.

struct KvCache {
  float *k;
  float *v;
  int64_t kv_heads, num_slots, dim;
};

// qkv [T, (H + 2K) * D], cos/sin tables [P, D], positions [T], slots [T] -> q [T, H, D] rotated; k rotated and v
// written into the caches at each token's slot (slot < 0: not written). q_norm/k_norm: Qwen3's per-head RMSNorm.
void RopeAndCache(const float *qkv, int64_t tokens, int64_t heads, const float *cos_table, const float *sin_table,
                  const int32_t *positions, const int32_t *slots, const KvCache &cache, const float *q_norm,
                  const float *k_norm, float eps, float *q_out) {
  const int64_t dim = cache.dim, kv_heads = cache.kv_heads, width = (heads + 2 * kv_heads) * dim;
  std::vector<float> scratch(dim);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = qkv + t * width;
    const float *cos = cos_table + static_cast<int64_t>(positions[t]) * dim;
    const float *sin = sin_table + static_cast<int64_t>(positions[t]) * dim;
    for (int64_t h = 0; h < heads; ++h) {
      NormRotate(row + h * dim, q_norm, eps, cos, sin, dim, scratch.data(), q_out + (t * heads + h) * dim);
    }
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= cache.num_slots) continue;
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      const int64_t cache_row = (kh * cache.num_slots + slot) * dim;
      NormRotate(row + (heads + kh) * dim, k_norm, eps, cos, sin, dim, scratch.data(), cache.k + cache_row);
      std::memcpy(cache.v + cache_row, row + (heads + kv_heads + kh) * dim, dim * sizeof(float));
    }
  }
}

// One token's attention over its request's context: the `visible` slots, all heads -> out [H * D]. Heads
// h = kh * G + g share KV head kh, so each K/V row is read once for all G of them.
void AttendToken(const float *q, const KvCache &cache, const int32_t *slots, int64_t visible, int64_t heads,
                 float scale, std::vector<float> &scores, float *out) {
  const int64_t dim = cache.dim, group = heads / cache.kv_heads;
  scores.resize(group * visible + group);  // the scores, then each head's 1 / sum of exponentials
  float *inv_sum = scores.data() + group * visible;
  for (int64_t kh = 0; kh < cache.kv_heads; ++kh) {
    const float *q_group = q + kh * group * dim;
    const float *k_head = cache.k + kh * cache.num_slots * dim;
    const float *v_head = cache.v + kh * cache.num_slots * dim;
    for (int64_t j = 0; j < visible; ++j) {
      const float *k_row = k_head + static_cast<int64_t>(slots[j]) * dim;
      for (int64_t g = 0; g < group; ++g) scores[g * visible + j] = Dot(q_group + g * dim, k_row, dim) * scale;
    }
    float *out_group = out + kh * group * dim;
    std::fill(out_group, out_group + group * dim, 0.0f);
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

// q [T, H, D] -> out [T, H * D]: token t of request r attends to context positions 0..positions[t] of r (causal
// and paged), whose cache slots are context_slots[r, :] ([R, context]).
void PagedAttend(const float *q, int64_t tokens, int64_t heads, const KvCache &cache, const int32_t *positions,
                 const int32_t *token_requests, const int32_t *context_slots, int64_t context, float scale,
                 float *out) {
  const int64_t row = heads * cache.dim;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t visible = std::min<int64_t>(static_cast<int64_t>(positions[t]) + 1, context);
      const int32_t *slots = context_slots + static_cast<int64_t>(token_requests[t]) * context;
      AttendToken(q + t * row, cache, slots, visible, heads, scale, scores, out + t * row);
    }
  }
}

// residual += x (unless x is null), normed = rms_norm(residual) * weight, row by row.
void AddRmsNormRows(const float *x, float *residual, const float *weight, float eps, int64_t rows, int64_t dim,
                    float *normed) {
  for (int64_t r = 0; r < rows; ++r) {
    float *sum = residual + r * dim;
    if (x != nullptr) {
      for (int64_t i = 0; i < dim; ++i) sum[i] += x[r * dim + i];
    }
    RmsNormRow(sum, weight, eps, dim, normed + r * dim);
  }
}

// gate_up [N, 2I] -> silu(gate) * up [N, I]
void SiluMulRows(const float *gate_up, int64_t rows, int64_t size, float *out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *gate = gate_up + r * 2 * size;
    const float *up = gate + size;
    float *o = out + r * size;
    for (int64_t i = 0; i < size; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

KvCache CacheParams(void **params, int64_t **shapes, int k_index) {
  return {static_cast<float *>(params[k_index]), static_cast<float *>(params[k_index + 1]), shapes[k_index][0],
          shapes[k_index][1], shapes[k_index][2]};
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
  std::memcpy(sum, residual, rows * dim * sizeof(float));
  AddRmsNormRows(x, sum, weight, eps, rows, dim, normed);
  return 0;
}

// x [M, K], packed weight [ceil(N / 64), K, 64], bias [N] -> out [M, N]
int Linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
           void *extra) {
  if (shapes[1][1] != shapes[0][1] || shapes[1][2] != kPanel || shapes[1][0] * kPanel < shapes[2][0]) return 1;
  PackedLinear(static_cast<const float *>(params[0]), shapes[0][0], shapes[0][1], static_cast<const float *>(params[1]),
         shapes[2][0], static_cast<const float *>(params[2]), static_cast<float *>(params[3]));
  return 0;
}

// qkv [T, (H + 2K) * D], cos [P, D], sin [P, D], positions [T], slots [T], k_cache, v_cache, q_norm [D],
// k_norm [D], eps [1] (0: no q/k norm) -> q [T, H, D]; see RopeAndCache.
int RopeCache(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  const KvCache cache = CacheParams(params, shapes, 5);
  const float eps = *static_cast<const float *>(params[9]);
  const float *q_norm = eps > 0 ? static_cast<const float *>(params[7]) : nullptr;
  const float *k_norm = eps > 0 ? static_cast<const float *>(params[8]) : nullptr;
  const int64_t heads = shapes[0][1] / cache.dim - 2 * cache.kv_heads;
  RopeAndCache(static_cast<const float *>(params[0]), shapes[0][0], heads, static_cast<const float *>(params[1]),
               static_cast<const float *>(params[2]), static_cast<const int32_t *>(params[3]),
               static_cast<const int32_t *>(params[4]), cache, q_norm, k_norm, eps, static_cast<float *>(params[10]));
  return 0;
}

// q [T, H, D], k_cache/v_cache [K, S, D], positions [T], token_requests [T], context_slots [R, C], scale [1]
// -> out [T, H * D]; see PagedAttend.
int PagedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                   void *extra) {
  PagedAttend(static_cast<const float *>(params[0]), shapes[0][0], shapes[0][1], CacheParams(params, shapes, 1),
              static_cast<const int32_t *>(params[3]), static_cast<const int32_t *>(params[4]),
              static_cast<const int32_t *>(params[5]), shapes[5][1], *static_cast<const float *>(params[6]),
              static_cast<float *>(params[7]));
  return 0;
}

// One Llama-family decoder layer (Llama, Qwen2 with q/k/v biases, Qwen3 with q/k norms). Inputs:
//   0 x [T, E], 1 residual [T, E] (ignored in the first layer), 2 input_norm [E], 3 qkv packed (N = (H + 2K) D),
//   4 qkv_bias [(H + 2K) D], 5 q_norm [D], 6 k_norm [D], 7 o packed (N = E), 8 o_bias [E], 9 post_norm [E],
//   10 gate_up packed (N = 2I), 11 down packed (K = I, N = E), 12 cos [P, D], 13 sin [P, D], 14 positions [T],
//   15 slot_mapping [T], 16 token_requests [T], 17 context_slots [R, C], 18 k_cache, 19 v_cache [K, S, D],
//   20 config [4]: rms eps, has residual (0 in the first layer), q/k norm eps (0: none), attention scale.
// Outputs: 21 the MLP's output [T, E] and 22 the residual stream [T, E], unsummed, as the layer's Python form
// returns them (the next layer's norm adds them).
int DecoderLayer(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  const float *x = static_cast<const float *>(params[0]);
  const float *config = static_cast<const float *>(params[20]);
  const float eps = config[0], qk_eps = config[2], scale = config[3];
  const bool has_residual = config[1] != 0.0f;
  const KvCache cache = CacheParams(params, shapes, 18);
  const int64_t tokens = shapes[0][0], hidden = shapes[0][1];
  const int64_t qkv_width = shapes[4][0], heads = qkv_width / cache.dim - 2 * cache.kv_heads;
  const int64_t attn_width = heads * cache.dim, intermediate = shapes[11][1];
  auto weight = [&](int index) { return static_cast<const float *>(params[index]); };
  float *out = static_cast<float *>(params[21]);
  float *residual = static_cast<float *>(params[22]);

  thread_local std::vector<float> normed, qkv, q, attn, gate_up, act;
  normed.resize(tokens * hidden);
  qkv.resize(tokens * qkv_width);
  q.resize(tokens * attn_width);
  attn.resize(tokens * attn_width);
  gate_up.resize(tokens * 2 * intermediate);
  act.resize(tokens * intermediate);

  std::memcpy(residual, has_residual ? params[1] : params[0], tokens * hidden * sizeof(float));
  AddRmsNormRows(has_residual ? x : nullptr, residual, weight(2), eps, tokens, hidden, normed.data());
  PackedLinear(normed.data(), tokens, hidden, weight(3), qkv_width, weight(4), qkv.data());
  RopeAndCache(qkv.data(), tokens, heads, weight(12), weight(13), static_cast<const int32_t *>(params[14]),
               static_cast<const int32_t *>(params[15]), cache, qk_eps > 0 ? weight(5) : nullptr,
               qk_eps > 0 ? weight(6) : nullptr, qk_eps, q.data());
  PagedAttend(q.data(), tokens, heads, cache, static_cast<const int32_t *>(params[14]),
              static_cast<const int32_t *>(params[16]), static_cast<const int32_t *>(params[17]), shapes[17][1],
              scale, attn.data());
  PackedLinear(attn.data(), tokens, attn_width, weight(7), hidden, weight(8), out);
  AddRmsNormRows(out, residual, weight(9), eps, tokens, hidden, normed.data());
  PackedLinear(normed.data(), tokens, hidden, weight(10), 2 * intermediate, nullptr, gate_up.data());
  SiluMulRows(gate_up.data(), tokens, intermediate, act.data());
  PackedLinear(act.data(), tokens, intermediate, weight(11), hidden, nullptr, out);
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
