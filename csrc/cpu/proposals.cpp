// Proposal generation helpers (COLA_SPEC 5.5-5.7) on the CPU, bit-identical to the loop-style
// reference (cola_fast/evaluation/reference.py), which sums every run mean with np.mean.
//
// np.add.reduce of a contiguous 1-D float array is numpy's pairwise summation: below 8
// elements a plain loop; up to 128 elements eight accumulators over blocks of 8, combined as
// ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the tail one by one; above 128 the array is split at
// n/2 rounded down to a multiple of 8 and both halves summed that way, left + right. The result
// starts from the additive identity (0 + sum). np.mean divides that by the count. Written here
// from that description; tests/test_proposals_native.py checks it against numpy bit for bit.
//
// Ops (schemas in csrc/ops.cpp, section "proposals"):
//   pairwise_sum(x, starts, counts): numpy's sum of x[starts[i] : starts[i] + counts[i]].
//   proposal_runs(...): runs at every threshold of every (video, class) curve, their inner and
//     outer means and scores, in the reference's pooling order.
//   nms_groups(...): greedy NMS (reference.nms) of each group of proposals.
#include <torch/library.h>
#include <ATen/ATen.h>

// numpy rounds every product before adding: a * b + c must never become one fused multiply-add
// (compilers may contract on targets with FMA). rounded() pins the product as a plain double.
// (A file-wide `#pragma GCC optimize` would also do it but stops inlining of header functions.)
namespace {
inline double rounded(double p) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(p));
#else
  volatile double v = p;
  p = v;
#endif
  return p;
}
}  // namespace

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kBlock = 128;  // numpy's PW_BLOCKSIZE

template <typename T>
T pairwise_sum(const T* a, int64_t n) {
  if (n < 8) {
    T res = T(0);
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  } else if (n <= kBlock) {
    T r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    int64_t i = 8;
    const int64_t stop = n - (n % 8);
    for (; i < stop; i += 8) {
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    }
    T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  } else {
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
  }
}

// np.add.reduce: the identity 0 plus the pairwise sum
template <typename T>
inline T numpy_sum(const T* a, int64_t n) {
  return T(0) + pairwise_sum(a, n);
}

void check_1d(const at::Tensor& t, const char* name, at::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 1, name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dt, name, " must be ", dt, ", got ", t.scalar_type());
}

at::Tensor pairwise_sum_cpu(const at::Tensor& x_, const at::Tensor& starts_, const at::Tensor& counts_) {
  TORCH_CHECK(x_.device().is_cpu() && x_.dim() == 1, "pairwise_sum: x must be a 1-D CPU tensor, got ",
              x_.sizes());
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "pairwise_sum: x must be float32 or float64, got ", x_.scalar_type());
  check_1d(starts_, "pairwise_sum: starts", at::kLong);
  check_1d(counts_, "pairwise_sum: counts", at::kLong);
  TORCH_CHECK(starts_.numel() == counts_.numel(), "pairwise_sum: starts and counts differ in length (",
              starts_.numel(), " vs ", counts_.numel(), ")");
  const at::Tensor x = x_.contiguous(), starts = starts_.contiguous(), counts = counts_.contiguous();
  const int64_t m = starts.numel(), N = x.numel();
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* ct = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < m; ++i) {
    TORCH_CHECK(ct[i] >= 0 && st[i] >= 0 && st[i] + ct[i] <= N, "pairwise_sum: slice ", i, " [", st[i],
                ", ", st[i] + ct[i], ") is outside x of length ", N);
  }
  at::Tensor out = at::empty({m}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pairwise_sum", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < m; ++i) po[i] = numpy_sum(px + st[i], ct[i]);
  });
  return out;
}

// Runs of {j : v[j] >= th and v[j] > 0} for every threshold (the published
// `a[a < th] = 0; a > 0`), from the number of (sorted) thresholds each position passes.
// runs[r] holds the runs of the r-th smallest threshold, in position order.
void runs_all_thresholds(const double* v, int64_t L, const std::vector<double>& ths,
                         std::vector<std::vector<std::pair<int64_t, int64_t>>>& runs,
                         std::vector<int64_t>& open) {
  const int64_t F = static_cast<int64_t>(ths.size());
  for (auto& r : runs) r.clear();
  int64_t prev = 0;
  for (int64_t j = 0; j <= L; ++j) {
    int64_t lvl = 0;
    if (j < L && v[j] > 0) {
      lvl = std::upper_bound(ths.begin(), ths.end(), v[j]) - ths.begin();
    }
    if (lvl > prev) {
      for (int64_t r = prev; r < lvl; ++r) open[r] = j;
    } else if (lvl < prev) {
      for (int64_t r = lvl; r < prev; ++r) runs[r].emplace_back(open[r], j - 1);
    }
    prev = lvl;
  }
  (void)F;
}

struct Sorted {
  std::vector<double> ths;      // ascending
  std::vector<int64_t> rank;    // rank[f]: position of threshold f in ths
};

Sorted sort_thresholds(const at::Tensor& th) {
  const int64_t F = th.numel();
  const double* p = th.data_ptr<double>();
  std::vector<int64_t> order(F);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] < p[b]; });
  Sorted s;
  s.ths.resize(F);
  s.rank.resize(F);
  for (int64_t r = 0; r < F; ++r) {
    s.ths[r] = p[order[r]];
    s.rank[order[r]] = r;
  }
  return s;
}

using RunsOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The runs of every (video, class) segment k at every threshold, in the reference's pooling
// order, with their scores. get_w(k): the segment's upsampled cas curve (length vl[sv[k]]);
// get_a(v): video v's upsampled actionness (called once per video, videos in order).
template <typename GetW, typename GetA>
RunsOut runs_core(int64_t S, const int64_t* sv, const int64_t* vl, GetW get_w, GetA get_a,
                  const at::Tensor& cas_th, const at::Tensor& act_th, const double* bo, double outer_ratio,
                  int64_t min_run) {
  const Sorted cs = sort_thresholds(cas_th), as = sort_thresholds(act_th);
  const int64_t nc = cas_th.numel(), na = act_th.numel();
  const double* cth = cas_th.data_ptr<double>();

  std::vector<int64_t> o_seg, o_f, o_s, o_e;
  std::vector<double> o_score;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> cruns(nc), aruns(na);
  std::vector<int64_t> open(std::max<int64_t>(std::max(nc, na), 1));
  std::vector<double> buf;
  int64_t act_vid = -1;

  for (int64_t k = 0; k < S; ++k) {
    const int64_t v = sv[k], L = vl[v];
    const double* w = get_w(k);
    if (v != act_vid) {  // actionness runs once per video, shared by its classes
      runs_all_thresholds(get_a(v), L, as.ths, aruns, open);
      act_vid = v;
    }
    runs_all_thresholds(w, L, cs.ths, cruns, open);
    for (int64_t f = 0; f < nc + na; ++f) {
      const bool is_cas = f < nc;
      const auto& rr = is_cas ? cruns[cs.rank[f]] : aruns[as.rank[f - nc]];
      if (rr.empty()) continue;
      // the published `if not positions.any()` also skips a lone candidate at position 0
      if (rr.size() == 1 && rr[0].first == 0 && rr[0].second == 0) continue;
      const double th = is_cas ? cth[f] : 0.0;
      for (const auto& run : rr) {
        const int64_t s = run.first, e = run.second, n = e - s + 1;
        if (n < min_run) continue;
        const double inner = numpy_sum(w + s, n) / static_cast<double>(n);
        const double dn = static_cast<double>(n);
        const int64_t os_ = std::max<int64_t>(0, static_cast<int64_t>(static_cast<double>(s) - rounded(outer_ratio * dn)));
        const int64_t oe_ = std::min<int64_t>(L - 1, static_cast<int64_t>(static_cast<double>(e) + rounded(outer_ratio * dn)));
        const int64_t n1 = s - os_, n2 = std::max<int64_t>(oe_ - e, 0), no = n1 + n2;
        double score;
        if (no > 0) {
          buf.resize(no);
          for (int64_t j = 0; j < n1; ++j) buf[j] = w[os_ + j];
          for (int64_t j = 0; j < n2; ++j) buf[n1 + j] = w[e + 1 + j];
          if (is_cas) {  // the reference reads the thresholded curve there
            for (int64_t j = 0; j < no; ++j)
              if (buf[j] < th) buf[j] = 0.0;
          }
          const double outer = numpy_sum(buf.data(), no) / static_cast<double>(no);
          score = (inner - outer) + bo[k];
        } else {
          score = inner + bo[k];  // inner - 0 == inner
        }
        o_seg.push_back(k);
        o_f.push_back(f);
        o_s.push_back(s);
        o_e.push_back(e);
        o_score.push_back(score);
      }
    }
  }
  const int64_t P = static_cast<int64_t>(o_seg.size());
  auto li = at::TensorOptions().dtype(at::kLong);
  at::Tensor t_seg = at::empty({P}, li), t_f = at::empty({P}, li), t_s = at::empty({P}, li),
             t_e = at::empty({P}, li), t_score = at::empty({P}, at::TensorOptions().dtype(at::kDouble));
  std::copy(o_seg.begin(), o_seg.end(), t_seg.data_ptr<int64_t>());
  std::copy(o_f.begin(), o_f.end(), t_f.data_ptr<int64_t>());
  std::copy(o_s.begin(), o_s.end(), t_s.data_ptr<int64_t>());
  std::copy(o_e.begin(), o_e.end(), t_e.data_ptr<int64_t>());
  std::copy(o_score.begin(), o_score.end(), t_score.data_ptr<double>());
  return {t_seg, t_f, t_s, t_e, t_score};
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> proposal_runs_cpu(
    const at::Tensor& cas_bank_, const at::Tensor& seg_off_, const at::Tensor& seg_vid_,
    const at::Tensor& act_bank_, const at::Tensor& act_off_, const at::Tensor& vid_len_,
    const at::Tensor& cas_th_, const at::Tensor& act_th_, const at::Tensor& bonus_, double outer_ratio,
    int64_t min_run) {
  check_1d(cas_bank_, "proposal_runs: cas_bank", at::kDouble);
  check_1d(seg_off_, "proposal_runs: seg_off", at::kLong);
  check_1d(seg_vid_, "proposal_runs: seg_vid", at::kLong);
  check_1d(act_bank_, "proposal_runs: act_bank", at::kDouble);
  check_1d(act_off_, "proposal_runs: act_off", at::kLong);
  check_1d(vid_len_, "proposal_runs: vid_len", at::kLong);
  check_1d(cas_th_, "proposal_runs: cas_th", at::kDouble);
  check_1d(act_th_, "proposal_runs: act_th", at::kDouble);
  check_1d(bonus_, "proposal_runs: bonus", at::kDouble);
  const at::Tensor cas_bank = cas_bank_.contiguous(), seg_off = seg_off_.contiguous(),
                   seg_vid = seg_vid_.contiguous(), act_bank = act_bank_.contiguous(),
                   act_off = act_off_.contiguous(), vid_len = vid_len_.contiguous(),
                   cas_th = cas_th_.contiguous(), act_th = act_th_.contiguous(), bonus = bonus_.contiguous();
  const int64_t S = seg_off.numel(), V = vid_len.numel();
  TORCH_CHECK(seg_vid.numel() == S && bonus.numel() == S, "proposal_runs: seg_off, seg_vid and bonus must have ",
              "one entry per (video, class) segment");
  TORCH_CHECK(act_off.numel() == V, "proposal_runs: act_off and vid_len must have one entry per video");
  TORCH_CHECK(outer_ratio >= 0, "proposal_runs: outer_ratio must be >= 0");
  const double* cb = cas_bank.data_ptr<double>();
  const double* ab = act_bank.data_ptr<double>();
  const int64_t* so = seg_off.data_ptr<int64_t>();
  const int64_t* sv = seg_vid.data_ptr<int64_t>();
  const int64_t* ao = act_off.data_ptr<int64_t>();
  const int64_t* vl = vid_len.data_ptr<int64_t>();
  const double* bo = bonus.data_ptr<double>();
  for (int64_t v = 0; v < V; ++v) {
    TORCH_CHECK(vl[v] >= 1 && ao[v] >= 0 && ao[v] + vl[v] <= act_bank.numel(),
                "proposal_runs: actionness curve of video ", v, " is outside act_bank");
  }
  for (int64_t k = 0; k < S; ++k) {
    TORCH_CHECK(sv[k] >= 0 && sv[k] < V && (k == 0 || sv[k] >= sv[k - 1]),
                "proposal_runs: seg_vid must be non-decreasing video indices");
    TORCH_CHECK(so[k] >= 0 && so[k] + vl[sv[k]] <= cas_bank.numel(), "proposal_runs: cas curve of segment ",
                k, " is outside cas_bank");
  }
  return runs_core(
      S, sv, vl, [&](int64_t k) { return cb + so[k]; }, [&](int64_t v) { return ab + ao[v]; }, cas_th, act_th, bo,
      outer_ratio, min_run);
}

// Greedy NMS of reference.nms for each group [bounds[g], bounds[g+1]) of proposals.
// order empty: the rank order is score descending, computed here; items with equal score and
// equal key (the same segment) are the same row, so their order does not matter, but equal
// scores of different segments do: numpy's argsort decides those, so such groups are returned in
// `ties` (and nothing of them in `kept`) for the caller to rank with numpy and pass back.
// order given (N entries, a permutation keeping each group in its bounds, best first): used as is.
// Returns (kept indices, group by group, best first; tie groups).
// The greedy visits, for each kept proposal, only those whose start lies in the window where
// IoU >= thresh is possible (start_j >= start_i - len_i (1 - t) / t, start_j <= end_i + 1, widened
// by a margin); the exact IoU of the reference decides.
std::tuple<at::Tensor, at::Tensor> nms_groups_cpu(const at::Tensor& score_, const at::Tensor& x1_,
                                                  const at::Tensor& x2_, const at::Tensor& key_,
                                                  const at::Tensor& bounds_, const at::Tensor& order_,
                                                  double thresh) {
  check_1d(score_, "nms_groups: score", at::kDouble);
  check_1d(x1_, "nms_groups: x1", at::kDouble);
  check_1d(x2_, "nms_groups: x2", at::kDouble);
  check_1d(key_, "nms_groups: key", at::kLong);
  check_1d(bounds_, "nms_groups: bounds", at::kLong);
  check_1d(order_, "nms_groups: order", at::kLong);
  const int64_t N = score_.numel();
  TORCH_CHECK(x1_.numel() == N && x2_.numel() == N && key_.numel() == N,
              "nms_groups: score, x1, x2 and key must have the same length");
  TORCH_CHECK(order_.numel() == 0 || order_.numel() == N, "nms_groups: order must be empty or have ", N,
              " entries, got ", order_.numel());
  TORCH_CHECK(thresh > 0 && thresh <= 1, "nms_groups: thresh must be in (0, 1], got ", thresh);
  const at::Tensor score = score_.contiguous(), x1 = x1_.contiguous(), x2 = x2_.contiguous(),
                   key = key_.contiguous(), bounds = bounds_.contiguous(), given = order_.contiguous();
  const double* sc = score.data_ptr<double>();
  const double* a1 = x1.data_ptr<double>();
  const double* a2 = x2.data_ptr<double>();
  const int64_t* ky = key.data_ptr<int64_t>();
  const int64_t* bd = bounds.data_ptr<int64_t>();
  const int64_t* go = given.numel() ? given.data_ptr<int64_t>() : nullptr;
  const int64_t G = bounds.numel() - 1;
  TORCH_CHECK(G >= 0 && (G == 0 || (bd[0] == 0 && bd[G] == N)), "nms_groups: bounds must run from 0 to N");
  const double reach = (1.0 - thresh) / thresh;
  std::vector<int64_t> kept, ties, order, by_start;
  std::vector<double> X1, X2, area, S1;
  std::vector<char> dead;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t lo = bd[g], hi = bd[g + 1];
    TORCH_CHECK(hi >= lo, "nms_groups: bounds must be non-decreasing");
    const int64_t M = hi - lo;
    if (M == 0) continue;
    int64_t m = 0;
    if (go) {
      order.assign(go + lo, go + hi);
      for (int64_t q = 0; q < M; ++q)
        TORCH_CHECK(order[q] >= lo && order[q] < hi, "nms_groups: order leaves group ", g);
      m = M;
    } else {
      order.resize(M);
      std::iota(order.begin(), order.end(), lo);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (sc[a] != sc[b]) return sc[a] > sc[b];
        if (ky[a] != ky[b]) return ky[a] < ky[b];
        return a < b;
      });
      bool tie = false;
      for (int64_t q = 1; q < M && !tie; ++q) {
        tie = sc[order[q]] == sc[order[q - 1]] && ky[order[q]] != ky[order[q - 1]];
      }
      if (tie) {
        ties.push_back(g);
        continue;
      }
      // drop repeated copies of a row (same score => same key here; the first copy suppresses
      // the others: IoU 1 >= thresh)
      for (int64_t q = 0; q < M; ++q) {
        if (q > 0 && sc[order[q]] == sc[order[q - 1]]) continue;
        order[m++] = order[q];
      }
    }
    X1.resize(m);
    X2.resize(m);
    area.resize(m);
    S1.resize(m);
    by_start.resize(m);
    dead.assign(m, 0);
    double span = 1.0;
    for (int64_t q = 0; q < m; ++q) {
      X1[q] = a1[order[q]];
      X2[q] = a2[order[q]];
      area[q] = X2[q] - X1[q] + 1;
      span = std::max(span, std::max(std::abs(X1[q]), std::abs(X2[q])) + std::abs(area[q]));
    }
    const double slack = 1e-6 * span;
    std::iota(by_start.begin(), by_start.end(), 0);
    std::sort(by_start.begin(), by_start.end(), [&](int64_t a, int64_t b) {
      return X1[a] < X1[b] || (X1[a] == X1[b] && a < b);
    });
    for (int64_t q = 0; q < m; ++q) S1[q] = X1[by_start[q]];
    for (int64_t i = 0; i < m; ++i) {
      if (dead[i]) continue;
      kept.push_back(order[i]);
      const double xi1 = X1[i], xi2 = X2[i], ai = area[i];
      const double wlo = xi1 - ai * reach - slack, whi = xi2 + 1 + slack;
      const int64_t p0 = std::lower_bound(S1.begin(), S1.end(), wlo) - S1.begin();
      const int64_t p1 = std::upper_bound(S1.begin(), S1.end(), whi) - S1.begin();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t j = by_start[p];
        if (j <= i || dead[j]) continue;
        const double xx1 = std::max(xi1, X1[j]);
        const double xx2 = std::min(xi2, X2[j]);
        const double inter = std::max(0.0, xx2 - xx1 + 1);
        const double iou = inter / (ai + area[j] - inter);
        if (!(iou < thresh)) dead[j] = 1;
      }
    }
  }
  auto li = at::TensorOptions().dtype(at::kLong);
  at::Tensor t_kept = at::empty({static_cast<int64_t>(kept.size())}, li);
  at::Tensor t_ties = at::empty({static_cast<int64_t>(ties.size())}, li);
  std::copy(kept.begin(), kept.end(), t_kept.data_ptr<int64_t>());
  std::copy(ties.begin(), ties.end(), t_ties.data_ptr<int64_t>());
  return {t_kept, t_ties};
}

// COLA_SPEC 5.3-5.4 for many curves: min-max normalisation along t in the curve's dtype
// (common.minmax_norm) and the 24x linear upsampling of common.upsample (scipy interp1d's
// arithmetic: y_hi - y_lo in the dtype, slope and position in float64). Curve c reads
// x[src_off[c] + t * stride[c]] for t < T[c] and writes out[out_off[c] + i] for i < out_len[c],
// at the positions x_new[i] (np.arange(0, T, 1/scale) is a prefix of one longer np.arange).
template <typename T>
void norm_upsample_one(const T* x, int64_t Tn, int64_t stride, const double* xnew, int64_t Lo, double* out,
                       std::vector<T>& y) {
  const T zero = T(0);
  T mx = x[0], mn = x[0];
  for (int64_t t = 1; t < Tn; ++t) {
    const T v = x[t * stride];
    mx = std::max(mx, v);
    mn = std::min(mn, v);
  }
  const T hi = std::max(mx, zero), lo = std::max(mn, zero);
  T d = hi - lo;
  if (d <= zero) d = T(1);
  y.resize(Tn);
  for (int64_t t = 0; t < Tn; ++t) {
    T r = (x[t * stride] - lo) / d;
    if (r > T(1)) r = T(1);
    if (r < zero) r = zero;
    y[t] = r;
  }
  if (Tn == 1) {
    for (int64_t i = 0; i < Lo; ++i) out[i] = static_cast<double>(y[0]);
    return;
  }
  for (int64_t i = 0; i < Lo; ++i) {
    const double xn = xnew[i];
    int64_t idx = static_cast<int64_t>(xn);  // ceil of xn >= 0 (no libm call)
    if (static_cast<double>(idx) < xn) ++idx;
    idx = std::min<int64_t>(std::max<int64_t>(idx, 1), Tn - 1);
    const int64_t l = idx - 1;
    const T dy = y[idx] - y[l];
    // (y_hi - y_lo) / (x_hi - x_lo) with x_hi - x_lo == 1: the division is exact, skip it
    const double slope = static_cast<double>(dy);
    const double pos = xn - static_cast<double>(l);
    const double prod = rounded(slope * pos);
    out[i] = prod + static_cast<double>(y[l]);
  }
}

at::Tensor norm_upsample_cpu(const at::Tensor& x_, const at::Tensor& src_off_, const at::Tensor& stride_,
                             const at::Tensor& T_, const at::Tensor& out_off_, const at::Tensor& out_len_,
                             const at::Tensor& x_new_, int64_t out_size) {
  TORCH_CHECK(x_.device().is_cpu() && x_.dim() == 1, "norm_upsample: x must be a 1-D CPU tensor");
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "norm_upsample: x must be float32 or float64, got ", x_.scalar_type());
  check_1d(src_off_, "norm_upsample: src_off", at::kLong);
  check_1d(stride_, "norm_upsample: stride", at::kLong);
  check_1d(T_, "norm_upsample: T", at::kLong);
  check_1d(out_off_, "norm_upsample: out_off", at::kLong);
  check_1d(out_len_, "norm_upsample: out_len", at::kLong);
  check_1d(x_new_, "norm_upsample: x_new", at::kDouble);
  const int64_t Cn = src_off_.numel();
  TORCH_CHECK(stride_.numel() == Cn && T_.numel() == Cn && out_off_.numel() == Cn && out_len_.numel() == Cn,
              "norm_upsample: src_off, stride, T, out_off and out_len must have one entry per curve");
  const at::Tensor x = x_.contiguous(), so = src_off_.contiguous(), st = stride_.contiguous(), tt = T_.contiguous(),
                   oo = out_off_.contiguous(), ol = out_len_.contiguous(), xn = x_new_.contiguous();
  const int64_t* pso = so.data_ptr<int64_t>();
  const int64_t* pst = st.data_ptr<int64_t>();
  const int64_t* ptt = tt.data_ptr<int64_t>();
  const int64_t* poo = oo.data_ptr<int64_t>();
  const int64_t* pol = ol.data_ptr<int64_t>();
  const int64_t NX = x.numel();
  for (int64_t c = 0; c < Cn; ++c) {
    TORCH_CHECK(ptt[c] >= 1 && pst[c] >= 1 && pso[c] >= 0 && pso[c] + (ptt[c] - 1) * pst[c] < NX,
                "norm_upsample: curve ", c, " is outside x");
    TORCH_CHECK(pol[c] >= 0 && pol[c] <= xn.numel() && poo[c] >= 0 && poo[c] + pol[c] <= out_size,
                "norm_upsample: output of curve ", c, " is outside out or x_new");
  }
  at::Tensor out = at::empty({out_size}, at::TensorOptions().dtype(at::kDouble));
  double* po = out.data_ptr<double>();
  const double* pxn = xn.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_upsample", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    std::vector<scalar_t> y;
    for (int64_t c = 0; c < Cn; ++c) norm_upsample_one<scalar_t>(px + pso[c], ptt[c], pst[c], pxn, pol[c], po + poo[c], y);
  });
  return out;
}


// proposal_runs on the raw curves: each segment's cas column and each video's actionness are
// normalised and upsampled (norm_upsample_one) into a buffer reused from segment to segment,
// so the upsampled banks are never materialised. cas_x, act_x: float32 or float64 each.
RunsOut proposal_runs_raw_cpu(const at::Tensor& cas_x_, const at::Tensor& cas_src_off_, const at::Tensor& cas_stride_,
                              const at::Tensor& act_x_, const at::Tensor& act_src_off_, const at::Tensor& seg_vid_,
                              const at::Tensor& vid_T_, const at::Tensor& vid_len_, const at::Tensor& x_new_,
                              const at::Tensor& cas_th_, const at::Tensor& act_th_, const at::Tensor& bonus_,
                              double outer_ratio, int64_t min_run) {
  for (const auto* t : {&cas_x_, &act_x_}) {
    TORCH_CHECK(t->device().is_cpu() && t->dim() == 1, "proposal_runs_raw: cas_x and act_x must be 1-D CPU tensors");
    TORCH_CHECK(t->scalar_type() == at::kFloat || t->scalar_type() == at::kDouble,
                "proposal_runs_raw: cas_x and act_x must be float32 or float64, got ", t->scalar_type());
  }
  check_1d(cas_src_off_, "proposal_runs_raw: cas_src_off", at::kLong);
  check_1d(cas_stride_, "proposal_runs_raw: cas_stride", at::kLong);
  check_1d(act_src_off_, "proposal_runs_raw: act_src_off", at::kLong);
  check_1d(seg_vid_, "proposal_runs_raw: seg_vid", at::kLong);
  check_1d(vid_T_, "proposal_runs_raw: vid_T", at::kLong);
  check_1d(vid_len_, "proposal_runs_raw: vid_len", at::kLong);
  check_1d(x_new_, "proposal_runs_raw: x_new", at::kDouble);
  check_1d(cas_th_, "proposal_runs_raw: cas_th", at::kDouble);
  check_1d(act_th_, "proposal_runs_raw: act_th", at::kDouble);
  check_1d(bonus_, "proposal_runs_raw: bonus", at::kDouble);
  const at::Tensor cas_x = cas_x_.contiguous(), cso = cas_src_off_.contiguous(), cst = cas_stride_.contiguous(),
                   act_x = act_x_.contiguous(), aso = act_src_off_.contiguous(), seg_vid = seg_vid_.contiguous(),
                   vid_T = vid_T_.contiguous(), vid_len = vid_len_.contiguous(), x_new = x_new_.contiguous(),
                   cas_th = cas_th_.contiguous(), act_th = act_th_.contiguous(), bonus = bonus_.contiguous();
  const int64_t S = seg_vid.numel(), V = vid_T.numel();
  TORCH_CHECK(cso.numel() == S && cst.numel() == S && bonus.numel() == S,
              "proposal_runs_raw: cas_src_off, cas_stride, seg_vid and bonus must have one entry per segment");
  TORCH_CHECK(aso.numel() == V && vid_len.numel() == V,
              "proposal_runs_raw: act_src_off, vid_T and vid_len must have one entry per video");
  TORCH_CHECK(outer_ratio >= 0, "proposal_runs_raw: outer_ratio must be >= 0");
  const int64_t* pso = cso.data_ptr<int64_t>();
  const int64_t* pst = cst.data_ptr<int64_t>();
  const int64_t* pao = aso.data_ptr<int64_t>();
  const int64_t* sv = seg_vid.data_ptr<int64_t>();
  const int64_t* pT = vid_T.data_ptr<int64_t>();
  const int64_t* vl = vid_len.data_ptr<int64_t>();
  const double* pxn = x_new.data_ptr<double>();
  const int64_t NC = cas_x.numel(), NA = act_x.numel(), NX = x_new.numel();
  for (int64_t v = 0; v < V; ++v) {
    TORCH_CHECK(pT[v] >= 1 && vl[v] >= 1 && vl[v] <= NX, "proposal_runs_raw: video ", v,
                " needs T >= 1 and 1 <= len <= len(x_new)");
    TORCH_CHECK(pao[v] >= 0 && pao[v] + pT[v] <= NA, "proposal_runs_raw: actionness of video ", v,
                " is outside act_x");
  }
  for (int64_t k = 0; k < S; ++k) {
    TORCH_CHECK(sv[k] >= 0 && sv[k] < V && (k == 0 || sv[k] >= sv[k - 1]),
                "proposal_runs_raw: seg_vid must be non-decreasing video indices");
    TORCH_CHECK(pst[k] >= 1 && pso[k] >= 0 && pso[k] + (pT[sv[k]] - 1) * pst[k] < NC,
                "proposal_runs_raw: cas column of segment ", k, " is outside cas_x");
  }
  std::vector<double> wbuf, abuf;
  std::vector<float> yf;
  std::vector<double> yd;
  auto curve = [&](const at::Tensor& x, int64_t off, int64_t T, int64_t stride, int64_t L, std::vector<double>& out) {
    out.resize(L);
    if (x.scalar_type() == at::kFloat)
      norm_upsample_one<float>(x.data_ptr<float>() + off, T, stride, pxn, L, out.data(), yf);
    else
      norm_upsample_one<double>(x.data_ptr<double>() + off, T, stride, pxn, L, out.data(), yd);
    return static_cast<const double*>(out.data());
  };
  return runs_core(
      S, sv, vl, [&](int64_t k) { return curve(cas_x, pso[k], pT[sv[k]], pst[k], vl[sv[k]], wbuf); },
      [&](int64_t v) { return curve(act_x, pao[v], pT[v], 1, vl[v], abuf); }, cas_th, act_th,
      bonus.data_ptr<double>(), outer_ratio, min_run);
}

}  // namespace

TORCH_LIBRARY_IMPL(cola_fast, CPU, m) {
  m.impl("pairwise_sum", &pairwise_sum_cpu);
  m.impl("proposal_runs", &proposal_runs_cpu);
  m.impl("proposal_runs_raw", &proposal_runs_raw_cpu);
  m.impl("nms_groups", &nms_groups_cpu);
  m.impl("norm_upsample", &norm_upsample_cpu);
}
