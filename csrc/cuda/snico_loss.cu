// snico_loss (COLA_SPEC 3) on CUDA: the same algorithm as csrc/cpu/snico_loss.cpp (read the
// derivation there), arranged in launches:
//   forward   1. means        grid (D/128, B): thread = channel, the four index-set means
//             2. dots         grid (2 + 2 k_easy, B): block reductions over D (norms, q.k, q.e_j, |e_j|)
//             3. loss         one block: warp per video, logits, log-sum-exp, deterministic sum
//   backward  4. scalars      grid B: a_0, the projection coefficients, w_j, beta_j
//             5. scatter      grid (D/128, B): thread = channel d of video b, the only thread that
//                             updates d(emb)[b, :, d] (zero-filled before); its contributions are
//                             fire-and-forget atomicAdds (no load-add-store latency chain), so
//                             repeated indices simply add up. Channels of other threads never
//                             collide; only one thread's own adds meet at a repeated row.
// fp32 accumulation (fp64 for fp64 input); fp32/bf16/fp16/fp64 embeddings; the gradient is
// accumulated in the accumulation type and returned in emb's dtype.
// Index range: checked on the device by a kernel assertion in the means kernel (an out-of-range
// index stops the process with a device-side assert, as torch's own indexing kernels do).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"

#include <cmath>
#include <tuple>

namespace cola_fast {
namespace {

constexpr int kChannels = 128;  // channels (threads) per block in the channel-parallel kernels
constexpr int kReduce = 256;    // threads per block in the reduction kernels
constexpr double kEps = 1e-12;
constexpr int kUnroll = 8;      // negative rows loaded together in the scatter kernel

template <typename T>
__device__ __forceinline__ T clamp_eps(T n) {
  return n < T(kEps) ? T(kEps) : n;  // NaN stays NaN (fmax would drop it)
}

template <typename T>
__device__ __forceinline__ bool at_least_eps(T n) {
  return !(n < T(kEps));  // true for NaN, as the CPU kernel
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = (w > v || w != w) ? w : v;  // NaN wins
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_absmax(T v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

struct WarpSum {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const { return warp_sum(v); }
};

struct WarpAbsMax {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const { return warp_absmax(v); }
};

// two values reduced over the block by a warp reduction (WarpSum, or WarpAbsMax for
// non-negative values: T(0) is the identity of both); result valid in every thread
template <typename T, typename WarpReduce>
__device__ __forceinline__ void block_reduce2(T& a, T& b, WarpReduce reduce) {
  __shared__ T sa[32], sb[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  a = reduce(a);
  b = reduce(b);
  if (lane == 0) {
    sa[wid] = a;
    sb[wid] = b;
  }
  __syncthreads();
  a = reduce(lane < nw ? sa[lane] : T(0));
  b = reduce(lane < nw ? sb[lane] : T(0));
  __syncthreads();
}

// q.e / max(|e|, eps) and |e| over the block (valid in every thread), as dot_over_norm in
// csrc/cpu/snico_loss.cpp: the plain sums, recomputed on q and e divided by their largest
// magnitudes (the scaled norm) when they overflow (embeddings of scale 1e20 in float).
// Every thread sees the same sums, so the branch is uniform over the block.
template <typename qT, typename eT, typename acc_t>
__device__ void block_dot_over_norm(const qT* __restrict__ q, const eT* __restrict__ e, int64_t D,
                                    acc_t& dot_over_ne, acc_t& ne) {
  acc_t dot = 0, sq = 0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const acc_t a = static_cast<acc_t>(q[d]), v = static_cast<acc_t>(e[d]);
    dot += a * v;
    sq += v * v;
  }
  block_reduce2(dot, sq, WarpSum{});
  if (!isinf(dot) && !isinf(sq)) {
    ne = sqrt(sq);
    dot_over_ne = dot / clamp_eps(ne);
    return;
  }
  acc_t mq = 0, me = 0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    mq = fmax(mq, fabs(static_cast<acc_t>(q[d])));
    me = fmax(me, fabs(static_cast<acc_t>(e[d])));
  }
  block_reduce2(mq, me, WarpAbsMax{});
  const acc_t iq = mq > 0 ? acc_t(1) / mq : acc_t(1), ie = me > 0 ? acc_t(1) / me : acc_t(1);
  acc_t ds = 0, ss = 0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const acc_t a = static_cast<acc_t>(q[d]) * iq, v = static_cast<acc_t>(e[d]) * ie;
    ds += a * v;
    ss += v * v;
  }
  block_reduce2(ds, ss, WarpSum{});
  ne = me * sqrt(ss);
  dot_over_ne = ds * mq / (clamp_eps(ne) * ie);
}

// ---- forward ------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
__global__ void means_kernel(const scalar_t* __restrict__ E, const int64_t* __restrict__ HA,
                             const int64_t* __restrict__ EA, const int64_t* __restrict__ HB,
                             const int64_t* __restrict__ EB, acc_t* __restrict__ M, int64_t T, int64_t D,
                             int64_t kE, int64_t kH) {
  const int64_t b = blockIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  if (d >= D) return;
  const scalar_t* Eb = E + b * T * D + d;
  const int64_t* sets[4] = {HA + b * kH, EA + b * kE, HB + b * kH, EB + b * kE};
  const int64_t counts[4] = {kH, kE, kH, kE};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    acc_t acc = 0;
#pragma unroll 4
    for (int64_t i = 0; i < counts[s]; ++i) {
      const int64_t row = sets[s][i];
      // every index passes through here once per forward: a device-side range check
      CUDA_KERNEL_ASSERT_MSG(row >= 0 && row < T, "snico_loss: an index of ea/eb/ha/hb is outside [0, T)");
      acc += static_cast<acc_t>(Eb[row * D]);
    }
    M[(b * 4 + s) * D + d] = acc / static_cast<acc_t>(counts[s]);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void dots_kernel(const scalar_t* __restrict__ E, const int64_t* __restrict__ EA,
                            const int64_t* __restrict__ EB, const acc_t* __restrict__ M, acc_t* __restrict__ MN,
                            acc_t* __restrict__ NN, acc_t* __restrict__ QK, acc_t* __restrict__ QE, int64_t T,
                            int64_t D, int64_t kE) {
  const int64_t b = blockIdx.y, r = blockIdx.x;
  // QK = q.k / nk and QE = q.e_j / n_j: the loss kernel divides by nq (no product of norms)
  if (r < 2) {
    const acc_t* q = M + (b * 4 + 2 * r) * D;
    const acc_t* k = q + D;
    acc_t qq_over_nq, nq, qk_over_nk, nk;
    block_dot_over_norm(q, q, D, qq_over_nq, nq);
    block_dot_over_norm(q, k, D, qk_over_nk, nk);
    if (threadIdx.x == 0) {
      MN[b * 4 + 2 * r] = nq;
      MN[b * 4 + 2 * r + 1] = nk;
      QK[b * 2 + r] = qk_over_nk;
    }
  } else {
    const int64_t t = (r - 2) / kE, j = (r - 2) % kE;
    const acc_t* q = M + (b * 4 + 2 * t) * D;
    const int64_t row = (t == 0 ? EB : EA)[b * kE + j];
    const scalar_t* e = E + (b * T + row) * D;
    acc_t dot_over_nj, nj;
    block_dot_over_norm(q, e, D, dot_over_nj, nj);
    if (threadIdx.x == 0) {
      QE[(b * 2 + t) * kE + j] = dot_over_nj;
      NN[(b * 2 + t) * kE + j] = nj;
    }
  }
}

// one block; warp w handles videos w, w + nwarps, ...
template <typename scalar_t, typename acc_t>
__global__ void loss_kernel(const acc_t* __restrict__ MN, const acc_t* __restrict__ NN,
                            const acc_t* __restrict__ QK, const acc_t* __restrict__ QE, acc_t* __restrict__ L,
                            acc_t* __restrict__ LSE, scalar_t* __restrict__ loss, int64_t B, int64_t kE,
                            acc_t inv_tau) {
  __shared__ double partial[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  double mine = 0;  // lane 0's running sum over its videos
  for (int64_t b = wid; b < B; b += nw) {
    for (int t = 0; t < 2; ++t) {
      const acc_t nq = clamp_eps(MN[b * 4 + 2 * t]);
      acc_t* l = L + (b * 2 + t) * (1 + kE);
      const acc_t l0 = QK[b * 2 + t] / nq * inv_tau;
      acc_t mx = l0;
      for (int64_t j = lane; j < kE; j += 32) {
        const acc_t lj = QE[(b * 2 + t) * kE + j] / nq * inv_tau;
        l[1 + j] = lj;
        mx = (lj > mx || lj != lj) ? lj : mx;
      }
      mx = warp_max(mx);
      acc_t s = lane == 0 ? exp(l0 - mx) : acc_t(0);
      for (int64_t j = lane; j < kE; j += 32) s += exp(l[1 + j] - mx);  // same lane wrote l[1+j]
      s = warp_sum(s);
      if (lane == 0) {
        l[0] = l0;
        const acc_t v = mx + log(s);
        LSE[b * 2 + t] = v;
        mine += static_cast<double>(v - l0);
      }
    }
  }
  if (lane == 0) partial[wid] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    double tot = 0;
    for (int w = 0; w < nw; ++w) tot += partial[w];
    loss[0] = static_cast<scalar_t>(static_cast<acc_t>(tot / static_cast<double>(B)));
  }
}

// ---- backward -----------------------------------------------------------------------------
// SC per (b, t): {a_0, gq, gk, nq, nk}
template <typename acc_t>
__global__ void scalars_kernel(const acc_t* __restrict__ grad, const acc_t* __restrict__ MN,
                               const acc_t* __restrict__ NN, const acc_t* __restrict__ L,
                               const acc_t* __restrict__ LSE, acc_t* __restrict__ W, acc_t* __restrict__ BETA,
                               acc_t* __restrict__ SC, int64_t B, int64_t kE, acc_t tau) {
  const int64_t b = blockIdx.x;
  const acc_t gt = static_cast<acc_t>(grad[0]) / static_cast<acc_t>(B) / tau;
  for (int t = 0; t < 2; ++t) {
    const acc_t* l = L + (b * 2 + t) * (1 + kE);
    const acc_t lse = LSE[b * 2 + t];
    acc_t gamma = 0;
    for (int64_t j = threadIdx.x; j < kE; j += blockDim.x) {
      const acc_t aj = gt * exp(l[1 + j] - lse);
      const acc_t cj = tau * l[1 + j];
      const acc_t raw = NN[(b * 2 + t) * kE + j];
      const acc_t nj = clamp_eps(raw);
      W[(b * 2 + t) * kE + j] = aj / nj;
      BETA[(b * 2 + t) * kE + j] = at_least_eps(raw) ? cj / nj : acc_t(0);  // de_j = w_j (qn - beta_j e_j)
      gamma += aj * cj;
    }
    acc_t zero = 0;
    block_reduce2(gamma, zero, WarpSum{});
    if (threadIdx.x == 0) {
      const acc_t a0 = gt * (exp(l[0] - lse) - acc_t(1));
      const acc_t c0 = tau * l[0];
      gamma += a0 * c0;
      const acc_t rq = MN[b * 4 + 2 * t], rk = MN[b * 4 + 2 * t + 1];
      acc_t* sc = SC + (b * 2 + t) * 5;
      sc[0] = a0;
      sc[1] = at_least_eps(rq) ? gamma : acc_t(0);
      sc[2] = at_least_eps(rk) ? a0 * c0 : acc_t(0);
      sc[3] = clamp_eps(rq);
      sc[4] = clamp_eps(rk);
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void scatter_kernel(const scalar_t* __restrict__ E, const int64_t* __restrict__ HA,
                               const int64_t* __restrict__ EA, const int64_t* __restrict__ HB,
                               const int64_t* __restrict__ EB, const acc_t* __restrict__ M,
                               const acc_t* __restrict__ W, const acc_t* __restrict__ BETA,
                               const acc_t* __restrict__ SC, acc_t* __restrict__ O, int64_t T, int64_t D,
                               int64_t kE, int64_t kH) {
  const int64_t b = blockIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  if (d >= D) return;
  acc_t* Ob = O + b * T * D + d;
  const scalar_t* Eb = E + b * T * D + d;
  acc_t qn[2], kn[2], S[2];
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const acc_t* sc = SC + (b * 2 + t) * 5;
    qn[t] = M[(b * 4 + 2 * t) * D + d] / sc[3];
    kn[t] = M[(b * 4 + 2 * t + 1) * D + d] / sc[4];
    S[t] = 0;
    const int64_t* NEG = (t == 0 ? EB : EA) + b * kE;
    const acc_t* Wt = W + (b * 2 + t) * kE;
    const acc_t* Bt = BETA + (b * 2 + t) * kE;
    // kUnroll rows at a time: their loads are issued together (memory-level parallelism; a
    // thread would otherwise wait one full load latency per negative row)
    int64_t j = 0;
    for (; j + kUnroll <= kE; j += kUnroll) {
      int64_t r[kUnroll];
      acc_t v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) r[u] = NEG[j + u];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = static_cast<acc_t>(Eb[r[u] * D]);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const acc_t wj = Wt[j + u];
        S[t] += wj * v[u];
        atomicAdd(Ob + r[u] * D, wj * (qn[t] - Bt[j + u] * v[u]));
      }
    }
    for (; j < kE; ++j) {
      const int64_t row = NEG[j];
      const acc_t v = static_cast<acc_t>(Eb[row * D]);
      const acc_t wj = Wt[j];
      S[t] += wj * v;
      atomicAdd(Ob + row * D, wj * (qn[t] - Bt[j] * v));
    }
  }
  const acc_t invH = acc_t(1) / acc_t(kH), invE = acc_t(1) / acc_t(kE);
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const acc_t* sc = SC + (b * 2 + t) * 5;
    const acc_t dq = (sc[0] * kn[t] + S[t] - sc[1] * qn[t]) * (invH / sc[3]);
    const acc_t dk = (sc[0] * qn[t] - sc[2] * kn[t]) * (invE / sc[4]);
    const int64_t* Q = (t == 0 ? HA : HB) + b * kH;
    const int64_t* K = (t == 0 ? EA : EB) + b * kE;
    for (int64_t i = 0; i < kH; ++i) atomicAdd(Ob + Q[i] * D, dq);
    for (int64_t i = 0; i < kE; ++i) atomicAdd(Ob + K[i] * D, dk);
  }
}

// ---- host side ----------------------------------------------------------------------------
// snico_loss's checks (csrc/checks.h), then the CUDA grid's limit on B
void check_inputs(const at::Tensor& emb, const at::Tensor& ea, const at::Tensor& eb, const at::Tensor& ha,
                  const at::Tensor& hb, double tau) {
  checks::snico_loss_inputs(emb, ea, eb, ha, hb, tau);
  TORCH_CHECK(emb.size(0) <= 65535, "snico_loss (CUDA): at most 65535 videos per batch, got ", emb.size(0));
}

inline at::ScalarType acc_type_of(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

#define COLA_CUDA_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> snico_loss_fwd_cuda(
    const at::Tensor& emb_in, const at::Tensor& ea_in, const at::Tensor& eb_in, const at::Tensor& ha_in,
    const at::Tensor& hb_in, double tau) {
  check_inputs(emb_in, ea_in, eb_in, ha_in, hb_in, tau);
  const c10::cuda::CUDAGuard guard(emb_in.device());
  const at::Tensor emb = emb_in.contiguous();
  const at::Tensor ea = ea_in.contiguous(), eb = eb_in.contiguous(), ha = ha_in.contiguous(),
                   hb = hb_in.contiguous();
  const int64_t B = emb.size(0), T = emb.size(1), D = emb.size(2);
  const int64_t kE = ea.size(1), kH = ha.size(1);
  TORCH_CHECK(2 + 2 * kE <= 2147483647LL, "snico_loss: k_easy too large");
  const auto acc_st = acc_type_of(emb.scalar_type());
  auto fopt = emb.options().dtype(acc_st);
  at::Tensor means = at::empty({B, 4, D}, fopt);
  at::Tensor mean_norms = at::empty({B, 4}, fopt);
  at::Tensor neg_norms = at::empty({B, 2, kE}, fopt);
  at::Tensor logits = at::empty({B, 2, 1 + kE}, fopt);
  at::Tensor lse = at::empty({B, 2}, fopt);
  at::Tensor qk = at::empty({B, 2}, fopt);
  at::Tensor qe = at::empty({B, 2, kE}, fopt);
  at::Tensor loss = at::empty({}, emb.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, emb.scalar_type(), "snico_loss_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 g1((D + kChannels - 1) / kChannels, B);
    means_kernel<scalar_t, acc_t><<<g1, kChannels, 0, stream>>>(
        emb.data_ptr<scalar_t>(), ha.data_ptr<int64_t>(), ea.data_ptr<int64_t>(), hb.data_ptr<int64_t>(),
        eb.data_ptr<int64_t>(), means.data_ptr<acc_t>(), T, D, kE, kH);
    COLA_CUDA_CHECK_LAUNCH();
    const dim3 g2(static_cast<unsigned>(2 + 2 * kE), B);
    dots_kernel<scalar_t, acc_t><<<g2, kReduce, 0, stream>>>(
        emb.data_ptr<scalar_t>(), ea.data_ptr<int64_t>(), eb.data_ptr<int64_t>(), means.data_ptr<acc_t>(),
        mean_norms.data_ptr<acc_t>(), neg_norms.data_ptr<acc_t>(), qk.data_ptr<acc_t>(), qe.data_ptr<acc_t>(), T,
        D, kE);
    COLA_CUDA_CHECK_LAUNCH();
    loss_kernel<scalar_t, acc_t><<<1, 256, 0, stream>>>(
        mean_norms.data_ptr<acc_t>(), neg_norms.data_ptr<acc_t>(), qk.data_ptr<acc_t>(), qe.data_ptr<acc_t>(),
        logits.data_ptr<acc_t>(), lse.data_ptr<acc_t>(), loss.data_ptr<scalar_t>(), B, kE,
        static_cast<acc_t>(1.0 / tau));
    COLA_CUDA_CHECK_LAUNCH();
  });
  return {loss, means, mean_norms, neg_norms, logits, lse};
}

at::Tensor snico_loss_bwd_cuda(const at::Tensor& grad, const at::Tensor& emb_in, const at::Tensor& ea_in,
                               const at::Tensor& eb_in, const at::Tensor& ha_in, const at::Tensor& hb_in,
                               const at::Tensor& means_in, const at::Tensor& mean_norms_in,
                               const at::Tensor& neg_norms_in, const at::Tensor& logits_in,
                               const at::Tensor& lse_in, double tau) {
  check_inputs(emb_in, ea_in, eb_in, ha_in, hb_in, tau);
  TORCH_CHECK(grad.numel() == 1, "snico_loss_bwd: grad must be a scalar, got ", grad.sizes());
  TORCH_CHECK(grad.device() == emb_in.device(), "snico_loss_bwd: grad on ", grad.device(), " but emb on ",
              emb_in.device());
  for (const at::Tensor* t : {&means_in, &mean_norms_in, &neg_norms_in, &logits_in, &lse_in})
    TORCH_CHECK(t->device() == emb_in.device(), "snico_loss_bwd: a saved tensor is on ", t->device(),
                " but emb on ", emb_in.device());
  const c10::cuda::CUDAGuard guard(emb_in.device());
  const at::Tensor emb = emb_in.contiguous();
  const at::Tensor ea = ea_in.contiguous(), eb = eb_in.contiguous(), ha = ha_in.contiguous(),
                   hb = hb_in.contiguous();
  const int64_t B = emb.size(0), T = emb.size(1), D = emb.size(2);
  const int64_t kE = ea.size(1), kH = ha.size(1);
  const auto acc_st = acc_type_of(emb.scalar_type());
  const at::Tensor means = means_in.to(acc_st).contiguous(), mean_norms = mean_norms_in.to(acc_st).contiguous(),
                   neg_norms = neg_norms_in.to(acc_st).contiguous(), logits = logits_in.to(acc_st).contiguous(),
                   lse = lse_in.to(acc_st).contiguous();
  checks::snico_loss_saved(means, mean_norms, neg_norms, logits, lse, B, D, kE);
  const at::Tensor gacc = grad.reshape({1}).to(acc_st).contiguous();  // stays on the device, no sync
  auto fopt = emb.options().dtype(acc_st);
  at::Tensor W = at::empty({B, 2, kE}, fopt), BETA = at::empty({B, 2, kE}, fopt), SC = at::empty({B, 2, 5}, fopt);
  const bool low = acc_st != emb.scalar_type();
  at::Tensor out = at::zeros({B, T, D}, fopt);  // one memset; the scatter kernel adds into it
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, emb.scalar_type(), "snico_loss_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalars_kernel<acc_t><<<B, kReduce, 0, stream>>>(
        gacc.data_ptr<acc_t>(), mean_norms.data_ptr<acc_t>(), neg_norms.data_ptr<acc_t>(), logits.data_ptr<acc_t>(),
        lse.data_ptr<acc_t>(), W.data_ptr<acc_t>(), BETA.data_ptr<acc_t>(), SC.data_ptr<acc_t>(), B, kE,
        static_cast<acc_t>(tau));
    COLA_CUDA_CHECK_LAUNCH();
    const dim3 g((D + kChannels - 1) / kChannels, B);
    scatter_kernel<scalar_t, acc_t><<<g, kChannels, 0, stream>>>(
        emb.data_ptr<scalar_t>(), ha.data_ptr<int64_t>(), ea.data_ptr<int64_t>(), hb.data_ptr<int64_t>(),
        eb.data_ptr<int64_t>(), means.data_ptr<acc_t>(), W.data_ptr<acc_t>(), BETA.data_ptr<acc_t>(),
        SC.data_ptr<acc_t>(), out.data_ptr<acc_t>(), T, D, kE, kH);
    COLA_CUDA_CHECK_LAUNCH();
  });
  return low ? out.to(emb.scalar_type()) : out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cola_fast, CUDA, m) {
  m.impl("snico_loss_fwd", &snico_loss_fwd_cuda);
  m.impl("snico_loss_bwd", &snico_loss_bwd_cuda);
}

}  // namespace cola_fast
