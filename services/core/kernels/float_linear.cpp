// fp32 linear for CPU at a handful of rows (a streaming step: M = 1..8 rows).
//
//     y[m, n] = beta * bias[n] + alpha * sum_k x[m, k] * w[n, k]
//
// w is torch's own [N, K] row-major weight (row stride may exceed K), read in place: the
// models keep one copy of their weights and large-M calls still go to torch's GEMM on the
// same tensor. torch's GEMM is slow at few rows on AVX2 CPUs (2 rows cost twice 1 row and a
// second thread does not help), while the step is bound by reading w once: here each thread
// takes chunks of output rows, streams G rows of w at a time along K with 8-lane vectors and
// FMAs them against every row of x (tiny, in L1), summing the lanes at the end.
//
// Each output is computed by one thread in a fixed order, so the result does not depend on
// the number of threads. Needs AVX2 + FMA (checked before the build).

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include "simd.h"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace {

// Floats per iteration along K: one 64-byte line of each weight row.
constexpr int64_t LINE = 16;
// Prefetch distance along each weight row (floats): 8 lines ahead, enough to cover the
// DRAM latency at this CPU's bandwidth with G streams in flight.
constexpr int64_t PREFETCH = 8 * LINE;
// Rows of at most this many floats (4 KB) are too short for that: each group's first lines
// would miss. There the next group's rows are prefetched into L1 and the group after next's
// into L2 instead, at the same column.
constexpr int64_t SHORT_ROW = 1024;
// Rows of x per pass over a group of weight rows; more rows take further passes over the
// same group, which is then in L1/L2.
constexpr int MAX_TILE = 4;



// G weight rows (stride ldw) against R rows of x (stride ldx). U = 2 gives the two halves
// of each line separate accumulators: with R * G small there are too few independent FMA
// chains to cover the FMA latency when w is in cache.
template <int R, int G, int U>
void group(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t K, float alpha,
           float beta, const float* bias, float* y, int64_t ldy) {
  __m256 acc[U][R][G];
  UNROLLED
  for (int u = 0; u < U; ++u)
    UNROLLED
    for (int r = 0; r < R; ++r)
      UNROLLED
      for (int g = 0; g < G; ++g) acc[u][r][g] = _mm256_setzero_ps();

  // A prefetch past the weight's end is harmless: prefetches never fault.
  const bool short_rows = K <= SHORT_ROW;
  int64_t k = 0;
  for (; k + LINE <= K; k += LINE) {
    if (short_rows) {
      UNROLLED
      for (int g = 0; g < G; ++g) {
        _mm_prefetch(reinterpret_cast<const char*>(w + (g + G) * ldw + k), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w + (g + 3 * G) * ldw + k), _MM_HINT_T1);
      }
    } else {
      UNROLLED
      for (int g = 0; g < G; ++g)
        _mm_prefetch(reinterpret_cast<const char*>(w + g * ldw + k + PREFETCH), _MM_HINT_T0);
    }
    UNROLLED
    for (int h = 0; h < 2; ++h) {
      const int u = h % U;
      UNROLLED
      for (int g = 0; g < G; ++g) {
        const __m256 wv = _mm256_loadu_ps(w + g * ldw + k + 8 * h);
        UNROLLED
        for (int r = 0; r < R; ++r)
          acc[u][r][g] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + k + 8 * h),
                                         acc[u][r][g]);
      }
    }
  }
  if (k + 8 <= K) {
    UNROLLED
    for (int g = 0; g < G; ++g) {
      const __m256 wv = _mm256_loadu_ps(w + g * ldw + k);
      UNROLLED
      for (int r = 0; r < R; ++r)
        acc[0][r][g] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + k), acc[0][r][g]);
    }
    k += 8;
  }
  UNROLLED
  for (int r = 0; r < R; ++r)
    UNROLLED
    for (int g = 0; g < G; ++g) {
      if (U > 1) acc[0][r][g] = _mm256_add_ps(acc[0][r][g], acc[U - 1][r][g]);
      float sum = hsum(acc[0][r][g]);
      for (int64_t t = k; t < K; ++t) sum += w[g * ldw + t] * x[r * ldx + t];  // K % 8
      const float out = alpha * sum;
      y[r * ldy + g] = bias == nullptr ? out : beta * bias[g] + out;
    }
}

// R and G are template parameters (the accumulators must be registers): pick the instance.
// G = 4 weight rows per group (4 streams, one line each per iteration); G = 1 for the rows
// left at the end of a chunk.
template <int G>
void group_any_rows(int rows, const float* w, int64_t ldw, const float* x, int64_t ldx,
                    int64_t K, float alpha, float beta, const float* bias, float* y,
                    int64_t ldy) {
  switch (rows) {
    case 1: return group<1, G, 2>(w, ldw, x, ldx, K, alpha, beta, bias, y, ldy);
    case 2: return group<2, G, G == 1 ? 2 : 1>(w, ldw, x, ldx, K, alpha, beta, bias, y, ldy);
    case 3: return group<3, G, 1>(w, ldw, x, ldx, K, alpha, beta, bias, y, ldy);
    default: return group<4, G == 1 ? 1 : 3, 1>(w, ldw, x, ldx, K, alpha, beta, bias, y, ldy);
  }
}

// Output rows [n0, n1) for all M rows of x.
void rows_range(int64_t n0, int64_t n1, int64_t M, const float* w, int64_t ldw, const float* x,
                int64_t K, float alpha, float beta, const float* bias, float* y, int64_t N) {
  for (int64_t m0 = 0; m0 < M; m0 += MAX_TILE) {
    const int rows = static_cast<int>(std::min<int64_t>(MAX_TILE, M - m0));
    // Four rows of x use groups of 3 weight rows (12 accumulators fit the 16 registers).
    const int64_t G = rows == 4 ? 3 : 4;
    int64_t n = n0;
    for (; n + G <= n1; n += G) {
      const float* b = bias == nullptr ? nullptr : bias + n;
      if (G == 4)
        group_any_rows<4>(rows, w + n * ldw, ldw, x + m0 * K, K, K, alpha, beta, b,
                          y + m0 * N + n, N);
      else
        group_any_rows<3>(rows, w + n * ldw, ldw, x + m0 * K, K, K, alpha, beta, b,
                          y + m0 * N + n, N);
    }
    for (; n < n1; ++n)
      group_any_rows<1>(rows, w + n * ldw, ldw, x + m0 * K, K, K, alpha, beta,
                        bias == nullptr ? nullptr : bias + n, y + m0 * N + n, N);
  }
}

}  // namespace

// x [..., K] float32, weight [N, K] float32 (unit column stride, any row stride), bias [N] or
// None. Returns beta * bias + alpha * x @ weight.T, [..., N] float32.
at::Tensor float_linear(const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, double beta, double alpha) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "float_linear runs on CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "float_linear: float32 x and weight");
  TORCH_CHECK(weight.dim() == 2 && weight.stride(1) == 1 && weight.stride(0) >= weight.size(1),
              "weight: [N, K] with unit column stride");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x.size(-1) == K, "x has ", x.size(-1), " features, the weight ", K);
  const at::Tensor flat = x.reshape({-1, K}).contiguous();  // a view for the usual inputs
  const int64_t M = flat.size(0);
  at::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == N, "bias: float32 [", N,
                "]");
    bias_c = bias->contiguous();
  }
  at::Tensor y = at::empty({M, N}, flat.options());

  const float* w = weight.data_ptr<float>();
  const float* xs = flat.data_ptr<float>();
  const float* bs = bias_c.defined() ? bias_c.data_ptr<float>() : nullptr;
  float* ys = y.data_ptr<float>();
  const int64_t ldw = weight.stride(0);
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta);
  if (M > 0 && N > 0) {
    // Chunks of ~256 KB of weights, a multiple of 12 rows: whole groups of 3 and 4, so the
    // rows left to the one-row path (N % G, at the end) and so every output's summation
    // order do not depend on the chunk size. Smaller chunks cost more claims and lose the
    // prefetches that run past their end: the linears of Mimi's 8 transformer layers at 2
    // rows took 16 % longer with 64 KB chunks (A/B 2026-12-04, weights from DRAM). Weights
    // under ~256 KB are not worth waking a second thread for.
    const int64_t chunk = std::max<int64_t>(12, (256 << 10) / (K * 4) / 12 * 12);
    const int64_t chunks = (N + chunk - 1) / chunk;
    const bool small = N * K * 4 < (256 << 10);
    claim_in_parallel(chunks, small ? 1 : at::get_num_threads(), [&](const auto& claim) {
      for (int64_t c = claim(); c < chunks; c = claim())
        rows_range(c * chunk, std::min(N, (c + 1) * chunk), M, w, ldw, xs, K, a, b, bs, ys, N);
    });
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return y.view(shape);
}
