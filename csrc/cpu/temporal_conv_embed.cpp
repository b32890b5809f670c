// temporal_conv_embed on the CPU: ReLU(Conv1d(x) + bias) on channels-last x (B,T,Cin),
// weight (Cout,Cin,K) with K odd, zero padding K/2 inside each video. Forward and fused
// backward (dX, dW, db with the ReLU mask applied once).
//
// Algorithm (implicit GEMM, no im2col, no permute copies):
//   With N = B*T rows, x and out are the row-major matrices x2 (N,Cin), o2 (N,Cout).
//   Tap k has shift s = k - K/2: out[b,t] += x[b,t+s] @ W_k^T whenever 0 <= t+s < T.
//   Each tap is ONE flat GEMM over all N rows (BLAS on shifted row views, no copy):
//     s > 0: o2[0:N-s] += x2[s:N] @ W_k^T      s < 0: o2[-s:N] += x2[0:N+s] @ W_k^T
//   The flat view lets a row near a video's end read the first rows of the next video
//   ("leak"). The rows that leak are exactly the rows that receive nothing from this tap
//   (their true source lies in the zero padding), so we save those few rows (B*|s|) before
//   the GEMM and put them back after it: exact zero padding, no padded copy of x.
//   Bias and ReLU are applied in one pass at the end.
//
//   Backward: g = dY where Y > 0 or Y is NaN, 0 where Y <= 0, once (torch's threshold_backward:
//   a zero gradient where the pre-activation is exactly 0, the gradient passing through a NaN
//   output), db = column sums of g.
//   g is our own buffer, so for tap k we zero (progressively) the rows of g whose partner
//   row lies outside the video; then both
//     dX[rows+s] += g[rows] @ W_k           and       dW_k = g[rows]^T @ x[rows+s]
//   are flat GEMMs whose leaking terms are exactly zero.
//
// Kernel sizes that are multiples of 3 with an even T (THUMOS'14: K = 3, T = 750; ActivityNet
// 1.2: K = 9, T = 50) take the Winograd F(2,3) path instead: outputs are computed in pairs
// (2j, 2j+1) from the four inputs x[2j-1..2j+2] of the same video (zero outside it) with 4
// multiplications per pair instead of 6,
//   V = B^T d:  v0 = d0 - d2, v1 = d1 + d2, v2 = d2 - d1, v3 = d1 - d3
//   U = G w:    u0 = w0, u1 = (w0 + w1 + w2) / 2, u2 = (w0 - w1 + w2) / 2, u3 = w2
//   y = A^T m:  y0 = m0 + m1 + m2, y1 = m1 - m2 - m3,     m_i = v_i @ u_i^T,
// i.e. 4 GEMMs of N/2 rows instead of 3 of N rows: 2/3 of the multiply-adds. K = 3g taps are
// g groups of 3: every group's 3-tap convolution runs over x zero-padded by 3(g-1)/2 rows per
// video end, all groups in one GEMM per point, and out[t] = sum_a z_a(t + 3a) (for K = 9,
// T = 50: 0.75 of the direct multiply-adds). The transforms are single passes over memory
// (bias and ReLU folded into the output one). For K = 3 the backward uses the same identity:
// dX is the same kind of convolution of g with the taps reversed and transposed, and
// dW = G^T [(A g) (x) (B^T d)] summed over pairs, again 4 GEMMs of N/2 rows (K = 9 keeps the
// shifted GEMMs in the backward). The result differs from the direct sum by rounding only
// (cuDNN and oneDNN offer the same algorithm); COLA_FAST_CONV_WINOGRAD=0 turns it off.
// Non-finite values: Winograd's transforms add and subtract inputs before they multiply, and the
// shifted GEMMs sum their taps' partial results, so an infinite or overflowing input can give
// NaN where torch's convolution, one accumulation over all taps and channels, gives +-inf.
// Whenever a pre-activation (forward) or a gradient (backward) is not finite, the op is
// recomputed by torch's own convolution (at::conv1d / at::convolution_backward): the reference's
// semantics exactly. Finite inputs never take that path.
//
// GEMM library (the ops' `gemm` argument): every matrix product goes through BLAS (at::mm /
// at::bmm: MKL in torch's x86 builds) or through oneDNN, float32 only (float64 always takes
// BLAS). oneDNN is reached through a public ATen op, at::mkldnn_convolution: a 1x1 convolution
// over M positions with K input and N output channels, in channels-last layout, is the product
// (M,K) @ (K,N) (onednn_mm below). oneDNN runs it on whatever ISA the CPU has (and
// ONEDNN_MAX_CPU_ISA allows). Which library is faster depends on the CPU: on AMD Zen parts MKL
// runs well below oneDNN's rate, on Intel parts they are close. cola_fast.ops chooses by
// measurement (cola_fast/ops/_autotune.py), among the libraries that its probe at import found
// working (cola_fast/ops/_backend.py: gemm_libraries).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace cola_fast {
namespace {

enum GemmLibrary : int64_t { kBlas = 0, kOnednn = 1 };

void check_gemm(int64_t gemm) {
  TORCH_CHECK(gemm == kBlas || gemm == kOnednn, "temporal_conv_embed: gemm must be 0 (BLAS) or 1 (oneDNN), got ",
              gemm);
  TORCH_CHECK(gemm == kBlas || at::hasMKLDNN(), "temporal_conv_embed: gemm=1 (oneDNN) asked for, but this torch "
              "was built without oneDNN (mkldnn)");
}

// a (M,K) @ b (K,N) -> (M,N) through oneDNN: a 1x1 convolution (public ATen op) whose input is
// a's rows as M channels-last positions of K channels and whose weight is b^T (N,K). The input
// is a view when a's rows are dense (every caller's left operand but dW's); the weight is small
// or, for dW, copied once (oneDNN reorders its weights anyway). The output is channels-last:
// (M,N) row-major, returned as a view.
at::Tensor onednn_mm(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ar = (a.stride(1) == 1 && a.stride(0) == a.size(1)) ? a : a.contiguous();
  const int64_t M = ar.size(0), K = ar.size(1), N = b.size(1);
  const at::Tensor x = ar.view({1, 1, M, K}).permute({0, 3, 1, 2});  // (1,K,1,M), channels-last
  const at::Tensor w = b.t().reshape({N, K, 1, 1});
  const at::Tensor y = at::mkldnn_convolution(x, w, /*bias=*/{}, /*padding=*/{0, 0}, /*stride=*/{1, 1},
                                              /*dilation=*/{1, 1}, /*groups=*/1);  // (1,N,1,M)
  return y.permute({0, 2, 3, 1}).reshape({M, N});
}

// result = a @ b, or result += a @ b when accumulate; 2-D or batched 3-D, through the chosen
// library (oneDNN for float32 only).
void matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& result, bool accumulate, int64_t gemm) {
  if (gemm == kOnednn && a.scalar_type() == at::kFloat) {
    if (a.dim() == 3) {
      for (int64_t i = 0; i < a.size(0); ++i) matmul(a[i], b[i], result[i], accumulate, gemm);
      return;
    }
    const at::Tensor p = onednn_mm(a, b);
    if (accumulate) {
      result.add_(p);
    } else {
      result.copy_(p);
    }
  } else if (a.dim() == 3) {
    if (accumulate) {
      result.baddbmm_(a, b);
    } else {
      at::Tensor r = result;
      at::bmm_out(r, a, b);  // out= variant: under autocast, at::bmm would return bf16
    }
  } else {
    if (accumulate) {
      result.addmm_(a, b);
    } else {
      at::Tensor r = result;
      at::mm_out(r, a, b);
    }
  }
}

bool all_finite(const at::Tensor& t) { return t.numel() == 0 || at::isfinite(t).all().item<bool>(); }

// ReLU as torch computes it: a NaN pre-activation stays NaN (v > 0 alone would turn it into 0
// and hide the bad input); the backward passes the gradient through it, as torch does.
template <typename scalar_t>
inline scalar_t relu_keep_nan(scalar_t v) {
  return (v > scalar_t(0) || v != v) ? v : scalar_t(0);
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const char* where) {
  TORCH_CHECK(x.dim() == 3, where, ": x must be (B,T,Cin), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 3, where, ": weight must be (Cout,Cin,K), got ", weight.sizes());
  TORCH_CHECK(weight.size(2) % 2 == 1, where, ": kernel size K must be odd, got ", weight.size(2));
  TORCH_CHECK(weight.size(1) == x.size(2), where, ": weight Cin=", weight.size(1), " but x has Cin=", x.size(2));
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), where, ": x dtype ", x.scalar_type(),
              " != weight dtype ", weight.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, where,
              ": the CPU kernel supports float32 and float64, got ", x.scalar_type());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), where, ": bias must be (Cout,)=(",
                weight.size(0), ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), where, ": bias dtype ", bias->scalar_type(),
                " != x dtype ", x.scalar_type());
  }
}

// Rows t in [t0, t0+n) of every video of a (B,T,C) tensor, as a (B,n,C) view.
inline at::Tensor video_rows(const at::Tensor& t3, int64_t t0, int64_t n) { return t3.narrow(1, t0, n); }

// ---------------------------------------------------------------------------- Winograd F(2,3)
bool winograd_enabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("COLA_FAST_CONV_WINOGRAD");
    return !(e && (std::strcmp(e, "0") == 0 || std::strcmp(e, "false") == 0 || std::strcmp(e, "no") == 0));
  }();
  return enabled;
}

// Forward: K a multiple of 3 (3 for THUMOS'14, 9 for ActivityNet 1.2) and T even.
bool winograd_forward_applies(int64_t T, int64_t K) {
  return K % 3 == 0 && T >= 2 && T % 2 == 0 && winograd_enabled();
}

// Backward: K = 3 only (K = 9 keeps the shifted GEMMs there).
bool winograd_backward_applies(int64_t T, int64_t K) { return K == 3 && winograd_forward_applies(T, K); }

// V (4, B*H, C) = B^T d for every pair j of every video, H = T/2; x (B,T,C) contiguous.
at::Tensor wino_input(const at::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = T / 2, NH = B * H;
  at::Tensor V = at::empty({4, NH, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wino_input", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* v = V.data_ptr<scalar_t>();
    at::parallel_for(0, NH, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t j = r % H;
        const scalar_t* d1 = xp + (r * 2) * C;  // x[b, 2j]  (rows of one video are consecutive)
        const scalar_t* d2 = d1 + C;            // x[b, 2j+1]
        const scalar_t* d0 = j > 0 ? d1 - C : nullptr;
        const scalar_t* d3 = j + 1 < H ? d2 + C : nullptr;
        scalar_t* v0 = v + r * C;
        scalar_t* v1 = v0 + NH * C;
        scalar_t* v2 = v1 + NH * C;
        scalar_t* v3 = v2 + NH * C;
        if (d0) {
          for (int64_t c = 0; c < C; ++c) v0[c] = d0[c] - d2[c];
        } else {
          for (int64_t c = 0; c < C; ++c) v0[c] = -d2[c];
        }
        for (int64_t c = 0; c < C; ++c) {
          v1[c] = d1[c] + d2[c];
          v2[c] = d2[c] - d1[c];
        }
        if (d3) {
          for (int64_t c = 0; c < C; ++c) v3[c] = d1[c] - d3[c];
        } else {
          for (int64_t c = 0; c < C; ++c) v3[c] = d1[c];
        }
      }
    });
  });
  return V;
}

// out (B,T,Co) from M (4, B*H', g*Co), H' = T'/2, T' = T + 3(g-1): group a of the taps
// (w_{3a..3a+2}) gives z_a(p) = m0 + m1 + m2 (p even) or m1 - m2 - m3 (p odd) at pair p/2 of
// its Co columns; out[t] = f(sum_a z_a(t + 3a) + bias), f = ReLU or identity. Returns false
// when some pre-activation is not finite (the caller then takes the direct path).
template <typename scalar_t>
bool wino_output_impl(const scalar_t* m, const scalar_t* bias, bool relu, int64_t B, int64_t T, int64_t g,
                      int64_t Co, scalar_t* o) {
  const int64_t Hp = (T + 3 * (g - 1)) / 2, NH = B * Hp, ld = g * Co;  // M: (4, NH, ld)
  std::atomic<bool> finite{true};
  at::parallel_for(0, B * T, std::max<int64_t>(1, 8192 / std::max<int64_t>(Co, 1)), [&](int64_t r0, int64_t r1) {
    std::vector<scalar_t> acc(Co);
    scalar_t probe = 0;  // 0 * v is NaN exactly when v is not finite: one vectorisable test
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / T, t = r % T;
      for (int64_t c = 0; c < Co; ++c) acc[c] = bias ? bias[c] : scalar_t(0);
      for (int64_t a = 0; a < g; ++a) {
        const int64_t p = t + 3 * a;
        const scalar_t* m0 = m + (b * Hp + p / 2) * ld + a * Co;
        const scalar_t* m1 = m0 + NH * ld;
        const scalar_t* m2 = m1 + NH * ld;
        const scalar_t* m3 = m2 + NH * ld;
        if (p % 2 == 0) {
          for (int64_t c = 0; c < Co; ++c) acc[c] += m0[c] + m1[c] + m2[c];
        } else {
          for (int64_t c = 0; c < Co; ++c) acc[c] += m1[c] - m2[c] - m3[c];
        }
      }
      scalar_t* y = o + r * Co;
      for (int64_t c = 0; c < Co; ++c) probe += scalar_t(0) * acc[c];
      if (relu) {
        for (int64_t c = 0; c < Co; ++c) y[c] = relu_keep_nan(acc[c]);
      } else {
        for (int64_t c = 0; c < Co; ++c) y[c] = acc[c];
      }
    }
    if (probe != probe) finite = false;
  });
  return finite;
}

// out (B,T,Co) contiguous = ReLU?(conv(x) + bias) for a kernel of K = 3g taps, the taps given
// as Ut (4, Ci, g*Co): columns [a*Co, (a+1)*Co) hold (G w_a)^T of group a. For g > 1 the
// groups' 3-tap convolutions run over x zero-padded by 3(g-1)/2 rows at each end of every
// video (T' = T + 3(g-1) rows), all groups in one GEMM per point. Returns false when the
// result holds a non-finite pre-activation.
bool wino_conv(const at::Tensor& x, const at::Tensor& Ut, int64_t g, const at::Tensor& bias, bool relu,
               at::Tensor& out, int64_t gemm) {
  const int64_t B = x.size(0), T = x.size(1), Co = Ut.size(2) / g, L = 3 * (g - 1) / 2;
  at::Tensor xp = x;
  if (L > 0) {
    xp = at::zeros({B, T + 2 * L, x.size(2)}, x.options());
    xp.narrow(1, L, T).copy_(x);
  }
  const at::Tensor V = wino_input(xp);
  at::Tensor M = at::empty({4, V.size(1), Ut.size(2)}, x.options());
  matmul(V, Ut, M, /*accumulate=*/false, gemm);
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wino_output", [&] {
    finite = wino_output_impl<scalar_t>(M.const_data_ptr<scalar_t>(),
                                        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, relu, B, T, g, Co,
                                        out.data_ptr<scalar_t>());
  });
  return finite;
}

// A g for every pair: (4, B*H, C) = (g[2j], g[2j] + g[2j+1], g[2j] - g[2j+1], -g[2j+1]).
at::Tensor wino_grad_pairs(const at::Tensor& g) {
  const int64_t C = g.size(2), NH = g.size(0) * (g.size(1) / 2);
  at::Tensor A = at::empty({4, NH, C}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "wino_grad_pairs", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* a = A.data_ptr<scalar_t>();
    at::parallel_for(0, NH, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* g0 = gp + (2 * r) * C;
        const scalar_t* g1 = g0 + C;
        scalar_t* a0 = a + r * C;
        scalar_t* a1 = a0 + NH * C;
        scalar_t* a2 = a1 + NH * C;
        scalar_t* a3 = a2 + NH * C;
        for (int64_t c = 0; c < C; ++c) {
          a0[c] = g0[c];
          a1[c] = g0[c] + g1[c];
          a2[c] = g0[c] - g1[c];
          a3[c] = -g1[c];
        }
      }
    });
  });
  return A;
}

// U = G w for every group a of 3 taps of weight (Cout,Cin,3g), in one pass over the weight:
// U (4, g*Cout, Cin) with rows a*Cout + o holding (w0, (w0+w1+w2)/2, (w0-w1+w2)/2, w2) for the taps
// (w0, w1, w2) = (w[.,.,3a], w[.,.,3a+1], w[.,.,3a+2]), or (w[.,.,2], w[.,.,1], w[.,.,0]) when
// reversed (K = 3 only: the backward's dX convolution).
at::Tensor wino_filter(const at::Tensor& weight_in, bool reversed) {
  const at::Tensor w = weight_in.contiguous();
  const int64_t Cout = w.size(0), Cin = w.size(1), K = w.size(2), g = K / 3;
  at::Tensor U = at::empty({4, g * Cout, Cin}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "wino_filter", [&] {
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    scalar_t* u = U.data_ptr<scalar_t>();
    const int64_t plane = g * Cout * Cin;
    at::parallel_for(0, g * Cout, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {  // r = a * Cout + o
        const int64_t a = r / Cout, o = r % Cout;
        const scalar_t* src = wp + o * Cin * K + 3 * a;
        const int64_t k0 = reversed ? 2 : 0, k2 = reversed ? 0 : 2;
        scalar_t* u0 = u + r * Cin;
        for (int64_t i = 0; i < Cin; ++i) {
          const scalar_t w0 = src[i * K + k0], w1 = src[i * K + 1], w2 = src[i * K + k2];
          const scalar_t s = w0 + w2;
          u0[i] = w0;
          u0[plane + i] = (s + w1) * scalar_t(0.5);
          u0[2 * plane + i] = (s - w1) * scalar_t(0.5);
          u0[3 * plane + i] = w2;
        }
      }
    });
  });
  return U;
}

// dW (Cout,Cin,3) = G^T Z from Z (4, Cout, Cin) in one pass: (z0 + h, (z1 - z2)/2, h + z3), h =
// (z1 + z2)/2. Returns false when some value is not finite.
bool wino_filter_grad(const at::Tensor& Z, at::Tensor& dw) {
  const int64_t n = Z.size(1) * Z.size(2);
  std::atomic<bool> finite{true};
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "wino_filter_grad", [&] {
    const scalar_t* z = Z.const_data_ptr<scalar_t>();
    scalar_t* d = dw.data_ptr<scalar_t>();
    at::parallel_for(0, n, 4096, [&](int64_t e0, int64_t e1) {
      scalar_t probe = 0;  // 0 * v is NaN exactly when v is not finite
      for (int64_t e = e0; e < e1; ++e) {
        const scalar_t h = (z[n + e] + z[2 * n + e]) * scalar_t(0.5);
        d[3 * e] = z[e] + h;
        d[3 * e + 1] = (z[n + e] - z[2 * n + e]) * scalar_t(0.5);
        d[3 * e + 2] = h + z[3 * n + e];
        probe += scalar_t(0) * (d[3 * e] + d[3 * e + 1] + d[3 * e + 2]);
      }
      if (probe != probe) finite = false;
    });
  });
  return finite;
}

// Direct path, out (B,T,Cout) = ReLU(conv(x) + bias) with x contiguous: one flat GEMM per tap
// over shifted row views (see the header), then bias + ReLU in one pass. Returns false when a
// pre-activation is not finite.
bool direct_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t gemm,
                    at::Tensor& out) {
  const int64_t T = x.size(1), Cin = x.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2), P = K / 2, N = x.size(0) * T;
  if (N == 0 || Cout == 0) return true;
  if (Cin == 0) {
    out.zero_();
  } else {
    // W_k contiguous (Cout,Cin) for every tap: (K,Cout,Cin), a small copy per call.
    const at::Tensor Wt = weight.permute({2, 0, 1}).contiguous();
    const at::Tensor x2 = x.view({N, Cin});
    at::Tensor o2 = out.view({N, Cout});
    matmul(x2, Wt[P].t(), o2, false, gemm);  // centre tap: no shift, no leak
    at::Tensor saved;
    for (int64_t s = 1; s <= P && s < T; ++s) {
      // shift +s: rows (b, T-s..T-1) would read the next video; they get nothing from
      // this tap, so save and restore them around the flat GEMM.
      at::Tensor leak = video_rows(out, T - s, s);
      saved = leak.clone();
      matmul(x2.narrow(0, s, N - s), Wt[P + s].t(), o2.narrow(0, 0, N - s), true, gemm);
      leak.copy_(saved);
      // shift -s: rows (b, 0..s-1) would read the previous video's last rows.
      leak = video_rows(out, 0, s);
      saved = leak.clone();
      matmul(x2.narrow(0, 0, N - s), Wt[P - s].t(), o2.narrow(0, s, N - s), true, gemm);
      leak.copy_(saved);
    }
  }
  // Epilogue: bias + ReLU in one pass.
  std::atomic<bool> finite{true};
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "temporal_conv_embed_epilogue", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(Cout, 1)), [&](int64_t r0, int64_t r1) {
      scalar_t probe = 0;  // 0 * v is NaN exactly when v is not finite
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* row = o + r * Cout;
        if (bp) {
          for (int64_t c = 0; c < Cout; ++c) row[c] += bp[c];
        }
        for (int64_t c = 0; c < Cout; ++c) probe += scalar_t(0) * row[c];
        for (int64_t c = 0; c < Cout; ++c) row[c] = relu_keep_nan(row[c]);
      }
      if (probe != probe) finite = false;
    });
  });
  return finite;
}

// torch's own convolution, for results with non-finite values (see the header).
at::Tensor torch_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor y = at::conv1d(x.transpose(1, 2), weight, bias, {1}, {weight.size(2) / 2});
  return at::relu(y).transpose(1, 2).contiguous();
}

void torch_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& weight, bool need_dx, bool need_dw,
                    at::Tensor& dx, at::Tensor& dw) {
  auto grads = at::convolution_backward(g.transpose(1, 2), x.transpose(1, 2), weight, std::nullopt, {1},
                                        {weight.size(2) / 2}, {1}, false, {0}, 1, {need_dx, need_dw, false});
  if (need_dx) dx.copy_(std::get<0>(grads).transpose(1, 2));
  if (need_dw) dw.copy_(std::get<1>(grads));
}

// Winograd path (K = 3g, T even): fills out and returns true, or returns false when a
// pre-activation is not finite.
bool winograd_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t gemm,
                      at::Tensor& out) {
  const at::Tensor Ut = wino_filter(weight, /*reversed=*/false).transpose(1, 2);  // (4, Cin, g*Cout)
  return wino_conv(x, Ut, weight.size(2) / 3, bias, /*relu=*/true, out, gemm);
}

// g = dY masked where Y <= 0 (B,T,Cout), computed once; db (column sums of g) in the same pass when
// need_db, with per-chunk partial sums in double then combined.
at::Tensor relu_grad(const at::Tensor& go, const at::Tensor& y, bool need_db, at::Tensor& db) {
  const int64_t B = go.size(0), T = go.size(1), Cout = go.size(2), N = B * T;
  const auto opts = go.options();
  at::Tensor g = at::empty({B, T, Cout}, opts);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "temporal_conv_embed_relu_mask", [&] {
    const scalar_t* gp = go.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* o = g.data_ptr<scalar_t>();
    const int64_t nchunk = std::max<int64_t>(1, std::min<int64_t>(N, 4 * at::get_num_threads()));
    std::vector<double> part(need_db ? nchunk * Cout : 0, 0.0);
    at::parallel_for(0, nchunk, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t r0 = N * ch / nchunk, r1 = N * (ch + 1) / nchunk;
        double* acc = need_db ? part.data() + ch * Cout : nullptr;
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* gr = gp + r * Cout;
          const scalar_t* yr = yp + r * Cout;
          scalar_t* orow = o + r * Cout;
          for (int64_t c = 0; c < Cout; ++c) orow[c] = yr[c] <= scalar_t(0) ? scalar_t(0) : gr[c];  // NaN passes, as threshold_backward
          if (acc)
            for (int64_t c = 0; c < Cout; ++c) acc[c] += static_cast<double>(orow[c]);
        }
      }
    });
    if (need_db) {
      scalar_t* dbp = db.data_ptr<scalar_t>();
      for (int64_t c = 0; c < Cout; ++c) {
        double v = 0.0;
        for (int64_t ch = 0; ch < nchunk; ++ch) v += part[ch * Cout + c];
        dbp[c] = static_cast<scalar_t>(v);
      }
    }
  });
  return g;
}

// dX and dW by the shifted GEMMs of the direct path; g is modified and restored.
void direct_backward(at::Tensor& g, const at::Tensor& x, const at::Tensor& weight, bool need_dx, bool need_dw,
                     int64_t gemm, at::Tensor& dx, at::Tensor& dw) {
  const int64_t B = x.size(0), T = x.size(1), Cin = x.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2), P = K / 2, N = B * T;
  const auto opts = x.options();
  const at::Tensor x2 = x.view({N, Cin});
  const at::Tensor g2 = g.view({N, Cout});
  const at::Tensor Wt = need_dx ? weight.permute({2, 0, 1}).contiguous() : at::Tensor();  // (K,Cout,Cin)
  at::Tensor dwt = need_dw ? at::empty({K, Cout, Cin}, opts) : at::Tensor();           // dW_k per tap
  at::Tensor dx2 = need_dx ? dx.view({N, Cin}) : at::Tensor();

  // Centre tap.
  if (need_dx) matmul(g2, Wt[P], dx2, false, gemm);
  if (need_dw) matmul(g2.t(), x2, dwt[P], false, gemm);
  if (P > 0) {
    const int64_t pm = std::min(P, T);
    // Positive shifts: forward tap P+s used x[b,t+s] for out[b,t]; the rows of g whose
    // partner t+s lies past the video end are the last s rows: zero them progressively.
    const at::Tensor tail_saved = video_rows(g, T - pm, pm).clone();
    for (int64_t s = 1; s <= P; ++s) {
      if (s >= T) {
        if (need_dw) dwt[P + s].zero_();
        continue;
      }
      video_rows(g, T - s, 1).zero_();
      if (need_dx) matmul(g2.narrow(0, 0, N - s), Wt[P + s], dx2.narrow(0, s, N - s), true, gemm);
      if (need_dw) matmul(g2.narrow(0, 0, N - s).t(), x2.narrow(0, s, N - s), dwt[P + s], false, gemm);
    }
    video_rows(g, T - pm, pm).copy_(tail_saved);
    // Negative shifts: partner t-s lies before the video start for the first s rows.
    const at::Tensor head_saved = video_rows(g, 0, pm).clone();
    for (int64_t s = 1; s <= P; ++s) {
      if (s >= T) {
        if (need_dw) dwt[P - s].zero_();
        continue;
      }
      video_rows(g, s - 1, 1).zero_();
      if (need_dx) matmul(g2.narrow(0, s, N - s), Wt[P - s], dx2.narrow(0, 0, N - s), true, gemm);
      if (need_dw) matmul(g2.narrow(0, s, N - s).t(), x2.narrow(0, 0, N - s), dwt[P - s], false, gemm);
    }
    video_rows(g, 0, pm).copy_(head_saved);
  }
  if (need_dw) dw.copy_(dwt.permute({1, 2, 0}));
}

// Winograd backward (K = 3, T even): dX is the same convolution of g with the taps reversed and
// transposed, dW = G^T [(A g) (x) (B^T d)] summed over pairs. Returns false when dX or dW holds a
// non-finite value.
bool winograd_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& weight, bool need_dx,
                       bool need_dw, int64_t gemm, at::Tensor& dx, at::Tensor& dw) {
  bool finite = true;
  if (need_dx) {
    // dX[u] = g[u-1] W_2 + g[u] W_1 + g[u+1] W_0: the same convolution, taps (W_2, W_1, W_0)
    const at::Tensor U = wino_filter(weight, /*reversed=*/true);  // (4,Cout,Cin)
    finite = wino_conv(g, U, 1, at::Tensor(), /*relu=*/false, dx, gemm);  // straight into dx (fresh, contiguous)
  }
  if (need_dw && finite) {
    at::Tensor Z = at::empty({4, weight.size(0), weight.size(1)}, x.options());
    matmul(wino_grad_pairs(g).transpose(1, 2), wino_input(x), Z, false, gemm);
    finite = wino_filter_grad(Z, dw);
  }
  return finite;
}

}  // namespace

at::Tensor temporal_conv_embed_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias_in, int64_t gemm) {
  check_inputs(x_in, weight, bias_in, "temporal_conv_embed");
  check_gemm(gemm);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor bias = bias_in.has_value() && bias_in->defined() ? bias_in->contiguous() : at::Tensor();
  const int64_t T = x.size(1), K = weight.size(2);
  at::Tensor out = at::empty({x.size(0), T, weight.size(0)}, x.options());
  const bool finite = x.numel() > 0 && weight.numel() > 0 && winograd_forward_applies(T, K)
                          ? winograd_forward(x, weight, bias, gemm, out)
                          : direct_forward(x, weight, bias, gemm, out);
  return finite ? out : torch_forward(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_conv_embed_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& weight,
    c10::List<bool> output_mask, int64_t gemm) {
  check_inputs(x_in, weight, std::nullopt, "temporal_conv_embed_backward");
  check_gemm(gemm);
  const int64_t B = x_in.size(0), T = x_in.size(1), Cin = x_in.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2);
  TORCH_CHECK(grad_out_in.dim() == 3 && grad_out_in.size(0) == B && grad_out_in.size(1) == T &&
                  grad_out_in.size(2) == Cout,
              "temporal_conv_embed_backward: grad_out must be (B,T,Cout)=(", B, ",", T, ",", Cout, "), got ",
              grad_out_in.sizes());
  TORCH_CHECK(out_in.sizes() == grad_out_in.sizes(), "temporal_conv_embed_backward: out ", out_in.sizes(),
              " and grad_out ", grad_out_in.sizes(), " differ");
  TORCH_CHECK(grad_out_in.scalar_type() == x_in.scalar_type() && out_in.scalar_type() == x_in.scalar_type(),
              "temporal_conv_embed_backward: grad_out/out/x dtypes differ");
  const bool need_dx = output_mask[0], need_dw = output_mask[1], need_db = output_mask[2];
  const auto opts = x_in.options();
  at::Tensor dx = need_dx ? at::empty({B, T, Cin}, opts) : at::empty({0}, opts);
  at::Tensor dw = need_dw ? at::empty({Cout, Cin, K}, opts) : at::empty({0}, opts);
  at::Tensor db = need_db ? at::empty({Cout}, opts) : at::empty({0}, opts);
  if (!need_dx && !need_dw && !need_db) return {dx, dw, db};

  at::Tensor g = relu_grad(grad_out_in.contiguous(), out_in.contiguous(), need_db, db);
  if (!need_dx && !need_dw) return {dx, dw, db};
  if (B * T == 0 || Cin == 0 || Cout == 0) {
    if (need_dx) dx.zero_();
    if (need_dw) dw.zero_();
    return {dx, dw, db};
  }
  const at::Tensor x = x_in.contiguous();
  bool finite;
  if (winograd_backward_applies(T, K)) {
    finite = winograd_backward(g, x, weight, need_dx, need_dw, gemm, dx, dw);
  } else {
    direct_backward(g, x, weight, need_dx, need_dw, gemm, dx, dw);
    finite = (!need_dx || all_finite(dx)) && (!need_dw || all_finite(dw));
  }
  if (!finite) torch_backward(g, x, weight, need_dx, need_dw, dx, dw);
  return {dx, dw, db};
}

TORCH_LIBRARY_IMPL(cola_fast, CPU, m) {
  m.impl("temporal_conv_embed", &temporal_conv_embed_cpu);
  m.impl("temporal_conv_embed_backward", &temporal_conv_embed_backward_cpu);
}

}  // namespace cola_fast
