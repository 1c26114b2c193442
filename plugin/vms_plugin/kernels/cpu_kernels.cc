// Fused CPU kernels for vms, loaded by MindSpore as Custom "aot" operators (see kernels/cpu.py).
//
// Why: in MindSpore 2.10's PyNative mode every operator launch costs 40-170 us on CPU whatever its size, and its
// matmul streams a single row's weights at ~10 GB/s. So a whole decoder layer is one kernel here (DecoderLayer:
// norms, the four linear layers, rotary, KV-cache write, paged attention, SiLU), 30 launches per step for a
// 30-layer model instead of ~280, with the linear layers on weights packed for sequential streaming (Linear).
// On one rank the whole model is one launch (CausalLm: embedding, every layer, final norm, output projection).
// The pieces are exported too (PackedRows, RmsNorm, AddRmsNorm, RopeCache, PagedAttention, Linear) for tensor
// parallelism, whose ranks meet between layers, and for tests. RoutedExperts is a mixture-of-experts MLP, which
// a MoE model launches after each layer's attention half; LatentAttention is DeepSeek's multi-head latent attention.
//
// Calling convention (MindSpore's aot ABI): params holds the inputs, then the outputs; shapes[i] and ndims[i]
// describe params[i] and dtypes[i] names its type. All tensors are contiguous; indices are int32.
// Precision: activations, norms, biases and every accumulation are float32. Linear weights and the KV caches are
// stored in float32, float16 or bfloat16 (the model's dtype), read through a conversion to float32: decode is
// bound by memory bandwidth, so halving the bytes per weight is the gain; the arithmetic stays float32. int8
// weights (quantized per output column) quarter them; W8A8 layers multiply in int32, exactly, before scaling.
// KV caches are head-major, [kv_heads, slots, head_dim]: slot = block_id * block_size + offset, as vLLM counts;
// values a row per slot, keys in tiles of 16 slots transposed (KvCache).
// Linear weights W [N, K] (out, in features) are packed into panels of 64 output columns so that one panel is read
// front to back (kernels/pack.py packs them): float32 and float16 [ceil(N / 64), K, 64], panel p holding columns
// 64p..64p+63 of W^T, zero padded; bfloat16 [ceil(N / 64), ceil(K / 2), 64, 2], the two weights of consecutive
// k for one column side by side, so one 32-bit lane holds a pair (the layout AVX512-BF16's dot product reads,
// and a pair widens to two float32 with one shift and one mask); int8 [ceil(N / 64), 512 + ceil(K / 4) * 256]
// bytes, each panel a header of 64 float32 column scales and 64 int32 column sums, then four consecutive k per
// column in one 32-bit lane (the layout of VNNI's vpdpbusd): W[n, k] = scale[n] * q[n, k], symmetric.
// int8 layers take their activations as float32 (W8A16; decode rows on VNNI as a 24-bit integer mantissa per row)
// or quantized per row to int8 (W8A8, `Linear`'s options).
// Work is shared between the process's cores with OpenMP: linear layers by panel, attention by token.
// Targets: x86-64 (AVX-512, AVX2 or SSE vectors, with AVX512-BF16 and VNNI where present) and aarch64 (NEON's 4-lane
// vectors, fp16 conversions, the int8 dot product where present; built for Kunpeng 920 and others, tested here
// under qemu, see tests/arm64).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <omp.h>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace {

// One vector register of float32: GCC lowers a generic vector wider than the target's registers through the stack
// (16-lane vectors on AVX2 made a 64-column panel tile ~10x slower than memory), so the width follows the build.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4), aligned(4)));

// A vector read from or written to any address: GCC compiles this to one unaligned vector move, where a memcpy
// into a vector went through the stack in two halves on AVX2.
template <typename V>
inline V LoadUnaligned(const void *p) {
  typedef V Unaligned __attribute__((aligned(1), may_alias));
  return *static_cast<const Unaligned *>(p);
}

template <typename V>
inline void StoreUnaligned(void *p, V v) {
  typedef V Unaligned __attribute__((aligned(1), may_alias));
  *static_cast<Unaligned *>(p) = v;
}

inline Vec LoadVec(const float *p) { return LoadUnaligned<Vec>(p); }

inline void StoreVec(float *p, Vec v) { StoreUnaligned(p, v); }

// ---------------------------------------------------------------------------------------------------------
// 16-bit storage types and their conversions to and from float32.

struct Bf16 {  // bfloat16: the top half of a float32
  uint16_t bits;
};
#if defined(__aarch64__)
typedef __fp16 Half;  // GCC 12's C++ has no _Float16 on aarch64; __fp16 is the same IEEE half, converted by FCVT
#else
typedef _Float16 Half;
#endif

typedef uint16_t U16Vec __attribute__((vector_size(kLanes * 2), aligned(2)));
typedef uint32_t U32Vec __attribute__((vector_size(kLanes * 4), aligned(4)));
typedef int32_t I32Vec __attribute__((vector_size(kLanes * 4), aligned(4)));

inline Vec BitsToVec(U32Vec bits) { return reinterpret_cast<Vec>(bits); }

inline Vec LoadVec(const Bf16 *p) {
  return BitsToVec(__builtin_convertvector(LoadUnaligned<U16Vec>(p), U32Vec) << 16);
}

// F16C's conversion instruction: GCC's generic vector conversion of _Float16 is lane by lane.
inline Vec LoadVec(const Half *p) {
#if defined(__AVX512F__)
  return reinterpret_cast<Vec>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))));
#elif defined(__F16C__) && defined(__AVX__)
  return reinterpret_cast<Vec>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
#elif defined(__aarch64__)
  return reinterpret_cast<Vec>(vcvt_f32_f16(vld1_f16(reinterpret_cast<const float16_t *>(p))));
#else
  Vec v;
  for (int64_t i = 0; i < kLanes; ++i) v[i] = static_cast<float>(p[i]);
  return v;
#endif
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(int8_t x) { return x; }
inline float ToFloat(Half x) { return static_cast<float>(x); }
inline float ToFloat(Bf16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
inline T FromFloat(float x);
template <>
inline float FromFloat<float>(float x) {
  return x;
}
template <>
inline Half FromFloat<Half>(float x) {
  return static_cast<Half>(x);
}
template <>
inline Bf16 FromFloat<Bf16>(float x) {  // round to nearest, ties to even (what torch and numpy-based packing do)
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((bits >> 16) | 0x40)};  // NaN stays NaN
  return {static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16)};
}

template <typename T>
inline void StoreRow(const float *x, int64_t n, T *out) {
  for (int64_t i = 0; i < n; ++i) out[i] = FromFloat<T>(x[i]);
}

// The storage type named by a tensor's dtype string: calls body(T{}) with T = float, Half or Bf16.
template <typename Body>
inline int WithStorageType(const char *dtype, Body body) {
  if (std::strcmp(dtype, "float32") == 0) return body(float{});
  if (std::strcmp(dtype, "float16") == 0) return body(Half{});
  if (std::strcmp(dtype, "bfloat16") == 0) return body(Bf16{});
  return 1;  // MindSpore reports a failed launch
}

// The storage type of a linear weight: a storage type above, or int8 (W = scale * q, see the top of the file).
template <typename Body>
inline int WithWeightType(const char *dtype, Body body) {
  if (std::strcmp(dtype, "int8") == 0) return body(int8_t{});
  return WithStorageType(dtype, body);
}

// The N lanes of v summed as a tree (halves, quarters, ..., then four scalars): a lane-by-lane loop is a chain of
// N - 1 dependent adds.
template <int64_t N, typename V>
inline float TreeSum(V v) {
  if constexpr (N == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typedef float Half __attribute__((vector_size(N * 2), aligned(4)));
    Half low, high;
    std::memcpy(&low, &v, sizeof(Half));
    std::memcpy(&high, reinterpret_cast<const char *>(&v) + sizeof(Half), sizeof(Half));
    return TreeSum<N / 2>(low + high);
  }
}

inline float HorizontalSum(Vec v) { return TreeSum<kLanes>(v); }

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

// e^x on each lane: 2^n * e^r with x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor polynomial to r^7 (relative
// error below 1e-8 before rounding); lanes below -87 give 0 (no denormals). Attention's softmax and SiLU take one
// per element, and std::exp one lane at a time was the larger part of both.
inline Vec Exp(Vec x) {
  const Vec lowest = Vec{} - 87.0f;
  x = x < lowest ? lowest : x;
  const Vec round = Vec{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const Vec n = (x * 1.44269504f + round) - round;
  const Vec r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 in two parts: n * ln2_high is exact
  Vec poly = Vec{} + 1.0f / 5040;
  for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) poly = poly * r + c;
  const I32Vec exponent = (__builtin_convertvector(n, I32Vec) + 127) << 23;
  const Vec result = poly * reinterpret_cast<Vec>(exponent);
  return x <= lowest ? Vec{} : result;
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

// One head of q or k: optionally RMS-normalised over head_dim (Qwen3's q_norm / k_norm), then its first `rotary`
// features rotated (all of them, or a part: GLM's partial rotary), the rest kept.
inline void NormRotate(const float *x, const float *norm_weight, float eps, const float *cos, const float *sin,
                       int64_t dim, int64_t rotary, float *scratch, float *out) {
  if (norm_weight != nullptr) {
    RmsNormRow(x, norm_weight, eps, dim, scratch);
    x = scratch;
  }
  RotateHalf(x, cos, sin, rotary, out);
  std::copy(x + rotary, x + dim, out + rotary);
}

// ---------------------------------------------------------------------------------------------------------
// Linear layers: out [M, N] = x [M, K] @ W^T + bias, W packed (see the top of the file).

constexpr int64_t kPanel = 64;  // columns per panel
constexpr int kPanelVecs = kPanel / kLanes;

// How one step of a panel is read: kDepth consecutive k of 64 columns, as kPanelVecs raw vectors of kLanes
// columns each (Load), each widened to kDepth float32 vectors, one per k (Column). The steps follow kHeader
// elements of per-panel data (int8's scales and column sums).
template <typename W>
struct PanelStep {
  static constexpr int64_t kDepth = 1;
  static constexpr int64_t kHeader = 0;
  typedef Vec Raw;
  static Raw Load(const W *step, int v) { return LoadVec(step + v * kLanes); }
  static Vec Column(Raw raw, int) { return raw; }
};

template <>
struct PanelStep<Bf16> {
  static constexpr int64_t kDepth = 2;
  static constexpr int64_t kHeader = 0;
  typedef U32Vec Raw;  // each 32-bit lane the pair (k even, k odd) of one column
  static Raw Load(const Bf16 *step, int v) {
    return LoadUnaligned<Raw>(step + v * 2 * kLanes);
  }
  // The low half shifted up, the high half masked.
  static Vec Column(Raw pairs, int d) { return BitsToVec(d == 0 ? pairs << 16 : pairs & 0xffff0000u); }
};

// int8: the header holds 64 float32 scales, then 64 int32 sums of each column's q (see W8A8 below); each 32-bit
// lane of a step holds the four k of one column, k = 4s + d in byte d.
constexpr int64_t kInt8Header = 2 * kPanel * 4;

template <>
struct PanelStep<int8_t> {
  static constexpr int64_t kDepth = 4;
  static constexpr int64_t kHeader = kInt8Header;
  typedef I32Vec Raw;
  static Raw Load(const int8_t *step, int v) {
    return LoadUnaligned<Raw>(step + v * 4 * kLanes);
  }
  static Vec Column(Raw quads, int d) { return __builtin_convertvector((quads << (24 - 8 * d)) >> 24, Vec); }
};

inline const float *ColumnScales(const int8_t *panel) { return reinterpret_cast<const float *>(panel); }

template <typename W>
constexpr int64_t PanelSize(int64_t k_size) {  // elements of one panel, k padded to whole steps
  constexpr int64_t depth = PanelStep<W>::kDepth;
  return PanelStep<W>::kHeader + (k_size + depth - 1) / depth * depth * kPanel;
}

// A panel step is 256 bytes (64 columns of float32, of bfloat16 pairs or of int8 quads) and a decode step streams
// the panels once, from memory: the hardware prefetcher alone left bfloat16 and int8 at 11-14 GB/s where float32
// read 19 on the machine of bench/README.md. Asking for the lines 8 KB ahead keeps more of them in flight: there
// the one-token step of the default model went 24 -> 20.5 ms in bfloat16 and 17 -> 14.5 ms in int8 (W8A16); 16 KB
// measured the same, batches of 32 rows were unchanged.
constexpr int64_t kPrefetchBytes = 8192;

inline void PrefetchAhead(const void *step) {
  const char *ahead = static_cast<const char *>(step) + kPrefetchBytes;
  for (int line = 0; line < 4; ++line) __builtin_prefetch(ahead + 64 * line);
}

// Rows per tile, and vectors of a panel's 64 columns a tile holds: a tile's ROWS x kPanelTileVecs accumulators stay in
// registers while the panel streams by. AVX-512: 6 x 4 accumulators + 4 weight vectors fill its 32 registers. AVX2's
// 16 registers hold 2 x 8 accumulators, the weights then read from memory by the FMAs (measured on a 2-core AMD EPYC:
// 1 or 3 rows per tile were slower at 32 rows, by up to 1.5x). NEON's 32 registers of 4 lanes would hold a whole
// panel's 16 accumulators for one row only, and its FMAs take no memory operand: a tile takes half a panel, 3 rows x
// 8 accumulators, a weight vector and the rows' values of x (not measured on a chip: no aarch64 machine here).
#if defined(__AVX512F__)
constexpr int kTileRows = 6;
constexpr int kPanelTileVecs = kPanelVecs;
#elif defined(__aarch64__)
constexpr int kTileRows = 3;
constexpr int kPanelTileVecs = 8;
#else
constexpr int kTileRows = 2;
constexpr int kPanelTileVecs = kPanelVecs;
#endif
static_assert(kPanelVecs % kPanelTileVecs == 0, "a panel is whole groups of a tile's vectors");

// ROWS rows of x times the kPanelTileVecs vectors of one panel from vector `first` on; int8 weights accumulate
// x * q and scale at the end.
template <int ROWS, typename W>
inline void PanelTileGroup(const float *x, int64_t k_size, const W *panel_start, int first, const float *bias,
                           float *out, int64_t out_stride) {
  constexpr int64_t depth = PanelStep<W>::kDepth;
  constexpr bool scaled = std::is_same_v<W, int8_t>;
  const W *panel = panel_start + PanelStep<W>::kHeader;
  Vec acc[ROWS][kPanelTileVecs];
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelTileVecs; ++v) acc[r][v] = scaled ? Vec{} : LoadVec(bias + (first + v) * kLanes);
  }
  // x times one step of step_depth k: `depth` but in an odd K's last step of a pair layout, whose padding weights
  // are zero. Whole steps pass the constant, so their loops unroll and the accumulators stay in registers. The
  // order that holds fewer registers besides the accumulators: a step's depth x kPanelTileVecs widened weights, each
  // used by every row (AVX-512's tiles of 6 rows), or one widened vector at a time with the step's ROWS x depth
  // values of x (AVX2 and NEON, where all widened weights at once spilled).
  constexpr bool weights_first = depth * kPanelTileVecs <= ROWS * depth + 2;
  const auto multiply_step = [&](int64_t s, int64_t step_depth) {
    const W *step = panel + s * depth * kPanel;
    PrefetchAhead(step);
    if constexpr (weights_first) {
      Vec w[depth][kPanelTileVecs];
      for (int v = 0; v < kPanelTileVecs; ++v) {
        const typename PanelStep<W>::Raw raw = PanelStep<W>::Load(step, first + v);
        for (int64_t d = 0; d < depth; ++d) w[d][v] = PanelStep<W>::Column(raw, d);
      }
      for (int r = 0; r < ROWS; ++r) {
        for (int64_t d = 0; d < step_depth; ++d) {
          const float xs = x[r * k_size + s * depth + d];
          for (int v = 0; v < kPanelTileVecs; ++v) acc[r][v] += xs * w[d][v];
        }
      }
    } else {
#pragma GCC unroll 16
      for (int v = 0; v < kPanelTileVecs; ++v) {
        const typename PanelStep<W>::Raw raw = PanelStep<W>::Load(step, first + v);
        for (int64_t d = 0; d < step_depth; ++d) {
          const Vec w = PanelStep<W>::Column(raw, d);
          for (int r = 0; r < ROWS; ++r) acc[r][v] += x[r * k_size + s * depth + d] * w;
        }
      }
    }
  };
  const int64_t whole_steps = k_size / depth;
  for (int64_t s = 0; s < whole_steps; ++s) multiply_step(s, depth);
  if (whole_steps * depth < k_size) multiply_step(whole_steps, k_size - whole_steps * depth);
  if constexpr (scaled) {
    const float *scales = ColumnScales(panel_start);
    for (int r = 0; r < ROWS; ++r) {
      for (int v = 0; v < kPanelTileVecs; ++v) {
        acc[r][v] = acc[r][v] * LoadVec(scales + (first + v) * kLanes) + LoadVec(bias + (first + v) * kLanes);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelTileVecs; ++v) StoreVec(out + r * out_stride + (first + v) * kLanes, acc[r][v]);
  }
}

// ROWS rows of x times one panel, a group of kPanelTileVecs vectors at a time.
template <int ROWS, typename W>
inline void PanelTile(const float *x, int64_t k_size, const W *panel, const float *bias, float *out,
                      int64_t out_stride) {
  for (int first = 0; first < kPanelVecs; first += kPanelTileVecs) {
    PanelTileGroup<ROWS>(x, k_size, panel, first, bias, out, out_stride);
  }
}

template <int ROWS, typename Tile>
inline void RemainderTile(int64_t rows, int64_t first, Tile &tile) {
  if constexpr (ROWS > 0) {
    if (rows == ROWS) {
      tile.template operator()<ROWS>(first);
    } else {
      RemainderTile<ROWS - 1>(rows, first, tile);
    }
  }
}

// Calls tile.template operator()<ROWS>(first row) over m rows: whole tiles of TILE_ROWS, then one tile of the
// remaining rows. A row computed alone reloads the whole panel for one row's multiply-adds, so the remainder is
// one tile too (at 64 rows on AVX-512 the four rows after ten tiles read the panel once instead of four times).
template <int TILE_ROWS = kTileRows, typename Tile>
inline void InTiles(int64_t m, Tile &&tile) {
  int64_t r = 0;
  for (; r + TILE_ROWS <= m; r += TILE_ROWS) tile.template operator()<TILE_ROWS>(r);
  RemainderTile<TILE_ROWS - 1>(m - r, r, tile);
}

// Rows of x in tiles (see InTiles) against one panel, written to out[:, 0:64].
template <typename W>
inline void PanelRows(const float *x, int64_t m, int64_t k_size, const W *panel, const float *bias, float *out,
                      int64_t out_stride) {
  InTiles(m, [&]<int ROWS>(int64_t r) {
    PanelTile<ROWS>(x + r * k_size, k_size, panel, bias, out + r * out_stride, out_stride);
  });
}

#if defined(__AVX512BF16__) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
// A bfloat16 dot product for batches, AVX512-BF16's vdpbf16ps or Armv8.6's BFDOT: out += x[2s] * w[2s] +
// x[2s + 1] * w[2s + 1] per column in one instruction, twice the multiply-adds of float32 FMA, on activations
// rounded to bfloat16 (as vLLM's CPU backend and oneDNN compute). Decode steps of a few rows are bound by memory,
// not arithmetic, so they keep float32 activations; from kDotMinRows rows on, the arithmetic is the bound. (BFDOT
// rounds its sums to odd where vdpbf16ps rounds to nearest even: the last bit of a float32 sum.)
constexpr int64_t kDotMinRows = 16;
constexpr bool kHasBf16DotProducts = true;

// acc + the pair x (broadcast to every lane: the bfloat16 x[2s], x[2s + 1]) times each lane's pair of w.
inline Vec PairDot(Vec acc, U32Vec x, U32Vec w) {
#if defined(__AVX512BF16__)
  return reinterpret_cast<Vec>(_mm512_dpbf16_ps(reinterpret_cast<__m512>(acc), reinterpret_cast<__m512bh>(x),
                                                reinterpret_cast<__m512bh>(w)));
#else
  return reinterpret_cast<Vec>(vbfdotq_f32(reinterpret_cast<float32x4_t>(acc), vreinterpretq_bf16_u32(x),
                                           vreinterpretq_bf16_u32(w)));
#endif
}

// Row r of x [M, K] as bfloat16 pairs, row r of [M, ceil(K / 2)]: one 32-bit word per (x[2s], x[2s + 1]), which is
// the row's bfloat16 values in order, an odd K padded with 0. Rounded to nearest even, as FromFloat does
// (vcvtneps2bf16 also flushes float32 subnormals, below 1.2e-38, to zero).
inline void RoundRowToPairs(const float *x, int64_t r, int64_t k_size, uint32_t *pairs) {
  const float *row = x + r * k_size;
  uint16_t *out = reinterpret_cast<uint16_t *>(pairs + r * ((k_size + 1) / 2));
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + kLanes <= k_size; k += kLanes) {
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(row + k));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + k), reinterpret_cast<__m256i>(rounded));
  }
#endif
  for (; k < k_size; ++k) out[k] = FromFloat<Bf16>(row[k]).bits;
  if (k_size % 2 != 0) out[k_size] = 0;
}

// ROWS rows of pairs times the kPanelTileVecs vectors of one panel from vector `first` on. The order that holds
// fewer registers besides the accumulators (as in PanelTileGroup): a step's weight vectors first, each used by every
// row (AVX-512: 4 weights, 24 accumulators), or the step's ROWS broadcast pairs first (NEON: 3 pairs, 24 accumulators,
// one weight vector at a time).
template <int ROWS>
inline void PanelTileDotGroup(const uint32_t *pairs, int64_t steps, const Bf16 *panel, int first, const float *bias,
                              float *out, int64_t out_stride) {
  constexpr bool weights_first = kPanelTileVecs <= ROWS + 2;
  Vec acc[ROWS][kPanelTileVecs];
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelTileVecs; ++v) acc[r][v] = LoadVec(bias + (first + v) * kLanes);
  }
  for (int64_t s = 0; s < steps; ++s) {
    const Bf16 *step = panel + s * 2 * kPanel;
    PrefetchAhead(step);
    const auto weights = [&](int v) { return LoadUnaligned<U32Vec>(step + (first + v) * 2 * kLanes); };
    if constexpr (weights_first) {
      U32Vec w[kPanelTileVecs];
      for (int v = 0; v < kPanelTileVecs; ++v) w[v] = weights(v);
      for (int r = 0; r < ROWS; ++r) {
        const U32Vec x = U32Vec{} + pairs[r * steps + s];
        for (int v = 0; v < kPanelTileVecs; ++v) acc[r][v] = PairDot(acc[r][v], x, w[v]);
      }
    } else {
      U32Vec x[ROWS];
      for (int r = 0; r < ROWS; ++r) x[r] = U32Vec{} + pairs[r * steps + s];
      for (int v = 0; v < kPanelTileVecs; ++v) {
        const U32Vec w = weights(v);
        for (int r = 0; r < ROWS; ++r) acc[r][v] = PairDot(acc[r][v], x[r], w);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelTileVecs; ++v) StoreVec(out + r * out_stride + (first + v) * kLanes, acc[r][v]);
  }
}

inline void PanelRowsDot(const uint32_t *pairs, int64_t m, int64_t steps, const Bf16 *panel, const float *bias,
                         float *out, int64_t out_stride) {
  InTiles(m, [&]<int ROWS>(int64_t r) {
    for (int first = 0; first < kPanelVecs; first += kPanelTileVecs) {
      PanelTileDotGroup<ROWS>(pairs + r * steps, steps, panel, first, bias, out + r * out_stride, out_stride);
    }
  });
}
#else
constexpr bool kHasBf16DotProducts = false;
#endif

// Integer activations for int8 weights. Each row of x is quantized with one scale, x[r] ~ row_scale[r] * xq[r],
// xq an integer of `DIGITS` bytes: row_scale = max|x[r]| / (2^(8 DIGITS - 1) - 1), rounded to nearest even.
// - W8A8, 1 byte: xq in [-127, 127].
// - W8A16 decode on VNNI, 3 bytes: xq in [-(2^23 - 1), 2^23 - 1], a 24-bit mantissa shared by the row (block
//   floating point): every element is kept to max|x[r]| / 2^24, float32's own precision for the row's largest
//   element, where bfloat16 activations (vLLM's W8A16) keep 8 bits of each. Widening int8 weights to float32
//   costs ~15 instructions per 64 weights, so a decode step of a few rows was bound by arithmetic (10 GB/s of
//   weights on the AVX-512 machine of bench/README.md); three dot products per 64 weights stream at memory speed.
// The products are exact in int32; a row's result is row_scale * column scale * sum(xq * q).
// VNNI's vpdpbusd multiplies unsigned by signed bytes, four k per lane, so xq + 2^(8 DIGITS - 1) is stored as
// DIGITS unsigned bytes, least significant first, one dot product per byte, and the offset times the column sum
// of q (the panel header's sums) is taken back out of the top byte's sum: xq = sum_j 256^j u_j - 128 * 256^(D-1).
// Without VNNI only W8A8 takes this path (W8A16 keeps float32 activations) and xq stays a signed byte: AVX2's
// vpmaddubsw also multiplies unsigned by signed bytes, but saturates the 16-bit sum of each pair, so |xq| meets q
// carrying xq's sign (vpsignb), each pair sum at most 2 * 127 * 127 < 2^15, and vpmaddwd adds the pairs into int32
// (four instructions for vpdpbusd's one, where widening took ~16: on a 2-core AMD EPYC, 3072 x 576 weights took
// 0.158 -> 0.046 ms for one row and 6.9 -> 1.3 ms for 32). On aarch64 with the dot product extension, sdot
// multiplies signed by signed bytes, four k per lane, as vpdpbusd does without the offset. Other targets widen the
// bytes.
#if defined(__AVX512VNNI__)
constexpr bool kHasVnni = true;
#else
constexpr bool kHasVnni = false;
#endif
constexpr bool kBiasedQuads = kHasVnni;  // xq stored with the offset above (else signed, DIGITS = 1)
// A W8A16 layer of at most this many rows takes the 3-byte path on VNNI. Measured on SmolLM2's 120 decoder
// layers (bench/README.md): 1 row 11.5 -> 8.3 ms, 2 rows 13.0 -> 10.1 ms. From 3 rows on, the float32 tiles share
// each weight's widening between rows; the 3-byte path was not measured against them there.
constexpr int64_t kMantissaMaxRows = 2;

template <int DIGITS>
struct QuantizedRows {
  std::vector<uint32_t> quads;  // [M, ceil(K / 4), DIGITS]: byte j of xq + offset, k = 4s..4s+3 in bytes 0..3
  std::vector<float> scales;    // [M]
  int64_t steps = 0;
};

template <int DIGITS>
inline void QuantizeRow(const float *x, int64_t r, int64_t k_size, QuantizedRows<DIGITS> &rows) {
  static_assert(DIGITS == 1 || kBiasedQuads, "several digits need vpdpbusd's unsigned bytes");
  constexpr int64_t half_range = int64_t{1} << (8 * DIGITS - 1);
  constexpr int64_t offset = kBiasedQuads ? half_range : 0;
  constexpr float levels = static_cast<float>(half_range - 1);
  const float *row = x + r * k_size;
  float max_abs = 0.0f;
  for (int64_t k = 0; k < k_size; ++k) max_abs = std::max(max_abs, std::fabs(row[k]));
  const float scale = max_abs > 0.0f ? max_abs / levels : 1.0f;
  rows.scales[r] = scale;
  uint32_t *quads = rows.quads.data() + r * rows.steps * DIGITS;
  std::fill(quads, quads + rows.steps * DIGITS, 0u);  // padding k: any value, their weights are 0
  for (int64_t k = 0; k < k_size; ++k) {
    const float q = std::min(levels, std::max(-levels, std::nearbyint(row[k] / scale)));
    const uint32_t biased = static_cast<uint32_t>(static_cast<int64_t>(q) + offset);
    for (int j = 0; j < DIGITS; ++j) {
      const uint32_t byte = (biased >> (8 * j)) & 0xffu;
      quads[k / 4 * DIGITS + j] |= byte << (8 * (k % 4));
    }
  }
}

// One row's quad of activation bytes (four k), broadcast to every lane, and its dot products with the weights'
// quads: acc + the four products of x's bytes and each lane's signed bytes of w, summed per lane.
#if defined(__AVX512VNNI__)
class RowQuad {  // unsigned bytes (biased, see above): vpdpbusd
 public:
  static constexpr const char *kInstruction = "vpdpbusd";
  RowQuad() = default;
  explicit RowQuad(uint32_t quad) : x_(_mm512_set1_epi32(static_cast<int>(quad))) {}
  I32Vec Dot(I32Vec acc, I32Vec w) const {
    return reinterpret_cast<I32Vec>(_mm512_dpbusd_epi32(reinterpret_cast<__m512i>(acc), x_, reinterpret_cast<__m512i>(w)));
  }

 private:
  __m512i x_;
};
#elif defined(__AVX2__) && !defined(__AVX512F__)
class RowQuad {  // signed bytes: |x| times w with x's signs (vpmaddubsw), pairs added into int32 (vpmaddwd)
 public:
  static constexpr const char *kInstruction = "vpmaddubsw";
  RowQuad() = default;
  explicit RowQuad(uint32_t quad) : x_(_mm256_set1_epi32(static_cast<int>(quad))), magnitude_(_mm256_abs_epi8(x_)) {}
  I32Vec Dot(I32Vec acc, I32Vec w) const {
    const __m256i pairs = _mm256_maddubs_epi16(magnitude_, _mm256_sign_epi8(reinterpret_cast<__m256i>(w), x_));
    return acc + reinterpret_cast<I32Vec>(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

 private:
  __m256i x_, magnitude_;
};
#elif defined(__ARM_FEATURE_DOTPROD)
class RowQuad {  // signed bytes: Armv8.2's sdot (Kunpeng 920 has it) sums a lane's four products in one instruction
 public:
  static constexpr const char *kInstruction = "sdot";
  RowQuad() = default;
  explicit RowQuad(uint32_t quad) : x_(vreinterpretq_s8_u32(vdupq_n_u32(quad))) {}
  I32Vec Dot(I32Vec acc, I32Vec w) const {
    return reinterpret_cast<I32Vec>(vdotq_s32(reinterpret_cast<int32x4_t>(acc), reinterpret_cast<int8x16_t>(w), x_));
  }

 private:
  int8x16_t x_;
};
#else
class RowQuad {  // signed bytes, widened
 public:
  static constexpr const char *kInstruction = "widened";
  RowQuad() = default;
  explicit RowQuad(uint32_t quad) : quad_(static_cast<int32_t>(quad)) {}
  I32Vec Dot(I32Vec acc, I32Vec w) const {
    for (int d = 0; d < 4; ++d) acc += (quad_ << (24 - 8 * d) >> 24) * ((w << (24 - 8 * d)) >> 24);
    return acc;
  }

 private:
  int32_t quad_;
};
#endif

template <int ROWS, int DIGITS>
inline void PanelTileInt8Dot(const uint32_t *quads, const float *row_scales, int64_t steps, const int8_t *panel,
                             const float *bias, float *out, int64_t out_stride) {
  I32Vec acc[ROWS][kPanelVecs][DIGITS] = {};
  const int8_t *data = panel + kInt8Header;
  for (int64_t s = 0; s < steps; ++s) {
    PrefetchAhead(data + s * 4 * kPanel);
    // One weight vector at a time meets every row's quads: ROWS x kPanelVecs x DIGITS accumulators, ROWS x DIGITS
    // quads and one weight vector are all the registers a tile holds.
    RowQuad x[ROWS][DIGITS];
    for (int r = 0; r < ROWS; ++r) {
      for (int j = 0; j < DIGITS; ++j) x[r][j] = RowQuad(quads[(r * steps + s) * DIGITS + j]);
    }
    for (int v = 0; v < kPanelVecs; ++v) {
      const I32Vec w = LoadUnaligned<I32Vec>(data + s * 4 * kPanel + v * 4 * kLanes);
      for (int r = 0; r < ROWS; ++r) {
        for (int j = 0; j < DIGITS; ++j) acc[r][v][j] = x[r][j].Dot(acc[r][v][j], w);
      }
    }
  }
  const float *scales = ColumnScales(panel);
  const int32_t *sums = reinterpret_cast<const int32_t *>(panel + kPanel * 4);
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < kPanelVecs; ++v) {
      const I32Vec sum = LoadUnaligned<I32Vec>(sums + v * kLanes);
      // The top byte's sum less its offset is exact in int32; the lower bytes' sums join it in float32.
      Vec exact = __builtin_convertvector(acc[r][v][DIGITS - 1] - (kBiasedQuads ? 128 * sum : I32Vec{}), Vec);
      for (int j = DIGITS - 2; j >= 0; --j) exact = exact * 256.0f + __builtin_convertvector(acc[r][v][j], Vec);
      const Vec result = exact * (row_scales[r] * LoadVec(scales + v * kLanes)) + LoadVec(bias + v * kLanes);
      StoreVec(out + r * out_stride + v * kLanes, result);
    }
  }
}

// Tiles of 6 / DIGITS rows: ROWS x 4 x DIGITS accumulators, ROWS x DIGITS quads and a weight vector fit AVX-512's
// 32 registers. AVX2's 16 hold one row's 8 accumulators with its quad, |quad| and the products (2 rows spilled:
// 32 rows x 3072 x 576 took 1.56 ms against 1.32 with 1 on the 2-core AMD EPYC).
#ifdef __AVX512F__
constexpr int kInt8TileRows = kTileRows;
#else
constexpr int kInt8TileRows = 1;
#endif

// Rows first..first + m of the quantized rows against one panel, written to out[0:m, 0:64].
template <int DIGITS>
inline void PanelRowsInt8Dot(const QuantizedRows<DIGITS> &rows, int64_t first, int64_t m, const int8_t *panel,
                             const float *bias, float *out, int64_t out_stride) {
  const int64_t steps = rows.steps;
  const uint32_t *quads = rows.quads.data() + first * steps * DIGITS;
  const float *scales = rows.scales.data() + first;
  InTiles<std::max(1, kInt8TileRows / DIGITS)>(m, [&]<int ROWS>(int64_t r) {
    PanelTileInt8Dot<ROWS, DIGITS>(quads + r * steps * DIGITS, scales + r, steps, panel, bias, out + r * out_stride,
                                   out_stride);
  });
}

// A product's rows are prepared (rounded or quantized) by every thread, a row each, before any panel is computed.
struct NoRowPreparation {
  void operator()(int64_t) const {}
};

// Rows per item below which a product is not split by rows: a decode step's few rows are bound by memory, and each
// item of a split panel reads the whole panel.
constexpr int64_t kSplitRowsMin = 2 * kTileRows;

// Row blocks per panel, so that panels x blocks divides evenly between the threads: on 2 threads the 9 panels of a
// 576-wide projection left one thread idle for a ninth of it (batches of 64 rows on a 2-core AMD EPYC: 15% of
// the step's samples were threads waiting at the end of a parallel loop).
inline int64_t RowBlocks(int64_t m, int64_t panels, int64_t threads) {
  const int64_t blocks = threads / std::gcd(panels, threads);
  return std::max<int64_t>(1, std::min(blocks, m / kSplitRowsMin));
}

// x [M, K] times every panel of W, in one parallel region: prepare_row(r) for every row, then
// rows_times_panel(first, rows, panel, bias, out, out_stride) for blocks of rows against one panel's 64 columns,
// `out` pointing at the block's first row.
template <typename W, typename PrepareRow, typename RowsTimesPanel>
void ForEachPanel(int64_t m, int64_t k_size, const W *packed, int64_t n, const float *bias, float *out,
                  PrepareRow prepare_row, RowsTimesPanel rows_times_panel) {
  const int64_t panels = (n + kPanel - 1) / kPanel, panel_size = PanelSize<W>(k_size);
  const int64_t row_blocks = RowBlocks(m, panels, omp_get_max_threads());
  const int64_t block_rows = (m + row_blocks - 1) / row_blocks;
  const float zeros[kPanel] = {};
#pragma omp parallel
  {
    if constexpr (!std::is_same_v<PrepareRow, NoRowPreparation>) {
#pragma omp for schedule(static)
      for (int64_t r = 0; r < m; ++r) prepare_row(r);
    }
#pragma omp for schedule(static)
    for (int64_t item = 0; item < panels * row_blocks; ++item) {
      const int64_t p = item / row_blocks, first = item % row_blocks * block_rows;
      const int64_t rows = std::min(block_rows, m - first);
      if (rows <= 0) continue;
      const int64_t column = p * kPanel, width = std::min(kPanel, n - column);
      const W *panel = packed + p * panel_size;
      if (width == kPanel) {
        rows_times_panel(first, rows, panel, bias == nullptr ? zeros : bias + column, out + first * n + column, n);
        continue;
      }
      // The last panel is zero padded: compute it whole, keep its real columns.
      float bias_part[kPanel] = {};
      if (bias != nullptr) std::copy(bias + column, bias + n, bias_part);
      std::vector<float> tile(rows * kPanel);
      rows_times_panel(first, rows, panel, bias_part, tile.data(), kPanel);
      for (int64_t r = 0; r < rows; ++r) std::copy_n(tile.data() + r * kPanel, width, out + (first + r) * n + column);
    }
  }
}

// x quantized per row to DIGITS-byte integers (see QuantizedRows) times int8 weights.
template <int DIGITS>
void IntegerActivationLinear(const float *x, int64_t m, int64_t k_size, const int8_t *packed, int64_t n,
                             const float *bias, float *out) {
  thread_local QuantizedRows<DIGITS> quantized;
  quantized.steps = (k_size + 3) / 4;
  quantized.quads.resize(m * quantized.steps * DIGITS);
  quantized.scales.resize(m);
  QuantizedRows<DIGITS> *rows = &quantized;  // a lambda does not capture a thread_local: see below
  ForEachPanel(
      m, k_size, packed, n, bias, out, [&](int64_t r) { QuantizeRow(x, r, k_size, *rows); },
      [&](int64_t first, int64_t count, const int8_t *panel, const float *b, float *o, int64_t stride) {
        PanelRowsInt8Dot(*rows, first, count, panel, b, o, stride);
      });
}

// `int8_activations`: an int8 layer quantizes x per row (W8A8); other weights ignore it.
template <typename W>
void PackedLinear(const float *x, int64_t m, int64_t k_size, const W *packed, int64_t n, const float *bias,
                  float *out, bool int8_activations) {
  if constexpr (std::is_same_v<W, int8_t>) {
    if (int8_activations) {
      IntegerActivationLinear<1>(x, m, k_size, packed, n, bias, out);
      return;
    }
    if constexpr (kHasVnni) {
      if (m <= kMantissaMaxRows) {
        IntegerActivationLinear<3>(x, m, k_size, packed, n, bias, out);
        return;
      }
    }
  }
#if defined(__AVX512BF16__) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  if constexpr (std::is_same_v<W, Bf16>) {
    if (m >= kDotMinRows) {
      thread_local std::vector<uint32_t> pairs;
      const int64_t steps = (k_size + 1) / 2;
      pairs.resize(m * steps);
      // A lambda does not capture a thread_local (each OpenMP thread would see its own, empty): pass the pointer.
      uint32_t *rounded = pairs.data();
      ForEachPanel(
          m, k_size, packed, n, bias, out, [&](int64_t r) { RoundRowToPairs(x, r, k_size, rounded); },
          [&](int64_t first, int64_t rows, const Bf16 *panel, const float *b, float *o, int64_t stride) {
            PanelRowsDot(rounded + first * steps, rows, steps, panel, b, o, stride);
          });
      return;
    }
  }
#endif
  ForEachPanel(m, k_size, packed, n, bias, out, NoRowPreparation{},
               [&](int64_t first, int64_t rows, const W *panel, const float *b, float *o, int64_t stride) {
                 PanelRows(x + first * k_size, rows, k_size, panel, b, o, stride);
               });
}

// Row `row` of W ([N, K]) read back out of its packed panels: an embedding lookup in a table stored for the output
// projection, so that a model with tied embeddings keeps the table once (int8: scale * q, W's row `row` dequantized).
template <typename W>
void PackedRow(const W *packed, int64_t k_size, int64_t row, float *out) {
  constexpr int64_t depth = PanelStep<W>::kDepth;
  const W *panel = packed + row / kPanel * PanelSize<W>(k_size);
  const int64_t column = row % kPanel;
  float scale = 1.0f;
  if constexpr (std::is_same_v<W, int8_t>) scale = ColumnScales(panel)[column];
  const W *steps = panel + PanelStep<W>::kHeader;
  for (int64_t k = 0; k < k_size; ++k) {
    out[k] = scale * ToFloat(steps[(k / depth * kPanel + column) * depth + k % depth]);
  }
}

// The number of elements of a launch's input of `ndim` dimensions `shape`.
inline int64_t Elements(int ndim, const int64_t *shape) {
  int64_t elements = 1;
  for (int i = 0; i < ndim; ++i) elements *= shape[i];
  return elements;
}

// PackedLinear on a launch's packed weight of type `dtype` holding `elements`; 1 when the dtype is not a weight's
// or the size is not that of an [n, k_size] weight.
inline int LinearOnLaunchWeight(const float *x, int64_t m, int64_t k_size, const void *weight, const char *dtype,
                                int64_t elements, int64_t n, const float *bias, float *out, bool int8_activations) {
  return WithWeightType(dtype, [&](auto tag) {
    using W = decltype(tag);
    if (elements != (n + kPanel - 1) / kPanel * PanelSize<W>(k_size)) return 1;
    PackedLinear(x, m, k_size, static_cast<const W *>(weight), n, bias, out, int8_activations);
    return 0;
  });
}

constexpr int64_t kParallelRowsMin = 64;

// Rows W[ids] [T, E] float32 of a packed weight (`elements` of type `dtype`) of W [V, E]; ids outside [0, V) give
// rows of zeros. 1 when the dtype is not a weight's.
inline int LookUpPackedRows(const int32_t *ids, int64_t tokens, const void *weight, const char *dtype,
                            int64_t elements, int64_t width, float *out) {
  return WithWeightType(dtype, [&](auto tag) {
    using W = decltype(tag);
    const W *packed = static_cast<const W *>(weight);
    const int64_t rows = elements / PanelSize<W>(width) * kPanel;  // the padding rows of the last panel are zeros
    // A row is ~1 us: waking the thread team for a decode step's few rows cost more than the rows (the first
    // parallel region of a step waits for threads that slept since the last).
#pragma omp parallel for schedule(static) if (tokens >= kParallelRowsMin)
    for (int64_t t = 0; t < tokens; ++t) {
      if (ids[t] >= 0 && ids[t] < rows) {
        PackedRow(packed, width, ids[t], out + t * width);
      } else {
        std::fill(out + t * width, out + (t + 1) * width, 0.0f);
      }
    }
    return 0;
  });
}

// ---------------------------------------------------------------------------------------------------------
// Attention pieces. C is the KV cache's storage type.

// Rows from which a layer's row-wise steps (norms, rotary) are shared between threads: inside a layer the team
// is awake, having just run a projection, so a parallel loop costs a few microseconds, not a wake-up.
constexpr int64_t kParallelLayerRowsMin = 8;

// A layer's K and V caches, [K, S, D] each. V holds a row per slot. K holds tiles of kKeyTileRows slots, each
// transposed: for KV head kh, element d of slot s is at tile s / kKeyTileRows, [d, s % kKeyTileRows], so decode
// attention scores a tile of context rows with one vector per head dimension and no sums across lanes. S is a
// multiple of kKeyTileRows (ops/cpu.py's kv_cache_shape).
constexpr int64_t kKeyTileRows = 16;

template <typename C>
struct KvCache {
  C *k;
  C *v;
  int64_t kv_heads, num_slots, dim;

  // The tile holding `slot` of KV head kh, [D, kKeyTileRows]; the slot's keys are its column slot % kKeyTileRows.
  C *KeyTile(int64_t kh, int64_t slot) const { return k + (kh * num_slots + slot / kKeyTileRows * kKeyTileRows) * dim; }
  // The values of `slot` of KV head kh, [D].
  C *ValueRow(int64_t kh, int64_t slot) const { return v + (kh * num_slots + slot) * dim; }
};

inline bool KeyTilesFit(const int64_t *cache_shape) { return cache_shape[1] % kKeyTileRows == 0; }

// qkv [T, (H + 2K) * D], cos/sin tables [P, R] (R <= D: the first R features of each head rotate), positions [T],
// slots [T] -> q [T, H, D] rotated; k rotated and v written into the caches at each token's slot (slot < 0: not
// written). q_norm/k_norm: Qwen3's per-head RMSNorm.
template <typename C>
void RopeAndCache(const float *qkv, int64_t tokens, int64_t heads, const float *cos_table, const float *sin_table,
                  int64_t rotary, const int32_t *positions, const int32_t *slots, const KvCache<C> &cache,
                  const float *q_norm, const float *k_norm, float eps, float *q_out) {
  const int64_t dim = cache.dim, kv_heads = cache.kv_heads, width = (heads + 2 * kv_heads) * dim;
#pragma omp parallel for schedule(static) if (tokens >= kParallelLayerRowsMin)
  for (int64_t t = 0; t < tokens; ++t) {
    thread_local std::vector<float> scratch, rotated;
    scratch.resize(dim);
    rotated.resize(dim);
    const float *row = qkv + t * width;
    const float *cos = cos_table + static_cast<int64_t>(positions[t]) * rotary;
    const float *sin = sin_table + static_cast<int64_t>(positions[t]) * rotary;
    for (int64_t h = 0; h < heads; ++h) {
      NormRotate(row + h * dim, q_norm, eps, cos, sin, dim, rotary, scratch.data(), q_out + (t * heads + h) * dim);
    }
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= cache.num_slots) continue;
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      NormRotate(row + (heads + kh) * dim, k_norm, eps, cos, sin, dim, rotary, scratch.data(), rotated.data());
      C *key_column = cache.KeyTile(kh, slot) + slot % kKeyTileRows;
      for (int64_t d = 0; d < dim; ++d) key_column[d * kKeyTileRows] = FromFloat<C>(rotated[d]);
      StoreRow(row + (heads + kv_heads + kh) * dim, dim, cache.ValueRow(kh, slot));
    }
  }
}

// scores[0:visible] -> their softmax, in place; `padded` (a multiple of kLanes, >= visible) floats are writable.
inline void SoftmaxInPlace(float *scores, int64_t visible, int64_t padded) {
  for (int64_t j = visible; j < padded; ++j) scores[j] = -INFINITY;  // e^-inf = 0: the padding adds nothing
  Vec max_vec = LoadVec(scores);
  for (int64_t j = kLanes; j < padded; j += kLanes) {
    const Vec s = LoadVec(scores + j);
    max_vec = s > max_vec ? s : max_vec;
  }
  float max_score = max_vec[0];
  for (int64_t i = 1; i < kLanes; ++i) max_score = std::max(max_score, max_vec[i]);
  Vec sum = {};
  for (int64_t j = 0; j < padded; j += kLanes) {
    const Vec e = Exp(LoadVec(scores + j) - max_score);
    StoreVec(scores + j, e);
    sum += e;
  }
  const float inv_sum = 1.0f / HorizontalSum(sum);
  for (int64_t j = 0; j < padded; j += kLanes) StoreVec(scores + j, LoadVec(scores + j) * inv_sum);
}

// Context rows are scattered over the cache's blocks, beyond the hardware prefetcher's reach: asking for the value
// row 16 ahead took decode attention of 64 requests x 144 positions (SmolLM2's 30 layers, bfloat16 cache, 2-core
// AMD EPYC) from 36 to 28 ms; 4, 32 or 64 rows ahead did no better.
constexpr int64_t kAttendPrefetchRows = 16;

template <typename C>
inline void PrefetchRow(const C *row, int64_t dim) {
  const char *bytes = reinterpret_cast<const char *>(row);
  for (int64_t b = 0; b < dim * static_cast<int64_t>(sizeof(C)); b += 64) __builtin_prefetch(bytes + b);
}

// Key tiles prefetched ahead of the one being scored: two took the decode attention below from ~23 to ~19 ms
// where one ahead had (the next request's first tiles, or its first values, as well: no better within the noise).
constexpr int64_t kKeyTilesAhead = 2;

// Vectors in a key tile's column: 1 (AVX-512), 2 (AVX2) or 4 (SSE).
constexpr int64_t kTileVecs = kKeyTileRows / kLanes;
// Query heads scored against a tile at once: their 2 x heads x kTileVecs accumulators stay in registers.
constexpr int64_t kTileHeads = std::max<int64_t>(1, 4 / kTileVecs);

// G query heads (q [G, D]) against one key tile [D, kKeyTileRows] -> scores[g * stride + j], times `scale`, for
// the tile's rows j: a vector of keys per head dimension, each used by every head. Even and odd dimensions go to
// separate accumulators, two independent chains per vector.
template <int64_t G, typename C>
inline void ScoreKeyTile(const float *q, const C *tile, int64_t dim, float scale, float *scores, int64_t stride) {
  Vec acc[2][G][kTileVecs] = {};
  for (int64_t d = 0; d < dim; d += 2) {
    for (int64_t parity = 0; parity < 2 && d + parity < dim; ++parity) {
      const C *column = tile + (d + parity) * kKeyTileRows;
      for (int64_t c = 0; c < kTileVecs; ++c) {
        const Vec keys = LoadVec(column + c * kLanes);
        for (int64_t g = 0; g < G; ++g) acc[parity][g][c] += q[g * dim + d + parity] * keys;
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t c = 0; c < kTileVecs; ++c) {
      StoreVec(scores + g * stride + c * kLanes, (acc[0][g][c] + acc[1][g][c]) * scale);
    }
  }
}

// body(first, heads) for the `group` query heads of a KV head, kTileHeads at a time: heads is a
// std::integral_constant, so that each group's accumulators can be sized at compile time.
template <typename Body>
inline void ForHeadsInGroups(int64_t group, Body body) {
  for (int64_t first = 0; first < group; first += kTileHeads) {
    const int64_t heads = std::min(kTileHeads, group - first);
    [&]<int64_t... N>(std::integer_sequence<int64_t, N...>) {
      ((heads == N + 1 ? body(first, std::integral_constant<int64_t, N + 1>{}) : void()), ...);
    }(std::make_integer_sequence<int64_t, kTileHeads>{});
  }
}

// Vectors of a value row added at once: heads x kValueVecs accumulators stay in registers.
constexpr int64_t kValueVecs = 4;

// out[g, d0 + i] = the sum of weights[g * stride + j] * V[j, d0 + i] for G heads, i < VECS * kLanes, over the
// `visible` rows j of a KV head's values in order (the order of float32 sums is the context's).
template <int64_t G, int64_t VECS, typename C>
inline void AddWeightedValues(const C *v_head, const int32_t *slots, int64_t visible, int64_t dim, int64_t d0,
                              const float *weights, int64_t stride, float *out) {
  Vec acc[G][VECS] = {};
  for (int64_t j = 0; j < visible; ++j) {
    if (d0 == 0 && j + kAttendPrefetchRows < visible) {
      PrefetchRow(v_head + static_cast<int64_t>(slots[j + kAttendPrefetchRows]) * dim, dim);
    }
    const C *row = v_head + static_cast<int64_t>(slots[j]) * dim + d0;
    for (int64_t v = 0; v < VECS; ++v) {
      const Vec values = LoadVec(row + v * kLanes);
      for (int64_t g = 0; g < G; ++g) acc[g][v] += weights[g * stride + j] * values;
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t v = 0; v < VECS; ++v) StoreVec(out + g * dim + d0 + v * kLanes, acc[g][v]);
  }
}

// The key tile of context rows first..first + kKeyTileRows of KV head kh: the cache's own tile when those slots are
// one tile in order (every whole vLLM block is, its size being a multiple of 16), else one gathered into
// `gathered` [D, kKeyTileRows], rows past `visible` repeating the last visible one (their scores are replaced by
// SoftmaxInPlace).
template <typename C>
inline const C *ContextKeyTile(const KvCache<C> &cache, int64_t kh, const int32_t *slots, int64_t first,
                               int64_t visible, C *gathered) {
  const int64_t rows = std::min(kKeyTileRows, visible - first), start = slots[first];
  bool whole = start % kKeyTileRows == 0;
  for (int64_t j = 1; whole && j < rows; ++j) whole = slots[first + j] == start + j;
  if (whole) return cache.KeyTile(kh, start);
  for (int64_t j = 0; j < kKeyTileRows; ++j) {
    const int64_t slot = slots[first + std::min(j, rows - 1)];
    const C *column = cache.KeyTile(kh, slot) + slot % kKeyTileRows;
    for (int64_t d = 0; d < cache.dim; ++d) gathered[d * kKeyTileRows + j] = column[d * kKeyTileRows];
  }
  return gathered;
}

// One token's attention over its request's context through one KV head: the `visible` slots, the G = heads / K
// query heads h = kh * G + g that share KV head kh -> out [G * D]. Scores come a key tile at a time (ScoreKeyTile),
// the next tile prefetched: the context's tiles are scattered over the cache, beyond the hardware prefetcher's
// reach. Values go by a row at a time, each read (and widened) once and added into the accumulators of up to
// kTileHeads heads (AddWeightedValues). Against keys stored a row per slot (a dot product per row, kLanes of them
// summed across lanes at once) and values widened into a buffer a block at a time, decode attention of 64 requests
// x 144 positions (SmolLM2's 30 layers, bfloat16 cache, whole blocks of 16 in a random order, 2-core AMD EPYC)
// went from ~23 to ~17 ms, and from 12.3 to 7.6 ms with the cache in the CPU's caches.
template <typename C>
void AttendKvHead(const float *q_group, const KvCache<C> &cache, int64_t kh, const int32_t *slots, int64_t visible,
                  int64_t group, float scale, std::vector<float> &scratch, float *out_group) {
  const int64_t dim = cache.dim, padded = (visible + kKeyTileRows - 1) / kKeyTileRows * kKeyTileRows;
  scratch.resize(group * padded);  // the scores [G, padded]
  float *scores = scratch.data();
  thread_local std::vector<C> gathered;
  gathered.resize(dim * kKeyTileRows);
  for (int64_t first = 0; first < visible; first += kKeyTileRows) {
    for (int64_t ahead = first == 0 ? 1 : kKeyTilesAhead; ahead <= kKeyTilesAhead; ++ahead) {
      const int64_t row = first + ahead * kKeyTileRows;
      if (row < visible) PrefetchRow(cache.KeyTile(kh, slots[row]), dim * kKeyTileRows);
    }
    const C *tile = ContextKeyTile(cache, kh, slots, first, visible, gathered.data());
    ForHeadsInGroups(group, [&](int64_t g, auto heads) {
      ScoreKeyTile<heads()>(q_group + g * dim, tile, dim, scale, scores + g * padded + first, padded);
    });
  }
  for (int64_t g = 0; g < group; ++g) SoftmaxInPlace(scores + g * padded, visible, padded);
  const C *v_head = cache.ValueRow(kh, 0);
  ForHeadsInGroups(group, [&](int64_t g, auto heads) {
    constexpr int64_t G = heads();
    const float *weights = scores + g * padded;
    float *out = out_group + g * dim;
    int64_t d = 0;
    for (; d + kValueVecs * kLanes <= dim; d += kValueVecs * kLanes) {
      AddWeightedValues<G, kValueVecs>(v_head, slots, visible, dim, d, weights, padded, out);
    }
    for (; d + kLanes <= dim; d += kLanes) {
      AddWeightedValues<G, 1>(v_head, slots, visible, dim, d, weights, padded, out);
    }
    for (; d < dim; ++d) {
      for (int64_t i = 0; i < G; ++i) {
        float sum = 0.0f;
        for (int64_t j = 0; j < visible; ++j) {
          sum += weights[i * padded + j] * ToFloat(v_head[static_cast<int64_t>(slots[j]) * dim + d]);
        }
        out[i * dim + d] = sum;
      }
    }
  });
}

// q [T, H, D] -> out [T, H * D]: token t of request r attends to context positions 0..positions[t] of r (causal
// and paged), whose cache slots are context_slots[r, :] ([R, context]). The threads share (token, KV head) pairs:
// four tokens' worth at a time when there are tokens enough for every thread, one pair at a time otherwise, so
// that a decode step of one token still computes on up to K threads (a token per thread left all but one idle).
template <typename C>
void PagedAttend(const float *q, int64_t tokens, int64_t heads, const KvCache<C> &cache, const int32_t *positions,
                 const int32_t *token_requests, const int32_t *context_slots, int64_t context, float scale,
                 float *out) {
  const int64_t row = heads * cache.dim, kv_heads = cache.kv_heads, group = heads / kv_heads;
  const int64_t chunk = tokens >= omp_get_max_threads() ? 4 * kv_heads : 1;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, chunk)
    for (int64_t item = 0; item < tokens * kv_heads; ++item) {
      const int64_t t = item / kv_heads, kh = item % kv_heads;
      const int64_t visible = std::min<int64_t>(static_cast<int64_t>(positions[t]) + 1, context);
      const int32_t *slots = context_slots + static_cast<int64_t>(token_requests[t]) * context;
      const int64_t offset = t * row + kh * group * cache.dim;
      AttendKvHead(q + offset, cache, kh, slots, visible, group, scale, scores, out + offset);
    }
  }
}

// residual += x (unless x is null), normed = rms_norm(residual) * weight, row by row.
void AddRmsNormRows(const float *x, float *residual, const float *weight, float eps, int64_t rows, int64_t dim,
                    float *normed) {
#pragma omp parallel for schedule(static) if (rows >= kParallelLayerRowsMin)
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
    int64_t i = 0;
    for (; i + kLanes <= size; i += kLanes) {
      const Vec g = LoadVec(gate + i);
      StoreVec(o + i, g / (1.0f + Exp(-g)) * LoadVec(up + i));
    }
    for (; i < size; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

template <typename C>
KvCache<C> CacheParams(void **params, int64_t **shapes, int k_index) {
  return {static_cast<C *>(params[k_index]), static_cast<C *>(params[k_index + 1]), shapes[k_index][0],
          shapes[k_index][1], shapes[k_index][2]};
}

// Which of a decoder layer one DecoderLayer launch computes: all of it, or (tensor parallel) the half before or
// after the all-reduce of the o projection's output.
enum class LayerPart { kWhole = 0, kAttention = 1, kMlp = 2 };

// A layer's constants input (DecoderLayer's input 2): a header of kHeaderFloats settings, then its small vectors.
struct LayerConstants {
  float eps, qk_eps, scale;
  bool has_residual, int8_activations;
  int64_t intermediate, qkv_width;
  LayerPart part;
  const float *input_norm, *post_norm, *qkv_bias, *o_bias, *q_norm, *k_norm;

  static constexpr int64_t kHeaderFloats = 8;

  LayerConstants(const float *c, int64_t hidden, int64_t head_dim)
      : eps(c[0]), qk_eps(c[2]), scale(c[3]), has_residual(c[1] != 0.0f), int8_activations(c[5] != 0.0f),
        intermediate(static_cast<int64_t>(c[4])), qkv_width(static_cast<int64_t>(c[6])),
        part(static_cast<LayerPart>(static_cast<int>(c[7]))) {
    input_norm = c + kHeaderFloats;
    post_norm = input_norm + hidden;
    qkv_bias = post_norm + hidden;
    o_bias = qkv_bias + qkv_width;
    q_norm = o_bias + hidden;
    k_norm = q_norm + head_dim;
  }
};

// The step's index tensor (DecoderLayer's input 8), int32: R, C, then positions [T], slot_mapping [T],
// token_requests [T], context_slots [R, C] and request_adapters [R] (see attention/paged.py).
struct StepIndices {
  int64_t context;
  const int32_t *positions, *slots, *token_requests, *context_slots, *request_adapters;

  StepIndices(const int32_t *indices, int64_t tokens)
      : context(indices[1]), positions(indices + 2), slots(positions + tokens), token_requests(slots + tokens),
        context_slots(token_requests + tokens), request_adapters(context_slots + indices[0] * indices[1]) {}

  // The LoRA slot of token t's request's adapter; -1: the base model.
  int32_t AdapterSlot(int64_t t) const { return request_adapters[token_requests[t]]; }
};

// ---------------------------------------------------------------------------------------------------------
// LoRA adapters (layers/lora.py). Each of a layer's four linear layers has, for S slots, A [S, R, in] and
// B [S, out, R] float32, B scaled by the adapter's alpha / r; a stacked layer's R is its parts times the rank r
// (q, k, v: 3r; gate, up: 2r), each part's B nonzero only in its own rows and its own r columns, and an adapter of
// a smaller rank or without a target zero padded. A token whose request has the adapter of slot s adds
// B[s] @ (A[s] @ x) to the layer's output. An adapter table, int64 [1 + L, 8]: row 0 S and r (S = 0: no LoRA),
// then per layer the addresses of A and B of qkv, o, gate_up and down.
struct AdapterTarget {
  const float *a = nullptr, *b = nullptr;
  int64_t rank = 0;  // R
};

struct LayerAdapters {
  int64_t slots = 0;
  AdapterTarget qkv, o, gate_up, down;

  LayerAdapters() = default;
  LayerAdapters(const int64_t *table, int64_t layer) : slots(table[0]) {
    if (slots == 0) return;
    const int64_t rank = table[1];
    const int64_t *row = table + (1 + layer) * 8;
    auto target = [&](int i, int64_t parts) {
      return AdapterTarget{reinterpret_cast<const float *>(row[2 * i]), reinterpret_cast<const float *>(row[2 * i + 1]),
                           parts * rank};
    };
    qkv = target(0, 3);
    o = target(1, 1);
    gate_up = target(2, 2);
    down = target(3, 1);
  }
};

// out [T, out_size] += B[s] @ (A[s] @ x[t]) for the tokens whose adapter slot s is not -1: the shrink for every
// such token, then the expand, each shared between the cores by rows.
void AddAdapterProducts(const float *x, int64_t tokens, int64_t in_size, const AdapterTarget &target,
                        const StepIndices &step, int64_t out_size, float *out) {
  const int64_t rank = target.rank;
  thread_local std::vector<float> shrunk_rows;  // the launching thread's: the cores write through `shrunk`
  shrunk_rows.resize(tokens * rank);
  float *shrunk = shrunk_rows.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < rank; ++j) {
      const int32_t s = step.AdapterSlot(t);
      if (s >= 0) shrunk[t * rank + j] = Dot(target.a + (s * rank + j) * in_size, x + t * in_size, in_size);
    }
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < out_size; ++n) {
      const int32_t s = step.AdapterSlot(t);
      if (s >= 0) out[t * out_size + n] += Dot(target.b + (s * out_size + n) * rank, shrunk + t * rank, rank);
    }
  }
}

// One decoder layer's weights, caches and constants, wherever they come from: a DecoderLayer launch's inputs or
// a row of a CausalLm launch's address table. W: linear weights, C: KV caches.
template <typename W, typename C>
struct LayerTensors {
  const W *qkv, *o, *gate_up, *down;
  KvCache<C> cache;
  const float *constants;
  LayerAdapters adapters;
};

// What every layer of a step reads: the rotary tables and the step's indices.
// The rotary input is [2, P, R]: cos, then sin, of R <= D rotated features per head.
struct StepTensors {
  int64_t tokens, hidden, rotary;
  const float *cos, *sin;
  StepIndices step;

  StepTensors(int64_t tokens, int64_t hidden, void **params, int64_t **shapes, int rotary_index, int indices_index)
      : tokens(tokens), hidden(hidden), rotary(shapes[rotary_index][2]),
        cos(static_cast<const float *>(params[rotary_index])), sin(cos + shapes[rotary_index][1] * rotary),
        step(static_cast<const int32_t *>(params[indices_index]), tokens) {}
};

// One Llama-family decoder layer: x and the residual stream in (`residual_in` is ignored in the first layer and
// may be `residual` itself), the MLP's output and the stream out. `x` may be `out`: it is read before out is
// written.
template <typename W, typename C>
void RunDecoderLayer(const LayerTensors<W, C> &tensors, const StepTensors &shared, const float *x,
                     const float *residual_in, float *out, float *residual) {
  const KvCache<C> &cache = tensors.cache;
  const int64_t tokens = shared.tokens, hidden = shared.hidden;
  const LayerConstants layer(tensors.constants, hidden, cache.dim);
  const StepIndices &step = shared.step;
  const int64_t heads = layer.qkv_width / cache.dim - 2 * cache.kv_heads, attn_width = heads * cache.dim;
  const int64_t intermediate = layer.intermediate;
  const LayerAdapters &adapters = tensors.adapters;
  bool lora = false;  // any token's request has an adapter
  for (int64_t t = 0; t < tokens && adapters.slots > 0 && !lora; ++t) lora = step.AdapterSlot(t) >= 0;

  thread_local std::vector<float> normed, qkv, q, attn, gate_up, act;
  normed.resize(tokens * hidden);
  qkv.resize(tokens * layer.qkv_width);
  q.resize(tokens * attn_width);
  attn.resize(tokens * attn_width);
  gate_up.resize(tokens * 2 * intermediate);
  act.resize(tokens * intermediate);

  const float *stream = layer.has_residual ? residual_in : x;
  if (stream != residual) std::memcpy(residual, stream, tokens * hidden * sizeof(float));
  if (layer.part == LayerPart::kMlp) {
    AddRmsNormRows(x, residual, layer.post_norm, layer.eps, tokens, hidden, normed.data());
  } else {
    AddRmsNormRows(layer.has_residual ? x : nullptr, residual, layer.input_norm, layer.eps, tokens, hidden,
                   normed.data());
    PackedLinear(normed.data(), tokens, hidden, tensors.qkv, layer.qkv_width, layer.qkv_bias, qkv.data(),
                 layer.int8_activations);
    if (lora) AddAdapterProducts(normed.data(), tokens, hidden, adapters.qkv, step, layer.qkv_width, qkv.data());
    const bool qk_norm = layer.qk_eps > 0;
    RopeAndCache(qkv.data(), tokens, heads, shared.cos, shared.sin, shared.rotary, step.positions, step.slots, cache,
                 qk_norm ? layer.q_norm : nullptr, qk_norm ? layer.k_norm : nullptr, layer.qk_eps, q.data());
    PagedAttend(q.data(), tokens, heads, cache, step.positions, step.token_requests, step.context_slots,
                step.context, layer.scale, attn.data());
    PackedLinear(attn.data(), tokens, attn_width, tensors.o, hidden, layer.o_bias, out, layer.int8_activations);
    if (lora) AddAdapterProducts(attn.data(), tokens, attn_width, adapters.o, step, hidden, out);
    if (layer.part == LayerPart::kAttention) return;
    AddRmsNormRows(out, residual, layer.post_norm, layer.eps, tokens, hidden, normed.data());
  }
  PackedLinear(normed.data(), tokens, hidden, tensors.gate_up, 2 * intermediate, static_cast<const float *>(nullptr),
               gate_up.data(), layer.int8_activations);
  if (lora) AddAdapterProducts(normed.data(), tokens, hidden, adapters.gate_up, step, 2 * intermediate, gate_up.data());
  SiluMulRows(gate_up.data(), tokens, intermediate, act.data());
  PackedLinear(act.data(), tokens, intermediate, tensors.down, hidden, static_cast<const float *>(nullptr), out,
               layer.int8_activations);
  if (lora) AddAdapterProducts(act.data(), tokens, intermediate, adapters.down, step, hidden, out);
}

// Calls body(W tag, C tag) for a launch whose four packed weights start at input `first_weight` (one storage
// type for all four) and whose caches' type is input `cache_index`'s; 1 when the weights' types differ.
template <typename Body>
int WithLayerTypes(const char **dtypes, int first_weight, int cache_index, Body body) {
  for (int index = first_weight + 1; index < first_weight + 4; ++index) {
    if (std::strcmp(dtypes[index], dtypes[first_weight]) != 0) return 1;
  }
  return WithWeightType(dtypes[first_weight], [&](auto weight_tag) {
    return WithStorageType(dtypes[cache_index], [&](auto cache_tag) {
      body(weight_tag, cache_tag);
      return 0;
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Mixture of experts: each token's top-k experts by the router's softmax, the experts' SwiGLU MLPs run on the
// tokens routed to them, grouped by expert, and each token's results added with its routing weights.

// A routed layer's settings (RoutedExperts' input 4): a header of kHeaderFloats, then, when `has_bias`, the
// correction bias [X] that DeepSeek-V3 adds to the scores for choosing only. The router scores all X experts; the
// launch holds `held` of them (its stacked weights' first axis) from `first` on: all of them on one rank, a
// rank's share under expert parallelism, whose results the ranks then sum.
struct ExpertSettings {
  int64_t top_k, intermediate, shared_intermediate, groups, top_groups, first, experts;
  bool normalize, int8_activations, shared_gate, sigmoid, group_by_top_two, has_bias;
  float scaling;
  const float *bias;

  static constexpr int64_t kHeaderFloats = 14;

  explicit ExpertSettings(const float *c)
      : top_k(static_cast<int64_t>(c[0])), intermediate(static_cast<int64_t>(c[2])),
        shared_intermediate(static_cast<int64_t>(c[4])), groups(static_cast<int64_t>(c[7])),
        top_groups(static_cast<int64_t>(c[8])), first(static_cast<int64_t>(c[12])),
        experts(static_cast<int64_t>(c[13])), normalize(c[1] != 0.0f), int8_activations(c[3] != 0.0f),
        shared_gate(c[5] != 0.0f), sigmoid(c[6] != 0.0f), group_by_top_two(c[9] != 0.0f), has_bias(c[11] != 0.0f),
        scaling(c[10]), bias(c + kHeaderFloats) {}

  // The settings fit `held` stacked experts and a settings tensor of `floats`.
  bool Fit(int64_t held, int64_t floats) const {
    return floats >= kHeaderFloats && top_k >= 1 && groups >= 1 && experts % groups == 0 && top_groups >= 1 &&
           top_groups <= groups && top_k <= top_groups * (experts / groups) && first >= 0 &&
           first + held <= experts && floats >= kHeaderFloats + (has_bias ? experts : 0);
  }
};

// The k indices of the largest `values` (ties to the lower index), in index order.
void TopIndices(const float *values, int64_t n, int64_t k, int32_t *top) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::sort(order.begin(), order.begin() + k);
  std::copy(order.begin(), order.begin() + k, top);
}

// Each token's top-k experts [T, k] and routing weights from the router's logits [T, X], as the references route:
// scores by softmax (Qwen, Mixtral, DeepSeek-V2) or sigmoid (DeepSeek-V3); the choice by the scores plus the
// correction bias if any, among the experts of the `top_groups` best of `groups` equal groups (a group's worth: its
// best choice score, or its two best summed); the weights the chosen scores (without the bias), divided by their sum
// when `normalize`, times `scaling`. Listed in expert order: the sum of a token's results then follows expert order,
// as the references' per-expert loops do.
void RouteTokens(const float *logits, int64_t tokens, int64_t experts, const ExpertSettings &settings,
                 int32_t *chosen, float *weights) {
  const int64_t k = settings.top_k, per_group = experts / settings.groups;
#pragma omp parallel for schedule(static) if (tokens >= kParallelLayerRowsMin)
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * experts;
    std::vector<float> scores(experts), choice(experts), group_worth(settings.groups);
    if (settings.sigmoid) {
      for (int64_t e = 0; e < experts; ++e) scores[e] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      const float peak = *std::max_element(row, row + experts);
      float total = 0.0f;
      for (int64_t e = 0; e < experts; ++e) total += scores[e] = std::exp(row[e] - peak);
      for (int64_t e = 0; e < experts; ++e) scores[e] /= total;
    }
    for (int64_t e = 0; e < experts; ++e) choice[e] = scores[e] + (settings.has_bias ? settings.bias[e] : 0.0f);
    if (settings.top_groups < settings.groups) {
      for (int64_t g = 0; g < settings.groups; ++g) {
        const float *members = choice.data() + g * per_group;
        int32_t best[2];
        const int64_t counted = settings.group_by_top_two ? std::min<int64_t>(2, per_group) : 1;
        TopIndices(members, per_group, counted, best);
        group_worth[g] = 0.0f;
        for (int64_t i = 0; i < counted; ++i) group_worth[g] += members[best[i]];
      }
      std::vector<int32_t> kept(settings.top_groups);
      TopIndices(group_worth.data(), settings.groups, settings.top_groups, kept.data());
      std::vector<bool> open(settings.groups, false);
      for (const int32_t g : kept) open[g] = true;
      for (int64_t e = 0; e < experts; ++e) {
        if (!open[e / per_group]) choice[e] = -INFINITY;
      }
    }
    int32_t *top = chosen + t * k;
    TopIndices(choice.data(), experts, k, top);
    float kept = 0.0f;
    for (int64_t i = 0; i < k; ++i) kept += scores[top[i]];
    for (int64_t i = 0; i < k; ++i) {
      const float weight = settings.normalize ? scores[top[i]] / (kept + 1e-20f) : scores[top[i]];
      weights[t * k + i] = weight * settings.scaling;
    }
  }
}

// x [T, E] -> out [T, E]: the held experts' weighted sum. gate_up and down hold their packed weights one after
// another (`expert_elements` W each: gate_up's N = 2I, K = E; down's N = E, K = I), expert `first` + e at e. Each
// held expert with tokens runs once on all of them, its rows gathered: a decode step streams only the chosen
// experts' weights, a prefill multiplies each expert's weights by a block of rows. A choice of an expert not held
// adds nothing here.
template <typename W>
void RunRoutedExperts(const float *x, int64_t tokens, int64_t hidden, const int32_t *chosen, const float *weights,
                      const W *gate_up, const W *down, int64_t held, int64_t gate_up_elements, int64_t down_elements,
                      const ExpertSettings &settings, float *out) {
  const int64_t k = settings.top_k, intermediate = settings.intermediate, first = settings.first;
  auto held_index = [&](int64_t i) { return chosen[i] >= first && chosen[i] < first + held ? chosen[i] - first : -1; };
  // The (token, choice) pairs of each held expert, in token order: a counting sort by expert.
  std::vector<int64_t> starts(held + 1, 0), pairs(tokens * k);
  for (int64_t i = 0; i < tokens * k; ++i) {
    if (held_index(i) >= 0) ++starts[held_index(i) + 1];
  }
  std::partial_sum(starts.begin(), starts.end(), starts.begin());
  std::vector<int64_t> next(starts.begin(), starts.end() - 1);
  for (int64_t i = 0; i < tokens * k; ++i) {
    if (held_index(i) >= 0) pairs[next[held_index(i)]++] = i;
  }

  thread_local std::vector<float> rows, gate_up_out, act, results;
  results.assign(tokens * k * hidden, 0.0f);  // a choice not held: zeros
  for (int64_t e = 0; e < held; ++e) {
    const int64_t count = starts[e + 1] - starts[e];
    if (count == 0) continue;
    const int64_t *mine = pairs.data() + starts[e];
    rows.resize(count * hidden);
    gate_up_out.resize(count * 2 * intermediate);
    act.resize(count * intermediate);
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(rows.data() + r * hidden, x + mine[r] / k * hidden, hidden * sizeof(float));
    }
    PackedLinear(rows.data(), count, hidden, gate_up + e * gate_up_elements, 2 * intermediate,
                 static_cast<const float *>(nullptr), gate_up_out.data(), settings.int8_activations);
    SiluMulRows(gate_up_out.data(), count, intermediate, act.data());
    PackedLinear(act.data(), count, intermediate, down + e * down_elements, hidden,
                 static_cast<const float *>(nullptr), rows.data(), settings.int8_activations);
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(results.data() + mine[r] * hidden, rows.data() + r * hidden, hidden * sizeof(float));
    }
  }
  const float *expert_results = results.data();  // a parallel loop's other threads see their own thread_local
#pragma omp parallel for schedule(static) if (tokens >= kParallelLayerRowsMin)
  for (int64_t t = 0; t < tokens; ++t) {
    float *o = out + t * hidden;
    std::fill(o, o + hidden, 0.0f);
    for (int64_t i = t * k; i < (t + 1) * k; ++i) {
      const float *result = expert_results + i * hidden;
      for (int64_t d = 0; d < hidden; ++d) o[d] += weights[i] * result[d];
    }
  }
}

// The shared expert of RoutedExperts' inputs 5-7 on x [T, E] -> out [T, E]: SwiGLU(x), times sigmoid(gate(x)) when
// settings say it is gated; 1 when a weight does not fit its shape.
int RunSharedExpert(const float *x, int64_t tokens, int64_t hidden, void **params, int *ndims, int64_t **shapes,
                    const char **dtypes, const ExpertSettings &settings, float *out) {
  const int64_t intermediate = settings.shared_intermediate;
  thread_local std::vector<float> gate_up, act, gate;
  gate_up.resize(tokens * 2 * intermediate);
  act.resize(tokens * intermediate);
  gate.resize(tokens);
  auto linear = [&](int index, const float *in, int64_t k_size, int64_t n, float *result) {
    return LinearOnLaunchWeight(in, tokens, k_size, params[index], dtypes[index], Elements(ndims[index], shapes[index]),
                                n, nullptr, result, settings.int8_activations && index != 7);
  };
  if (linear(5, x, hidden, 2 * intermediate, gate_up.data()) != 0) return 1;
  SiluMulRows(gate_up.data(), tokens, intermediate, act.data());
  if (linear(6, act.data(), intermediate, hidden, out) != 0) return 1;
  if (!settings.shared_gate) return 0;
  if (linear(7, x, hidden, 1, gate.data()) != 0) return 1;
  for (int64_t t = 0; t < tokens; ++t) {
    const float scale = 1.0f / (1.0f + std::exp(-gate[t]));
    for (int64_t d = 0; d < hidden; ++d) out[t * hidden + d] *= scale;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// Multi-head latent attention (DeepSeek's MLA): every token caches one latent row, its compressed KV (L, RMS
// normalised) then its rotated positional key (R), shared by all H heads. Attention runs on the latents with the
// absorbed projections: head h's query q_nope [Dn] becomes q_nope @ W_UK[h] [L] (W_UK, W_UV: kv_b_proj's rows
// for h's keys [Dn, L] and values [Dv, L]), so that its score against a context row is
// q_latent . latent + q_rope . k_rope, its output the weighted sum of the context's latents [L], and h's value
// output that sum times W_UV[h]^T [Dv]: the context is never decompressed into per-head keys and values.

// A layer's settings (LatentAttention's input 2): a header of kHeaderFloats, then the latent's norm weight [L].
struct LatentSettings {
  int64_t heads, nope, rope, latent, value;
  float scale, eps;
  bool interleaved;
  const float *latent_norm;

  static constexpr int64_t kHeaderFloats = 8;

  explicit LatentSettings(const float *c)
      : heads(static_cast<int64_t>(c[0])), nope(static_cast<int64_t>(c[1])), rope(static_cast<int64_t>(c[2])),
        latent(static_cast<int64_t>(c[3])), value(static_cast<int64_t>(c[4])), scale(c[5]), eps(c[6]),
        interleaved(c[7] != 0.0f), latent_norm(c + kHeaderFloats) {}

  int64_t QueryWidth() const { return heads * (nope + rope); }
  int64_t RowWidth() const { return latent + rope; }
};

// The rotary embedding of one rope part [R]: rotate-half, or DeepSeek's interleaved pairs (x[2i], x[2i + 1]) each
// rotated by frequency i, written de-interleaved (first the pairs' first halves, then their seconds) as
// transformers' apply_rotary_pos_emb_interleave does; queries and keys share the permutation, so scores do not
// change.
inline void RotateRope(const float *x, const float *cos, const float *sin, int64_t dim, bool interleaved, float *out) {
  if (!interleaved) {
    RotateHalf(x, cos, sin, dim, out);
    return;
  }
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float first = x[2 * i], second = x[2 * i + 1];
    out[i] = first * cos[i] - second * sin[i];
    out[i + half] = second * cos[i + half] + first * sin[i + half];
  }
}

template <typename C>
inline void RowToFloat(const C *row, int64_t n, float *out) {
  for (int64_t i = 0; i < n; ++i) out[i] = ToFloat(row[i]);
}

// Each token's latent row, normalised and rotated, into cache [S, L + R] at its slot (slot < 0 or past the cache:
// not written).
template <typename C>
void WriteLatents(const float *kv, int64_t tokens, const LatentSettings &settings, const float *cos_table,
                  const float *sin_table, const int32_t *positions, const int32_t *slots, C *cache, int64_t num_slots) {
  const int64_t width = settings.RowWidth(), latent = settings.latent, rope = settings.rope;
#pragma omp parallel for schedule(static) if (tokens >= kParallelLayerRowsMin)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= num_slots) continue;
    std::vector<float> row(width);
    const float *in = kv + t * width;
    RmsNormRow(in, settings.latent_norm, settings.eps, latent, row.data());
    const int64_t position = positions[t];
    RotateRope(in + latent, cos_table + position * rope, sin_table + position * rope, rope, settings.interleaved,
               row.data() + latent);
    StoreRow(row.data(), width, cache + slot * width);
  }
}

// One (token, head): its absorbed query against the `visible` context rows at `slots` -> out [Dv].
template <typename C>
void AttendLatents(const float *q_head, const float *w_uk, const float *w_uv, const float *cos, const float *sin,
                   const C *cache, const int32_t *slots, int64_t visible, const LatentSettings &settings, float *out) {
  const int64_t latent = settings.latent, rope = settings.rope, width = settings.RowWidth();
  std::vector<float> query(width, 0.0f), row(width), scores(visible), summed(latent, 0.0f);
  for (int64_t n = 0; n < settings.nope; ++n) {  // q_nope @ W_UK[h]
    const float weight = q_head[n];
    const float *w = w_uk + n * latent;
    for (int64_t l = 0; l < latent; ++l) query[l] += weight * w[l];
  }
  RotateRope(q_head + settings.nope, cos, sin, rope, settings.interleaved, query.data() + latent);
  float peak = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) {
    RowToFloat(cache + static_cast<int64_t>(slots[j]) * width, width, row.data());
    scores[j] = Dot(query.data(), row.data(), width) * settings.scale;
    peak = std::max(peak, scores[j]);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < visible; ++j) total += scores[j] = std::exp(scores[j] - peak);
  for (int64_t j = 0; j < visible; ++j) {
    RowToFloat(cache + static_cast<int64_t>(slots[j]) * width, latent, row.data());
    const float weight = scores[j] / total;
    for (int64_t l = 0; l < latent; ++l) summed[l] += weight * row[l];
  }
  for (int64_t d = 0; d < settings.value; ++d) out[d] = Dot(w_uv + d * latent, summed.data(), latent);
}

}  // namespace

extern "C" {

// 1 when bfloat16 linear layers of kDotMinRows rows or more use bfloat16 dot products (AVX512-BF16 or BFDOT: this
// build's target has them), else 0: tests pick their reference by it.
int UsesBf16DotProducts() { return kHasBf16DotProducts ? 1 : 0; }

// The instruction that multiplies W8A8's int8 activations by int8 weights in this build (see RowQuad).
const char *Int8DotProducts() { return RowQuad::kInstruction; }

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

// x [M, K], packed weight (float32, float16, bfloat16 or int8; see the top of the file), bias [N], options [1]
// (1: an int8 weight quantizes x per row, W8A8) -> out [M, N]
int Linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
           void *extra) {
  const bool int8_activations = *static_cast<const float *>(params[3]) != 0.0f;
  return LinearOnLaunchWeight(static_cast<const float *>(params[0]), shapes[0][0], shapes[0][1], params[1],
                              dtypes[1], Elements(ndims[1], shapes[1]), shapes[2][0],
                              static_cast<const float *>(params[2]), static_cast<float *>(params[4]),
                              int8_activations);
}

// ids [T], packed weight of W [V, E] (as Linear's), width [E] (its shape gives E) -> rows W[ids] [T, E] float32;
// an id outside the table (another tensor-parallel rank's part of the vocabulary) gives a row of zeros.
int PackedRows(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  return LookUpPackedRows(static_cast<const int32_t *>(params[0]), shapes[0][0], params[1], dtypes[1],
                          Elements(ndims[1], shapes[1]), shapes[2][0], static_cast<float *>(params[3]));
}

// qkv [T, (H + 2K) * D], cos [P, R], sin [P, R], positions [T], slots [T], k_cache, v_cache, q_norm [D],
// k_norm [D], eps [1] (0: no q/k norm) -> q [T, H, D]; see RopeAndCache.
int RopeCache(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  if (!KeyTilesFit(shapes[5]) || shapes[1][1] > shapes[5][2]) return 1;
  return WithStorageType(dtypes[5], [&](auto tag) {
    using C = decltype(tag);
    const KvCache<C> cache = CacheParams<C>(params, shapes, 5);
    const float eps = *static_cast<const float *>(params[9]);
    const float *q_norm = eps > 0 ? static_cast<const float *>(params[7]) : nullptr;
    const float *k_norm = eps > 0 ? static_cast<const float *>(params[8]) : nullptr;
    const int64_t heads = shapes[0][1] / cache.dim - 2 * cache.kv_heads;
    RopeAndCache(static_cast<const float *>(params[0]), shapes[0][0], heads, static_cast<const float *>(params[1]),
                 static_cast<const float *>(params[2]), shapes[1][1], static_cast<const int32_t *>(params[3]),
                 static_cast<const int32_t *>(params[4]), cache, q_norm, k_norm, eps,
                 static_cast<float *>(params[10]));
    return 0;
  });
}

// q [T, H, D], k_cache/v_cache [K, S, D], positions [T], token_requests [T], context_slots [R, C], scale [1]
// -> out [T, H * D]; see PagedAttend.
int PagedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                   void *extra) {
  if (!KeyTilesFit(shapes[1])) return 1;
  return WithStorageType(dtypes[1], [&](auto tag) {
    using C = decltype(tag);
    PagedAttend(static_cast<const float *>(params[0]), shapes[0][0], shapes[0][1], CacheParams<C>(params, shapes, 1),
                static_cast<const int32_t *>(params[3]), static_cast<const int32_t *>(params[4]),
                static_cast<const int32_t *>(params[5]), shapes[5][1], *static_cast<const float *>(params[6]),
                static_cast<float *>(params[7]));
    return 0;
  });
}

// One Llama-family decoder layer (Llama, Qwen2 with q/k/v biases, Qwen3 with q/k norms). Inputs:
//   0 x [T, E], 1 residual [T, E] (ignored in the first layer),
//   2 constants float32: a header of 8 (rms eps, has residual (0 in the first layer), q/k norm eps (0: none),
//     attention scale, I, int8 activations (1: int8 weights quantize each layer's input per row, W8A8),
//     qkv width (H + 2K) D, the part computed (LayerPart: 0 the whole layer, 1 up to the o projection, whose
//     output is then output 11, 2 from there, with x the all-reduced o output and residual the stream),
//     then input_norm [E], post_norm [E], qkv_bias [(H + 2K) D], o_bias [E],
//     q_norm [D], k_norm [D] (zeros where the model has none),
//   3 qkv packed (N = (H + 2K) D), 4 o packed (N = E), 5 gate_up packed (N = 2I), 6 down packed (K = I, N = E),
//   7 rotary [2, P, D]: the cos table, then the sin table,
//   8 step indices int32: R, C, positions [T], slot_mapping [T], token_requests [T], context_slots [R, C],
//   9 k_cache, 10 v_cache [K, S, D].
// A launch costs MindSpore ~5 us per input (bench/README.md), so a layer's small vectors travel in one tensor and
// the step's indices in another. The four packed weights share one storage type, and so do the two caches.
// Input 11: the layer's adapter table [2, 8] (see LayerAdapters). Outputs: 12 the MLP's output [T, E] and 13 the
// residual stream [T, E], unsummed, as the layer's Python form returns them (the next layer's norm adds them).
int DecoderLayer(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  if (!KeyTilesFit(shapes[9]) || shapes[7][2] > shapes[9][2]) return 1;  // rotary width <= head_dim
  return WithLayerTypes(dtypes, 3, 9, [&](auto weight_tag, auto cache_tag) {
    using W = decltype(weight_tag);
    using C = decltype(cache_tag);
    const KvCache<C> cache = CacheParams<C>(params, shapes, 9);
    const LayerTensors<W, C> tensors{static_cast<const W *>(params[3]), static_cast<const W *>(params[4]),
                                     static_cast<const W *>(params[5]), static_cast<const W *>(params[6]), cache,
                                     static_cast<const float *>(params[2]),
                                     LayerAdapters(static_cast<const int64_t *>(params[11]), 0)};
    const StepTensors shared(shapes[0][0], shapes[0][1], params, shapes, 7, 8);
    RunDecoderLayer(tensors, shared, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                    static_cast<float *>(params[12]), static_cast<float *>(params[13]));
  });
}

// A whole model held by one rank, in one launch: the embedding lookup, every decoder layer in turn (what
// DecoderLayer computes, each layer's output and stream feeding the next), then the final norm and the output
// projection of the rows that sample. A launch costs MindSpore 0.1-0.4 ms on top of the work and ~9 us per input
// (bench/README.md), so the layers' weights and caches are not inputs: an address table names them. Inputs:
//   0 ids [T] int32,
//   1 constants [L + 1, C] float32: each layer's DecoderLayer constants (the first layer's without residual), then
//     the model's end: rms eps, int8 activations (1: an int8 output projection quantizes its input per row), E,
//     then the final norm's weight [E], zero padded to C,
//   2 qkv, 3 o, 4 gate_up, 5 down: the first layer's packed weights, which give every layer's types and shapes,
//   6 rotary [2, P, D], 7 step indices (as DecoderLayer's),
//   8 k_cache, 9 v_cache: the first layer's caches, which give every layer's type and shape,
//   10 addresses [L, 6] int64: each layer's qkv, o, gate_up, down, k_cache and v_cache data,
//   11 the adapter table [1 + L, 8] int64 (see LayerAdapters),
//   12 the embedding table and 13 the output projection, packed as Linear's weights of [V, E] (the same tensor
//     when the model ties them; each has its own storage type),
//   14 logits_index [S] int32: the tokens whose logits are made, 15 any [V] tensor (its shape gives V).
// The caller keeps the tensors the tables name alive and unmoved (ops/cpu.py). Output: 16 logits [S, V].
int CausalLm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
             void *extra) {
  if (!KeyTilesFit(shapes[8]) || shapes[6][2] > shapes[8][2]) return 1;  // rotary width <= head_dim
  const int64_t layers = shapes[10][0], constants_width = shapes[1][1];
  if (shapes[1][0] != layers + 1 || shapes[10][1] != 6) return 1;
  if (shapes[11][0] != layers + 1 || shapes[11][1] != 8) return 1;
  const float *constants = static_cast<const float *>(params[1]);
  const float *end = constants + layers * constants_width;
  const float eps = end[0];
  const bool int8_activations = end[1] != 0.0f;
  const int64_t tokens = shapes[0][0], hidden = static_cast<int64_t>(end[2]);
  const int64_t sampled = shapes[14][0], vocab = shapes[15][0];
  if (3 + hidden > constants_width) return 1;
  thread_local std::vector<float> x, out, residual, selected_out, selected_stream, normed;
  x.resize(tokens * hidden);
  out.resize(tokens * hidden);
  residual.resize(tokens * hidden);
  if (LookUpPackedRows(static_cast<const int32_t *>(params[0]), tokens, params[12], dtypes[12],
                       Elements(ndims[12], shapes[12]), hidden, x.data()) != 0) {
    return 1;
  }
  const int layer_status = WithLayerTypes(dtypes, 2, 8, [&](auto weight_tag, auto cache_tag) {
    using W = decltype(weight_tag);
    using C = decltype(cache_tag);
    const KvCache<C> first_cache = CacheParams<C>(params, shapes, 8);
    const StepTensors shared(tokens, hidden, params, shapes, 6, 7);
    const int64_t *addresses = static_cast<const int64_t *>(params[10]);
    const int64_t *adapter_table = static_cast<const int64_t *>(params[11]);
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t *row = addresses + l * 6;
      auto at = [&](int i) { return reinterpret_cast<W *>(row[i]); };
      KvCache<C> cache = first_cache;
      cache.k = reinterpret_cast<C *>(row[4]);
      cache.v = reinterpret_cast<C *>(row[5]);
      const LayerTensors<W, C> tensors{at(0), at(1), at(2), at(3), cache, constants + l * constants_width,
                                       LayerAdapters(adapter_table, l)};
      RunDecoderLayer(tensors, shared, l == 0 ? x.data() : out.data(), residual.data(), out.data(), residual.data());
    }
  });
  if (layer_status != 0) return 1;
  // The final norm of the sampled tokens only: it works row by row, so selecting first changes nothing.
  const int32_t *logits_index = static_cast<const int32_t *>(params[14]);
  selected_out.resize(sampled * hidden);
  selected_stream.resize(sampled * hidden);
  normed.resize(sampled * hidden);
  for (int64_t s = 0; s < sampled; ++s) {
    const int64_t t = logits_index[s];
    if (t < 0 || t >= tokens) return 1;
    std::memcpy(selected_out.data() + s * hidden, out.data() + t * hidden, hidden * sizeof(float));
    std::memcpy(selected_stream.data() + s * hidden, residual.data() + t * hidden, hidden * sizeof(float));
  }
  AddRmsNormRows(selected_out.data(), selected_stream.data(), end + 3, eps, sampled, hidden, normed.data());
  return LinearOnLaunchWeight(normed.data(), sampled, hidden, params[13], dtypes[13], Elements(ndims[13], shapes[13]),
                              vocab, nullptr, static_cast<float *>(params[16]), int8_activations);
}

// A mixture-of-experts MLP. Inputs: 0 x [T, E] (the post-attention norm's output), 1 the router's packed weight
// (N = X experts, K = E), 2 gate_up [X, ...]: each expert's packed gate and up projections stacked (N = 2I, K = E),
// 3 down [X, ...] (N = E, K = I), both of one storage type, 4 settings float32 [6]: top k, normalize the top k's
// weights (1) or keep their softmax probabilities (0), I, int8 activations (W8A8, as DecoderLayer's), the shared
// expert's I (0: none), whether a gate scales it (1); 5 the shared expert's gate_up (N = 2 Is), 6 its down, 7 its
// gate (N = 1), packed, each any weight when the model lacks it.
// Output: 8 [T, E], the sum over each token's top-k experts of routing weight x SwiGLU expert(x), plus the shared
// expert's SwiGLU(x), times sigmoid(gate(x)) when gated.
int RoutedExperts(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                  void *extra) {
  if (nparam != 9) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int64_t settings_floats = Elements(ndims[4], shapes[4]);
  if (settings_floats < ExpertSettings::kHeaderFloats) return 1;
  const ExpertSettings settings(static_cast<const float *>(params[4]));
  const int64_t tokens = shapes[0][0], hidden = shapes[0][1], held = shapes[2][0], experts = settings.experts;
  if (std::strcmp(dtypes[2], dtypes[3]) != 0 || shapes[3][0] != held || !settings.Fit(held, settings_floats)) {
    return 1;
  }
  thread_local std::vector<float> logits, weights, shared;
  thread_local std::vector<int32_t> chosen;
  logits.resize(tokens * experts);
  if (LinearOnLaunchWeight(x, tokens, hidden, params[1], dtypes[1], Elements(ndims[1], shapes[1]), experts, nullptr,
                           logits.data(), false) != 0) {
    return 1;
  }
  chosen.resize(tokens * settings.top_k);
  weights.resize(tokens * settings.top_k);
  RouteTokens(logits.data(), tokens, experts, settings, chosen.data(), weights.data());
  const int status = WithWeightType(dtypes[2], [&](auto tag) {
    using W = decltype(tag);
    const int64_t gate_up_elements = Elements(ndims[2] - 1, shapes[2] + 1);
    const int64_t down_elements = Elements(ndims[3] - 1, shapes[3] + 1);
    const int64_t intermediate = settings.intermediate;
    if (gate_up_elements != (2 * intermediate + kPanel - 1) / kPanel * PanelSize<W>(hidden) ||
        down_elements != (hidden + kPanel - 1) / kPanel * PanelSize<W>(intermediate)) {
      return 1;
    }
    RunRoutedExperts(x, tokens, hidden, chosen.data(), weights.data(), static_cast<const W *>(params[2]),
                     static_cast<const W *>(params[3]), held, gate_up_elements, down_elements, settings,
                     static_cast<float *>(params[8]));
    return 0;
  });
  if (status != 0 || settings.shared_intermediate == 0) return status;
  shared.resize(tokens * hidden);
  if (RunSharedExpert(x, tokens, hidden, params, ndims, shapes, dtypes, settings, shared.data()) != 0) return 1;
  float *out = static_cast<float *>(params[8]);
  for (int64_t i = 0; i < tokens * hidden; ++i) out[i] += shared[i];
  return 0;
}

// k_cache/v_cache [K, S, D], src [N], dst [N] -> done [1]: copies slot src[i] to dst[i] for every KV head
// (vLLM's copy-on-write of shared blocks). The caches are updated in place.
int CopySlots(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  if (!KeyTilesFit(shapes[0])) return 1;
  const int32_t *src = static_cast<const int32_t *>(params[2]);
  const int32_t *dst = static_cast<const int32_t *>(params[3]);
  const int64_t count = shapes[2][0];
  return WithStorageType(dtypes[0], [&](auto tag) {
    using C = decltype(tag);
    const KvCache<C> cache = CacheParams<C>(params, shapes, 0);
    const int64_t dim = cache.dim;
    for (int64_t kh = 0; kh < cache.kv_heads; ++kh) {
      for (int64_t i = 0; i < count; ++i) {
        const C *from = cache.KeyTile(kh, src[i]) + src[i] % kKeyTileRows;
        C *to = cache.KeyTile(kh, dst[i]) + dst[i] % kKeyTileRows;
        for (int64_t d = 0; d < dim; ++d) to[d * kKeyTileRows] = from[d * kKeyTileRows];
        std::memcpy(cache.ValueRow(kh, dst[i]), cache.ValueRow(kh, src[i]), dim * sizeof(C));
      }
    }
    *static_cast<float *>(params[4]) = 0.0f;
    return 0;
  });
}

// q [T, H * (Dn + R)] (the query projection's output), kv [T, L + R] (kv_a_proj_with_mqa's), settings (LatentSettings),
// w_uk [H, Dn, L], w_uv [H, Dv, L] (float32), rotary [2, P, R], indices (StepIndices' layout), cache [S, L + R]
// -> out [T, H * Dv], each head's attention output before o_proj. The step's latents are written first: a prompt's
// tokens attend to each other's.
int LatentAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 9) return 1;
  const LatentSettings settings(static_cast<const float *>(params[2]));
  const int64_t tokens = shapes[0][0], heads = settings.heads, width = settings.RowWidth();
  if (shapes[0][1] != settings.QueryWidth() || shapes[1][1] != width || shapes[7][1] != width ||
      Elements(ndims[2], shapes[2]) < LatentSettings::kHeaderFloats + settings.latent ||
      Elements(ndims[3], shapes[3]) != heads * settings.nope * settings.latent ||
      Elements(ndims[4], shapes[4]) != heads * settings.value * settings.latent || shapes[5][2] != settings.rope) {
    return 1;
  }
  const float *q = static_cast<const float *>(params[0]);
  const float *w_uk = static_cast<const float *>(params[3]);
  const float *w_uv = static_cast<const float *>(params[4]);
  const float *cos_table = static_cast<const float *>(params[5]);
  const float *sin_table = cos_table + shapes[5][1] * settings.rope;
  const StepIndices step(static_cast<const int32_t *>(params[6]), tokens);
  float *out = static_cast<float *>(params[8]);
  return WithStorageType(dtypes[7], [&](auto tag) {
    using C = decltype(tag);
    C *cache = static_cast<C *>(params[7]);
    WriteLatents(static_cast<const float *>(params[1]), tokens, settings, cos_table, sin_table, step.positions,
                 step.slots, cache, shapes[7][0]);
#pragma omp parallel for schedule(dynamic)
    for (int64_t item = 0; item < tokens * heads; ++item) {
      const int64_t t = item / heads, h = item % heads, position = step.positions[t];
      const int64_t visible = std::min<int64_t>(position + 1, step.context);
      const int32_t *slots = step.context_slots + static_cast<int64_t>(step.token_requests[t]) * step.context;
      AttendLatents(q + item * (settings.nope + settings.rope), w_uk + h * settings.nope * settings.latent,
                    w_uv + h * settings.value * settings.latent, cos_table + position * settings.rope,
                    sin_table + position * settings.rope, cache, slots, visible, settings,
                    out + item * settings.value);
    }
    return 0;
  });
}

// cache [S, W], src [N], dst [N] -> done [1]: copies row src[i] to dst[i] of a latent cache, in place.
int CopyRows(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
             void *extra) {
  const int32_t *src = static_cast<const int32_t *>(params[1]);
  const int32_t *dst = static_cast<const int32_t *>(params[2]);
  const int64_t count = shapes[1][0], width = shapes[0][1];
  return WithStorageType(dtypes[0], [&](auto tag) {
    using C = decltype(tag);
    C *cache = static_cast<C *>(params[0]);
    for (int64_t i = 0; i < count; ++i) std::memcpy(cache + dst[i] * width, cache + src[i] * width, width * sizeof(C));
    *static_cast<float *>(params[3]) = 0.0f;
    return 0;
  });
}

}  // extern "C"
