// temporal_conv_embed on CUDA: ReLU(Conv1d(x) + bias) on channels-last x (B,T,Cin), weight
// (Cout,Cin,K) with K odd, zero padding K/2 inside each video; forward and fused backward, every
// product a cuBLASLt GEMM (the vendor's tuned kernels; this file adds only small elementwise ones).
//
// This replaces a hand-written WMMA implicit-GEMM kernel (64x64x32 tiles, single-buffered scalar
// loads, no cp.async), estimated at 5-20x slower than cuDNN (issue 21); it was never measured on a
// GPU and nothing suggested a shape where it would win, so it is gone.
//
// Views (column-major, as cuBLASLt sees them): row-major x (N,Cin), N = B*T, is the matrix
// X (Cin x N) with ld Cin; y, dy, g likewise with Cout; Wk = weight re-laid out as (K,Cout,Cin)
// (a small copy per call) gives tap k as the column-major (Cin x Cout) matrix W_k^T. Tap k has
// shift s = k - K/2.
//   Forward   Y[:, b,t] += W_k X[:, b,t+s]  for 0 <= t+s < T: one strided-batched GEMM per tap over
//             the B videos (batch stride T rows, the weight shared), on the shifted column ranges
//             of each video, so that nothing leaks across videos. The shifted taps run first (the
//             first one with beta = 0, the rows it does not reach zeroed by a 2-D memset), the
//             centre tap last: it covers every row, so it carries the epilogue.
//   dX        dX[:, b,t] += W_k^T G[:, b,t-s]: the same strided-batched GEMMs, centre tap first.
//   dW_k      = G X_s^T over the flat rows (one GEMM per tap, k-dimension N - |s|). G's rows whose
//             partner t+s lies outside their video are zeroed (progressively, on our own buffer,
//             as the CPU kernel does), so a pair that crosses a video boundary adds 0 * x.
//   G         = dY where Y > 0 or Y is NaN, 0 where Y <= 0 (torch's threshold_backward), computed by
//             one small kernel that also writes per-chunk column sums: db, reduced deterministically.
// CUBLASLT_EPILOGUE_DRELU_BGRAD would need the forward's ReLU bit-mask (RELU_AUX_BIAS), a second
// saved tensor that the op's schema (grad_out, out, x, weight) does not carry; it would also zero
// the gradient at a NaN output, where torch passes it. So the ReLU gradient is that kernel.
//
// Precision: float32 uses TF32 tensor cores exactly when torch lets its cuDNN convolutions do so
// (CUBLAS_COMPUTE_32F_FAST_TF32), float64 is exact; bf16 / fp16 multiply on tensor cores and
// accumulate in fp32 across the taps too: their GEMMs write an fp32 buffer (a bf16 buffer would
// round the partial sum at every tap), turned into the output by one kernel (bias, ReLU, cast).
//
// Non-finite values (one semantics, torch's):
//   - bf16 / fp16 forward: the bias + ReLU kernel keeps a NaN pre-activation NaN.
//   - float32 / float64 forward: the centre GEMM's CUBLASLT_EPILOGUE_RELU_BIAS (RELU without bias)
//     is not documented to keep NaN. A pre-activation can only be NaN when an input is not finite
//     or the sum overflows, so a small kernel sets a device flag when some |x|, |w| lies above
//     sqrt(max/4 / (Cin K)) or some |bias| above max/4 (NaN included); a guard kernel, always
//     launched and returning at once when the flag is clear, then recomputes the output by a plain
//     direct sum. No host synchronisation either way. Where the heuristic offers no algorithm with
//     that epilogue, the centre GEMM runs without it and the bias + ReLU kernel follows.
//   - dW: a crossing pair adds 0 * x, which is NaN when x is not finite there; so when some x in
//     the first or last K/2 rows of a video is not finite (device flag again), a guard kernel
//     recomputes dW by the plain direct sum. dX (per-video GEMMs) and db need nothing.
//
// Library plumbing: one cuBLASLt handle per thread and device, the workspace from torch's caching
// allocator on the current stream, every call on c10's current CUDA stream, every status checked.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace cola_fast {
namespace {

// ============================================================================ cuBLASLt plumbing
#define COLA_LT_CHECK(call, what)                                                                        \
  do {                                                                                                   \
    const cublasStatus_t st_ = (call);                                                                   \
    TORCH_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "temporal_conv_embed (cuBLASLt): ", what, " failed: ",     \
                cublasLtGetStatusName(st_), " (", cublasLtGetStatusString(st_), ")");                    \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS asks for on Hopper

// One handle per thread and device (created on first use with the device current; never destroyed,
// so that nothing runs at process exit after the driver is gone).
cublasLtHandle_t lt_handle(int device) {
  thread_local std::vector<cublasLtHandle_t> handles;
  if (static_cast<size_t>(device) >= handles.size()) handles.resize(device + 1, nullptr);
  if (handles[device] == nullptr) COLA_LT_CHECK(cublasLtCreate(&handles[device]), "cublasLtCreate");
  return handles[device];
}

// Data and compute types of the GEMMs for one input dtype: A and B in the input dtype, C = D in
// the accumulation dtype (float for bf16 / fp16 / float32, double for float64).
struct LtTypes {
  cudaDataType ab, cd, scale;
  cublasComputeType_t compute;
  size_t ab_size, cd_size;
};

LtTypes lt_types(at::ScalarType st, bool tf32) {
  switch (st) {
    case at::kFloat:
      return {CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, 4, 4};
    case at::kDouble: return {CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, 8, 8};
    case at::kHalf: return {CUDA_R_16F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, 2, 4};
    case at::kBFloat16: return {CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, 2, 4};
    default: TORCH_CHECK(false, "temporal_conv_embed: unsupported dtype ", st);
  }
}

// A stored column-major matrix (rows x cols, leading dimension ld; batch stride in elements).
struct Operand {
  const void* ptr;
  int64_t rows, cols, ld, stride;
};

// D = op(A) op(B) (+ D when accumulate), batched over `batch` matrices, with an optional epilogue.
struct Gemm {
  cublasOperation_t opA, opB;
  Operand A, B, D;
  int64_t batch = 1;
  bool accumulate = false;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};

struct LtContext {
  cublasLtHandle_t handle;
  cudaStream_t stream;
  void* workspace;
  LtTypes types;
};

// The largest power of two (at most 256) dividing every matrix start address of the batch.
uint32_t alignment_of(const void* p, int64_t stride_bytes) {
  const uint64_t bits = reinterpret_cast<uint64_t>(p) | static_cast<uint64_t>(stride_bytes) | 256u;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

template <typename V>
void set_op_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, V v, const char* what) {
  COLA_LT_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), what);
}

cublasLtMatrixLayout_t make_layout(cudaDataType type, const Operand& m, int64_t batch) {
  cublasLtMatrixLayout_t l = nullptr;
  COLA_LT_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols),
                                           m.ld),
                "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    const int64_t stride = m.stride;
    cublasStatus_t st = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride));
    if (st != CUBLAS_STATUS_SUCCESS) cublasLtMatrixLayoutDestroy(l);
    COLA_LT_CHECK(st, "setting the batch of a matrix layout");
  }
  return l;
}

// Runs the GEMM. Returns false (and runs nothing) only when an epilogue was asked for and the
// heuristic offers no algorithm with it; without an epilogue that is an error.
bool lt_matmul(const LtContext& ctx, const Gemm& g) {
  const LtTypes& t = ctx.types;
  LtDescriptors ds;
  COLA_LT_CHECK(cublasLtMatmulDescCreate(&ds.op, t.compute, t.scale), "cublasLtMatmulDescCreate");
  set_op_attr(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(g.opA), "setting TRANSA");
  set_op_attr(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(g.opB), "setting TRANSB");
  if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    set_op_attr(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(g.epilogue), "setting the epilogue");
    if (g.bias) set_op_attr(ds.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias, "setting the bias pointer");
  }
  ds.a = make_layout(t.ab, g.A, g.batch);
  ds.b = make_layout(t.ab, g.B, g.batch);
  ds.d = make_layout(t.cd, g.D, g.batch);
  COLA_LT_CHECK(cublasLtMatmulPreferenceCreate(&ds.pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspaceBytes;
  COLA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                     sizeof(ws)),
                "setting the workspace size");
  const uint32_t al[4] = {alignment_of(g.A.ptr, g.A.stride * t.ab_size), alignment_of(g.B.ptr, g.B.stride * t.ab_size),
                          alignment_of(g.D.ptr, g.D.stride * t.cd_size), alignment_of(g.D.ptr, g.D.stride * t.cd_size)};
  const cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    COLA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(ds.pref, which[i], &al[i], sizeof(al[i])),
                  "setting an alignment preference");

  cublasLtMatmulHeuristicResult_t best{};
  int found = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(ctx.handle, ds.op, ds.a, ds.b, ds.d, ds.d, ds.pref, 1, &best, &found);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
    if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) return false;
    TORCH_CHECK(false, "temporal_conv_embed (cuBLASLt): no GEMM algorithm for m=", g.opA == CUBLAS_OP_N ? g.A.rows : g.A.cols,
                " n=", g.opB == CUBLAS_OP_N ? g.B.cols : g.B.rows, " k=", g.opA == CUBLAS_OP_N ? g.A.cols : g.A.rows,
                " batch=", g.batch, " (heuristic status ", cublasLtGetStatusName(hs), ", ", found, " found)");
  }
  const float one_f = 1.0f, beta_f = g.accumulate ? 1.0f : 0.0f;
  const double one_d = 1.0, beta_d = g.accumulate ? 1.0 : 0.0;
  const bool dbl = t.scale == CUDA_R_64F;
  COLA_LT_CHECK(cublasLtMatmul(ctx.handle, ds.op, dbl ? static_cast<const void*>(&one_d) : &one_f, g.A.ptr, ds.a,
                               g.B.ptr, ds.b, dbl ? static_cast<const void*>(&beta_d) : &beta_f, g.D.ptr, ds.d,
                               const_cast<void*>(g.D.ptr), ds.d, &best.algo, ctx.workspace, kWorkspaceBytes,
                               ctx.stream),
                "cublasLtMatmul");
  return true;
}

// ============================================================================ small kernels
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <typename A>
__device__ __forceinline__ A relu_keep_nan(A v) {  // torch's relu: a NaN stays NaN
  return (v > A(0) || v != v) ? v : A(0);
}

constexpr int kThreads = 256;

int sm_count(int device) {
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return std::max(n, 1);
}

// out[r, c] = f(acc[r, c] + bias[c]), f = ReLU keeping NaN (relu) or identity; acc may alias out.
template <typename A, typename T>
__global__ void bias_relu_cast_kernel(const A* acc, const T* bias, T* out, int64_t rows, int64_t cols, bool relu) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      A v = acc[r * cols + c];
      if (bias) v += static_cast<A>(bias[c]);
      out[r * cols + c] = static_cast<T>(relu ? relu_keep_nan(v) : v);
    }
  }
}

// g = (y <= 0 ? 0 : dy) (torch's threshold_backward: a NaN output passes the gradient), stored
// when g is given; partial[chunk, c] = sum of g over the chunk's rows when partial is given.
template <typename T, typename A>
__global__ void relu_grad_kernel(const T* dy, const T* y, T* g, A* partial, int64_t rows, int64_t cols,
                                 int64_t rows_per_chunk) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  A sum = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = r * cols + c;
    const T v = static_cast<A>(y[i]) <= A(0) ? T(0) : dy[i];
    if (g) g[i] = v;
    sum += static_cast<A>(v);
  }
  if (partial) partial[blockIdx.y * cols + c] = sum;
}

// *flag = 1 when some |p| is not below thresh (NaN included) among the rows of a (B,T,C) tensor:
// every row (band = 0, or 2 band >= T), else the first and last `band` rows of every video.
template <typename T>
__global__ void flag_large_kernel(const T* p, int64_t B, int64_t T_, int64_t C, int64_t band, double thresh,
                                  int* flag) {
  const bool all_rows = band == 0 || 2 * band >= T_;
  const int64_t R = all_rows ? T_ : 2 * band;  // rows looked at per video
  const int64_t n = B * R * C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t idx = i;
    if (!all_rows) {
      const int64_t c = i % C, j = (i / C) % R, b = i / (C * R);
      const int64_t t = j < band ? j : T_ - 2 * band + j;
      idx = (b * T_ + t) * C + c;
    }
    const double a = fabs(static_cast<double>(static_cast<typename AccOf<T>::type>(p[idx])));
    if (!(a < thresh)) *flag = 1;
  }
}

// Guard of the fused forward: returns at once unless *flag; then y = ReLU(bias + conv(x)) by the
// plain direct sum, wk (K,Cout,Cin).
template <typename T>
__global__ void forward_direct_kernel(const T* x, const T* wk, const T* bias, T* y, int64_t B, int64_t T_,
                                      int64_t Cin, int64_t Cout, int K, const int* flag) {
  if (*flag == 0) return;
  using A = typename AccOf<T>::type;
  const int P = K / 2;
  const int64_t n = B * T_ * Cout;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t co = i % Cout, r = i / Cout, t = r % T_;
    A acc = bias ? static_cast<A>(bias[co]) : A(0);
    for (int k = 0; k < K; ++k) {
      const int64_t ts = t + k - P;
      if (ts < 0 || ts >= T_) continue;
      const T* xr = x + (r + k - P) * Cin;
      const T* wr = wk + (static_cast<int64_t>(k) * Cout + co) * Cin;
      for (int64_t ci = 0; ci < Cin; ++ci) acc += static_cast<A>(xr[ci]) * static_cast<A>(wr[ci]);
    }
    y[i] = static_cast<T>(relu_keep_nan(acc));
  }
}

// Guard of the flat dW GEMMs: returns at once unless *flag; then dwk[k, co, ci] (K,Cout,Cin) =
// sum over the valid pairs of g[r, co] x[r+s, ci], g recomputed from dy and y.
template <typename T, typename A>
__global__ void dweight_direct_kernel(const T* x, const T* dy, const T* y, A* dwk, int64_t B, int64_t T_,
                                      int64_t Cin, int64_t Cout, int K, const int* flag) {
  if (*flag == 0) return;
  const int P = K / 2;
  const int64_t n = static_cast<int64_t>(K) * Cout * Cin, N = B * T_;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ci = i % Cin, co = (i / Cin) % Cout;
    const int s = static_cast<int>(i / (Cin * Cout)) - P;
    A acc = 0;
    for (int64_t r = 0; r < N; ++r) {
      const int64_t ts = r % T_ + s;
      if (ts < 0 || ts >= T_) continue;
      const int64_t o = r * Cout + co;
      const A gv = static_cast<A>(y[o]) <= A(0) ? A(0) : static_cast<A>(dy[o]);
      acc += gv * static_cast<A>(x[(r + s) * Cin + ci]);
    }
    dwk[i] = acc;
  }
}

unsigned grid_for(int64_t n, int device, int per_sm = 4) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(per_sm) * sm_count(device))));
}

// ============================================================================ host helpers
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
  const int64_t lim = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(x.size(0) * x.size(1) <= lim && x.size(2) <= lim && weight.size(0) <= lim, where,
              ": B*T, Cin and Cout must each fit in 32 bits (cuBLASLt's dimensions)");
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

LtContext lt_context(const at::Tensor& x, at::Tensor& workspace) {
  const bool tf32 = x.scalar_type() == at::kFloat &&
                    cudnn_conv_allows_tf32(&at::Context::allowTF32CuDNN, at::globalContext());
  workspace = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, x.options().dtype(at::kByte));
  return {lt_handle(x.get_device()), c10::cuda::getCurrentCUDAStream(), workspace.data_ptr(),
          lt_types(x.scalar_type(), tf32)};
}

inline const char* at_row(const void* base, int64_t row, int64_t cols, size_t elem) {
  return static_cast<const char*>(base) + (row * cols) * static_cast<int64_t>(elem);
}

// Zeroes rows [t0, t0 + n) of every video of a (B,T,C) buffer (one 2-D memset).
void zero_video_rows(void* base, size_t elem, int64_t B, int64_t T, int64_t C, int64_t t0, int64_t n,
                     cudaStream_t stream) {
  if (n <= 0 || B == 0 || C == 0) return;
  C10_CUDA_CHECK(cudaMemset2DAsync(const_cast<char*>(at_row(base, t0, C, elem)), T * C * elem, 0, n * C * elem,
                                   B, stream));
}

// Tap GEMM of the forward (x -> out, weight as given) or of dX (g -> dx, weight untransposed):
// out[:, b,t] (+)= op(W_k) in[:, b,t+s] for the t with 0 <= t+s < T, batched over the B videos.
// in has `kdim` channels, out `mdim`. Returns what lt_matmul returns.
bool tap_gemm(const LtContext& ctx, const void* in, int64_t kdim, const void* wk_tap, bool transpose_w, void* out,
              int64_t mdim, int64_t B, int64_t T, int64_t s, bool accumulate,
              cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT, const void* bias = nullptr) {
  const int64_t t0 = std::max<int64_t>(0, -s), t1 = std::min<int64_t>(T, T - s), n = t1 - t0;
  Gemm g;
  // W_k stored as the column-major (Cin x Cout) matrix; forward needs (Cout x Cin): transposed
  g.opA = transpose_w ? CUBLAS_OP_T : CUBLAS_OP_N;
  g.A = {wk_tap, transpose_w ? kdim : mdim, transpose_w ? mdim : kdim, transpose_w ? kdim : mdim, 0};
  g.opB = CUBLAS_OP_N;
  g.B = {at_row(in, t0 + s, kdim, ctx.types.ab_size), kdim, n, kdim, T * kdim};
  g.D = {at_row(out, t0, mdim, ctx.types.cd_size), mdim, n, mdim, T * mdim};
  g.batch = B;
  g.accumulate = accumulate;
  g.epilogue = epilogue;
  g.bias = bias;
  return lt_matmul(ctx, g);
}

// f(scalar_t{}) for the op's four dtypes
template <typename F>
void dispatch(at::ScalarType st, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "temporal_conv_embed_cuda", [&] { f(scalar_t{}); });
}

void bias_relu_cast(const at::Tensor& acc, const at::Tensor& bias, at::Tensor& out, bool relu, cudaStream_t stream) {
  const int64_t cols = out.size(-1), rows = out.numel() / std::max<int64_t>(cols, 1);
  if (rows == 0 || cols == 0) return;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, 65535));
  dispatch(out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    bias_relu_cast_kernel<A, T><<<grid, kThreads, 0, stream>>>(
        acc.const_data_ptr<A>(), bias.defined() ? bias.const_data_ptr<T>() : nullptr, out.data_ptr<T>(), rows, cols,
        relu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// *flag |= some |t| >= thresh (see flag_large_kernel for band).
void flag_large(const at::Tensor& t3, int64_t band, double thresh, const at::Tensor& flag, int device,
                cudaStream_t stream) {
  if (t3.numel() == 0) return;
  const int64_t B = t3.size(0), T = t3.size(1), C = t3.size(2);
  const int64_t R = (band == 0 || 2 * band >= T) ? T : 2 * band;
  dispatch(t3.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    flag_large_kernel<T_><<<grid_for(B * R * C, device), kThreads, 0, stream>>>(t3.const_data_ptr<T_>(), B, T, C,
                                                                                 band, thresh, flag.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T>
double max_of() {
  return static_cast<double>(std::numeric_limits<typename AccOf<T>::type>::max());
}

// The fused float32 / float64 forward's guard: flag the inputs whose pre-activations could be
// non-finite, then recompute by the direct sum where flagged (device-side decision).
void forward_guard(const at::Tensor& x, const at::Tensor& wk, const at::Tensor& bias, at::Tensor& out,
                   cudaStream_t stream) {
  const int device = x.get_device();
  const int64_t B = x.size(0), T = x.size(1), Cin = x.size(2), Cout = wk.size(1), K = wk.size(0);
  at::Tensor flag = at::zeros({1}, x.options().dtype(at::kInt));
  dispatch(x.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    const double limit = 0.25 * max_of<T_>();
    const double th = std::sqrt(limit / static_cast<double>(Cin * K));
    flag_large(x, 0, th, flag, device, stream);
    flag_large(wk.view({1, K * Cout, Cin}), 0, th, flag, device, stream);
    if (bias.defined()) flag_large(bias.view({1, 1, Cout}), 0, limit, flag, device, stream);
    forward_direct_kernel<T_><<<grid_for(B * T * Cout, device), kThreads, 0, stream>>>(
        x.const_data_ptr<T_>(), wk.const_data_ptr<T_>(), bias.defined() ? bias.const_data_ptr<T_>() : nullptr,
        out.data_ptr<T_>(), B, T, Cin, Cout, static_cast<int>(K), flag.const_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// dW_k (K,Cout,Cin) in the accumulation dtype by the flat GEMMs over G's rows; g (B,T,Cout) is
// masked progressively (and partly restored) here.
void dweight_gemms(const LtContext& ctx, const at::Tensor& x, at::Tensor& g, at::Tensor& dwk) {
  const int64_t B = x.size(0), T = x.size(1), Cin = x.size(2), Cout = g.size(2), K = dwk.size(0), P = K / 2;
  const int64_t N = B * T;
  const size_t ab = ctx.types.ab_size, cd = ctx.types.cd_size;
  auto tap = [&](int64_t s) {  // dwk[P+s] = sum over flat rows r of g[r]^T x[r+s]
    if (std::abs(s) >= T) {
      dwk[P + s].zero_();
      return;
    }
    const int64_t r0 = std::max<int64_t>(0, -s), nr = N - std::abs(s);
    Gemm gm;
    gm.opA = CUBLAS_OP_N;  // X_s (Cin x nr)
    gm.A = {at_row(x.const_data_ptr(), r0 + s, Cin, ab), Cin, nr, Cin, 0};
    gm.opB = CUBLAS_OP_T;  // G (Cout x nr), transposed
    gm.B = {at_row(g.const_data_ptr(), r0, Cout, ab), Cout, nr, Cout, 0};
    gm.D = {at_row(dwk.data_ptr(), (P + s) * Cout, Cin, cd), Cin, Cout, Cin, 0};
    lt_matmul(ctx, gm);
  };
  tap(0);
  if (P == 0) return;
  const int64_t pm = std::min(P, T);
  // shift +s: g's last s rows of each video have their partner past the video's end
  const at::Tensor tail = g.narrow(1, T - pm, pm).clone();
  for (int64_t s = 1; s <= P; ++s) {
    if (s < T) zero_video_rows(g.data_ptr(), ab, B, T, Cout, T - s, 1, ctx.stream);
    tap(s);
  }
  g.narrow(1, T - pm, pm).copy_(tail);
  // shift -s: the first s rows have theirs before the video's start (g is not needed afterwards)
  for (int64_t s = 1; s <= P; ++s) {
    if (s < T) zero_video_rows(g.data_ptr(), ab, B, T, Cout, s - 1, 1, ctx.stream);
    tap(-s);
  }
}

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
  const int64_t Cout = weight_in.size(0), K = weight_in.size(2), P = K / 2;
  at::Tensor out = at::empty({B, T, Cout}, x.options());
  if (B * T == 0 || Cout == 0) return out;
  const at::Tensor bias = has_bias ? bias_in->contiguous() : at::Tensor();
  if (Cin == 0) {  // a conv over no channels: ReLU(bias) at every step
    if (has_bias) out.copy_(at::relu(bias).expand({B, T, Cout}));
    else out.zero_();
    return out;
  }
  const at::Tensor wk = weight_in.permute({2, 0, 1}).contiguous();  // (K,Cout,Cin)
  at::Tensor workspace;
  const LtContext ctx = lt_context(x, workspace);
  const bool low = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  at::Tensor acc = low ? at::empty({B, T, Cout}, x.options().dtype(at::kFloat)) : out;
  const size_t wtap = static_cast<size_t>(Cout * Cin) * ctx.types.ab_size;
  auto w_at = [&](int64_t k) { return static_cast<const char*>(wk.const_data_ptr()) + k * wtap; };

  bool first = true;  // shifted taps first; the first one initialises acc
  for (int64_t k = 0; k < K; ++k) {
    const int64_t s = k - P;
    if (s == 0 || std::abs(s) >= T) continue;
    tap_gemm(ctx, x.const_data_ptr(), Cin, w_at(k), true, acc.data_ptr(), Cout, B, T, s, !first);
    if (first) {  // the rows this tap does not reach, zeroed
      zero_video_rows(acc.data_ptr(), ctx.types.cd_size, B, T, Cout, s > 0 ? T - s : 0, std::abs(s), ctx.stream);
      first = false;
    }
  }
  // the centre tap covers every row: it carries the bias + ReLU epilogue where one applies
  const cublasLtEpilogue_t epi = low ? CUBLASLT_EPILOGUE_DEFAULT
                                     : (has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU);
  const bool fused = !low && tap_gemm(ctx, x.const_data_ptr(), Cin, w_at(P), true, acc.data_ptr(), Cout, B, T, 0,
                                      !first, epi, has_bias ? bias.const_data_ptr() : nullptr);
  if (fused) {
    forward_guard(x, wk, bias, out, ctx.stream);
  } else {
    tap_gemm(ctx, x.const_data_ptr(), Cin, w_at(P), true, acc.data_ptr(), Cout, B, T, 0, !first);
    bias_relu_cast(acc, bias, out, /*relu=*/true, ctx.stream);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_conv_embed_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& weight,
    c10::List<bool> output_mask, int64_t /*gemm*/) {
  check_inputs(x_in, weight, "temporal_conv_embed_backward");
  const int64_t B = x_in.size(0), T = x_in.size(1), Cin = x_in.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2), P = K / 2;
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
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  // G and db's per-chunk partial sums, one pass over dy and y
  const bool need_g = need_dx || need_dw;
  at::Tensor g = need_g ? at::empty({B, T, Cout}, opts) : at::Tensor();
  // 64 rows per chunk (more when that would exceed the grid's 65535 chunks)
  const int64_t rows_per_chunk = std::max<int64_t>(64, (N + 65534) / 65535);
  const int64_t chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  at::Tensor partial = need_db ? at::empty({chunks, Cout}, opts.dtype(acc_type)) : at::Tensor();
  {
    const dim3 grid(static_cast<unsigned>((Cout + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
    dispatch(x.scalar_type(), [&](auto tag) {
      using T_ = decltype(tag);
      using A = typename AccOf<T_>::type;
      relu_grad_kernel<T_, A><<<grid, kThreads, 0, stream>>>(
          dy.const_data_ptr<T_>(), y.const_data_ptr<T_>(), need_g ? g.data_ptr<T_>() : nullptr,
          need_db ? partial.data_ptr<A>() : nullptr, N, Cout, rows_per_chunk);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (need_db) db.copy_(partial.sum(0));  // a fixed-order reduction: deterministic
  if (!need_g) return {dx, dw, db};

  at::Tensor workspace;
  const LtContext ctx = lt_context(x, workspace);
  const bool low = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  if (need_dx) {  // dx[:, b,t] += W_k^T g[:, b,t-s]: per-video GEMMs, centre tap first
    const at::Tensor wk = weight.permute({2, 0, 1}).contiguous();  // (K,Cout,Cin)
    at::Tensor acc = low ? at::empty({B, T, Cin}, opts.dtype(at::kFloat)) : dx;
    const size_t wtap = static_cast<size_t>(Cout * Cin) * ctx.types.ab_size;
    auto w_at = [&](int64_t k) { return static_cast<const char*>(wk.const_data_ptr()) + k * wtap; };
    tap_gemm(ctx, g.const_data_ptr(), Cout, w_at(P), false, acc.data_ptr(), Cin, B, T, 0, false);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = k - P;  // dx[t] takes g[t - s]: the GEMM's input shift is -s
      if (s != 0 && std::abs(s) < T)
        tap_gemm(ctx, g.const_data_ptr(), Cout, w_at(k), false, acc.data_ptr(), Cin, B, T, -s, true);
    }
    if (low) bias_relu_cast(acc, at::Tensor(), dx, /*relu=*/false, stream);
  }
  if (need_dw) {
    at::Tensor dwk = at::empty({K, Cout, Cin}, opts.dtype(acc_type));
    dweight_gemms(ctx, x, g, dwk);
    if (B > 1 && P > 0) {  // pairs across a video boundary add 0 * x: exact only for finite x there
      at::Tensor flag = at::zeros({1}, opts.dtype(at::kInt));
      flag_large(x, P, std::numeric_limits<double>::infinity(), flag, device, stream);
      dispatch(x.scalar_type(), [&](auto tag) {
        using T_ = decltype(tag);
        using A = typename AccOf<T_>::type;
        dweight_direct_kernel<T_, A><<<grid_for(K * Cout * Cin, device), kThreads, 0, stream>>>(
            x.const_data_ptr<T_>(), dy.const_data_ptr<T_>(), y.const_data_ptr<T_>(), dwk.data_ptr<A>(), B, T, Cin,
            Cout, static_cast<int>(K), flag.const_data_ptr<int>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    dw.copy_(dwk.permute({1, 2, 0}));
  }
  return {dx, dw, db};
}

TORCH_LIBRARY_IMPL(cola_fast, CUDA, m) {
  m.impl("temporal_conv_embed", &temporal_conv_embed_cuda);
  m.impl("temporal_conv_embed_backward", &temporal_conv_embed_backward_cuda);
}

}  // namespace cola_fast
