// temporal_conv_embed on CUDA: ReLU(Conv1d(x) + bias) on channels-last x (B,T,Cin), weight
// (Cout,Cin,K) with K odd, zero padding K/2 inside each video; forward and fused backward.
//
// One implicit-GEMM kernel template serves the three products (no im2col, no permute of
// x or y; only the small weight tensor is re-laid out per call). Rows are the flat index
// r = b*T + t; tap k has shift s = k - K/2 and a row's partner r +- s is used only when
// t +- s lies inside [0, T) (zero padding per video, nothing leaks across videos):
//   MODE 0 forward  y[r,co]  = relu(bias[co] + sum_k sum_ci x[r+s,ci] Wk[k,ci,co])   Wk = (K,Cin,Cout)
//   MODE 1 dx       dx[r,ci] = sum_k sum_co g[r-s,co] Wt[k,co,ci]                      Wt = (K,Cout,Cin)
//   MODE 2 dW, db   dW[co,ci,k] = sum_r g[r,co] x[r+s,ci];  db[co] = sum_r g[r,co]
// with g = (y <= 0 ? 0 : dy) recomputed from dy and the saved y while loading tiles (the ReLU
// mask is never materialised; zero gradient at a pre-activation of exactly 0, as torch).
//
// Block tile 64x64x32, 128 threads (4 warps, 2x2, each 32x32). Tensor cores through WMMA
// for bf16 / fp16 (m16n16k16) and for fp32 when TF32 is allowed for convolutions
// (torch.backends.cudnn.conv.fp32_precision == "tf32", torch's default; m16n16k8 tf32), always with fp32 accumulation; a SIMT
// path (fp32 without TF32, fp64) accumulates in the input precision. Tiles are staged in
// shared memory; the epilogue applies bias + ReLU (forward) and writes with bounds checks.
// dW is accumulated in fp32/fp64 into a (K,Cout,Cin) buffer and re-laid out / cast on the
// host side; db is reduced deterministically by the (tap K/2, first ci block) programs.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <type_traits>

namespace cola_fast {
namespace {

using namespace nvcuda;

constexpr int BM = 64, BN = 64, BK = 32, NT = 128, PAD = 8;

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

// the CUDA type WMMA expects for a storage type
template <typename T> struct WmmaOf { using type = T; };
template <> struct WmmaOf<at::Half> { using type = __half; };
template <> struct WmmaOf<at::BFloat16> { using type = __nv_bfloat16; };

template <typename T>
__device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
__device__ __forceinline__ double to_f(double v) { return v; }

struct Params {
  const void* x;     // (N,Cin)              MODE 0, 2
  const void* w;     // Wk or Wt             MODE 0, 1
  const void* bias;  // (Cout,) or null      MODE 0
  const void* dy;    // (N,Cout)             MODE 1, 2
  const void* y;     // (N,Cout)             MODE 1, 2
  void* out;         // y / dx (T), dWk (K,Cout,Cin) in AccT (MODE 2, may be null)
  void* db;          // (Cout,) AccT, MODE 2, may be null
  int64_t N, T, Cin, Cout;
  int K, tap0;       // MODE 2: tap = blockIdx.z + tap0
};

template <typename T>
__device__ __forceinline__ T relu_grad(const T* dy, const T* y, int64_t i) {
  return to_f(y[i]) <= 0 ? T(0) : dy[i];  // a NaN output passes the gradient, as torch's threshold_backward
}

template <typename T, int MODE, bool TC>
__global__ void __launch_bounds__(NT) tce_kernel(Params p) {
  using AccT = typename AccOf<T>::type;
  constexpr bool A_COL = (MODE == 2);  // dW: A = g^T, staged k-major
  __shared__ __align__(32) T As[A_COL ? BK : BM][(A_COL ? BM : BK) + PAD];
  __shared__ __align__(32) T Bs[BK][BN + PAD];

  const int tid = threadIdx.x;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int64_t N = p.N, TT = p.T, Cin = p.Cin, Cout = p.Cout;
  const int P = p.K / 2;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const T* dy = static_cast<const T*>(p.dy);
  const T* yv = static_cast<const T*>(p.y);
  const int64_t red = MODE == 0 ? Cin : (MODE == 1 ? Cout : N);
  const int tap_begin = MODE == 2 ? static_cast<int>(blockIdx.z) + p.tap0 : 0;
  const int tap_end = MODE == 2 ? tap_begin + 1 : p.K;
  const bool do_db = MODE == 2 && p.db != nullptr && blockIdx.y == 0 && tap_begin == P;
  AccT dbpart = 0;

  // accumulators
  constexpr int KS = std::is_same<T, float>::value ? 8 : 16;  // WMMA k-step (tf32: 8)
  using WT = typename WmmaOf<T>::type;
  using FragAT = typename std::conditional<std::is_same<T, float>::value, wmma::precision::tf32, WT>::type;
  using ALayout = typename std::conditional<A_COL, wmma::col_major, wmma::row_major>::type;
  // (fragments are declared for the tensor-core path only; the SIMT path uses registers)
  const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
  typename std::conditional<TC, wmma::fragment<wmma::accumulator, 16, 16, KS, float>, char>::type facc[2][2];
  AccT sacc[8][4];
  if constexpr (TC) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(facc[i][j], 0.0f);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) sacc[i][j] = 0;
  }

  for (int tap = tap_begin; tap < tap_end; ++tap) {
    const int s = tap - P;
    for (int64_t r0 = 0; r0 < red; r0 += BK) {
      // ---- stage A ----
      if constexpr (MODE != 2) {
        const int r = tid % BK;
        const int64_t rr = r0 + r;
#pragma unroll 4
        for (int i = 0; i < (BM * BK) / NT; ++i) {
          const int m = tid / BK + (NT / BK) * i;
          const int64_t row = m0 + m;
          T v = T(0);
          if (row < N && rr < red) {
            const int64_t t = row % TT;
            const int64_t st = MODE == 0 ? t + s : t - s;
            if (st >= 0 && st < TT) {
              const int64_t srow = MODE == 0 ? row + s : row - s;
              v = MODE == 0 ? x[srow * Cin + rr] : relu_grad(dy, yv, srow * Cout + rr);
            }
          }
          As[m][r] = v;
        }
      } else {
        const int m = tid % BM;
        const int64_t co = m0 + m;
#pragma unroll 4
        for (int i = 0; i < (BM * BK) / NT; ++i) {
          const int r = tid / BM + (NT / BM) * i;
          const int64_t row = r0 + r;
          T v = T(0);
          if (co < Cout && row < N) {
            const int64_t t = row % TT;
            if (t + s >= 0 && t + s < TT) v = relu_grad(dy, yv, row * Cout + co);
          }
          As[r][m] = v;
          if (do_db) dbpart += static_cast<AccT>(to_f(v));
        }
      }
      // ---- stage B ----
      {
        const int n = tid % BN;
        const int64_t nn = n0 + n;
#pragma unroll 4
        for (int i = 0; i < (BK * BN) / NT; ++i) {
          const int r = tid / BN + (NT / BN) * i;
          const int64_t rr = r0 + r;
          T v = T(0);
          if constexpr (MODE == 0) {
            if (rr < Cin && nn < Cout) v = w[(tap * Cin + rr) * Cout + nn];
          } else if constexpr (MODE == 1) {
            if (rr < Cout && nn < Cin) v = w[(tap * Cout + rr) * Cin + nn];
          } else {
            if (rr < N && nn < Cin) {
              const int64_t t = rr % TT;
              if (t + s >= 0 && t + s < TT) v = x[(rr + s) * Cin + nn];
            }
          }
          Bs[r][n] = v;
        }
      }
      __syncthreads();
      // ---- multiply ----
      if constexpr (TC) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#pragma unroll
        for (int kk = 0; kk < BK; kk += KS) {
          wmma::fragment<wmma::matrix_a, 16, 16, KS, FragAT, ALayout> fa[2];
          wmma::fragment<wmma::matrix_b, 16, 16, KS, FragAT, wmma::row_major> fb[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const int mm = wm * 32 + i * 16;
            const T* ap = A_COL ? &As[kk][mm] : &As[mm][kk];
            wmma::load_matrix_sync(fa[i], reinterpret_cast<const WT*>(ap), (A_COL ? BM : BK) + PAD);
            if constexpr (std::is_same<T, float>::value) {
#pragma unroll
              for (int e = 0; e < fa[i].num_elements; ++e) fa[i].x[e] = wmma::__float_to_tf32(fa[i].x[e]);
            }
          }
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            wmma::load_matrix_sync(fb[j], reinterpret_cast<const WT*>(&Bs[kk][wn * 32 + j * 16]), BN + PAD);
            if constexpr (std::is_same<T, float>::value) {
#pragma unroll
              for (int e = 0; e < fb[j].num_elements; ++e) fb[j].x[e] = wmma::__float_to_tf32(fb[j].x[e]);
            }
          }
#pragma unroll
          for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(facc[i][j], fa[i], fb[j], facc[i][j]);
        }
#else
        __trap();  // tensor-core path needs sm_80+ (the host never launches it below that)
#endif
      } else {
        const int tx = tid % 16, ty = tid / 16;
#pragma unroll 4
        for (int kk = 0; kk < BK; ++kk) {
          AccT a[8], b[4];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int m = ty + 8 * i;
            a[i] = static_cast<AccT>(to_f(A_COL ? As[kk][m] : As[m][kk]));
          }
#pragma unroll
          for (int j = 0; j < 4; ++j) b[j] = static_cast<AccT>(to_f(Bs[kk][tx + 16 * j]));
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) sacc[i][j] += a[i] * b[j];
        }
      }
      __syncthreads();
    }
  }

  // ---- epilogue ----
  auto emit = [&](int m, int n, AccT v) {
    const int64_t gm = m0 + m, gn = n0 + n;
    if constexpr (MODE == 0) {
      if (gm < N && gn < Cout) {
        if (p.bias) v += static_cast<AccT>(to_f(static_cast<const T*>(p.bias)[gn]));
        // ReLU that keeps a NaN pre-activation NaN, as torch's relu does
        static_cast<T*>(p.out)[gm * Cout + gn] = static_cast<T>((v > AccT(0) || v != v) ? v : AccT(0));
      }
    } else if constexpr (MODE == 1) {
      if (gm < N && gn < Cin) static_cast<T*>(p.out)[gm * Cin + gn] = static_cast<T>(v);
    } else {
      if (p.out && gm < Cout && gn < Cin) static_cast<AccT*>(p.out)[(tap_begin * Cout + gm) * Cin + gn] = v;
    }
  };
  if constexpr (TC) {
    __shared__ __align__(32) float Cs[BM][BN + 4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], facc[i][j], BN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < BM * BN; idx += NT) emit(idx / BN, idx % BN, static_cast<AccT>(Cs[idx / BN][idx % BN]));
  } else {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) emit(ty + 8 * i, tx + 16 * j, sacc[i][j]);
  }
  if constexpr (MODE == 2) {
    if (do_db) {  // uniform over the block
      __shared__ AccT red_db[NT];
      red_db[tid] = dbpart;
      __syncthreads();
      if (tid < BM) {
        AccT v = red_db[tid];
        for (int q = 1; q < NT / BM; ++q) v += red_db[tid + q * BM];
        if (m0 + tid < Cout) static_cast<AccT*>(p.db)[m0 + tid] = v;
      }
    }
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const char* where) {
  TORCH_CHECK(x.is_cuda() && weight.is_cuda(), where, ": x and weight must be CUDA tensors");
  TORCH_CHECK(x.dim() == 3, where, ": x must be (B,T,Cin), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 3, where, ": weight must be (Cout,Cin,K), got ", weight.sizes());
  TORCH_CHECK(weight.size(2) % 2 == 1, where, ": kernel size K must be odd, got ", weight.size(2));
  TORCH_CHECK(weight.size(1) == x.size(2), where, ": weight Cin=", weight.size(1), " but x has Cin=", x.size(2));
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), where, ": x dtype ", x.scalar_type(), " != weight dtype ",
              weight.scalar_type());
  TORCH_CHECK(x.get_device() == weight.get_device(), where, ": x and weight are on different devices");
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, where,
              ": supported dtypes are float32, float64, float16, bfloat16; got ", st);
  TORCH_CHECK(x.size(0) * x.size(1) < (int64_t(1) << 31) * BM, where, ": too many rows");
}

// Whether torch lets its cuDNN convolutions use TF32 (what F.conv1d follows). Newer torch sets
// the precision per operation (torch.backends.cudnn.conv.fp32_precision) and takes the operation
// as an argument: asked without one, it throws once the conv and RNN settings differ. Older torch
// takes no argument. The overloads below pick whichever form at::Context has, without naming
// types that only some versions declare.
template <typename R, typename C, typename A>
bool cudnn_conv_allows_tf32(R (C::*get)(A) const, const C& ctx) {
  using Arg = std::decay_t<A>;
  if constexpr (std::is_same_v<Arg, std::string>) {
    return (ctx.*get)(std::string("conv"));
  } else {  // std::optional<Float32Op>
    return (ctx.*get)(Arg::value_type::CONV);
  }
}
template <typename R, typename C>
bool cudnn_conv_allows_tf32(R (C::*get)() const, const C& ctx) {
  return (ctx.*get)();
}

bool tensor_cores_ok(at::ScalarType st, int device) {
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return false;
  if (st == at::kHalf || st == at::kBFloat16) return true;
  if (st == at::kFloat) return cudnn_conv_allows_tf32(&at::Context::allowTF32CuDNN, at::globalContext());
  return false;
}

template <typename T, int MODE>
void launch(const Params& p, dim3 grid, bool tc, cudaStream_t stream) {
  if constexpr (std::is_same<T, double>::value) {
    tce_kernel<T, MODE, false><<<grid, NT, 0, stream>>>(p);
  } else {
    if (tc)
      tce_kernel<T, MODE, true><<<grid, NT, 0, stream>>>(p);
    else
      tce_kernel<T, MODE, false><<<grid, NT, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

inline unsigned cdiv(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace

// gemm (the CPU kernel's GEMM library, see csrc/ops.cpp) has no meaning here and is ignored.
at::Tensor temporal_conv_embed_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                    const std::optional<at::Tensor>& bias_in, int64_t /*gemm*/) {
  check_inputs(x_in, weight_in, "temporal_conv_embed");
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  if (has_bias) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == weight_in.size(0),
                "temporal_conv_embed: bias must be (Cout,), got ", bias_in->sizes());
    TORCH_CHECK(bias_in->scalar_type() == x_in.scalar_type() && bias_in->device() == x_in.device(),
                "temporal_conv_embed: bias must be a tensor of x's dtype on x's device");
  }
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), Cin = x.size(2);
  const int64_t Cout = weight_in.size(0), K = weight_in.size(2);
  const int64_t N = B * T;
  at::Tensor out = at::empty({B, T, Cout}, x.options());
  if (N == 0 || Cout == 0) return out;
  const at::Tensor wk = weight_in.permute({2, 1, 0}).contiguous();  // (K,Cin,Cout)
  const at::Tensor bias = has_bias ? bias_in->contiguous() : at::Tensor();
  Params p{};
  p.x = x.data_ptr();
  p.w = wk.data_ptr();
  p.bias = has_bias ? bias.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.N = N; p.T = T; p.Cin = Cin; p.Cout = Cout; p.K = static_cast<int>(K); p.tap0 = 0;
  const dim3 grid(cdiv(N, BM), cdiv(Cout, BN), 1);
  const bool tc = tensor_cores_ok(x.scalar_type(), x.get_device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_conv_embed_cuda",
                                  [&] { launch<scalar_t, 0>(p, grid, tc, stream); });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_conv_embed_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& weight,
    c10::List<bool> output_mask, int64_t /*gemm*/) {
  check_inputs(x_in, weight, "temporal_conv_embed_backward");
  const int64_t B = x_in.size(0), T = x_in.size(1), Cin = x_in.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2);
  const int64_t N = B * T;
  TORCH_CHECK(grad_out_in.dim() == 3 && grad_out_in.size(0) == B && grad_out_in.size(1) == T &&
                  grad_out_in.size(2) == Cout && out_in.sizes() == grad_out_in.sizes(),
              "temporal_conv_embed_backward: grad_out and out must be (B,T,Cout)");
  TORCH_CHECK(grad_out_in.scalar_type() == x_in.scalar_type() && out_in.scalar_type() == x_in.scalar_type(),
              "temporal_conv_embed_backward: grad_out/out/x dtypes differ");
  TORCH_CHECK(grad_out_in.device() == x_in.device() && out_in.device() == x_in.device(),
              "temporal_conv_embed_backward: grad_out and out must be on x's device");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool need_dx = output_mask[0], need_dw = output_mask[1], need_db = output_mask[2];
  const auto opts = x_in.options();
  const auto acc_type = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor dx = need_dx ? at::empty({B, T, Cin}, opts) : at::empty({0}, opts);
  at::Tensor dw = need_dw ? at::empty({Cout, Cin, K}, opts) : at::empty({0}, opts);
  at::Tensor db = need_db ? at::empty({Cout}, opts) : at::empty({0}, opts);
  if (!need_dx && !need_dw && !need_db) return {dx, dw, db};
  if (N == 0 || Cin == 0 || Cout == 0) {
    if (need_dx) dx.zero_();
    if (need_dw) dw.zero_();
    // Cin = 0: the forward was ReLU(bias), so db is still the masked sum of dy (zeros when N = 0)
    if (need_db)
      db.copy_(grad_out_in.masked_fill(out_in <= 0, 0).sum(at::IntArrayRef{0, 1}, /*keepdim=*/false, acc_type));
    return {dx, dw, db};
  }
  const at::Tensor dy = grad_out_in.contiguous();
  const at::Tensor y = out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const bool tc = tensor_cores_ok(x.scalar_type(), x.get_device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Params base{};
  base.x = x.data_ptr();
  base.dy = dy.data_ptr();
  base.y = y.data_ptr();
  base.N = N; base.T = T; base.Cin = Cin; base.Cout = Cout; base.K = static_cast<int>(K); base.tap0 = 0;
  if (need_dx) {
    const at::Tensor wt = weight.permute({2, 0, 1}).contiguous();  // (K,Cout,Cin)
    Params p = base;
    p.w = wt.data_ptr();
    p.out = dx.data_ptr();
    const dim3 grid(cdiv(N, BM), cdiv(Cin, BN), 1);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_conv_embed_dx_cuda",
                                    [&] { launch<scalar_t, 1>(p, grid, tc, stream); });
  }
  if (need_dw || need_db) {
    at::Tensor dwk = need_dw ? at::empty({K, Cout, Cin}, opts.dtype(acc_type)) : at::Tensor();
    at::Tensor dbacc = need_db ? at::empty({Cout}, opts.dtype(acc_type)) : at::Tensor();
    Params p = base;
    p.out = need_dw ? dwk.data_ptr() : nullptr;
    p.db = need_db ? dbacc.data_ptr() : nullptr;
    // db alone: one ci block of the centre tap, no dW store
    p.tap0 = need_dw ? 0 : static_cast<int>(K / 2);
    const dim3 grid(cdiv(Cout, BM), need_dw ? cdiv(Cin, BN) : 1u, need_dw ? static_cast<unsigned>(K) : 1u);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_conv_embed_dw_cuda",
                                    [&] { launch<scalar_t, 2>(p, grid, tc, stream); });
    if (need_dw) dw.copy_(dwk.permute({1, 2, 0}));
    if (need_db) db.copy_(dbacc);
  }
  return {dx, dw, db};
}

TORCH_LIBRARY_IMPL(cola_fast, CUDA, m) {
  m.impl("temporal_conv_embed", &temporal_conv_embed_cuda);
  m.impl("temporal_conv_embed_backward", &temporal_conv_embed_backward_cuda);
}

}  // namespace cola_fast
