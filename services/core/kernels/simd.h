// Helpers shared by the kernels of this folder. load_inline compiles every .cpp file here as
// ONE translation unit (see __init__.py), so a helper two files need lives here once: two
// definitions in their anonymous namespaces would collide.
#pragma once

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

// Loops over accumulators must be unrolled before gcc's scalar replacement, or the
// accumulators live in memory and are stored at every iteration.
#define UNROLLED _Pragma("GCC unroll 16")

namespace {

// The sum of the 8 lanes: (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)), a fixed order.
inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Runs worker(claim) once on each of up to `threads` threads (inline when 1); claim() hands out
// task indices 0, 1, ... one at a time and returns `tasks` or more when none is left. Tasks
// are claimed rather than split in fixed shares: on a shared CPU a thread that loses its
// core then delays only its current task, not a fixed half of the work.
template <typename Worker>
void claim_in_parallel(int64_t tasks, int64_t threads, const Worker& worker) {
  std::atomic<int64_t> next{0};
  const auto claim = [&next] { return next++; };
  threads = std::min(threads, tasks);
  if (threads <= 1) {
    worker(claim);
  } else {  // one at::parallel_for task per thread, each pulling work items
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(claim); });
  }
}

}  // namespace
