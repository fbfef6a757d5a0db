// Weight-only int8 linear for CPU at small batch (one LM step: M = 1..8 rows).
//
//     y[m, n] = scale[n] * sum_k x[m, k] * q[n, k]  (+ bias[n])
//
// q is int8 with one fp32 scale per output row; x stays in float (weight-only: activations
// are never quantized), products are accumulated in fp32 and the result has x's dtype.
//
// At small M the step is bound by reading the weights, so the layout is chosen for one
// sequential stream per thread: output rows are grouped in blocks of BLOCK = 16, and a block
// stores its 16 weights of input column k next to each other:
//
//     packed[b][k][j] = q[b * BLOCK + j][k]        (rows past N are zero, their scale 0)
//
// For each k, the 16 int8 weights are widened to two 8-lane fp32 vectors once and used by
// every row of x (a broadcast of x[m, k] and two FMAs per row). There is no horizontal sum
// and no alignment requirement on K; N is padded to the block at packing time.
//
// Needs AVX2 + FMA (the Python side checks the CPU before building). Zen 4 runs 512-bit FMAs
// as two 256-bit halves, so 256-bit vectors lose nothing there and run on every x86-64 CPU
// of the last ten years.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include "simd.h"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace {

constexpr int64_t BLOCK = 16;
// Rows of x handled in one pass over a block: 4 rows x 2 vectors = 8 accumulators, enough
// independent FMA chains to hide the FMA latency (4 cycles, 2 per cycle), with registers
// to spare for the weights and the broadcast. More rows take further passes over the same
// block, which is then in L1/L2 (a block is 16 * K bytes).
constexpr int MAX_ROWS = 4;
constexpr int LINE_K = 64 / BLOCK;  // k per cache line of a block
// 48 lines (3 KB) ahead: in interleaved runs here 16 lines left M = 1 at ~0.75 of the read
// bandwidth on 2 threads, 48 lines (with the larger chunks below) at ~0.8-0.85.
constexpr int64_t PREFETCH_K = 48 * LINE_K;


// Weights of column k of a block as two fp32 vectors (lanes 0..7 and 8..15).
inline void load_weights(const int8_t* w, __m256& lo, __m256& hi) {
  lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
  hi = _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + 8))));
}

// One block of BLOCK output rows for ROWS rows of x. With few rows there are too few
// accumulators to keep the FMA units busy, so UNROLL (a divisor of LINE_K) consecutive k use
// separate accumulators, summed at the end (a different, equally exact fp32 summation order).
template <int ROWS, int UNROLL>
void block_rows(const int8_t* w, const float* x, int64_t x_stride, int64_t K,
                const float* scale, const float* bias, float* y, int64_t y_stride,
                int64_t valid) {
  __m256 acc[UNROLL][ROWS][2];
  UNROLLED
  for (int u = 0; u < UNROLL; ++u)
    UNROLLED
    for (int r = 0; r < ROWS; ++r) acc[u][r][0] = acc[u][r][1] = _mm256_setzero_ps();

  // Four k per iteration: one 64-byte cache line of the block, prefetched a few lines ahead
  // (the hardware prefetcher alone left M = 1 short of the read bandwidth here).
  int64_t k = 0;
  for (; k + LINE_K <= K; k += LINE_K) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (k + PREFETCH_K) * BLOCK), _MM_HINT_T0);
    UNROLLED
    for (int j = 0; j < LINE_K; ++j) {
      const int u = j % UNROLL;
      __m256 lo, hi;
      load_weights(w + (k + j) * BLOCK, lo, hi);
      UNROLLED
      for (int r = 0; r < ROWS; ++r) {
        const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + k + j);
        acc[u][r][0] = _mm256_fmadd_ps(lo, xv, acc[u][r][0]);
        acc[u][r][1] = _mm256_fmadd_ps(hi, xv, acc[u][r][1]);
      }
    }
  }
  for (; k < K; ++k) {  // K not a multiple of LINE_K
    __m256 lo, hi;
    load_weights(w + k * BLOCK, lo, hi);
    UNROLLED
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + k);
      acc[0][r][0] = _mm256_fmadd_ps(lo, xv, acc[0][r][0]);
      acc[0][r][1] = _mm256_fmadd_ps(hi, xv, acc[0][r][1]);
    }
  }
  UNROLLED
  for (int u = 1; u < UNROLL; ++u)
    UNROLLED
    for (int r = 0; r < ROWS; ++r) {
      acc[0][r][0] = _mm256_add_ps(acc[0][r][0], acc[u][r][0]);
      acc[0][r][1] = _mm256_add_ps(acc[0][r][1], acc[u][r][1]);
    }

  const __m256 scale_lo = _mm256_loadu_ps(scale), scale_hi = _mm256_loadu_ps(scale + 8);
  alignas(32) float out[ROWS][BLOCK];
  UNROLLED
  for (int r = 0; r < ROWS; ++r) {
    _mm256_store_ps(out[r], _mm256_mul_ps(acc[0][r][0], scale_lo));
    _mm256_store_ps(out[r] + 8, _mm256_mul_ps(acc[0][r][1], scale_hi));
  }
  // The last block may be partly padding: store only the valid rows; the bias (length N) is
  // added here for the same reason.
  for (int r = 0; r < ROWS; ++r) {
    float* dst = y + r * y_stride;
    for (int64_t j = 0; j < valid; ++j) dst[j] = bias == nullptr ? out[r][j] : out[r][j] + bias[j];
  }
}

// ROWS is a template parameter (the accumulators must be registers): pick the instance.
void block_any_rows(int rows, const int8_t* w, const float* x, int64_t x_stride, int64_t K,
                    const float* scale, const float* bias, float* y, int64_t y_stride,
                    int64_t valid) {
  switch (rows) {
    case 1: return block_rows<1, 4>(w, x, x_stride, K, scale, bias, y, y_stride, valid);
    case 2: return block_rows<2, 2>(w, x, x_stride, K, scale, bias, y, y_stride, valid);
    case 3: return block_rows<3, 1>(w, x, x_stride, K, scale, bias, y, y_stride, valid);
    default: return block_rows<4, 1>(w, x, x_stride, K, scale, bias, y, y_stride, valid);
  }
}

}  // namespace

// x [..., K] (float32 or bfloat16), packed [ceil(N / 16), K, 16] int8, scales [16 * blocks]
// float32, bias [N] or None. Returns [..., N] in x's dtype.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const std::optional<at::Tensor>& bias, int64_t out_features) {
  TORCH_CHECK(x.device().is_cpu() && packed.device().is_cpu(), "int8_linear runs on CPU");
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.dim() == 3 &&
                  packed.size(2) == BLOCK && packed.is_contiguous(),
              "packed weights: contiguous int8 [blocks, K, ", BLOCK, "]");
  const int64_t blocks = packed.size(0), K = packed.size(1);
  TORCH_CHECK(out_features > (blocks - 1) * BLOCK && out_features <= blocks * BLOCK,
              "out_features does not match the packed blocks");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  scales.numel() == blocks * BLOCK,
              "scales: contiguous float32 [", blocks * BLOCK, "]");
  TORCH_CHECK(x.size(-1) == K, "x has ", x.size(-1), " features, the weights ", K);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "x: float32 or bfloat16");

  // bf16 x is widened once here (M x K, tiny) rather than at every broadcast.
  const at::Tensor flat = x.reshape({-1, K}).to(at::kFloat).contiguous();
  const int64_t M = flat.size(0);
  at::Tensor bias_f;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == out_features, "bias has ", bias->numel(), " values, expected ",
                out_features);
    bias_f = bias->to(at::kFloat).contiguous();
  }
  at::Tensor y = at::empty({M, out_features}, flat.options());

  const int8_t* w = packed.data_ptr<int8_t>();
  const float* xs = flat.data_ptr<float>();
  const float* sc = scales.data_ptr<float>();
  const float* bs = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  float* ys = y.data_ptr<float>();
  // Work is split over output blocks in chunks of at least ~256 KB of weights.
  const int64_t chunk = std::max<int64_t>(1, (256 << 10) / (K * BLOCK));
  const int64_t chunks = (blocks + chunk - 1) / chunk;
  claim_in_parallel(chunks, at::get_num_threads(), [&](const auto& claim) {
    for (int64_t c = claim(); c < chunks; c = claim()) {
      for (int64_t b = c * chunk; b < std::min(blocks, (c + 1) * chunk); ++b) {
        const int64_t n0 = b * BLOCK;
        const int64_t valid = std::min(BLOCK, out_features - n0);
        for (int64_t m0 = 0; m0 < M; m0 += MAX_ROWS) {
          const int rows = static_cast<int>(std::min<int64_t>(MAX_ROWS, M - m0));
          block_any_rows(rows, w + b * K * BLOCK, xs + m0 * K, K, K, sc + n0,
                         bs == nullptr ? nullptr : bs + n0, ys + m0 * out_features + n0,
                         out_features, valid);
        }
      }
    }
  });

  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  return y.view(shape).to(x.scalar_type());
}
