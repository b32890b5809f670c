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
//   Backward: g = dY * (Y > 0) once (torch's convention: zero gradient where the
//   pre-activation is exactly 0; Y = ReLU(pre) > 0 iff pre > 0), db = column sums of g.
//   g is our own buffer, so for tap k we zero (progressively) the rows of g whose partner
//   row lies outside the video; then both
//     dX[rows+s] += g[rows] @ W_k           and       dW_k = g[rows]^T @ x[rows+s]
//   are flat GEMMs whose leaking terms are exactly zero.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace cola_fast {
namespace {

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

}  // namespace

at::Tensor temporal_conv_embed_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias_in) {
  check_inputs(x_in, weight, bias_in, "temporal_conv_embed");
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), Cin = x.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2), P = K / 2;
  const int64_t N = B * T;
  at::Tensor out = at::empty({B, T, Cout}, x.options());
  if (N == 0 || Cout == 0) return out;
  if (Cin == 0) {
    out.zero_();
  } else {
    // W_k contiguous (Cout,Cin) for every tap: (K,Cout,Cin), a small copy per call.
    const at::Tensor Wt = weight.permute({2, 0, 1}).contiguous();
    const at::Tensor x2 = x.view({N, Cin});
    at::Tensor o2 = out.view({N, Cout});
    at::mm_out(o2, x2, Wt[P].t());  // centre tap: no shift, no leak
    at::Tensor saved;
    for (int64_t s = 1; s <= P && s < T; ++s) {
      // shift +s: rows (b, T-s..T-1) would read the next video; they get nothing from
      // this tap, so save and restore them around the flat GEMM.
      at::Tensor leak = video_rows(out, T - s, s);
      saved = leak.clone();
      o2.narrow(0, 0, N - s).addmm_(x2.narrow(0, s, N - s), Wt[P + s].t());
      leak.copy_(saved);
      // shift -s: rows (b, 0..s-1) would read the previous video's last rows.
      leak = video_rows(out, 0, s);
      saved = leak.clone();
      o2.narrow(0, s, N - s).addmm_(x2.narrow(0, 0, N - s), Wt[P - s].t());
      leak.copy_(saved);
    }
  }
  // Epilogue: bias + ReLU in one pass.
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  const at::Tensor bias = has_bias ? bias_in->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "temporal_conv_embed_epilogue", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* bp = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(Cout, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* row = o + r * Cout;
        if (bp) {
          for (int64_t c = 0; c < Cout; ++c) {
            const scalar_t v = row[c] + bp[c];
            row[c] = v > scalar_t(0) ? v : scalar_t(0);
          }
        } else {
          for (int64_t c = 0; c < Cout; ++c) row[c] = row[c] > scalar_t(0) ? row[c] : scalar_t(0);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_conv_embed_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& weight,
    c10::List<bool> output_mask) {
  check_inputs(x_in, weight, std::nullopt, "temporal_conv_embed_backward");
  const int64_t B = x_in.size(0), T = x_in.size(1), Cin = x_in.size(2);
  const int64_t Cout = weight.size(0), K = weight.size(2), P = K / 2;
  const int64_t N = B * T;
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

  const at::Tensor go = grad_out_in.contiguous();
  const at::Tensor y = out_in.contiguous();
  // g = dY * (Y > 0), computed once; db (column sums of g) in the same pass, with
  // per-chunk partial sums in double (or the type itself for double) then combined.
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
          for (int64_t c = 0; c < Cout; ++c) orow[c] = yr[c] > scalar_t(0) ? gr[c] : scalar_t(0);
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
  if (!need_dx && !need_dw) return {dx, dw, db};
  if (N == 0 || Cin == 0 || Cout == 0) {
    if (need_dx) dx.zero_();
    if (need_dw) dw.zero_();
    return {dx, dw, db};
  }

  const at::Tensor x = x_in.contiguous();
  const at::Tensor x2 = x.view({N, Cin});
  const at::Tensor g2 = g.view({N, Cout});
  const at::Tensor Wt = need_dx ? weight.permute({2, 0, 1}).contiguous() : at::Tensor();  // (K,Cout,Cin)
  at::Tensor dwt = need_dw ? at::empty({K, Cout, Cin}, opts) : at::Tensor();           // dW_k per tap
  at::Tensor dx2 = need_dx ? dx.view({N, Cin}) : at::Tensor();

  // Centre tap.
  if (need_dx) at::mm_out(dx2, g2, Wt[P]);
  if (need_dw) {
    at::Tensor d = dwt[P];
    at::mm_out(d, g2.t(), x2);
  }
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
      if (need_dx) dx2.narrow(0, s, N - s).addmm_(g2.narrow(0, 0, N - s), Wt[P + s]);
      if (need_dw) {
        at::Tensor d = dwt[P + s];
        at::mm_out(d, g2.narrow(0, 0, N - s).t(), x2.narrow(0, s, N - s));
      }
    }
    video_rows(g, T - pm, pm).copy_(tail_saved);
    // Negative shifts: partner t-s lies before the video start for the first s rows.
    for (int64_t s = 1; s <= P; ++s) {
      if (s >= T) {
        if (need_dw) dwt[P - s].zero_();
        continue;
      }
      video_rows(g, s - 1, 1).zero_();
      if (need_dx) dx2.narrow(0, 0, N - s).addmm_(g2.narrow(0, s, N - s), Wt[P - s]);
      if (need_dw) {
        at::Tensor d = dwt[P - s];
        at::mm_out(d, g2.narrow(0, s, N - s).t(), x2.narrow(0, 0, N - s));
      }
    }
  }
  if (need_dw) dw.copy_(dwt.permute({1, 2, 0}));
  return {dx, dw, db};
}

TORCH_LIBRARY_IMPL(cola_fast, CPU, m) {
  m.impl("temporal_conv_embed", &temporal_conv_embed_cpu);
  m.impl("temporal_conv_embed_backward", &temporal_conv_embed_backward_cpu);
}

}  // namespace cola_fast
