// mine_snippets CPU kernel body (COLA_SPEC 2.1-2.2), included three times by mine_snippets.cpp,
// each time inside its own namespace: for any x86-64 (SSE2), under "#pragma GCC target" for
// AVX2 (COLA_MINE_AVX2 1) and for AVX-512 (COLA_MINE_AVX512 1). The hot loops have a hand-written
// body per ISA (#if COLA_MINE_AVX512 / #elif COLA_MINE_AVX2 / #else SSE2 or plain C++), each
// next to its scalar meaning; every build returns the same indices. No include guard and no
// includes on purpose: every header is included by mine_snippets.cpp before the target pragma,
// so that no inline function of a library is compiled for AVX2 / AVX-512 (and shared with the
// SSE2 build by the linker).
// Order-preserving unsigned keys: larger value -> larger key; every NaN -> the largest key;
// -0 and +0 -> the same key. Branch-free and in signed arithmetic only, so that loops over
// them vectorise with plain SSE2 (which has no unsigned compares).
inline uint32_t key_of(float v) {
  int32_t b;
  std::memcpy(&b, &v, sizeof b);
  const int32_t mag = b & 0x7fffffff;
  b = mag == 0 ? 0 : b;                                          // -0 -> +0
  const int32_t neg = b >> 31;                                   // arithmetic shift
  int32_t k = b ^ (neg | std::numeric_limits<int32_t>::min());   // neg: ~b, else b | sign
  k = mag > 0x7f800000 ? -1 : k;                                 // NaN -> all ones
  return static_cast<uint32_t>(k);
}

inline uint64_t key_of(double v) {
  int64_t b;
  std::memcpy(&b, &v, sizeof b);
  const int64_t mag = b & 0x7fffffffffffffffll;
  b = mag == 0 ? 0 : b;
  const int64_t neg = b >> 63;
  int64_t k = b ^ (neg | std::numeric_limits<int64_t>::min());
  k = mag > 0x7ff0000000000000ll ? -1 : k;
  return static_cast<uint64_t>(k);
}

inline float value_of(uint32_t k) {  // inverse of key_of (NaN -> a NaN, +-0 -> +0)
  const uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

inline double value_of(uint64_t k) {
  const uint64_t b = (k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k;
  double v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

#if COLA_MINE_AVX2
// ---- AVX2 helpers: 8 lanes of 32 bits --------------------------------------------------------

// key_of on 8 floats, the same steps as the scalar key_of(float) above
inline __m256i key8(__m256 v) {
  __m256i b = _mm256_castps_si256(v);
  const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
  b = _mm256_andnot_si256(_mm256_cmpeq_epi32(mag, _mm256_setzero_si256()), b);                 // -0 -> +0
  const __m256i neg = _mm256_srai_epi32(b, 31);
  __m256i k = _mm256_xor_si256(b, _mm256_or_si256(neg, _mm256_set1_epi32(std::numeric_limits<int32_t>::min())));
  return _mm256_or_si256(k, _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000)));          // NaN -> all ones
}

// value_of on 8 keys: sign bit set -> k & 0x7fffffff, else ~k
inline __m256 value8(__m256i k) {
  const __m256i pos = _mm256_srai_epi32(k, 31);  // all ones where the key's top bit is set
  const __m256i b = _mm256_blendv_epi8(_mm256_xor_si256(k, _mm256_set1_epi32(-1)),
                                       _mm256_and_si256(k, _mm256_set1_epi32(0x7fffffff)), pos);
  return _mm256_castsi256_ps(b);
}

// One bit per lane (bit i = lane i) from a compare result.
inline uint32_t lane_bits(__m256i cmp) {
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(cmp)));
}

// v >= lo per lane, unsigned (AVX2 has no unsigned compare: max(v, lo) == v)
inline __m256i cmpge_epu32(__m256i v, __m256i lo) { return _mm256_cmpeq_epi32(_mm256_max_epu32(v, lo), v); }

// The emulation of AVX-512's compress: for each 8-bit lane mask, the lanes to gather so that
// the selected ones come first, in order (one byte per output lane, the rest 0).
struct CompressTable {
  uint64_t perm[256];
  constexpr CompressTable() : perm() {
    for (int m = 0; m < 256; ++m) {
      uint64_t p = 0;
      int out = 0;
      for (int lane = 0; lane < 8; ++lane)
        if (m >> lane & 1) p |= static_cast<uint64_t>(lane) << (8 * out++);
      perm[m] = p;
    }
  }
};
alignas(64) inline constexpr CompressTable kCompress{};

// The lanes of v whose bit is set in `hit`, moved to the front in order (what
// _mm512_maskz_compress_epi32 does on 16 lanes; the lanes past popcount(hit) are junk).
inline __m256i compress8(__m256i v, uint32_t hit) {
  const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kCompress.perm[hit])));
  return _mm256_permutevar8x32_epi32(v, perm);
}

// The 8 int32 lanes of ix stored at p, as int32 or widened to int64.
inline void store_lanes8(int32_t* p, __m256i ix) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), ix); }
inline void store_lanes8(int64_t* p, __m256i ix) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepu32_epi64(_mm256_castsi256_si128(ix)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4), _mm256_cvtepu32_epi64(_mm256_extracti128_si256(ix, 1)));
}

inline __m256i load8(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline void store8(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

// Horizontal unsigned min / max of 8 lanes.
inline uint32_t reduce_min_epu32(__m256i v) {
  __m128i x = _mm_min_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_min_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm_min_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}
inline uint32_t reduce_max_epu32(__m256i v) {
  __m128i x = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_max_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm_max_epu32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}
#endif

// Scratch space of one thread, reused across its videos.
template <typename K>
struct Scratch {
  // +1 entries: branch-free writes; +SLACK: whole-vector stores of compressed lanes
  static constexpr int64_t SLACK = 16;
  std::vector<K> keys, keys2, keys3, cand, sel_key, tmp_key;
  std::vector<int64_t> sel_idx, tmp_idx, list;
  std::vector<int32_t> zlist, idx32;
  std::vector<K> zkeys;
  std::vector<int32_t> prefix, hist, digits;
  void reserve(int64_t T) {
    digits.resize(T + SLACK);
    zlist.resize(T + SLACK);
    idx32.resize(T + SLACK);
    zkeys.resize(T + SLACK);
    hist.resize(2 * 1024 + 16);
    keys3.resize(T + SLACK);
    keys.resize(T);
    keys2.resize(T);
    list.resize(T + SLACK);
    cand.resize(T);
    sel_key.resize(T + 1);
    tmp_key.resize(T + SLACK);
    sel_idx.resize(T + 1);
    tmp_idx.resize(T + 1);
    prefix.resize(T + 1);
  }
};

// The key at descending position r (0-based) of keys[0..n); `greater` receives the number of
// keys strictly larger than it. MSB-first radix selection with 8-bit digits while many
// candidates remain (each pass keeps only the keys of the digit bin holding position r), then
// std::nth_element on the few left. Bytes above first_shift must be equal in all keys.
template <typename K>
K radix_select_desc(const K* keys, int64_t n, int64_t r, K* cand, int64_t& greater,
                    int first_shift = 8 * sizeof(K) - 8) {
  constexpr int64_t SMALL = 48;
  const K* src = keys;
  int64_t cnt = n;
  greater = 0;
  alignas(64) int32_t hist[4][256];
  for (int shift = first_shift; shift >= 0 && cnt > SMALL; shift -= 8) {
    const bool wide = cnt >= 128;  // four sub-histograms break store-to-load chains
    std::memset(hist, 0, wide ? sizeof hist : sizeof hist[0]);
    int64_t i = 0;
    if (wide) {
      for (; i + 4 <= cnt; i += 4) {
        hist[0][(src[i] >> shift) & 0xff]++;
        hist[1][(src[i + 1] >> shift) & 0xff]++;
        hist[2][(src[i + 2] >> shift) & 0xff]++;
        hist[3][(src[i + 3] >> shift) & 0xff]++;
      }
    }
    for (; i < cnt; ++i) hist[0][(src[i] >> shift) & 0xff]++;
    if (wide)
      for (int b = 0; b < 256; ++b) hist[0][b] += hist[1][b] + hist[2][b] + hist[3][b];
    int b = 255;
    int64_t acc = 0;
    for (; acc + hist[0][b] <= r; --b) acc += hist[0][b];
    r -= acc;
    greater += acc;
    if (hist[0][b] == cnt) continue;  // every candidate has this digit: nothing to drop
    int64_t m = 0;
    for (int64_t j = 0; j < cnt; ++j) {
      const K v = src[j];
      cand[m] = v;
      m += static_cast<int64_t>(((v >> shift) & 0xff) == static_cast<K>(b));
    }
    src = cand;
    cnt = m;
  }
  if (src != cand) {
    std::copy(src, src + cnt, cand);
  }
  std::nth_element(cand, cand + r, cand + cnt, std::greater<K>());
  const K tau = cand[r];
  for (int64_t j = 0; j < r; ++j) greater += static_cast<int64_t>(cand[j] > tau);
  return tau;
}

// Smallest and largest key of keys[0..n), n >= 1. Branch-free (SSE2 compares and selects for
// 32-bit keys, in the signed domain key ^ sign bit).
inline void minmax_keys(const uint32_t* __restrict keys, int64_t n, uint32_t& kmin, uint32_t& kmax) {
#if COLA_MINE_AVX512
  __m512i mn = _mm512_set1_epi32(-1), mx = _mm512_setzero_si512();
  for (int64_t t = 0; t < n; t += 16) {
    const __mmask16 live = n - t >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - t)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(live, keys + t);
    mn = _mm512_mask_min_epu32(mn, live, mn, v);
    mx = _mm512_mask_max_epu32(mx, live, mx, v);
  }
  kmin = _mm512_reduce_min_epu32(mn);
  kmax = _mm512_reduce_max_epu32(mx);
#elif COLA_MINE_AVX2
  // kmin = min(keys[t]), kmax = max(keys[t]): 8 lanes of unsigned min / max, then the tail
  __m256i mn = _mm256_set1_epi32(-1), mx = _mm256_setzero_si256();
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256i v = load8(keys + t);
    mn = _mm256_min_epu32(mn, v);
    mx = _mm256_max_epu32(mx, v);
  }
  kmin = reduce_min_epu32(mn);
  kmax = reduce_max_epu32(mx);
  for (; t < n; ++t) {
    kmin = std::min(kmin, keys[t]);
    kmax = std::max(kmax, keys[t]);
  }
#else
  int32_t lo = std::numeric_limits<int32_t>::max(), hi = std::numeric_limits<int32_t>::min();
  int64_t t = 0;
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi32(std::numeric_limits<int32_t>::min());
  __m128i mn = _mm_set1_epi32(lo), mx = _mm_set1_epi32(hi);
  for (; t + 4 <= n; t += 4) {
    const __m128i v = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(keys + t)), flip);
    const __m128i lt = _mm_cmplt_epi32(v, mn), gt = _mm_cmpgt_epi32(v, mx);
    mn = _mm_or_si128(_mm_and_si128(lt, v), _mm_andnot_si128(lt, mn));
    mx = _mm_or_si128(_mm_and_si128(gt, v), _mm_andnot_si128(gt, mx));
  }
  alignas(16) int32_t a[4], b[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(a), mn);
  _mm_store_si128(reinterpret_cast<__m128i*>(b), mx);
  for (int j = 0; j < 4; ++j) {
    lo = std::min(lo, a[j]);
    hi = std::max(hi, b[j]);
  }
#endif
  for (; t < n; ++t) {
    const int32_t v = static_cast<int32_t>(keys[t] ^ 0x80000000u);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  kmin = static_cast<uint32_t>(lo) ^ 0x80000000u;
  kmax = static_cast<uint32_t>(hi) ^ 0x80000000u;
#endif
}

inline void minmax_keys(const uint64_t* __restrict keys, int64_t n, uint64_t& kmin, uint64_t& kmax) {
  uint64_t lo = ~uint64_t(0), hi = 0;
  for (int64_t t = 0; t < n; ++t) {
    lo = std::min(lo, keys[t]);
    hi = std::max(hi, keys[t]);
  }
  kmin = lo;
  kmax = hi;
}

#if COLA_MINE_AVX512
// The 16 int32 lanes of ix stored at p, as int32 or widened to int64.
inline void store_lanes(int32_t* p, __m512i ix) { _mm512_storeu_si512(p, ix); }
inline void store_lanes(int64_t* p, __m512i ix) {
  _mm512_storeu_si512(p, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(ix)));
  _mm512_storeu_si512(p + 8, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(ix, 1)));
}

// Lists, in index order, the t with keys[t] >= lo, and (when out_keys is given) their keys;
// returns how many. AVX-512: per 16 keys one unsigned compare, then the indices and keys of the
// matching lanes compressed into a register and stored whole (list and out_keys need 16 slots of
// slack past n).
template <typename I>
int64_t list_keys_at_least_avx512(const uint32_t* __restrict keys, int64_t n, uint32_t lo, I* __restrict list,
                                  uint32_t* __restrict out_keys) {
  const __m512i thr = _mm512_set1_epi32(static_cast<int32_t>(lo));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t nl = 0;
  for (int64_t t = 0; t < n; t += 16) {
    const __mmask16 live = n - t >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - t)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(live, keys + t);
    const __mmask16 hit = _mm512_mask_cmpge_epu32_mask(live, v, thr);
    store_lanes(list + nl, _mm512_maskz_compress_epi32(hit, _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(t)))));
    if (out_keys) _mm512_storeu_si512(out_keys + nl, _mm512_maskz_compress_epi32(hit, v));
    nl += __builtin_popcount(hit);
  }
  return nl;
}

inline int64_t list_keys_at_least(const uint32_t* __restrict keys, int64_t n, uint32_t lo, int32_t* __restrict list,
                                  uint32_t* __restrict out_keys) {
  return list_keys_at_least_avx512(keys, n, lo, list, out_keys);
}
#endif

#if COLA_MINE_AVX2
// The same on 8 keys at a time: one unsigned compare, the matching lanes' indices and keys
// compressed to the front by a table shuffle and stored whole (8 slots of slack past n), then
// the tail one key at a time.
template <typename I>
int64_t list_keys_at_least_avx2(const uint32_t* __restrict keys, int64_t n, uint32_t lo, I* __restrict list,
                                uint32_t* __restrict out_keys) {
  const __m256i thr = _mm256_set1_epi32(static_cast<int32_t>(lo));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t nl = 0, t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256i v = load8(keys + t);
    const uint32_t hit = lane_bits(cmpge_epu32(v, thr));  // bit i: keys[t + i] >= lo
    store_lanes8(list + nl, compress8(_mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(t))), hit));
    if (out_keys) store8(out_keys + nl, compress8(v, hit));
    nl += __builtin_popcount(hit);
  }
  for (; t < n; ++t) {
    list[nl] = static_cast<I>(t);
    if (out_keys) out_keys[nl] = keys[t];
    nl += static_cast<int64_t>(keys[t] >= lo);
  }
  return nl;
}

inline int64_t list_keys_at_least(const uint32_t* __restrict keys, int64_t n, uint32_t lo, int32_t* __restrict list,
                                  uint32_t* __restrict out_keys) {
  return list_keys_at_least_avx2(keys, n, lo, list, out_keys);
}
#endif

// Lists, in index order, the t with keys[t] >= lo; returns how many. SSE2: 16 keys compared
// at a time, then one store per match (the matches are few: about k plus a bin).
inline int64_t list_at_least(const uint32_t* __restrict keys, int64_t n, uint32_t lo, int64_t* __restrict list) {
#if COLA_MINE_AVX512
  return list_keys_at_least_avx512(keys, n, lo, list, static_cast<uint32_t*>(nullptr));
#elif COLA_MINE_AVX2
  return list_keys_at_least_avx2(keys, n, lo, list, static_cast<uint32_t*>(nullptr));
#else
  int64_t nl = 0, t = 0;
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi32(std::numeric_limits<int32_t>::min());
  const __m128i thr = _mm_set1_epi32(static_cast<int32_t>((lo ^ 0x80000000u)) - 1);  // v >= lo <=> v > lo - 1
  const bool all = lo == 0;  // lo - 1 would wrap
  for (; !all && t + 16 <= n; t += 16) {
    const __m128i* p = reinterpret_cast<const __m128i*>(keys + t);
    const __m128i g0 = _mm_cmpgt_epi32(_mm_xor_si128(_mm_loadu_si128(p), flip), thr);
    const __m128i g1 = _mm_cmpgt_epi32(_mm_xor_si128(_mm_loadu_si128(p + 1), flip), thr);
    const __m128i g2 = _mm_cmpgt_epi32(_mm_xor_si128(_mm_loadu_si128(p + 2), flip), thr);
    const __m128i g3 = _mm_cmpgt_epi32(_mm_xor_si128(_mm_loadu_si128(p + 3), flip), thr);
    uint32_t mask = static_cast<uint32_t>(_mm_movemask_epi8(_mm_packs_epi16(_mm_packs_epi32(g0, g1), _mm_packs_epi32(g2, g3))));
    while (mask) {
      list[nl++] = t + __builtin_ctz(mask);
      mask &= mask - 1;
    }
  }
#endif
  for (; t < n; ++t) {
    list[nl] = t;
    nl += static_cast<int64_t>(keys[t] >= lo);
  }
  return nl;
#endif
}

inline int64_t list_at_least(const uint64_t* __restrict keys, int64_t n, uint64_t lo, int64_t* __restrict list) {
  int64_t nl = 0;
  for (int64_t t = 0; t < n; ++t) {
    list[nl] = t;
    nl += static_cast<int64_t>(keys[t] >= lo);
  }
  return nl;
}

// The list, and the listed keys in out_keys.
template <typename K>
int64_t list_keys_at_least(const K* __restrict keys, int64_t n, K lo, int32_t* __restrict list, K* __restrict out_keys) {
  int64_t nl = 0;
  for (int64_t t = 0; t < n; ++t) {
    const K v = keys[t];
    list[nl] = static_cast<int32_t>(t);
    out_keys[nl] = v;
    nl += static_cast<int64_t>(v >= lo);
  }
  return nl;
}

// Adaptive digits for a first selection pass: digit(key) = (key - kmin) >> shift, with the
// shift chosen so that the key range [kmin, kmax] spans at most 2^bits bins. Unlike the top
// byte of the key (which puts every value of [0.5, 1) in one bin), this splits any range evenly.
template <typename K>
struct RangeBins {
  K kmin;
  int shift;
  int64_t nb;  // number of bins, <= 2^bits
  RangeBins(K lo, K hi, int bits) : kmin(lo), shift(0) {
    const K range = hi - lo;
    const int len = range == 0 ? 0 : 64 - __builtin_clzll(static_cast<unsigned long long>(range));
    shift = std::max(0, len - bits);
    nb = static_cast<int64_t>(range >> shift) + 1;
  }
  int64_t digit(K v) const { return static_cast<int64_t>((v - kmin) >> shift); }
};

// Histogram of the digits (two interleaved sub-histograms break store-to-load chains on runs
// of equal keys, e.g. the zeros of a masked row); hist must hold 2 * nb entries.
template <typename K>
void range_hist(const K* __restrict keys, int64_t n, const RangeBins<K>& rb, int32_t* __restrict hist) {
  int32_t* h0 = hist;
  int32_t* h1 = hist + rb.nb;
  std::memset(hist, 0, sizeof(int32_t) * 2 * rb.nb);
  int64_t t = 0;
  for (; t + 2 <= n; t += 2) {
    h0[rb.digit(keys[t])]++;
    h1[rb.digit(keys[t + 1])]++;
  }
  for (; t < n; ++t) h0[rb.digit(keys[t])]++;
}

// Where descending position r of keys[0..n) falls among the adaptive-digit bins.
template <typename K>
struct RankSplit {
  bool all_equal;    // every key equals base: no bins
  RangeBins<K> rb;
  int64_t b;         // the bin holding position r
  int64_t above;     // keys in higher bins
  K base;            // smallest key of bin b: digit(v) >= b <=> v >= base
};

// Digit width for n keys: about one key per bin on evenly spread keys, 128 to 1024 bins.
inline int bins_bits(int64_t n) { return n >= 512 ? 10 : n >= 256 ? 9 : n >= 128 ? 8 : 7; }

// As below, with the smallest and largest key given.
template <typename K>
RankSplit<K> split_at_rank(const K* keys, int64_t n, int64_t r, int32_t* hist, K kmin, K kmax) {
  RankSplit<K> sp{kmin == kmax, RangeBins<K>(kmin, kmax, bins_bits(n)), 0, 0, kmin};
  if (sp.all_equal) return sp;
  range_hist(keys, n, sp.rb, hist);
  const int32_t* h1 = hist + sp.rb.nb;
  int64_t b = sp.rb.nb - 1;
  for (; sp.above + hist[b] + h1[b] <= r; --b) sp.above += hist[b] + h1[b];
  sp.b = b;
  sp.base = kmin + (static_cast<K>(b) << sp.rb.shift);
  return sp;
}

template <typename K>
RankSplit<K> split_at_rank(const K* keys, int64_t n, int64_t r, int32_t* hist) {
  K kmin, kmax;
  minmax_keys(keys, n, kmin, kmax);
  return split_at_rank(keys, n, r, hist, kmin, kmax);
}

// The key at descending position r of the nc keys vals[] of bin sp.b, and the number of them
// greater than it: offset by the bin's base (so that their bytes above the bin width agree,
// as radix_select_desc requires), then radix selection. buf may be vals.
template <typename K>
K select_in_bin(const K* vals, int64_t nc, int64_t r, const RankSplit<K>& sp, K* buf, K* cand, int64_t& greater) {
  for (int64_t c = 0; c < nc; ++c) buf[c] = vals[c] - sp.base;
  const int first = sp.rb.shift == 0 ? 0 : ((sp.rb.shift + 7) / 8) * 8 - 8;
  return radix_select_desc(buf, nc, r, cand, greater, first) + sp.base;
}

// The key at descending position r of keys[0..n) and the number of keys greater than it:
// one adaptive-digit pass, then selection among the keys of the bin holding position r.
template <typename K>
K range_select_desc(const K* keys, int64_t n, int64_t r, K* buf, K* cand, int32_t* hist,
                    K kmin, K kmax, int64_t& greater) {
  const RankSplit<K> sp = split_at_rank(keys, n, r, hist, kmin, kmax);
  greater = 0;
  if (sp.all_equal) return sp.base;
  int64_t nc = 0;
  for (int64_t t = 0; t < n; ++t) {
    buf[nc] = keys[t];
    nc += static_cast<int64_t>(sp.rb.digit(keys[t]) == sp.b);
  }
  int64_t g2;
  const K tau = select_in_bin(buf, nc, r - sp.above, sp, buf, cand, g2);
  greater = sp.above + g2;
  return tau;
}

// Stable insertion sort of n (key, index) pairs by key descending (equal keys keep their order).
template <typename K>
void insertion_sort_desc(K* key, int64_t* idx, int64_t n) {
  for (int64_t a = 1; a < n; ++a) {
    const K v = key[a];
    if (!(key[a - 1] < v)) continue;
    const int64_t ix = idx[a];
    int64_t b = a - 1;
    while (b >= 0 && key[b] < v) {
      key[b + 1] = key[b];
      idx[b + 1] = idx[b];
      --b;
    }
    key[b + 1] = v;
    idx[b + 1] = ix;
  }
}

// Stable sort of k (key, index) pairs by key descending (equal keys keep their order):
// insertion sort when small, else LSD radix sort on the bytes that vary.
template <typename K>
void sort_desc_stable(K* sk, int64_t* si, K* tk, int64_t* ti, int64_t k, int64_t* out) {
  if (k <= 32) {
    insertion_sort_desc(sk, si, k);
    std::copy(si, si + k, out);
    return;
  }
  K all_or = 0, all_and = ~K(0), kmin = ~K(0), kmax = 0;
  for (int64_t a = 0; a < k; ++a) {
    all_or |= sk[a];
    all_and &= sk[a];
    kmin = sk[a] < kmin ? sk[a] : kmin;
    kmax = sk[a] > kmax ? sk[a] : kmax;
  }
  // Bucket sort on equal-width key ranges (stable scatter), then a stable insertion pass that
  // only has to fix the order inside each bucket; used when no bucket is crowded.
  if (k <= 2048) {
    int32_t cnt[4096];
    const int64_t nb = std::min<int64_t>(4096, std::max<int64_t>(64, int64_t(1) << (64 - __builtin_clzll(k))));
    int shift = 0;
    while (static_cast<uint64_t>((kmax - kmin) >> shift) >= static_cast<uint64_t>(nb)) ++shift;
    const int64_t nbe = static_cast<int64_t>((kmax - kmin) >> shift) + 1;
    std::memset(cnt, 0, sizeof(int32_t) * nbe);
    for (int64_t a = 0; a < k; ++a) cnt[nbe - 1 - static_cast<int64_t>((sk[a] - kmin) >> shift)]++;
    int32_t off = 0, crowd = 0;
    for (int64_t b = 0; b < nbe; ++b) {
      const int32_t c = cnt[b];
      crowd = c > crowd ? c : crowd;
      cnt[b] = off;
      off += c;
    }
    if (crowd <= 16 || all_or == all_and) {
      for (int64_t a = 0; a < k; ++a) {
        const int32_t p = cnt[nbe - 1 - static_cast<int64_t>((sk[a] - kmin) >> shift)]++;
        tk[p] = sk[a];
        ti[p] = si[a];
      }
      insertion_sort_desc(tk, ti, k);  // fixes the order inside each bucket
      std::copy(ti, ti + k, out);
      return;
    }
  }
  const K varying = all_or ^ all_and;
  constexpr int BITS = 8 * sizeof(K);
  int32_t hist[256];
  for (int shift = 0; shift < BITS; shift += 8) {
    if (((varying >> shift) & 0xff) == 0) continue;  // this byte is the same in every key
    std::memset(hist, 0, sizeof hist);
    for (int64_t a = 0; a < k; ++a) hist[255 - ((sk[a] >> shift) & 0xff)]++;
    int32_t off = 0;
    for (int b = 0; b < 256; ++b) {
      const int32_t c = hist[b];
      hist[b] = off;
      off += c;
    }
    for (int64_t a = 0; a < k; ++a) {
      const int32_t p = hist[255 - ((sk[a] >> shift) & 0xff)]++;
      tk[p] = sk[a];
      ti[p] = si[a];
    }
    std::swap(sk, tk);
    std::swap(si, ti);
  }
  std::copy(si, si + k, out);
}

// Short rows: one composite per element (key above, reversed index below: larger composite =
// earlier under the spec's rule), nth_element + sort of the first k.
template <typename K>
void topk_small(const K* keys, int64_t T, int64_t k, int64_t* out) {
  using C = std::conditional_t<sizeof(K) == 4, uint64_t, unsigned __int128>;
  C comp[64];
  for (int64_t t = 0; t < T; ++t) comp[t] = (static_cast<C>(keys[t]) << 32) | static_cast<C>(0xffffffffu - t);
  auto gt = std::greater<C>();
  if (k < T) std::nth_element(comp, comp + (k - 1), comp + T, gt);
  std::sort(comp, comp + k, gt);
  for (int64_t j = 0; j < k; ++j) out[j] = static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(comp[j] & 0xffffffffu));
}

// Small k: one scan keeping the best k composites sorted (an element enters only when it beats
// the current k-th); gives up (returns false) after `budget` entries, e.g. on rising rows.
template <typename K>
bool topk_insert(const K* keys, int64_t T, int64_t k, int64_t* out, int64_t budget) {
  using C = std::conditional_t<sizeof(K) == 4, uint64_t, unsigned __int128>;
  C buf[64];
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t) {
    const C c = (static_cast<C>(keys[t]) << 32) | static_cast<C>(0xffffffffu - t);
    if (n == k && !(c > buf[k - 1])) continue;
    if (--budget < 0) return false;
    int64_t j = n < k ? n++ : k - 1;
    while (j > 0 && buf[j - 1] < c) {
      buf[j] = buf[j - 1];
      --j;
    }
    buf[j] = c;
  }
  for (int64_t j = 0; j < k; ++j) out[j] = static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(buf[j] & 0xffffffffu));
  return true;
}

// Top-k of keys[0..T) under the spec's rule (key descending, lower index first), to out[0..k).
//   pass 1: min and max key, then a histogram of adaptive digits (RangeBins); the bin holding
//           position k-1 splits the row into "surely in" (higher bins), candidates (that bin)
//           and out;
//   pass 2: one branch-free pass lists the indices in or above that bin, in index order; the
//           short list is split into surely-in and candidate pairs;
//   then radix selection of the threshold among the candidates only, the winners appended in
//   index order, and a stable sort of the k winners (ties stay in index order).
// Top-k by one bucket pass, for keys spread evenly enough (returns false, having written
// nothing, when a bucket at or above the one holding position k-1 is crowded, or all keys are
// equal): a histogram of adaptive digits; the bucket b holding position k-1; a stable,
// branch-free scatter of the keys in buckets >= b to their places in descending bucket order
// (keys of lower buckets land past the end, harmlessly); a stable insertion sort that only has
// to order each bucket. The first k are the answer.
// dig[c] = min(hi, int((value(keys[c]) - vmin) * scale)), vectorisable
template <typename K, typename V>
void bucket_digits(const K* __restrict keys, int64_t n, V vmin, V scale, int32_t hi, int32_t* __restrict dig) {
  for (int64_t c = 0; c < n; ++c) {
    const int32_t d = static_cast<int32_t>((value_of(keys[c]) - vmin) * scale);
    dig[c] = d < hi ? d : hi;
  }
}

#if COLA_MINE_AVX2
// the same for float keys, 8 at a time: keys -> floats, (v - vmin) * scale truncated, min with hi
inline void bucket_digits(const uint32_t* __restrict keys, int64_t n, float vmin, float scale, int32_t hi,
                          int32_t* __restrict dig) {
  const __m256 lo = _mm256_set1_ps(vmin), sc = _mm256_set1_ps(scale);
  const __m256i top = _mm256_set1_epi32(hi);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 v = value8(load8(keys + c));
    const __m256i d = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_sub_ps(v, lo), sc));
    store8(dig + c, _mm256_min_epi32(d, top));
  }
  for (; c < n; ++c) {
    const int32_t d = static_cast<int32_t>((value_of(keys[c]) - vmin) * scale);
    dig[c] = d < hi ? d : hi;
  }
}
#endif

// Histogram scan from the top bucket down, 16 (AVX-512) or 8 (AVX2) buckets at a time while a whole block
// lies above descending position r: `above` gathers their counts and, when OFFSETS, each count
// is replaced by its offset in descending order (the number of keys in higher buckets) and
// `crowd` gets their largest count. Returns the bucket just above the first block not skipped
// (nb when none is), where a scalar scan goes on. nb is a multiple of 16.
template <bool OFFSETS>
int32_t skip_top_blocks(int32_t* __restrict h, int32_t nb, int64_t r, int64_t& above, int32_t& crowd) {
  int32_t top = nb;
#if COLA_MINE_AVX512
  const __m512i zero = _mm512_setzero_si512();
  __m512i cmax = zero;
  for (; top >= 16; top -= 16) {
    const __m512i v = _mm512_loadu_si512(h + top - 16);
    __m512i x = _mm512_add_epi32(v, _mm512_alignr_epi32(zero, v, 1));  // lane i: sum of lanes >= i
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(zero, x, 2));
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(zero, x, 4));
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(zero, x, 8));
    const int64_t sum = _mm_cvtsi128_si32(_mm512_castsi512_si128(x));
    if (above + sum > r) break;
    if (OFFSETS) {
      _mm512_storeu_si512(h + top - 16, _mm512_add_epi32(_mm512_sub_epi32(x, v), _mm512_set1_epi32(static_cast<int32_t>(above))));
      cmax = _mm512_max_epi32(cmax, v);
    }
    above += sum;
  }
  if (OFFSETS) crowd = std::max(crowd, _mm512_reduce_max_epi32(cmax));
#elif COLA_MINE_AVX2
  // the same, 8 buckets at a time
  __m256i cmax = _mm256_setzero_si256();
  for (; top >= 8; top -= 8) {
    const __m256i v = load8(h + top - 8);
    // x lane i = sum of lanes >= i: suffix sums inside each 128-bit half, then the upper half's
    // total (its lane 4) added to the lower half
    __m256i x = _mm256_add_epi32(v, _mm256_srli_si256(v, 4));
    x = _mm256_add_epi32(x, _mm256_srli_si256(x, 8));
    x = _mm256_add_epi32(x, _mm256_shuffle_epi32(_mm256_permute2x128_si256(x, x, 0x81), 0));
    const int64_t sum = _mm256_cvtsi256_si32(x);
    if (above + sum > r) break;
    if (OFFSETS) {
      store8(h + top - 8, _mm256_add_epi32(_mm256_sub_epi32(x, v), _mm256_set1_epi32(static_cast<int32_t>(above))));
      cmax = _mm256_max_epi32(cmax, v);
    }
    above += sum;
  }
  if (OFFSETS) crowd = std::max(crowd, static_cast<int32_t>(reduce_max_epu32(cmax)));  // counts >= 0
#else
  (void)h;
  (void)r;
  (void)above;
  (void)crowd;
#endif
  return top;
}

// Buckets of equal width in value (not in key: keys of floats are logarithmic in the value, so
// a row reaching down to tiny values would crowd its top buckets). Finite rows only: init fails
// on NaN, inf, all-equal rows, or a span so small (denormals) that the scale overflows.
template <typename K>
struct ValueBins {
  using V = decltype(value_of(K()));  // float for 32-bit keys, double for 64-bit ones
  V vmin = 0, scale = 0;
  int32_t nb = 0;
  bool init(K kmin, K kmax, int bits) {
    vmin = value_of(kmin);
    const V span = value_of(kmax) - vmin;
    if (!(span > V(0) && span < std::numeric_limits<V>::infinity())) return false;
    nb = int32_t(1) << bits;
    scale = static_cast<V>(nb) / span;
    return scale < std::numeric_limits<V>::infinity();
  }
};

// The keys c with dig[c] == b, in order, to out (which needs 16 slots of slack); returns how many.
template <typename K>
int64_t keys_in_bucket(const K* __restrict keys, const int32_t* __restrict dig, int64_t n, int32_t b, K* __restrict out) {
  int64_t nc = 0, c = 0;
#if COLA_MINE_AVX512
  if constexpr (sizeof(K) == 4) {
    const __m512i vb = _mm512_set1_epi32(b);
    for (; c + 16 <= n; c += 16) {
      const __mmask16 hit = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(dig + c), vb);
      _mm512_storeu_si512(out + nc, _mm512_maskz_compress_epi32(hit, _mm512_loadu_si512(keys + c)));
      nc += __builtin_popcount(hit);
    }
  }
#elif COLA_MINE_AVX2
  if constexpr (sizeof(K) == 4) {
    const __m256i vb = _mm256_set1_epi32(b);
    for (; c + 8 <= n; c += 8) {
      const uint32_t hit = lane_bits(_mm256_cmpeq_epi32(load8(dig + c), vb));  // bit i: dig[c + i] == b
      store8(out + nc, compress8(load8(keys + c), hit));
      nc += __builtin_popcount(hit);
    }
  }
#endif
  for (; c < n; ++c) {
    out[nc] = keys[c];
    nc += static_cast<int64_t>(dig[c] == b);
  }
  return nc;
}

// The key at descending position r of keys[0..n) and the number of keys greater than it, for
// the median: one value-bucket histogram, then selection among the keys of the bucket holding
// position r (the adaptive key digits of range_select_desc when value buckets do not apply).
template <typename K>
K median_select_desc(Scratch<K>& s, const K* keys, int64_t n, int64_t r, K kmin, K kmax, int64_t& greater) {
  ValueBins<K> vb;
  if (!vb.init(kmin, kmax, bins_bits(n)))
    return range_select_desc(keys, n, r, s.keys3.data(), s.cand.data(), s.hist.data(), kmin, kmax, greater);
  int32_t* dig = s.digits.data();
  bucket_digits(keys, n, vb.vmin, vb.scale, vb.nb - 1, dig);
  int32_t* h = s.hist.data();
  std::memset(h, 0, sizeof(int32_t) * vb.nb);
  for (int64_t c = 0; c < n; ++c) h[dig[c]]++;
  int64_t above = 0;
  int32_t unused = 0;
  int32_t b = skip_top_blocks<false>(h, vb.nb, r, above, unused) - 1;
  for (; above + h[b] <= r; --b) above += h[b];
  K* bucket = s.keys3.data();
  const int64_t nc = keys_in_bucket(keys, dig, n, b, bucket);
  int64_t g2;
  const K tau = radix_select_desc(bucket, nc, r - above, s.cand.data(), g2);
  greater = above + g2;
  return tau;
}

template <typename K>
bool topk_bucket(Scratch<K>& s, const K* keys, const int32_t* idx, int64_t n, int64_t k, int64_t* out) {
  constexpr int32_t CROWD = 24;  // insertion-sort cost grows with the square of a bucket's size
  K kmin, kmax;
  minmax_keys(keys, n, kmin, kmax);
  if (kmin == kmax) return false;
  ValueBins<K> vb;
  if (!vb.init(kmin, kmax, bins_bits(n))) return false;
  const int32_t nb = vb.nb;
  int32_t* dig = s.digits.data();
  bucket_digits(keys, n, vb.vmin, vb.scale, nb - 1, dig);
  int32_t* h = s.hist.data();
  std::memset(h, 0, sizeof(int32_t) * nb);
  for (int64_t c = 0; c < n; ++c) h[dig[c]]++;
  // from the top bucket down to the one holding position k-1, each bucket's count replaced by
  // its offset in descending order
  int64_t above = 0;
  int32_t crowd = 0;
  int32_t b = skip_top_blocks<true>(h, nb, k - 1, above, crowd);
  int32_t acc = static_cast<int32_t>(above);
  do {
    --b;
    const int32_t c = h[b];
    h[b] = acc;
    acc += c;
    crowd = std::max(crowd, c);
  } while (acc < k);
  if (crowd > CROWD) return false;
  const int32_t m = acc;  // keys in buckets >= b
  K* sk = s.sel_key.data();
  int64_t* si = s.sel_idx.data();
#if COLA_MINE_AVX512
  if constexpr (sizeof(K) == 4) {
    // first the m keys of buckets >= b (digit, key, index) compressed, in order, then their scatter
    const __m512i vb = _mm512_set1_epi32(b);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    K* ck = s.tmp_key.data();
    int32_t* ci = s.idx32.data();
    int64_t nc = 0;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 live = n - c >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - c)) - 1);
      const __m512i d = _mm512_maskz_loadu_epi32(live, dig + c);
      const __mmask16 hit = _mm512_mask_cmpge_epi32_mask(live, d, vb);
      const __m512i ix = idx ? _mm512_maskz_loadu_epi32(live, idx + c)
                             : _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(c)));
      _mm512_storeu_si512(dig + nc, _mm512_maskz_compress_epi32(hit, d));  // nc <= c: in place
      _mm512_storeu_si512(ck + nc, _mm512_maskz_compress_epi32(hit, _mm512_maskz_loadu_epi32(live, keys + c)));
      _mm512_storeu_si512(ci + nc, _mm512_maskz_compress_epi32(hit, ix));
      nc += __builtin_popcount(hit);
    }
    for (int64_t c = 0; c < nc; ++c) {
      const int32_t p = h[dig[c]]++;
      sk[p] = ck[c];
      si[p] = ci[c];
    }
  } else
#elif COLA_MINE_AVX2
  if constexpr (sizeof(K) == 4) {
    // the same, 8 keys at a time and the tail one by one: (digit, key, index) of the keys with
    // dig >= b compressed in order (in place for the digits: nc <= c), then their scatter
    const __m256i below = _mm256_set1_epi32(b - 1);  // d >= b <=> d > b - 1 (digits are >= 0)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    K* ck = s.tmp_key.data();
    int32_t* ci = s.idx32.data();
    int64_t nc = 0, c = 0;
    for (; c + 8 <= n; c += 8) {
      const __m256i d = load8(dig + c);
      const uint32_t hit = lane_bits(_mm256_cmpgt_epi32(d, below));
      const __m256i ix = idx ? load8(idx + c) : _mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(c)));
      store8(dig + nc, compress8(d, hit));
      store8(ck + nc, compress8(load8(keys + c), hit));
      store8(ci + nc, compress8(ix, hit));
      nc += __builtin_popcount(hit);
    }
    for (; c < n; ++c) {
      const int32_t d = dig[c];
      dig[nc] = d;
      ck[nc] = keys[c];
      ci[nc] = idx ? idx[c] : static_cast<int32_t>(c);
      nc += static_cast<int64_t>(d >= b);
    }
    for (c = 0; c < nc; ++c) {
      const int32_t p = h[dig[c]]++;
      sk[p] = ck[c];
      si[p] = ci[c];
    }
  } else
#endif
  {
    for (int64_t c = 0; c < n; ++c) {  // keys of lower buckets all go to slot m (sk has n+1)
      const int32_t d = dig[c];
      const int32_t in = d >= b;
      const int32_t p = in ? h[d] : m;
      h[d] += in;
      sk[p] = keys[c];
      si[p] = idx ? idx[c] : c;
    }
  }
  insertion_sort_desc(sk, si, m);
  std::copy(si, si + k, out);
  return true;
}

template <typename K>
void topk_subset(Scratch<K>& s, const K* keys, const int32_t* idx, int64_t T, int64_t k, int64_t* out) {
  if (topk_bucket(s, keys, idx, T, k, out)) return;
  const RankSplit<K> sp = split_at_rank(keys, T, k - 1, s.hist.data());
  if (sp.all_equal) {  // the lowest indices, in order
    for (int64_t j = 0; j < k; ++j) out[j] = idx ? idx[j] : j;
    return;
  }
  const int64_t b = sp.b, above = sp.above;
  int64_t* list = s.list.data();
  const int64_t nl = list_at_least(keys, T, sp.base, list);
  K* sk = s.sel_key.data();
  int64_t* si = s.sel_idx.data();
  K* ck = s.tmp_key.data();
  int64_t* ci = s.tmp_idx.data();
  int64_t ns = 0, nc = 0;
  for (int64_t c = 0; c < nl; ++c) {
    const int64_t p = list[c];
    const K v = keys[p];
    const int64_t t = idx ? idx[p] : p;
    const int64_t d = sp.rb.digit(v);
    sk[ns] = v;
    si[ns] = t;
    ns += static_cast<int64_t>(d > b);
    ck[nc] = v;
    ci[nc] = t;
    nc += static_cast<int64_t>(d == b);
  }
  // ns == above, nc == inbin
  const int64_t want = k - above;  // winners among the candidates
  if (want == nc) {
    std::copy(ck, ck + nc, sk + ns);
    std::copy(ci, ci + nc, si + ns);
  } else {
    int64_t greater;
    const K tau = select_in_bin(ck, nc, want - 1, sp, s.keys3.data(), s.cand.data(), greater);
    const int64_t need = want - greater;
    int64_t j = ns, eqc = 0;
    for (int64_t c = 0; c < nc; ++c) {
      const K v = ck[c];
      const int64_t eq = static_cast<int64_t>(v == tau);
      eqc += eq;
      sk[j] = v;
      si[j] = ci[c];
      j += static_cast<int64_t>(v > tau) | (eq & static_cast<int64_t>(eqc <= need));
    }
  }
  // the candidates' scratch is free again: use it for the sort
  sort_desc_stable(sk, si, ck, ci, k, out);
}

// Top-k of keys[0..T) under the spec's rule. Masked rows (a * keep, a * band) are mostly the
// key of zero, which makes histograms slow (every increment hits one slot) and wastes passes:
// when at least k keys lie above the zero key, one SIMD pass lists them and the selection runs on
// that short list only; when fewer do, they come first (sorted) and the zeros fill the rest in
// index order, as the tie rule says.
template <typename K>
void topk_keys(Scratch<K>& s, const K* keys, int64_t T, int64_t k, int64_t* out) {
  if (k == 0) return;
  if (k <= 8 && topk_insert(keys, T, k, out, 4 * k + 64)) return;  // never gives up when T <= 64
  if (T <= 64) return topk_small(keys, T, k, out);
  constexpr K Z = K(1) << (8 * sizeof(K) - 1);  // key_of(+-0)
  int32_t* zl = s.zlist.data();
  K* zk = s.zkeys.data();
  const int64_t np = list_keys_at_least(keys, T, static_cast<K>(Z + 1), zl, zk);  // the positives, in index order
  if (np >= k) {
    if (np > T - T / 8) return topk_subset(s, keys, static_cast<const int32_t*>(nullptr), T, k, out);
    return topk_subset(s, zk, zl, np, k, out);
  }
  int64_t nz = 0;
  for (int64_t t = 0; t < T; ++t) nz += static_cast<int64_t>(keys[t] == Z);
  if (np + nz < k) return topk_subset(s, keys, static_cast<const int32_t*>(nullptr), T, k, out);
  K* sk = s.sel_key.data();
  int64_t* si = s.sel_idx.data();
  for (int64_t c = 0; c < np; ++c) {
    sk[c] = keys[zl[c]];
    si[c] = zl[c];
  }
  sort_desc_stable(sk, si, s.tmp_key.data(), s.tmp_idx.data(), np, out);
  int64_t j = np;
  for (int64_t t = 0; j < k; ++t) {
    out[j] = t;
    j += static_cast<int64_t>(keys[t] == Z);
  }
}

// The row's elementwise passes, as free functions with __restrict pointers so that the
// compiler vectorises them (keys are unsigned ints, the prefix counts signed ints: without
// restrict they may alias). Maxima and minima are taken in the signed domain (key ^ sign bit).

// keys[t] = key(a[t] * kp[t])
template <typename scalar_t, typename K, typename KeyFn>
void keys_masked(const scalar_t* __restrict a, const scalar_t* __restrict kp, K* __restrict keys,
                 int64_t T, KeyFn key) {
  for (int64_t t = 0; t < T; ++t) keys[t] = key(static_cast<scalar_t>(a[t] * kp[t]));
}

// keys[t] = key((mx - a[t]) * kp[t])
template <typename scalar_t, typename K, typename KeyFn>
void keys_reversed(const scalar_t* __restrict a, const scalar_t* __restrict kp, scalar_t mx,
                   K* __restrict keys, int64_t T, KeyFn key) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t inv = static_cast<scalar_t>(mx - a[t]);
    keys[t] = key(static_cast<scalar_t>(inv * kp[t]));
  }
}

template <typename scalar_t, typename K, typename KeyFn>
void keys_plain(const scalar_t* __restrict a, K* __restrict keys, int64_t T, KeyFn key) {
  for (int64_t t = 0; t < T; ++t) keys[t] = key(a[t]);
}

#if COLA_MINE_AVX2
// The same three for float rows, 8 values at a time (key8 is key_of on 8 lanes), the tail one
// by one. Preferred over the templates above for float (more specialised).
template <typename KeyFn>
void keys_masked(const float* __restrict a, const float* __restrict kp, uint32_t* __restrict keys, int64_t T,
                 KeyFn key) {
  int64_t t = 0;
  for (; t + 8 <= T; t += 8)  // keys[t] = key(a[t] * kp[t])
    store8(keys + t, key8(_mm256_mul_ps(_mm256_loadu_ps(a + t), _mm256_loadu_ps(kp + t))));
  for (; t < T; ++t) keys[t] = key(a[t] * kp[t]);
}

template <typename KeyFn>
void keys_reversed(const float* __restrict a, const float* __restrict kp, float mx, uint32_t* __restrict keys,
                   int64_t T, KeyFn key) {
  const __m256 vmx = _mm256_set1_ps(mx);
  int64_t t = 0;
  for (; t + 8 <= T; t += 8)  // keys[t] = key((mx - a[t]) * kp[t])
    store8(keys + t, key8(_mm256_mul_ps(_mm256_sub_ps(vmx, _mm256_loadu_ps(a + t)), _mm256_loadu_ps(kp + t))));
  for (; t < T; ++t) keys[t] = key((mx - a[t]) * kp[t]);
}

template <typename KeyFn>
void keys_plain(const float* __restrict a, uint32_t* __restrict keys, int64_t T, KeyFn key) {
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) store8(keys + t, key8(_mm256_loadu_ps(a + t)));  // keys[t] = key(a[t])
  for (; t < T; ++t) keys[t] = key(a[t]);
}
#endif

// The smallest key above klo (all ones if none). Branch-free (SSE2 / AVX-512 compares and selects).
inline uint32_t min_key_above(const uint32_t* __restrict keys, int64_t T, uint32_t klo) {
#if COLA_MINE_AVX512
  const __m512i lo = _mm512_set1_epi32(static_cast<int32_t>(klo));
  __m512i mn = _mm512_set1_epi32(-1);
  for (int64_t t = 0; t < T; t += 16) {
    const __mmask16 live = T - t >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (T - t)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(live, keys + t);
    mn = _mm512_mask_min_epu32(mn, _mm512_mask_cmpgt_epu32_mask(live, v, lo), mn, v);
  }
  return _mm512_reduce_min_epu32(mn);
#elif COLA_MINE_AVX2
  // min of the keys above klo, 8 lanes at a time: a key <= klo becomes all ones, then unsigned min
  const __m256i lo = _mm256_set1_epi32(static_cast<int32_t>(klo));
  __m256i mn = _mm256_set1_epi32(-1);
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256i v = load8(keys + t);
    const __m256i not_above = _mm256_cmpeq_epi32(_mm256_min_epu32(v, lo), v);  // v <= klo
    mn = _mm256_min_epu32(mn, _mm256_or_si256(v, not_above));
  }
  uint32_t best = reduce_min_epu32(mn);
  for (; t < T; ++t) best = keys[t] > klo ? std::min(best, keys[t]) : best;
  return best;
#else
  const int32_t slo = static_cast<int32_t>(klo ^ 0x80000000u);
  int32_t best = std::numeric_limits<int32_t>::max();
  int64_t t = 0;
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi32(std::numeric_limits<int32_t>::min());
  const __m128i lo = _mm_set1_epi32(slo), top = _mm_set1_epi32(std::numeric_limits<int32_t>::max());
  __m128i m0 = top;
  for (; t + 4 <= T; t += 4) {
    __m128i v = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(keys + t)), flip);
    const __m128i above = _mm_cmpgt_epi32(v, lo);
    v = _mm_or_si128(_mm_and_si128(above, v), _mm_andnot_si128(above, top));  // not above: +inf
    const __m128i lt = _mm_cmplt_epi32(v, m0);
    m0 = _mm_or_si128(_mm_and_si128(lt, v), _mm_andnot_si128(lt, m0));
  }
  alignas(16) int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), m0);
  for (int j = 0; j < 4; ++j) best = std::min(best, lanes[j]);
#endif
  for (; t < T; ++t) {
    const int32_t v = static_cast<int32_t>(keys[t] ^ 0x80000000u);
    best = std::min(best, v > slo ? v : std::numeric_limits<int32_t>::max());
  }
  return static_cast<uint32_t>(best) ^ 0x80000000u;
#endif
}

inline uint64_t min_key_above(const uint64_t* __restrict keys, int64_t T, uint64_t klo) {
  constexpr uint64_t F = 0x8000000000000000ull;
  const int64_t slo = static_cast<int64_t>(klo ^ F);
  int64_t best = std::numeric_limits<int64_t>::max();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t v = static_cast<int64_t>(keys[t] ^ F);
    best = std::min(best, v > slo ? v : std::numeric_limits<int64_t>::max());
  }
  return static_cast<uint64_t>(best) ^ F;
}

// P[0] = 0, P[t+1] = #{u <= t : a[u] > med}
#if COLA_MINE_AVX512
// float rows: 16 compares at a time, their inclusive prefix sum in the register (4 shifted adds)
// plus the running count
inline void prefix_above(const float* __restrict a, float med, int32_t* __restrict P, int64_t T) {
  const __m512 vm = _mm512_set1_ps(med);
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), last = _mm512_set1_epi32(15);
  __m512i carry = zero;
  P[0] = 0;
  for (int64_t t = 0; t < T; t += 16) {
    const __mmask16 live = T - t >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (T - t)) - 1);
    const __mmask16 gt = _mm512_mask_cmp_ps_mask(live, _mm512_maskz_loadu_ps(live, a + t), vm, _CMP_GT_OQ);
    __m512i x = _mm512_maskz_mov_epi32(gt, one);
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(x, zero, 15));  // lane i += lane i-1
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(x, zero, 14));
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(x, zero, 12));
    x = _mm512_add_epi32(x, _mm512_alignr_epi32(x, zero, 8));
    x = _mm512_add_epi32(x, carry);
    _mm512_mask_storeu_epi32(P + t + 1, live, x);
    carry = _mm512_permutexvar_epi32(last, x);
  }
}
#elif COLA_MINE_AVX2
// float rows: 8 compares at a time and their inclusive prefix sum in the register (shifted adds
// inside each 128-bit half, then the lower half's total added to the upper half) plus the
// running count; the tail one by one
inline void prefix_above(const float* __restrict a, float med, int32_t* __restrict P, int64_t T) {
  const __m256 vm = _mm256_set1_ps(med);
  const __m256i zero = _mm256_setzero_si256(), last = _mm256_set1_epi32(7);
  __m256i carry = zero;  // P[t] in every lane
  P[0] = 0;
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256i gt = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(a + t), vm, _CMP_GT_OQ));
    __m256i x = _mm256_sub_epi32(zero, gt);  // lane i: a[t + i] > med ? 1 : 0
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 4));  // lane i += lane i-1 (in each half)
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));  // lane i += lane i-2 (in each half)
    x = _mm256_add_epi32(x, _mm256_shuffle_epi32(_mm256_permute2x128_si256(x, x, 0x08), 0xff));  // + lane 3 above
    x = _mm256_add_epi32(x, carry);
    store8(P + t + 1, x);
    carry = _mm256_permutevar8x32_epi32(x, last);
  }
  int32_t acc = P[t];
  for (; t < T; ++t) {
    acc += (a[t] > med) ? 1 : 0;
    P[t + 1] = acc;
  }
}
#endif

template <typename scalar_t>
void prefix_above(const scalar_t* __restrict a, scalar_t med, int32_t* __restrict P, int64_t T) {
  int32_t acc = 0;  // in a register: P[t + 1] += P[t] would wait on store-to-load forwarding
  P[0] = 0;
  for (int64_t t = 0; t < T; ++t) {
    acc += (a[t] > med) ? 1 : 0;
    P[t + 1] = acc;
  }
}

// The band keys at every t: em/eM erosions with m and M, dm/dM dilations (window counts from
// the prefix counts P, padded by M on each side); inner = em - eM, outer = dM - dm;
// k3 = key(a * inner), k4 = key(a * outer).
template <typename scalar_t, typename K, typename KeyFn>
void band_keys(const scalar_t* __restrict a, const int32_t* __restrict P, K* __restrict k3,
               K* __restrict k4, int64_t T, int64_t m, int64_t M, KeyFn key) {
  const int64_t cm = m / 2, cM = M / 2;
  const int32_t mi = static_cast<int32_t>(m), Mi = static_cast<int32_t>(M);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t em = (P[t + m - cm] - P[t - cm]) == mi;
    const int32_t eM = (P[t + M - cM] - P[t - cM]) == Mi;
    const int32_t dm = (P[t + cm + 1] - P[t - (m - 1 - cm)]) > 0;
    const int32_t dM = (P[t + cM + 1] - P[t - (M - 1 - cM)]) > 0;
    const scalar_t inner = static_cast<scalar_t>(static_cast<scalar_t>(em) - static_cast<scalar_t>(eM));
    const scalar_t outer = static_cast<scalar_t>(static_cast<scalar_t>(dM) - static_cast<scalar_t>(dm));
    k3[t] = key(static_cast<scalar_t>(a[t] * inner));
    k4[t] = key(static_cast<scalar_t>(a[t] * outer));
  }
}

#if COLA_MINE_AVX2
// The same for float rows, 8 t at a time: each window count is the difference of two prefix
// counts loaded at the window's ends (unaligned loads of P); a true compare is -1, so
// inner = em - eM is (eM mask) - (em mask) and outer = dM - dm is (dm mask) - (dM mask).
template <typename KeyFn>
void band_keys(const float* __restrict a, const int32_t* __restrict P, uint32_t* __restrict k3,
               uint32_t* __restrict k4, int64_t T, int64_t m, int64_t M, KeyFn key) {
  const int64_t cm = m / 2, cM = M / 2;
  const int32_t mi = static_cast<int32_t>(m), Mi = static_cast<int32_t>(M);
  const __m256i vm = _mm256_set1_epi32(mi), vM = _mm256_set1_epi32(Mi), zero = _mm256_setzero_si256();
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256i em = _mm256_cmpeq_epi32(_mm256_sub_epi32(load8(P + t + m - cm), load8(P + t - cm)), vm);
    const __m256i eM = _mm256_cmpeq_epi32(_mm256_sub_epi32(load8(P + t + M - cM), load8(P + t - cM)), vM);
    const __m256i dm = _mm256_cmpgt_epi32(_mm256_sub_epi32(load8(P + t + cm + 1), load8(P + t - (m - 1 - cm))), zero);
    const __m256i dM = _mm256_cmpgt_epi32(_mm256_sub_epi32(load8(P + t + cM + 1), load8(P + t - (M - 1 - cM))), zero);
    const __m256 inner = _mm256_cvtepi32_ps(_mm256_sub_epi32(eM, em));
    const __m256 outer = _mm256_cvtepi32_ps(_mm256_sub_epi32(dm, dM));
    const __m256 av = _mm256_loadu_ps(a + t);
    store8(k3 + t, key8(_mm256_mul_ps(av, inner)));  // k3[t] = key(a[t] * inner)
    store8(k4 + t, key8(_mm256_mul_ps(av, outer)));  // k4[t] = key(a[t] * outer)
  }
  for (; t < T; ++t) {
    const int32_t em = (P[t + m - cm] - P[t - cm]) == mi;
    const int32_t eM = (P[t + M - cM] - P[t - cM]) == Mi;
    const int32_t dm = (P[t + cm + 1] - P[t - (m - 1 - cm)]) > 0;
    const int32_t dM = (P[t + cM + 1] - P[t - (M - 1 - cM)]) > 0;
    k3[t] = key(a[t] * static_cast<float>(em - eM));
    k4[t] = key(a[t] * static_cast<float>(dM - dm));
  }
}
#endif

template <typename scalar_t>
struct Work {
  using K = std::conditional_t<std::is_same_v<scalar_t, double>, uint64_t, uint32_t>;
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  Scratch<K> s;

  static K key(scalar_t v) { return key_of(static_cast<acc_t>(v)); }
  static scalar_t value(K k) { return static_cast<scalar_t>(value_of(k)); }

  void row(const scalar_t* a, const scalar_t* kp, int64_t T, int64_t k_easy, int64_t k_hard,
           int64_t m, int64_t M, int64_t* ea, int64_t* eb, int64_t* ha, int64_t* hb) {
    s.reserve(T);
    K* keys = s.keys.data();

    auto kf = [](scalar_t v) { return key(v); };

    // key(a[t]) once: its maximum for easy mining, its median for hard mining
    K* akeys = s.keys2.data();
    keys_plain(a, akeys, T, kf);
    K amin, amax;  // amax: the NaN key when there is a NaN (torch.max propagates it)
    minmax_keys(akeys, T, amin, amax);

    // 2.1 easy mining. max over t with NaN propagating (the NaN key is the largest)
    if (k_easy > 0) {
      keys_masked(a, kp, keys, T, kf);
      topk_keys(s, keys, T, k_easy, ea);
      keys_reversed(a, kp, value(amax), keys, T, kf);
      topk_keys(s, keys, T, k_easy, eb);
    }
    if (k_hard == 0) return;

    // 2.2 median by selection: ascending positions lo and hi (NaN last, as torch.sort)
    const int64_t lo = (T - 1) / 2, hi = T / 2;
    int64_t greater;
    const K klo = median_select_desc(s, akeys, T, T - 1 - lo, amin, amax, greater);
    K khi = klo;
    if (hi != lo && T - 1 - hi < greater) khi = min_key_above(akeys, T, klo);  // the upper middle
    const scalar_t sum = static_cast<scalar_t>(value(klo) + value(khi));
    const scalar_t med = static_cast<scalar_t>(static_cast<scalar_t>(0.5) * sum);

    // masks by window counts over bin = a > med (outside [0, T) counts as 0):
    // erode_s(t) = ones in [t-c, t+s-1-c] == s, dilate_s(t) = ones in [t-(s-1-c), t+c] > 0
    // P is padded with M counts on each side (0 before the row, P[T] after it): every window,
    // clipped or not, is then P[r + 1] - P[l], and a window cut by the border holds fewer than s
    // ones, so count == s is the erosion there too
    // windows longer than 2T+2 act as 2T+2 does: their erosion is never all ones and their
    // dilation reaches the whole row from every t (this bounds the padding for any m, M)
    m = std::min<int64_t>(m, 2 * T + 2);
    M = std::min<int64_t>(M, 2 * T + 2);
    if (static_cast<int64_t>(s.prefix.size()) < T + 2 * M + 2) s.prefix.resize(T + 2 * M + 2);
    int32_t* P = s.prefix.data() + M;
    std::fill(P - M, P, 0);
    prefix_above(a, med, P, T);
    std::fill(P + T + 1, P + T + M + 1, P[T]);
    band_keys(a, P, keys, s.keys2.data(), T, m, M, kf);
    topk_keys(s, keys, T, k_hard, ha);
    topk_keys(s, s.keys2.data(), T, k_hard, hb);
  }
};

