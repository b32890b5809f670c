// dropout on the CPU, fused: the keep mask comes from a counter-based hash of the element
// index and a 64-bit seed (drawn from torch's generator by the caller), so that one pass
// writes both the output x * mask / (1 - p) and the mask (uint8, for the backward), in any
// thread split and bit-identically for a given seed. torch's CPU dropout draws every element
// with bernoulli_ from the Mersenne twister and multiplies in further passes: at the paper's
// (16, 750, 2048) embedding that was about half of a training step outside the conv.
//
// Random source: element i and seed s give h = lowbias32(lo32(i) * phi ^ lo32(s) +
// hi32(i) * c + hi32(s)) (a well-mixed 32-bit finaliser); the element is kept iff
// h < round((1 - p) * 2^32), i.e. with probability 1 - p up to 2^-32.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

namespace cola_fast {
namespace {

inline uint32_t mix(uint64_t i, uint64_t seed) {
  uint32_t x = (static_cast<uint32_t>(i) * 0x9E3779B9u) ^ static_cast<uint32_t>(seed);
  x += static_cast<uint32_t>(i >> 32) * 0x85EBCA6Bu + static_cast<uint32_t>(seed >> 32);
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

constexpr int64_t kGrain = 1 << 15;

std::tuple<at::Tensor, at::Tensor> dropout_fwd_cpu(const at::Tensor& x_in, double p, int64_t seed) {
  TORCH_CHECK(x_in.device().is_cpu(), "dropout_fwd (CPU): x must be on the CPU");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_fwd: p must lie in [0, 1), got ", p);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  at::Tensor mask = at::empty(x.sizes(), x.options().dtype(at::kByte));
  const int64_t n = x.numel();
  const double keep = 1.0 - p;
  const uint64_t thresh = static_cast<uint64_t>(std::llround(keep * 4294967296.0));  // h < thresh: kept
  const uint64_t s = static_cast<uint64_t>(seed);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t scale = static_cast<acc_t>(1.0 / keep);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    uint8_t* mp = mask.data_ptr<uint8_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const uint8_t m = static_cast<uint64_t>(mix(static_cast<uint64_t>(i), s)) < thresh;
        mp[i] = m;
        op[i] = static_cast<scalar_t>(m ? static_cast<acc_t>(xp[i]) * scale : acc_t(0));
      }
    });
  });
  return {out, mask};
}

at::Tensor dropout_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in, double p) {
  TORCH_CHECK(grad_in.sizes() == mask_in.sizes(), "dropout_bwd: grad ", grad_in.sizes(), " and mask ",
              mask_in.sizes(), " differ");
  TORCH_CHECK(mask_in.scalar_type() == at::kByte, "dropout_bwd: mask must be uint8");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_bwd: p must lie in [0, 1), got ", p);
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor mask = mask_in.contiguous();
  at::Tensor dx = at::empty_like(grad);
  const int64_t n = grad.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "dropout_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t scale = static_cast<acc_t>(1.0 / (1.0 - p));
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const uint8_t* mp = mask.const_data_ptr<uint8_t>();
    scalar_t* dp = dx.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        dp[i] = static_cast<scalar_t>(mp[i] ? static_cast<acc_t>(gp[i]) * scale : acc_t(0));
    });
  });
  return dx;
}

}  // namespace
}  // namespace cola_fast

TORCH_LIBRARY_IMPL(cola_fast, CPU, m) {
  m.impl("dropout_fwd", &cola_fast::dropout_fwd_cpu);
  m.impl("dropout_bwd", &cola_fast::dropout_bwd_cpu);
}
