// Argument checks shared by an op's CPU and CUDA kernels: the same mistake gets the same
// message on every device. A kernel calls its op's check first, then checks what only its
// device limits (the CUDA grid, a device match).
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace cola_fast {
namespace checks {

// snico_loss(emb, ea, eb, ha, hb, tau): emb (B,T,D) floating point, four int64 index sets
// (B, k>0) on emb's device, the easy pair and the hard pair of equal shapes, tau > 0.
inline void snico_loss_inputs(const at::Tensor& emb, const at::Tensor& ea, const at::Tensor& eb,
                              const at::Tensor& ha, const at::Tensor& hb, double tau) {
  TORCH_CHECK(emb.dim() == 3, "snico_loss: emb must be (B,T,D), got ", emb.sizes());
  TORCH_CHECK(at::isFloatingType(emb.scalar_type()), "snico_loss: emb must be floating point, got ",
              emb.scalar_type());
  const int64_t B = emb.size(0), T = emb.size(1), D = emb.size(2);
  TORCH_CHECK(B > 0 && T > 0 && D > 0, "snico_loss: empty emb ", emb.sizes());
  TORCH_CHECK(tau > 0 && std::isfinite(tau), "snico_loss: tau must be a positive finite number, got ", tau);
  const char* names[4] = {"ea", "eb", "ha", "hb"};
  const at::Tensor* idx[4] = {&ea, &eb, &ha, &hb};
  for (int s = 0; s < 4; ++s) {
    const at::Tensor& x = *idx[s];
    TORCH_CHECK(x.scalar_type() == at::kLong, "snico_loss: ", names[s], " must be int64, got ", x.scalar_type());
    TORCH_CHECK(x.dim() == 2 && x.size(0) == B && x.size(1) > 0, "snico_loss: ", names[s],
                " must be (B=", B, ", k>0), got ", x.sizes());
    TORCH_CHECK(x.device() == emb.device(), "snico_loss: ", names[s], " is on ", x.device(), " but emb on ",
                emb.device());
  }
  TORCH_CHECK(ea.sizes() == eb.sizes(), "snico_loss: ea and eb must have the same shape, got ", ea.sizes(),
              " and ", eb.sizes());
  TORCH_CHECK(ha.sizes() == hb.sizes(), "snico_loss: ha and hb must have the same shape, got ", ha.sizes(),
              " and ", hb.sizes());
}

// snico_loss_bwd: the forward's saved tensors (means, mean_norms, neg_norms, logits, lse)
// have the shapes the inputs (B, D, k_easy) give them
inline void snico_loss_saved(const at::Tensor& means, const at::Tensor& mean_norms, const at::Tensor& neg_norms,
                             const at::Tensor& logits, const at::Tensor& lse, int64_t B, int64_t D, int64_t kE) {
  TORCH_CHECK(means.sizes() == at::IntArrayRef({B, 4, D}) && mean_norms.sizes() == at::IntArrayRef({B, 4}) &&
                  neg_norms.sizes() == at::IntArrayRef({B, 2, kE}) &&
                  logits.sizes() == at::IntArrayRef({B, 2, 1 + kE}) && lse.sizes() == at::IntArrayRef({B, 2}),
              "snico_loss_bwd: saved tensors do not match the inputs' shapes");
}

// mine_snippets(actionness, keep, k_easy, k_hard, m, M): actionness and keep (B,T) of one
// shape and dtype, T >= 1, 0 <= k <= T, 1 <= m < M.
inline void mine_snippets_inputs(const at::Tensor& actionness, const at::Tensor& keep, int64_t k_easy,
                                 int64_t k_hard, int64_t m, int64_t M) {
  TORCH_CHECK(actionness.dim() == 2, "mine_snippets: actionness must be (B,T), got ", actionness.sizes());
  TORCH_CHECK(keep.sizes() == actionness.sizes(), "mine_snippets: keep ", keep.sizes(),
              " must have the shape of actionness ", actionness.sizes());
  TORCH_CHECK(keep.scalar_type() == actionness.scalar_type(), "mine_snippets: keep dtype ",
              keep.scalar_type(), " must equal actionness dtype ", actionness.scalar_type());
  const int64_t T = actionness.size(1);
  TORCH_CHECK(T >= 1, "mine_snippets: T must be >= 1");
  TORCH_CHECK(0 <= k_easy && k_easy <= T, "mine_snippets: k_easy=", k_easy, " must lie in [0, T=", T, "]");
  TORCH_CHECK(0 <= k_hard && k_hard <= T, "mine_snippets: k_hard=", k_hard, " must lie in [0, T=", T, "]");
  TORCH_CHECK(1 <= m && m < M, "mine_snippets: need 1 <= m < M, got m=", m, ", M=", M);
}

}  // namespace checks
}  // namespace cola_fast
