// mine_snippets, C++ CPU kernel (COLA_SPEC 2.1-2.2). The per-row work is in
// mine_snippets_impl.h, compiled three times below: for any x86-64 (SSE2), for AVX2 and for
// AVX-512; the build used is the process's CPU ISA (cpu_isa.h: the host's, capped by
// COLA_FAST_CPU_ISA), reported by mining_cpu_isa.
//
// Per video (rows handed out to the threads in chunks from a shared counter):
//   1. order-preserving unsigned keys of the actionness (NaN largest, as torch.sort; -0 == +0),
//      their min and max (the max is the NaN key if there is one: torch.max propagates NaN);
//   2. median by selection: a histogram of value-linear buckets, then selection among the keys
//      of the bucket holding the middle position (adaptive key digits for rows with NaN/inf);
//      med = 0.5 * (lo + hi) in the input dtype, exactly as cola_fast.reference.median;
//   3. bin = a > med, prefix counts padded by M on each side, erosion / dilation as window
//      counts (scipy semantics: positions outside [0, T) count as 0);
//   4. four top-k on the values a*keep, (max-a)*keep, a*inner, a*outer, computed in the input
//      dtype like the reference so that ties are identical: the keys above zero are listed
//      first (masked rows are mostly zero); a value-linear bucket histogram finds the bucket
//      holding position k-1, the keys at or above it are scattered to their buckets in order
//      and an insertion sort orders each bucket; crowded buckets fall back to radix selection
//      and a stable sort of the k winners. No row is ever fully sorted.
// Order of the output: value descending, equal values lower index first (the spec's rule).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "cpu_isa.h"
#if COLA_FAST_X86_BUILDS
#include <immintrin.h>
#endif

namespace cola_fast {
namespace {

namespace isa_sse2 {
#define COLA_MINE_AVX2 0
#define COLA_MINE_AVX512 0
#include "mine_snippets_impl.h"
#undef COLA_MINE_AVX512
#undef COLA_MINE_AVX2
}  // namespace isa_sse2

#if COLA_FAST_X86_BUILDS
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt,lzcnt")
namespace isa_avx2 {
#define COLA_MINE_AVX2 1
#define COLA_MINE_AVX512 0
#include "mine_snippets_impl.h"
#undef COLA_MINE_AVX512
#undef COLA_MINE_AVX2
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi,bmi2,popcnt,lzcnt,prefer-vector-width=512")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12's own avx512fintrin.h (_mm512_undefined_*)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace isa_avx512 {
#define COLA_MINE_AVX2 0
#define COLA_MINE_AVX512 1
#include "mine_snippets_impl.h"
#undef COLA_MINE_AVX512
#undef COLA_MINE_AVX2
}  // namespace isa_avx512
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

// The build that runs: the process's CPU ISA, always the baseline where there is one build
// (every build gives identical indices; tests/test_cpu_isa.py runs each one at or below the
// host's).
CpuIsa mining_isa() { return cpu_isa(); }

template <typename W, typename scalar_t>
void mine_rows(const scalar_t* ap, const scalar_t* kpp, int64_t B, int64_t T, int64_t k_easy, int64_t k_hard,
               int64_t m, int64_t M, int64_t* eap, int64_t* ebp, int64_t* hap, int64_t* hbp) {
  // Rows are handed out in small chunks from a shared counter rather than split evenly up front:
  // a worker thread that wakes late (the call is short, tens of microseconds, and the pool's
  // threads have often gone to sleep since the last parallel region) just takes fewer chunks,
  // instead of finishing its half late.
  const int64_t chunk = std::max<int64_t>(1, 1024 / T);
  const int64_t n_chunks = (B + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_chunks);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    static thread_local W w;  // scratch reused across calls
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      for (int64_t b = c * chunk, e = std::min(B, b + chunk); b < e; ++b)
        w.row(ap + b * T, kpp + b * T, T, k_easy, k_hard, m, M, eap + b * k_easy, ebp + b * k_easy,
              hap + b * k_hard, hbp + b * k_hard);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mine_snippets_cpu(
    const at::Tensor& actionness, const at::Tensor& keep, int64_t k_easy, int64_t k_hard, int64_t m,
    int64_t M) {
  checks::mine_snippets_inputs(actionness, keep, k_easy, k_hard, m, M);
  TORCH_CHECK(actionness.device().is_cpu() && keep.device().is_cpu(), "mine_snippets (CPU): tensors must be on the CPU");
  const int64_t B = actionness.size(0), T = actionness.size(1);
  TORCH_CHECK(T < (int64_t(1) << 32), "mine_snippets: T too large");

  const at::Tensor a = actionness.contiguous();
  const at::Tensor kp = keep.contiguous();
  auto opts = a.options().dtype(at::kLong);
  at::Tensor ea = at::empty({B, k_easy}, opts), eb = at::empty({B, k_easy}, opts);
  at::Tensor ha = at::empty({B, k_hard}, opts), hb = at::empty({B, k_hard}, opts);
  if (B == 0) return {ea, eb, ha, hb};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "mine_snippets_cpu", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* kpp = kp.const_data_ptr<scalar_t>();
    int64_t* eap = ea.data_ptr<int64_t>();
    int64_t* ebp = eb.data_ptr<int64_t>();
    int64_t* hap = ha.data_ptr<int64_t>();
    int64_t* hbp = hb.data_ptr<int64_t>();
#if COLA_FAST_X86_BUILDS
    switch (mining_isa()) {
      case CpuIsa::kAvx512:
        return mine_rows<isa_avx512::Work<scalar_t>>(ap, kpp, B, T, k_easy, k_hard, m, M, eap, ebp, hap, hbp);
      case CpuIsa::kAvx2:
        return mine_rows<isa_avx2::Work<scalar_t>>(ap, kpp, B, T, k_easy, k_hard, m, M, eap, ebp, hap, hbp);
      default:
        break;
    }
#endif
    mine_rows<isa_sse2::Work<scalar_t>>(ap, kpp, B, T, k_easy, k_hard, m, M, eap, ebp, hap, hbp);
  });
  return {ea, eb, ha, hb};
}

}  // namespace

std::string mining_cpu_isa() { return cpu_isa_name(mining_isa()); }

}  // namespace cola_fast

TORCH_LIBRARY_IMPL(cola_fast, CPU, m) {
  m.impl("mine_snippets", &cola_fast::mine_snippets_cpu);
}
