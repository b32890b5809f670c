// mine_snippets, CUDA kernel (COLA_SPEC 2.1-2.2): one launch for the whole batch, one block
// per video.
//
// The row's sort items live in shared memory (dynamic, opted in above 48 KiB when the device
// allows) or, when P * sizeof(item) exceeds what a block may have, in a global scratch buffer
// (the same code through a generic pointer). P = next power of two >= T.
//   1. max over t: atomicMax of order-preserving value keys (NaN largest, as torch.max
//      propagates it);
//   2. median: bitonic sort of (key, index) items, descending; the ascending positions lo, hi
//      are read at P-free positions T-1-lo, T-1-hi; med = 0.5 * (lo + hi) in the input dtype;
//   3. bin = a > med compared through keys; erosion / dilation window counts by reading the
//      2M+1 neighbours (scipy semantics: outside [0, T) counts as 0);
//   4. each top-k: fill (key(value), index) items, bitonic sort descending under the spec's rule
//      (key descending, equal keys lower index first), write the first k indices.
// Arithmetic that decides ties (a*keep, max-a, (..)*keep, a*mask, 0.5*(lo+hi)) is done with
// explicit round-to-nearest PTX (no FMA contraction, no flush-to-zero even under
// --use_fast_math) and rounded to the input dtype after each operation, like the reference;
// comparisons go through integer keys, so they do not depend on the FTZ mode either.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../checks.h"

#include <cstdint>
#include <type_traits>

namespace cola_fast {
namespace {

// ---- IEEE arithmetic immune to --use_fast_math ---------------------------------------------
__device__ __forceinline__ float add_rn(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float sub_rn(float a, float b) {
  float r;
  asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float mul_rn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// ---- order-preserving keys: larger value -> larger key; NaN -> largest; -0 == +0 --------
__device__ __forceinline__ uint32_t key_of(float v) {
  uint32_t b = __float_as_uint(v);
  const uint32_t mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u) return 0xffffffffu;
  if (mag == 0) return 0x80000000u;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ uint64_t key_of(double v) {
  uint64_t b = static_cast<uint64_t>(__double_as_longlong(v));
  const uint64_t mag = b & 0x7fffffffffffffffull;
  if (mag > 0x7ff0000000000000ull) return ~0ull;
  if (mag == 0) return 0x8000000000000000ull;
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}
__device__ __forceinline__ float value_of(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ double value_of(uint64_t k) {
  return __longlong_as_double(static_cast<long long>((k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k));
}

// ---- per dtype: the computing type, rounding back to the input dtype ----------------------
template <typename scalar_t>
struct Num {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  using key_t = std::conditional_t<std::is_same_v<scalar_t, double>, uint64_t, uint32_t>;
  static __device__ __forceinline__ acc_t load(const scalar_t* p) { return static_cast<acc_t>(*p); }
  static __device__ __forceinline__ acc_t rnd(acc_t x) {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) return x;
    else return static_cast<acc_t>(static_cast<scalar_t>(x));
  }
  static __device__ __forceinline__ acc_t mul(acc_t a, acc_t b) { return rnd(mul_rn(a, b)); }
  static __device__ __forceinline__ acc_t sub(acc_t a, acc_t b) { return rnd(sub_rn(a, b)); }
  static __device__ __forceinline__ acc_t add(acc_t a, acc_t b) { return rnd(add_rn(a, b)); }
};

// ---- sort items: value key + index, "before" = key larger, or equal and index smaller --------
struct Packed32 {  // 32-bit keys: one uint64 (key << 32 | ~index); larger uint64 = earlier
  using Item = unsigned long long;
  static __device__ __forceinline__ Item make(uint32_t key, int idx) {
    return (static_cast<Item>(key) << 32) | static_cast<Item>(0xffffffffu - static_cast<uint32_t>(idx));
  }
  static __device__ __forceinline__ Item pad() { return 0ull; }  // below every real item
  static __device__ __forceinline__ bool before(Item x, Item y) { return x > y; }
  static __device__ __forceinline__ uint32_t key(Item x) { return static_cast<uint32_t>(x >> 32); }
  static __device__ __forceinline__ int64_t idx(Item x) {
    return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(x & 0xffffffffull));
  }
};

struct Pair64 {  // 64-bit keys
  struct Item {
    uint64_t key;
    int32_t idx;
  };
  static __device__ __forceinline__ Item make(uint64_t key, int idx) { return Item{key, idx}; }
  static __device__ __forceinline__ Item pad() { return Item{0ull, 0x7fffffff}; }
  static __device__ __forceinline__ bool before(const Item& x, const Item& y) {
    return x.key > y.key || (x.key == y.key && x.idx < y.idx);
  }
  static __device__ __forceinline__ uint64_t key(const Item& x) { return x.key; }
  static __device__ __forceinline__ int64_t idx(const Item& x) { return x.idx; }
};

// Bitonic sort of buf[0..P) (P a power of two) into "before" order, by the whole block.
template <typename Ops>
__device__ void bitonic_sort(typename Ops::Item* buf, int P) {
  using Item = typename Ops::Item;
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < (P >> 1); i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool forward = (lo & size) == 0;  // the final merge (size == P) is all forward
        const Item x = buf[lo], y = buf[hi];
        const bool swap = forward ? Ops::before(y, x) : Ops::before(x, y);
        if (swap) {
          buf[lo] = y;
          buf[hi] = x;
        }
      }
      __syncthreads();
    }
  }
}

template <typename Ops>
__device__ void store_first(const typename Ops::Item* buf, int k, int64_t* out) {
  for (int j = threadIdx.x; j < k; j += blockDim.x) out[j] = Ops::idx(buf[j]);
  __syncthreads();  // the buffer is refilled next
}

template <typename scalar_t, typename Ops>
__global__ void __launch_bounds__(512) mine_snippets_kernel(const scalar_t* __restrict__ act, const scalar_t* __restrict__ keep,
                                     int T, int P, int k_easy, int k_hard, int m, int M,
                                     int64_t* __restrict__ ea, int64_t* __restrict__ eb,
                                     int64_t* __restrict__ ha, int64_t* __restrict__ hb,
                                     typename Ops::Item* __restrict__ gscratch) {
  using N = Num<scalar_t>;
  using acc_t = typename N::acc_t;
  using key_t = typename N::key_t;
  using Item = typename Ops::Item;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ key_t s_kmax;

  const int64_t b = blockIdx.x;
  Item* buf = gscratch != nullptr ? gscratch + b * static_cast<int64_t>(P) : reinterpret_cast<Item*>(smem_raw);
  const scalar_t* a = act + b * T;
  const scalar_t* kp = keep + b * T;

  // 1. max (NaN propagates: its key is the largest)
  if (threadIdx.x == 0) s_kmax = 0;
  __syncthreads();
  {
    key_t local = 0;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
      const key_t kv = key_of(N::load(a + t));
      local = kv > local ? kv : local;
    }
    atomicMax(reinterpret_cast<std::conditional_t<sizeof(key_t) == 8, unsigned long long, unsigned int>*>(&s_kmax),
              local);
  }
  __syncthreads();
  const acc_t mx = value_of(s_kmax);

  // 2.1 easy mining
  if (k_easy > 0) {
    for (int t = threadIdx.x; t < P; t += blockDim.x)
      buf[t] = t < T ? Ops::make(key_of(N::mul(N::load(a + t), N::load(kp + t))), t) : Ops::pad();
    __syncthreads();
    bitonic_sort<Ops>(buf, P);
    store_first<Ops>(buf, k_easy, ea + b * k_easy);
    for (int t = threadIdx.x; t < P; t += blockDim.x)
      buf[t] = t < T ? Ops::make(key_of(N::mul(N::sub(mx, N::load(a + t)), N::load(kp + t))), t) : Ops::pad();
    __syncthreads();
    bitonic_sort<Ops>(buf, P);
    store_first<Ops>(buf, k_easy, eb + b * k_easy);
  }
  if (k_hard == 0) return;

  // 2.2 median: descending sort of the value keys; ascending position p is at T-1-p
  for (int t = threadIdx.x; t < P; t += blockDim.x)
    buf[t] = t < T ? Ops::make(key_of(N::load(a + t)), t) : Ops::pad();
  __syncthreads();
  bitonic_sort<Ops>(buf, P);
  const int lo = (T - 1) / 2, hi = T / 2;
  const acc_t vlo = value_of(Ops::key(buf[T - 1 - lo]));
  const acc_t vhi = value_of(Ops::key(buf[T - 1 - hi]));
  const acc_t med = N::mul(static_cast<acc_t>(0.5), N::add(vlo, vhi));
  const key_t kmed = key_of(med);
  const key_t knan = ~key_t(0);
  __syncthreads();  // everyone has read the middle items before the buffer is refilled

  const int cm = m / 2, cM = M / 2;
  // inner = erode_m - erode_M, outer = dilate_M - dilate_m, from the window counts
  auto bands = [&](int t, acc_t& inner, acc_t& outer) {
    int em = 0, eM = 0, dm = 0, dM = 0;
    // only offsets that land in the row: outside it nothing counts (scipy's border value 0)
    const int d_hi = min(M, T - 1 - t);
    for (int d = max(-M, -t); d <= d_hi; ++d) {
      const int j = t + d;
      const key_t kx = key_of(N::load(a + j));
      if (!(kx > kmed && kx != knan)) continue;
      em += (d >= -cm && d <= m - 1 - cm);
      eM += (d >= -cM && d <= M - 1 - cM);
      dm += (d >= -(m - 1 - cm) && d <= cm);
      dM += (d >= -(M - 1 - cM) && d <= cM);
    }
    inner = static_cast<acc_t>(em == m ? 1 : 0) - static_cast<acc_t>(eM == M ? 1 : 0);
    outer = static_cast<acc_t>(dM > 0 ? 1 : 0) - static_cast<acc_t>(dm > 0 ? 1 : 0);
  };
  for (int t = threadIdx.x; t < P; t += blockDim.x) {
    if (t < T) {
      acc_t inner, outer;
      bands(t, inner, outer);
      buf[t] = Ops::make(key_of(N::mul(N::load(a + t), inner)), t);
    } else {
      buf[t] = Ops::pad();
    }
  }
  __syncthreads();
  bitonic_sort<Ops>(buf, P);
  store_first<Ops>(buf, k_hard, ha + b * k_hard);
  for (int t = threadIdx.x; t < P; t += blockDim.x) {
    if (t < T) {
      acc_t inner, outer;
      bands(t, inner, outer);
      buf[t] = Ops::make(key_of(N::mul(N::load(a + t), outer)), t);
    } else {
      buf[t] = Ops::pad();
    }
  }
  __syncthreads();
  bitonic_sort<Ops>(buf, P);
  store_first<Ops>(buf, k_hard, hb + b * k_hard);
}

template <typename scalar_t>
void launch(const at::Tensor& a, const at::Tensor& kp, int64_t B, int64_t T, int64_t k_easy, int64_t k_hard,
            int64_t m, int64_t M, at::Tensor& ea, at::Tensor& eb, at::Tensor& ha, at::Tensor& hb) {
  using Ops = std::conditional_t<std::is_same_v<scalar_t, double>, Pair64, Packed32>;
  using Item = typename Ops::Item;
  int P = 1;
  while (P < T) P <<= 1;
  const int threads = P >= 1024 ? 512 : (P / 2 >= 32 ? P / 2 : 32);
  const size_t bytes = static_cast<size_t>(P) * sizeof(Item);

  int dev = a.get_device();
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // room for the kernel's static shared memory (s_kmax) and a margin
  const bool use_smem = bytes + 1024 <= static_cast<size_t>(optin);
  auto kernel = mine_snippets_kernel<scalar_t, Ops>;
  at::Tensor scratch;
  Item* gscratch = nullptr;
  size_t smem = 0;
  if (use_smem) {
    smem = bytes;
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  } else {
    scratch = at::empty({B * static_cast<int64_t>(bytes)}, a.options().dtype(at::kByte));
    gscratch = reinterpret_cast<Item*>(scratch.data_ptr<uint8_t>());
  }
  auto stream = c10::cuda::getCurrentCUDAStream(dev);
  kernel<<<static_cast<unsigned>(B), threads, smem, stream.stream()>>>(
      a.const_data_ptr<scalar_t>(), kp.const_data_ptr<scalar_t>(), static_cast<int>(T), P,
      static_cast<int>(k_easy), static_cast<int>(k_hard), static_cast<int>(m), static_cast<int>(M),
      ea.data_ptr<int64_t>(), eb.data_ptr<int64_t>(), ha.data_ptr<int64_t>(), hb.data_ptr<int64_t>(), gscratch);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mine_snippets_cuda(
    const at::Tensor& actionness, const at::Tensor& keep, int64_t k_easy, int64_t k_hard, int64_t m,
    int64_t M) {
  checks::mine_snippets_inputs(actionness, keep, k_easy, k_hard, m, M);
  TORCH_CHECK(actionness.is_cuda() && keep.is_cuda() && keep.device() == actionness.device(),
              "mine_snippets (CUDA): tensors must be on the same CUDA device");
  const int64_t B = actionness.size(0), T = actionness.size(1);
  TORCH_CHECK(T <= (int64_t(1) << 29), "mine_snippets (CUDA): T=", T, " too large");
  TORCH_CHECK(B <= 0x7fffffff, "mine_snippets (CUDA): B too large");
  // Windows longer than 2T+2 give the masks of a 2T+2 window (erosion: never all inside the row;
  // dilation: always the whole row), as in the CPU kernel; this also keeps m, M within int.
  m = std::min<int64_t>(m, 2 * T + 2);
  M = std::min<int64_t>(M, 2 * T + 2);

  c10::cuda::CUDAGuard guard(actionness.device());
  const at::Tensor a = actionness.contiguous();
  const at::Tensor kp = keep.contiguous();
  auto opts = a.options().dtype(at::kLong);
  at::Tensor ea = at::empty({B, k_easy}, opts), eb = at::empty({B, k_easy}, opts);
  at::Tensor ha = at::empty({B, k_hard}, opts), hb = at::empty({B, k_hard}, opts);
  if (B == 0) return {ea, eb, ha, hb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "mine_snippets_cuda", [&] {
    launch<scalar_t>(a, kp, B, T, k_easy, k_hard, m, M, ea, eb, ha, hb);
  });
  return {ea, eb, ha, hb};
}

}  // namespace
}  // namespace cola_fast

TORCH_LIBRARY_IMPL(cola_fast, CUDA, m) {
  m.impl("mine_snippets", &cola_fast::mine_snippets_cuda);
}
