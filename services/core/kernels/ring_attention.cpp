// Attention of a few queries (one streaming step: T = 1..4) over a ring KV cache on CPU.
//
//     out[b, t, h] = sum_c softmax_c(scale * q[b, h, t] . k[b, h, c] | mask[b, t, c]) v[b, h, c]
//
// At small T one step reads every allowed key and value once and does ~2 FLOPs per value
// read: it is bound by the memory, and what matters is to read only what the mask allows.
// torch's flash attention reads the whole ring (masked slots included), which early in a
// session is mostly empty; here a slot that no query of the step may see is never read.
//
// Work per (b, h), claimed by the threads one pair at a time (claim_in_parallel, simd.h):
//   1. one pass over the allowed key rows: each row is loaded once and dotted with all T
//      queries (the queries stay in L1);
//   2. per query, a stable softmax in fp32 over its allowed scores (max-subtract, exp, sum);
//   3. one pass over the allowed value rows, each loaded once and accumulated into all T
//      outputs (fp32 accumulators in an L1 scratch), divided by the sum at the end.
// A query whose mask row is all False gets zeros, as torch's SDPA returns for such a row.
//
// fp32 queries; keys and values fp32, or both bf16 (a bf16 ring beside fp32 compute: half
// the bytes, each value widened to fp32 exactly as it is loaded). The sums run in another
// order than torch's, so results agree to fp32 rounding, not bit for bit. Needs AVX2 + FMA.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include "simd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace {

constexpr int64_t LANES = 8;

// Eight key / value elements as fp32: a bf16 is the top half of its fp32.
inline __m256 load_kv(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_kv(const at::BFloat16* p) {
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}


// e^x for x <= 0 (softmax after the max is subtracted), to ~1 ulp: x = n ln2 + r with
// |r| <= ln2 / 2, e^r by its degree-7 Taylor polynomial (truncation ~5e-9 relative, below
// fp32's 6e-8), times 2^n built in the exponent bits. Below -87.3 the result would be a
// denormal or zero: it is 0 (its weight next to the max's 1 is lost in the fp32 sum anyway),
// which also maps the masked scores (-inf) to 0.
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.3f);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lowest);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 in two parts: n * ln2_hi is exact for |n| < 2^9, so r keeps its low bits.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 scaled = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), bits));
  return _mm256_andnot_ps(underflow, scaled);
}

// Everything one (b, h) needs; pointers already offset to that pair. KV: float or bf16.
template <typename KV>
struct Head {
  const float* q;      // [T, D], row stride q_stride
  int64_t q_stride;
  const KV* k;         // [C, D], row stride kv_stride
  const KV* v;
  int64_t k_stride, v_stride;
  const bool* mask;    // [T, C] with strides (mask_t, mask_c), or nullptr: all allowed
  int64_t mask_t, mask_c;
  float* out;          // [T, D], row stride out_stride
  int64_t out_stride;
};

// Per-thread scratch, reused across the pairs a thread handles.
struct Scratch {
  std::vector<float> queries;  // [T, D] the queries, contiguous
  std::vector<float> scores;   // [T, C] scores, then weights; -inf where masked
  std::vector<uint8_t> seen;   // [C] whether any query of the step may see slot c
  std::vector<float> acc;      // [T, D] output accumulators
};

// Score of key row k against the T queries (contiguous in qs), into s[t * C].
// T is a template parameter so the accumulators are registers.
template <int T, typename KV>
inline void score_row(const float* qs, const KV* k, int64_t D, float* s, int64_t C) {
  // Two accumulators per query: a single FMA chain per query would wait on the FMA latency.
  __m256 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 2 * LANES <= D; d += 2 * LANES) {
    const __m256 k0 = load_kv(k + d), k1 = load_kv(k + d + LANES);
    for (int t = 0; t < T; ++t) {
      acc[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + t * D + d), k0, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + t * D + d + LANES), k1, acc[t][1]);
    }
  }
  if (d + LANES <= D) {
    const __m256 k0 = load_kv(k + d);
    for (int t = 0; t < T; ++t)
      acc[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + t * D + d), k0, acc[t][0]);
    d += LANES;
  }
  for (int t = 0; t < T; ++t) {
    float total = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
    for (int64_t e = d; e < D; ++e)  // D not a multiple of 8
      total += qs[t * D + e] * static_cast<float>(k[e]);
    s[t * C] = total;
  }
}

template <int T, typename KV>
void attend_head(const Head<KV>& hd, int64_t C, int64_t D, float scale, Scratch& sc) {
  float* qs = sc.queries.data();
  float* scores = sc.scores.data();
  uint8_t* seen = sc.seen.data();
  float* acc = sc.acc.data();
  for (int t = 0; t < T; ++t)
    std::copy(hd.q + t * hd.q_stride, hd.q + t * hd.q_stride + D, qs + t * D);

  // 1. Scores of the slots some query may see; the others are never read.
  const float minus_inf = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < C; ++c) {
    bool any = hd.mask == nullptr;
    for (int t = 0; t < T && !any; ++t) any = hd.mask[t * hd.mask_t + c * hd.mask_c];
    seen[c] = any;
    if (!any) {
      for (int t = 0; t < T; ++t) scores[t * C + c] = minus_inf;
      continue;
    }
    score_row<T, KV>(qs, hd.k + c * hd.k_stride, D, scores + c, C);
    for (int t = 0; t < T; ++t) {
      const bool allowed = hd.mask == nullptr || hd.mask[t * hd.mask_t + c * hd.mask_c];
      scores[t * C + c] = allowed ? scores[t * C + c] * scale : minus_inf;
    }
  }

  // 2. Softmax weights per query (unnormalized; the sum divides the output once).
  float inv_sum[T];
  for (int t = 0; t < T; ++t) {
    float* s = scores + t * C;
    float best = minus_inf;
    for (int64_t c = 0; c < C; ++c) best = std::max(best, s[c]);
    if (best == minus_inf) {  // nothing allowed: zeros, as SDPA
      std::fill(s, s + C, 0.f);
      inv_sum[t] = 0.f;
      continue;
    }
    const __m256 shift = _mm256_set1_ps(best);
    __m256 total_v = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + LANES <= C; c += LANES) {
      const __m256 w = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + c), shift));
      _mm256_storeu_ps(s + c, w);
      total_v = _mm256_add_ps(total_v, w);
    }
    float total = hsum(total_v);
    if (c < C) {  // the tail through one padded vector
      alignas(32) float tail[LANES];
      std::fill(tail, tail + LANES, minus_inf);
      std::copy(s + c, s + C, tail);
      _mm256_store_ps(tail, exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(tail), shift)));
      for (int64_t e = c; e < C; ++e) {
        s[e] = tail[e - c];
        total += tail[e - c];
      }
    }
    inv_sum[t] = 1.f / total;
  }

  // 3. Weighted sum of the value rows some query may see, each row loaded once.
  std::fill(acc, acc + T * D, 0.f);
  const int64_t vec_end = D - D % LANES;
  for (int64_t c = 0; c < C; ++c) {
    if (!seen[c]) continue;
    const KV* v = hd.v + c * hd.v_stride;
    __m256 w[T];
    for (int t = 0; t < T; ++t) w[t] = _mm256_set1_ps(scores[t * C + c]);
    for (int64_t d = 0; d < vec_end; d += LANES) {
      const __m256 vv = load_kv(v + d);
      for (int t = 0; t < T; ++t) {
        float* a = acc + t * D + d;
        _mm256_storeu_ps(a, _mm256_fmadd_ps(w[t], vv, _mm256_loadu_ps(a)));
      }
    }
    for (int64_t d = vec_end; d < D; ++d)
      for (int t = 0; t < T; ++t)
        acc[t * D + d] += scores[t * C + c] * static_cast<float>(v[d]);
  }
  for (int t = 0; t < T; ++t) {
    float* dst = hd.out + t * hd.out_stride;
    for (int64_t d = 0; d < D; ++d) dst[d] = acc[t * D + d] * inv_sum[t];
  }
}

constexpr int64_t MAX_QUERIES = 4;  // T is a template parameter: one instance per T

template <typename KV>
void attend_any(int64_t T, const Head<KV>& hd, int64_t C, int64_t D, float scale,
                Scratch& sc) {
  switch (T) {
    case 1: return attend_head<1, KV>(hd, C, D, scale, sc);
    case 2: return attend_head<2, KV>(hd, C, D, scale, sc);
    case 3: return attend_head<3, KV>(hd, C, D, scale, sc);
    default: return attend_head<4, KV>(hd, C, D, scale, sc);
  }
}

// Every (b, h) pair, claimed by the threads one at a time.
template <typename KV>
void attend_all(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                const bool* mask_ptr, int64_t mask_b, int64_t mask_t, int64_t mask_c,
                float scale, at::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), C = keys.size(2);
  const float* qp = q.data_ptr<float>();
  const KV* kp = keys.data_ptr<KV>();
  const KV* vp = values.data_ptr<KV>();
  float* op = out.data_ptr<float>();
  const int64_t tasks = B * H;
  // One (b, h) per task (~C * D * 2 * sizeof(KV) bytes of K and V when the ring is full).
  claim_in_parallel(tasks, at::get_num_threads(), [&](const auto& claim) {
    Scratch scratch{std::vector<float>(T * D), std::vector<float>(T * C),
                    std::vector<uint8_t>(C), std::vector<float>(T * D)};
    for (int64_t i = claim(); i < tasks; i = claim()) {
      const int64_t b = i / H, h = i % H;
      const Head<KV> hd{qp + b * q.stride(0) + h * q.stride(1), q.stride(2),
                        kp + b * keys.stride(0) + h * keys.stride(1),
                        vp + b * values.stride(0) + h * values.stride(1),
                        keys.stride(2), values.stride(2),
                        mask_ptr == nullptr ? nullptr : mask_ptr + b * mask_b, mask_t, mask_c,
                        op + (b * T * H + h) * D, H * D};
      attend_any<KV>(T, hd, C, D, scale, scratch);
    }
  });
}

}  // namespace

// q [B, H, T, D] float32, keys / values [B, H, C, D] (any strides), both float32 or both
// bfloat16; mask None or bool with sizes [B, 1, T, C] (broadcast dims as stride 0). Returns
// [B, T, H, D] float32 contiguous (the caller views it as [B, H, T, D]).
at::Tensor ring_attention(const at::Tensor& q_in, const at::Tensor& keys_in,
                          const at::Tensor& values_in, const std::optional<at::Tensor>& mask,
                          double scale) {
  // Rows are read as contiguous vectors: a strided head dim (never the ring's) is copied.
  const auto rows = [](const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); };
  const at::Tensor q = rows(q_in), keys = rows(keys_in), values = rows(values_in);
  TORCH_CHECK(q.device().is_cpu() && keys.device().is_cpu() && values.device().is_cpu(),
              "ring_attention runs on CPU");
  TORCH_CHECK(q.dim() == 4 && keys.dim() == 4 && values.dim() == 4, "q, keys, values: 4-D");
  const bool bf16_ring = keys.scalar_type() == at::kBFloat16;
  TORCH_CHECK(q.scalar_type() == at::kFloat && keys.scalar_type() == values.scalar_type() &&
                  (bf16_ring || keys.scalar_type() == at::kFloat),
              "ring_attention: float32 q; float32 or bfloat16 keys and values (the same)");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), C = keys.size(2);
  TORCH_CHECK(T >= 1 && T <= MAX_QUERIES, "ring_attention: 1..", MAX_QUERIES, " queries");
  TORCH_CHECK(keys.sizes() == values.sizes() && keys.size(0) == B && keys.size(1) == H &&
                  keys.size(3) == D,
              "keys and values: [B, H, C, D] matching q");
  const bool* mask_ptr = nullptr;
  int64_t mask_b = 0, mask_t = 0, mask_c = 0;
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 4 && mask->size(0) == B &&
                    mask->size(1) == 1 && mask->size(2) == T && mask->size(3) == C,
                "mask: bool [B, 1, T, C] (expanded)");
    mask_ptr = mask->data_ptr<bool>();
    mask_b = mask->stride(0), mask_t = mask->stride(2), mask_c = mask->stride(3);
  }
  at::Tensor out = at::empty({B, T, H, D}, q.options());
  if (C == 0) return out.zero_();

  const float sc = static_cast<float>(scale);
  if (bf16_ring)
    attend_all<at::BFloat16>(q, keys, values, mask_ptr, mask_b, mask_t, mask_c, sc, out);
  else
    attend_all<float>(q, keys, values, mask_ptr, mask_b, mask_t, mask_c, sc, out);
  return out;
}
