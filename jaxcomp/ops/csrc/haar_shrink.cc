// Pixel moves, then wavelet shrinkage with the Haar wavelet (db1), of RGB images on the
// CPU as one XLA FFI handler: the pixel-deflection defense (jaxcomp/defenses/combined.py)
// and `denoise_wavelet` (jaxcomp/defenses/wavelet.py) for the Haar wavelet, one image at
// a time in cache instead of ~20 passes over the batch in memory.
//
// JaxcompHaarShrink(x, dest, src, consts) -> y, with
//   x: [B, H, W, 3] float32 RGB, H and W divisible by 2^levels;
//   dest, src: [B, K] int32 flat pixel indices: pixel dest[k] takes the value of pixel
//     src[k] of the input, for k in order (a later write to a pixel wins); a move with
//     dest or src outside [0, H W) is skipped (K may be 0);
//   consts: [27] float32: sigma per plane (in the planes' units), the colour matrix
//     M[c][i] and offsets off[c] (planes = M rgb + off), its inverse Minv[i][c] and
//     offsets moff[i] (rgb = Minv planes + moff);
//   attributes: levels; ycbcr (1: planes = M rgb + off, each plane's range s = max - min
//     scales the threshold floor and a constant plane is left as is; 0: planes = rgb,
//     s = 1); bayes (1: BayesShrink, 0: VisuShrink); soft (1: soft, 0: hard); clip (1:
//     the result clipped to [0, 1]); eps (the float32 epsilon of the variance floor).
// Per plane: a `levels`-level Haar DWT (pywt.wavedec2(db1), axes H then W; sub-bands
// of 2x2 blocks [[a, b], [c, d]]: ll = (a + b + c + d) / 2, hl = (a + b - c - d) / 2,
// lh = (a - b + c - d) / 2, hh = (a - b - c + d) / 2), each detail sub-band d thresholded
// at T = sigma^2 / sqrt(max(mean(d^2) - sigma^2, eps s^2)) (BayesShrink) or
// T = sigma sqrt(2 log(H W)) (VisuShrink), soft sign(d) max(|d| - T, 0) or hard
// (d where |d| >= T), inverse DWT. With YCbCr this equals `denoise_wavelet`'s rescaling
// of each plane to [0, 1] (its sigma / s, thresholds and inverse scaling), which
// cancels in exact arithmetic: the Haar details of (p - lo) / s are the details of p
// divided by s.
//
// Per image: the rows are read two at a time (moved pixels patched in a row copy),
// converted to planes and transformed into the level-1 sub-bands; the coarser levels
// work on the cached level-1 ll; the thresholds need the whole forward transform; the
// inverse ends with the level-1 rows, converted back, clipped and written past the
// cache (non-temporal stores; the input is prefetched `kPrefetchRows` ahead). Images are
// tasks on XLA's intra-op pool (parallel.h). Built by jaxcomp/ops/cpu_kernels.py;
// jaxcomp/ops/haar_shrink.py wraps it.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "parallel.h"
#include "rgb.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kConsts = 27;
// Input rows are prefetched this far ahead of the row being converted (4: 15 % faster
// than none, 8: 7 % faster than 4, 16: no better; 256 x 224^2, docs/performance.md).
constexpr int64_t kPrefetchRows = 8;

struct Config {
  int64_t b, h, w, k, levels;
  bool ycbcr, bayes, soft, clip;
  float eps;
  float sigma[3], m[9], off[3], minv[9], moff[3];
};

// Even and odd entries of 16 consecutive floats a, b (in order).
inline __m256 Evens(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)),
                                                0xD8));
}
inline __m256 Odds(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)),
                                                0xD8));
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

// One level of the forward transform on rows r0, r1 (2 n samples each): row i of the
// four sub-bands (n samples each); adds the details' sums of squares to sumsq[0..2].
// SPLIT: the rows' first 16 floor(n / 8) samples come in groups of 8 with the 4 even
// samples first, then the 4 odd ones (`LoadRow<., true>`), so the even / odd split is
// one exchange of 128-bit halves instead of a shuffle and a lane-crossing permutation.
template <bool SPLIT>
void ForwardRows(const float* r0, const float* r1, int64_t n, float* ll, float* hl, float* lh,
                 float* hh, double* sumsq) {
  const __m256 half = _mm256_set1_ps(0.5f);
  __m256 q1 = _mm256_setzero_ps(), q2 = q1, q3 = q1;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 a0 = _mm256_loadu_ps(r0 + 2 * j), a1 = _mm256_loadu_ps(r0 + 2 * j + 8);
    const __m256 b0 = _mm256_loadu_ps(r1 + 2 * j), b1 = _mm256_loadu_ps(r1 + 2 * j + 8);
    const __m256 e0 = SPLIT ? _mm256_permute2f128_ps(a0, a1, 0x20) : Evens(a0, a1);
    const __m256 o0 = SPLIT ? _mm256_permute2f128_ps(a0, a1, 0x31) : Odds(a0, a1);
    const __m256 e1 = SPLIT ? _mm256_permute2f128_ps(b0, b1, 0x20) : Evens(b0, b1);
    const __m256 o1 = SPLIT ? _mm256_permute2f128_ps(b0, b1, 0x31) : Odds(b0, b1);
    const __m256 s0 = _mm256_add_ps(e0, o0), d0 = _mm256_sub_ps(e0, o0);
    const __m256 s1 = _mm256_add_ps(e1, o1), d1 = _mm256_sub_ps(e1, o1);
    const __m256 vhl = _mm256_mul_ps(half, _mm256_sub_ps(s0, s1));
    const __m256 vlh = _mm256_mul_ps(half, _mm256_add_ps(d0, d1));
    const __m256 vhh = _mm256_mul_ps(half, _mm256_sub_ps(d0, d1));
    _mm256_storeu_ps(ll + j, _mm256_mul_ps(half, _mm256_add_ps(s0, s1)));
    _mm256_storeu_ps(hl + j, vhl);
    _mm256_storeu_ps(lh + j, vlh);
    _mm256_storeu_ps(hh + j, vhh);
    q1 = _mm256_fmadd_ps(vhl, vhl, q1);
    q2 = _mm256_fmadd_ps(vlh, vlh, q2);
    q3 = _mm256_fmadd_ps(vhh, vhh, q3);
  }
  double t1 = HorizontalSum(q1), t2 = HorizontalSum(q2), t3 = HorizontalSum(q3);
  for (; j < n; ++j) {
    const float s0 = r0[2 * j] + r0[2 * j + 1], d0 = r0[2 * j] - r0[2 * j + 1];
    const float s1 = r1[2 * j] + r1[2 * j + 1], d1 = r1[2 * j] - r1[2 * j + 1];
    ll[j] = 0.5f * (s0 + s1);
    hl[j] = 0.5f * (s0 - s1);
    lh[j] = 0.5f * (d0 + d1);
    hh[j] = 0.5f * (d0 - d1);
    t1 += double(hl[j]) * hl[j];
    t2 += double(lh[j]) * lh[j];
    t3 += double(hh[j]) * hh[j];
  }
  sumsq[0] += t1;
  sumsq[1] += t2;
  sumsq[2] += t3;
}

// The thresholding of a detail coefficient (module comment).
template <bool SOFT>
inline __m256 Shrink(__m256 d, __m256 t) {
  if (SOFT) {   // d - clamp(d, -t, t)
    const __m256 minus_t = _mm256_sub_ps(_mm256_setzero_ps(), t);
    return _mm256_sub_ps(d, _mm256_min_ps(_mm256_max_ps(d, minus_t), t));
  }
  const __m256 keep = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), d), t, _CMP_GE_OQ);
  return _mm256_and_ps(d, keep);
}
template <bool SOFT>
inline float Shrink(float d, float t) {
  if (SOFT) return d - std::min(std::max(d, -t), t);
  return std::fabs(d) >= t ? d : 0.0f;
}

// The inverse of `ForwardRows<SPLIT>`, the details thresholded at t[0..2] on the way.
template <bool SOFT, bool SPLIT>
void InverseRows(const float* ll, const float* hl, const float* lh, const float* hh,
                 const float* t, int64_t n, float* r0, float* r1) {
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 t1 = _mm256_set1_ps(t[0]), t2 = _mm256_set1_ps(t[1]), t3 = _mm256_set1_ps(t[2]);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 a = _mm256_loadu_ps(ll + j);
    const __m256 h = Shrink<SOFT>(_mm256_loadu_ps(hl + j), t1);
    const __m256 v = Shrink<SOFT>(_mm256_loadu_ps(lh + j), t2);
    const __m256 g = Shrink<SOFT>(_mm256_loadu_ps(hh + j), t3);
    const __m256 s0 = _mm256_add_ps(a, h), s1 = _mm256_sub_ps(a, h);
    const __m256 d0 = _mm256_add_ps(v, g), d1 = _mm256_sub_ps(v, g);
    const __m256 e0 = _mm256_mul_ps(half, _mm256_add_ps(s0, d0));
    const __m256 o0 = _mm256_mul_ps(half, _mm256_sub_ps(s0, d0));
    const __m256 e1 = _mm256_mul_ps(half, _mm256_add_ps(s1, d1));
    const __m256 o1 = _mm256_mul_ps(half, _mm256_sub_ps(s1, d1));
    if (SPLIT) {
      _mm256_storeu_ps(r0 + 2 * j, _mm256_permute2f128_ps(e0, o0, 0x20));
      _mm256_storeu_ps(r0 + 2 * j + 8, _mm256_permute2f128_ps(e0, o0, 0x31));
      _mm256_storeu_ps(r1 + 2 * j, _mm256_permute2f128_ps(e1, o1, 0x20));
      _mm256_storeu_ps(r1 + 2 * j + 8, _mm256_permute2f128_ps(e1, o1, 0x31));
      continue;
    }
    const __m256 lo0 = _mm256_unpacklo_ps(e0, o0), hi0 = _mm256_unpackhi_ps(e0, o0);
    const __m256 lo1 = _mm256_unpacklo_ps(e1, o1), hi1 = _mm256_unpackhi_ps(e1, o1);
    _mm256_storeu_ps(r0 + 2 * j, _mm256_permute2f128_ps(lo0, hi0, 0x20));
    _mm256_storeu_ps(r0 + 2 * j + 8, _mm256_permute2f128_ps(lo0, hi0, 0x31));
    _mm256_storeu_ps(r1 + 2 * j, _mm256_permute2f128_ps(lo1, hi1, 0x20));
    _mm256_storeu_ps(r1 + 2 * j + 8, _mm256_permute2f128_ps(lo1, hi1, 0x31));
  }
  for (; j < n; ++j) {
    const float h = Shrink<SOFT>(hl[j], t[0]), v = Shrink<SOFT>(lh[j], t[1]);
    const float g = Shrink<SOFT>(hh[j], t[2]);
    const float s0 = ll[j] + h, s1 = ll[j] - h, d0 = v + g, d1 = v - g;
    r0[2 * j] = 0.5f * (s0 + d0);
    r0[2 * j + 1] = 0.5f * (s0 - d0);
    r1[2 * j] = 0.5f * (s1 + d1);
    r1[2 * j + 1] = 0.5f * (s1 - d1);
  }
}

// Where each level's sub-bands live in an image's scratch: level l (1-based), plane c,
// band k (0 = ll, 1 = hl, 2 = lh, 3 = hh), [H >> l, W >> l] row-major.
struct Layout {
  int64_t h, w;
  std::vector<int64_t> start;  // per level; start[levels + 1] = the size
  Layout(const Config& K) : h(K.h), w(K.w), start(K.levels + 2, 0) {
    for (int64_t l = 1; l <= K.levels; ++l)
      start[l + 1] = start[l] + 12 * (h >> l) * (w >> l);
  }
  float* Band(float* s, int64_t l, int64_t c, int64_t k) const {
    return s + start[l] + (c * 4 + k) * (h >> l) * (w >> l);
  }
};

// Row `row` of image `x` (interleaved RGB) as three planes p[c][0 .. W), the moved pixels
// patched in (`moves` sorted by destination from `*next` on); updates the planes' min/max.
// The first 16 floor(W / 16) samples come in groups of 8 with the even pixels first
// (`ForwardRows<true>`), the rest in order.
template <bool YCBCR>
void LoadRow(const Config& K, const float* x, int64_t row,
             const std::vector<std::pair<int32_t, int32_t>>& moves, size_t* next,
             float* copy, float* const* p, __m256* lo, __m256* hi, float* slo, float* shi) {
  const float* src = x + row * K.w * 3;
  if (*next < moves.size() && moves[*next].first / K.w == row) {
    std::memcpy(copy, src, sizeof(float) * 3 * K.w);
    for (; *next < moves.size() && moves[*next].first / K.w == row; ++*next) {
      const int64_t d = moves[*next].first % K.w, s = moves[*next].second;
      for (int i = 0; i < 3; ++i) copy[3 * d + i] = x[3 * s + i];
    }
    src = copy;
  }
  int64_t j = 0;
  const float* ahead = x + std::min(row + kPrefetchRows, K.h - 1) * K.w * 3;
  for (; j < K.w / 16 * 16; j += 8) {
    for (int q = 0; q < 24; q += 16)
      _mm_prefetch(reinterpret_cast<const char*>(ahead + 3 * j + q), _MM_HINT_T0);
    __m256 rgb[3];
    jaxcomp::Deinterleave<true>(_mm256_loadu_ps(src + 3 * j), _mm256_loadu_ps(src + 3 * j + 8),
                                _mm256_loadu_ps(src + 3 * j + 16), rgb);
    for (int c = 0; c < 3; ++c) {
      __m256 v = rgb[c];
      if (YCBCR) {
        v = _mm256_set1_ps(K.off[c]);
        for (int i = 0; i < 3; ++i) v = _mm256_fmadd_ps(_mm256_set1_ps(K.m[c * 3 + i]), rgb[i], v);
      }
      _mm256_storeu_ps(p[c] + j, v);
      lo[c] = _mm256_min_ps(lo[c], v);
      hi[c] = _mm256_max_ps(hi[c], v);
    }
  }
  for (; j < K.w; ++j)
    for (int c = 0; c < 3; ++c) {
      float v = src[3 * j + c];
      if (YCBCR) {
        v = K.off[c];
        for (int i = 0; i < 3; ++i) v = std::fma(K.m[c * 3 + i], src[3 * j + i], v);
      }
      p[c][j] = v;
      slo[c] = std::min(slo[c], v);
      shi[c] = std::max(shi[c], v);
    }
}

// Three planes' row p[c][0 .. W) back to interleaved RGB (clipped to [0, 1] if asked).
// Where the row is 32-byte aligned the stores bypass the cache (the output is not read
// again here), so no cache line is read before it is written.
// The planes' samples are ordered as `LoadRow` leaves them (`InverseRows<., true>`).
template <bool YCBCR>
void StoreRow(const Config& K, float* const* p, float* y) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const bool stream = (reinterpret_cast<uintptr_t>(y) & 31) == 0;
  int64_t j = 0;
  for (; j < K.w / 16 * 16; j += 8) {
    __m256 v[3], rgb[3];
    for (int c = 0; c < 3; ++c) v[c] = _mm256_loadu_ps(p[c] + j);
    for (int i = 0; i < 3; ++i) {
      rgb[i] = v[i];
      if (YCBCR) {
        rgb[i] = _mm256_set1_ps(K.moff[i]);
        for (int c = 0; c < 3; ++c)
          rgb[i] = _mm256_fmadd_ps(_mm256_set1_ps(K.minv[i * 3 + c]), v[c], rgb[i]);
      }
      if (K.clip) rgb[i] = _mm256_min_ps(_mm256_max_ps(rgb[i], zero), one);
    }
    __m256 out[3];
    jaxcomp::Interleave<true>(rgb, out);
    for (int q = 0; q < 3; ++q) {
      if (stream) _mm256_stream_ps(y + 3 * j + 8 * q, out[q]);
      else _mm256_storeu_ps(y + 3 * j + 8 * q, out[q]);
    }
  }
  for (; j < K.w; ++j)
    for (int i = 0; i < 3; ++i) {
      float v = p[i][j];
      if (YCBCR) {
        v = K.moff[i];
        for (int c = 0; c < 3; ++c) v = std::fma(K.minv[i * 3 + c], p[c][j], v);
      }
      y[3 * j + i] = K.clip ? std::min(std::max(v, 0.0f), 1.0f) : v;
    }
}

// The thresholds T[l][c][k - 1] of the detail sub-bands (module comment).
void Thresholds(const Config& K, const double* sumsq, const float* lo, const float* hi,
                float* t) {
  for (int64_t l = 1; l <= K.levels; ++l)
    for (int c = 0; c < 3; ++c) {
      const double s = K.ycbcr ? double(hi[c]) - lo[c] : 1.0;
      const double sigma = K.sigma[c], var = sigma * sigma;
      const double n = double(K.h >> l) * double(K.w >> l);
      for (int k = 0; k < 3; ++k) {
        float& out = t[((l - 1) * 3 + c) * 3 + k];
        if (K.ycbcr && s == 0) {
          out = 0;  // a constant plane is left as it is
        } else if (K.bayes) {
          const double dvar = sumsq[((l - 1) * 3 + c) * 3 + k] / n;
          out = float(var / std::sqrt(std::max(dvar - var, double(K.eps) * s * s)));
        } else {
          out = float(sigma * std::sqrt(2.0 * std::log(double(K.h) * double(K.w))));
        }
      }
    }
}

template <bool YCBCR, bool SOFT>
void Image(const Config& K, const Layout& L, const float* x, const int32_t* dest,
           const int32_t* src, float* y, std::vector<float>& scratch) {
  const int64_t h = K.h, w = K.w, levels = K.levels;
  scratch.resize(L.start[levels + 1] + 9 * w);
  float* s = scratch.data();
  float* rows = s + L.start[levels + 1];      // two rows of three planes, then a row copy
  float* p0[3] = {rows, rows + w, rows + 2 * w};
  float* p1[3] = {rows + 3 * w, rows + 4 * w, rows + 5 * w};
  float* copy = rows + 6 * w;

  thread_local std::vector<std::pair<int32_t, int32_t>> moves;
  moves.clear();
  for (int64_t k = 0; k < K.k; ++k)
    if (dest[k] >= 0 && dest[k] < h * w && src[k] >= 0 && src[k] < h * w)
      moves.emplace_back(dest[k], src[k]);
  std::stable_sort(moves.begin(), moves.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  size_t next = 0;

  // Forward, level 1: rows two at a time.
  __m256 vlo[3], vhi[3];
  float slo[3], shi[3];
  for (int c = 0; c < 3; ++c) {
    vlo[c] = _mm256_set1_ps(INFINITY);
    vhi[c] = _mm256_set1_ps(-INFINITY);
    slo[c] = INFINITY;
    shi[c] = -INFINITY;
  }
  std::vector<double> sumsq(levels * 9, 0.0);
  const int64_t w1 = w / 2;
  for (int64_t i = 0; i < h / 2; ++i) {
    LoadRow<YCBCR>(K, x, 2 * i, moves, &next, copy, p0, vlo, vhi, slo, shi);
    LoadRow<YCBCR>(K, x, 2 * i + 1, moves, &next, copy, p1, vlo, vhi, slo, shi);
    for (int c = 0; c < 3; ++c)
      ForwardRows<true>(p0[c], p1[c], w1, L.Band(s, 1, c, 0) + i * w1,
                        L.Band(s, 1, c, 1) + i * w1, L.Band(s, 1, c, 2) + i * w1,
                        L.Band(s, 1, c, 3) + i * w1, &sumsq[c * 3]);
  }
  float lo[3], hi[3];
  for (int c = 0; c < 3; ++c) {
    alignas(32) float a[8], b[8];
    _mm256_store_ps(a, vlo[c]);
    _mm256_store_ps(b, vhi[c]);
    lo[c] = *std::min_element(a, a + 8);
    hi[c] = *std::max_element(b, b + 8);
    lo[c] = std::min(lo[c], slo[c]);
    hi[c] = std::max(hi[c], shi[c]);
  }
  // The coarser levels, on the previous level's ll.
  for (int64_t l = 2; l <= levels; ++l) {
    const int64_t wp = w >> (l - 1), wl = w >> l;
    for (int c = 0; c < 3; ++c) {
      const float* prev = L.Band(s, l - 1, c, 0);
      for (int64_t i = 0; i < (h >> l); ++i)
        ForwardRows<false>(prev + 2 * i * wp, prev + (2 * i + 1) * wp, wl,
                           L.Band(s, l, c, 0) + i * wl, L.Band(s, l, c, 1) + i * wl,
                           L.Band(s, l, c, 2) + i * wl, L.Band(s, l, c, 3) + i * wl,
                           &sumsq[((l - 1) * 3 + c) * 3]);
    }
  }
  std::vector<float> t(levels * 9);
  Thresholds(K, sumsq.data(), lo, hi, t.data());
  // Inverse: the coarser levels into the previous level's ll, then level 1 into rows.
  for (int64_t l = levels; l >= 2; --l) {
    const int64_t wp = w >> (l - 1), wl = w >> l;
    for (int c = 0; c < 3; ++c) {
      float* prev = L.Band(s, l - 1, c, 0);
      const float* tc = &t[((l - 1) * 3 + c) * 3];
      for (int64_t i = 0; i < (h >> l); ++i)
        InverseRows<SOFT, false>(L.Band(s, l, c, 0) + i * wl, L.Band(s, l, c, 1) + i * wl,
                          L.Band(s, l, c, 2) + i * wl, L.Band(s, l, c, 3) + i * wl, tc, wl,
                          prev + 2 * i * wp, prev + (2 * i + 1) * wp);
    }
  }
  for (int64_t i = 0; i < h / 2; ++i) {
    for (int c = 0; c < 3; ++c)
      InverseRows<SOFT, true>(L.Band(s, 1, c, 0) + i * w1, L.Band(s, 1, c, 1) + i * w1,
                        L.Band(s, 1, c, 2) + i * w1, L.Band(s, 1, c, 3) + i * w1, &t[c * 3], w1,
                        p0[c], p1[c]);
    StoreRow<YCBCR>(K, p0, y + 2 * i * w * 3);
    StoreRow<YCBCR>(K, p1, y + (2 * i + 1) * w * 3);
  }
  _mm_sfence();   // the streamed stores are visible before the task ends
}

ffi::Error ShrinkImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> dest,
                      ffi::Buffer<ffi::S32> src, ffi::Buffer<ffi::F32> consts,
                      ffi::ResultBuffer<ffi::F32> y, int64_t levels, int64_t ycbcr, int64_t bayes,
                      int64_t soft, int64_t clip, float eps) {
  const auto xd = x.dimensions(), dd = dest.dimensions(), sd = src.dimensions();
  if (xd.size() != 4 || xd[3] != 3)
    return ffi::Error::InvalidArgument("haar_shrink: x must be [B, H, W, 3]");
  if (levels < 1 || xd[1] % (int64_t{1} << levels) || xd[2] % (int64_t{1} << levels))
    return ffi::Error::InvalidArgument("haar_shrink: H and W must be divisible by 2^levels");
  if (dd.size() != 2 || sd.size() != 2 || dd[0] != xd[0] || sd[0] != xd[0] || dd[1] != sd[1])
    return ffi::Error::InvalidArgument("haar_shrink: dest and src must be [B, K]");
  if (consts.element_count() != kConsts || y->element_count() != x.element_count())
    return ffi::Error::InvalidArgument("haar_shrink: inconsistent consts or output shapes");
  Config K;
  K.b = xd[0];
  K.h = xd[1];
  K.w = xd[2];
  K.k = dd[1];
  K.levels = levels;
  K.ycbcr = ycbcr != 0;
  K.bayes = bayes != 0;
  K.soft = soft != 0;
  K.clip = clip != 0;
  K.eps = eps;
  const float* cp = consts.typed_data();
  std::copy(cp, cp + 3, K.sigma);
  std::copy(cp + 3, cp + 12, K.m);
  std::copy(cp + 12, cp + 15, K.off);
  std::copy(cp + 15, cp + 24, K.minv);
  std::copy(cp + 24, cp + 27, K.moff);
  const Layout L(K);
  const auto image = K.ycbcr ? (K.soft ? Image<true, true> : Image<true, false>)
                             : (K.soft ? Image<false, true> : Image<false, false>);
  const float* xp = x.typed_data();
  const int32_t *dp = dest.typed_data(), *sp = src.typed_data();
  float* yp = y->typed_data();
  const int64_t pixels = K.h * K.w * 3;
  jaxcomp::ParallelTasks(pool, K.b, K.b - 1, [&](int64_t n) {
    thread_local std::vector<float> scratch;
    image(K, L, xp + n * pixels, dp + n * K.k, sp + n * K.k, yp + n * pixels, scratch);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcompHaarShrink, ShrinkImpl,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()   // x
        .Arg<ffi::Buffer<ffi::S32>>()   // dest
        .Arg<ffi::Buffer<ffi::S32>>()   // src
        .Arg<ffi::Buffer<ffi::F32>>()   // consts
        .Ret<ffi::Buffer<ffi::F32>>()   // y
        .Attr<int64_t>("levels")
        .Attr<int64_t>("ycbcr")
        .Attr<int64_t>("bayes")
        .Attr<int64_t>("soft")
        .Attr<int64_t>("clip")
        .Attr<float>("eps"));
