// The JPEG-DL layer (jaxcomp/layers/jpeg_layer.py) on the CPU, forward and backward, as
// XLA FFI handlers: colour transform, 8x8 DCT, R rounds of the soft quantizer, inverse
// DCT, inverse colour transform, one 8x8 block at a time in registers.
//
// The same computation as `jpeg_transform.coefficients` -> `soft_quantize` (R times)
// -> `jpeg_transform.reconstruct` (see those for the definitions), with
//   x: [B, H, W, C] float32 images (C = 1 or 3), planes zero-padded to multiples of 8;
//   tables: [4, R, C, 8, 8] float32: per round and plane the steps q, the hardness
//     alpha, and the index window lo, hi of the soft quantizer, each 8x8 table
//     TRANSPOSED (entry [v][u] holds frequency (u, v)), as the blocks are held here;
//   consts: [64 + 2 C^2 + C] float32: the DCT matrix D[u][k], the colour matrix
//     M[c][i], its inverse Minv[i][c], the plane offsets;
//   in_scale, in_shift, out_scale, out_shift: planes = M (in_scale x + in_shift) + off,
//     x = out_scale Minv (planes - off) + out_shift.
// JaxcompJpegDlForward: y [B, H, W, C]. JaxcompJpegDlForwardSave: y and the quantizer's
// derivatives res [B, H/8, C, W/8, R, F, 64] (d/dz, d/dq and, F = 3, d/dalpha).
// JaxcompJpegDlBackward (res, consts, the output cotangent ct): the image gradient
// [B, H, W, C] (or nothing: a 0-element output) and, per image and block row, the
// gradients of the steps (and alpha) [B, H/8, F - 1, R, C, 8, 8], transposed as the
// tables; the caller sums them, so the result does not depend on the thread schedule.
//
// A block is 8 AVX2 vectors (rows, 8 lanes); the 2-D DCT is two passes of 64 FMAs
// with an 8x8 transpose between them, which leaves the coefficients transposed.
// Work items are (image, block row), in tasks on XLA's intra-op pool (parallel.h).
// Built by jaxcomp/ops/cpu_kernels.py; jaxcomp/ops/jpeg_dl_layer.py wraps it.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "parallel.h"
#include "rgb.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {
  int64_t b, h, w, c, rounds, nh, nw;
  int64_t fields;   // of the saved derivatives: dz, dq (2), and dalpha (3)
  int64_t Wp() const { return nw * 8; }
};

struct Consts {
  __m256 d[64];               // D[u][k] broadcast
  float m[9], minv[9], off[3];
  float in_scale, in_shift, out_scale, out_shift;
};

// out[u] = sum_k D[u][k] in[k]: the 1-D DCT down the rows of a block.
inline void Dct(const Consts& K, const __m256* in, __m256* out) {
  for (int u = 0; u < 8; ++u) {
    __m256 acc = _mm256_mul_ps(K.d[u * 8], in[0]);
    for (int k = 1; k < 8; ++k) acc = _mm256_fmadd_ps(K.d[u * 8 + k], in[k], acc);
    out[u] = acc;
  }
}

// out[k] = sum_u D[u][k] in[u]: the inverse (transpose) of `Dct`.
inline void Idct(const Consts& K, const __m256* in, __m256* out) {
  for (int k = 0; k < 8; ++k) {
    __m256 acc = _mm256_mul_ps(K.d[k], in[0]);
    for (int u = 1; u < 8; ++u) acc = _mm256_fmadd_ps(K.d[u * 8 + k], in[u], acc);
    out[k] = acc;
  }
}

inline void Transpose(__m256* r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// The 2-D DCT of a block of rows, transposed: out[v] holds frequencies (u = lane, v).
inline void Dct2T(const Consts& K, const __m256* rows, __m256* out) {
  __m256 a[8];
  Dct(K, rows, a);
  Transpose(a);
  Dct(K, a, out);
}

// Its inverse: transposed coefficients -> rows.
inline void Idct2T(const Consts& K, const __m256* coef, __m256* rows) {
  __m256 a[8];
  Idct(K, coef, a);
  Transpose(a);
  Idct(K, a, rows);
}

// exp(x) for x <= 0, Cephes' single-precision polynomial (~1 ulp); 0 below -88.
inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.0f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// While alive, this thread flushes denormal results to zero and reads denormal inputs
// as zero: the weights of far candidates underflow (exp(-beta j (j - 2d)), beta up to
// ~3e5), and an x86 core takes ~100 cycles per operation on a denormal. They are below
// 1.2e-38 against the nearest candidate's weight 1.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }   // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
};

inline __m256 Clamp(__m256 v, __m256 lo, __m256 hi) {
  return _mm256_min_ps(_mm256_max_ps(v, lo), hi);
}

inline __m256 Round(__m256 v) {
  return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// Per round and plane, what the quantizer needs of the tables, entry by entry (64 floats
// per field, transposed as the blocks): the step q, 1/q, beta = alpha q^2, the window's
// lowest first candidate lo and highest hi - (L - 1), q^3, and G_j = exp(-2 beta j) for
// j = 1 .. L - 2 (`Quantize`).
enum Field { kQ, kInvQ, kBeta, kLo, kHiFirst, kQ3, kG1 };

struct Quantizer {
  int64_t L, fields;
  std::vector<float> data;       // [R, C, fields, 64]
  std::vector<uint8_t> near;     // [R, C, 8]: row v of the table has G_1 < FLT_MIN

  Quantizer(const float* tables, int64_t rounds, int64_t channels, int64_t candidates)
      : L(candidates), fields(kG1 + std::max<int64_t>(candidates - 2, 0)),
        data(rounds * channels * fields * 64), near(rounds * channels * 8, 1) {
    const int64_t per_kind = rounds * channels * 64;
    for (int64_t rc = 0; rc < rounds * channels; ++rc)
      for (int64_t e = 0; e < 64; ++e) {
        const float q = tables[rc * 64 + e], alpha = tables[per_kind + rc * 64 + e];
        const float beta = alpha * q * q;
        float* f = data.data() + rc * fields * 64 + e;
        f[kQ * 64] = q;
        f[kInvQ * 64] = 1.0f / q;
        f[kBeta * 64] = beta;
        f[kLo * 64] = tables[2 * per_kind + rc * 64 + e];
        f[kHiFirst * 64] = tables[3 * per_kind + rc * 64 + e] - float(L - 1);
        f[kQ3 * 64] = q * q * q;
        for (int64_t j = 1; j <= L - 2; ++j)
          f[(kG1 + j - 1) * 64] = float(std::exp(-2.0 * double(beta) * double(j)));
        if (L < 3 || !(f[kG1 * 64] < FLT_MIN)) near[rc * 8 + e / 8] = 0;
      }
  }

  // Whether row v of round r, plane c is so hard (beta > ~44 in every entry) that the
  // candidates two or more steps from the nearest one weigh exactly 0 (w_2 = w_1^2 G_1
  // flushes to zero): `Quantize` then sums the nearest three only, with the same result.
  bool Near(int64_t r, int64_t c, int64_t channels, int v) const {
    return near[(r * channels + c) * 8 + v] != 0;
  }

  // The fields of round r, plane c; row v of field k is at + k * 64 + 8 * v.
  const float* At(int64_t r, int64_t c, int64_t channels) const {
    return data.data() + (r * channels + c) * fields * 64;
  }
};

// The soft quantizer of `ops.quantization._moments` on 8 coefficients of row v of a
// block (`f` = `Quantizer::At`): returns z_hat; with GRADS also d z_hat / dz,
// d z_hat / dq, d z_hat / dalpha. Relative to the nearest candidate b (t = z / q,
// d = t - b) the weight of candidate b + j is w_j = exp(beta j (2d - j)); only w_1 and
// w_-1 take an exponential: w_(j+1) = w_j w_1 G_j (and the same in -d for negative j),
// every factor <= 1 in a lane where candidate b + j exists (the others are masked
// out), so nothing overflows however hard the quantizer.
template <bool GRADS, int L, int J>
inline __m256 Quantize(__m256 z, const float* f, int v, __m256* gz, __m256* gq, __m256* ga) {
  auto field = [&](int k) { return _mm256_loadu_ps(f + k * 64 + 8 * v); };
  const __m256 q = field(kQ), beta = field(kBeta);
  const __m256 t = _mm256_mul_ps(z, field(kInvQ));
  const __m256 i0 = Clamp(_mm256_sub_ps(Round(t), _mm256_set1_ps(float(L / 2))), field(kLo),
                          field(kHiFirst));
  const __m256 c = Clamp(Round(_mm256_sub_ps(t, i0)), _mm256_setzero_ps(),
                         _mm256_set1_ps(float(L - 1)));
  const __m256 b = _mm256_add_ps(i0, c);
  const __m256 d = _mm256_sub_ps(t, b);
  const __m256 two_d = _mm256_add_ps(d, d), one = _mm256_set1_ps(1.0f);
  __m256 s = one, o1 = _mm256_setzero_ps(), o2 = o1, o3 = o1;   // j = 0: w = 1
  for (int side = 1; side >= -1; side -= 2) {                     // j > 0, then j < 0
    // w_side = exp(beta side (2d - side)) = exp(beta (side 2d - 1))
    const __m256 signed_two_d = side > 0 ? two_d : _mm256_sub_ps(_mm256_setzero_ps(), two_d);
    const __m256 w1 = Exp(_mm256_mul_ps(beta, _mm256_sub_ps(signed_two_d, one)));
    __m256 w = w1;
    for (int j = 1; j < L && j <= J; ++j) {   // J: the farthest candidate summed
      // Candidate b + side j exists where c + side j lies in [0, L - 1].
      const __m256 exists = side > 0
          ? _mm256_cmp_ps(c, _mm256_set1_ps(float(L - 1 - j)), _CMP_LE_OQ)
          : _mm256_cmp_ps(c, _mm256_set1_ps(float(j)), _CMP_GE_OQ);
      const __m256 wm = _mm256_and_ps(exists, w);
      const float sj = float(side * j);
      s = _mm256_add_ps(s, wm);
      o1 = _mm256_fmadd_ps(_mm256_set1_ps(sj), wm, o1);
      if (GRADS) {
        o2 = _mm256_fmadd_ps(_mm256_set1_ps(sj * sj), wm, o2);
        o3 = _mm256_fmadd_ps(_mm256_set1_ps(sj * sj * sj), wm, o3);
      }
      if (j + 1 < L) w = _mm256_mul_ps(_mm256_mul_ps(w, w1), field(kG1 + j - 1));
    }
  }
  const __m256 inv_s = _mm256_div_ps(one, s);
  const __m256 mean = _mm256_mul_ps(o1, inv_s);
  if (!GRADS) return _mm256_mul_ps(q, _mm256_add_ps(b, mean));
  const __m256 e2 = _mm256_mul_ps(o2, inv_s);
  const __m256 var = _mm256_sub_ps(e2, _mm256_mul_ps(mean, mean));
  const __m256 cov3 = _mm256_sub_ps(_mm256_mul_ps(o3, inv_s), _mm256_mul_ps(mean, e2));
  const __m256 two_beta = _mm256_add_ps(beta, beta);
  *gz = _mm256_mul_ps(two_beta, var);
  *gq = _mm256_add_ps(_mm256_add_ps(b, mean),
                      _mm256_mul_ps(two_beta, _mm256_sub_ps(
                          _mm256_mul_ps(_mm256_sub_ps(d, b), var), cov3)));
  *ga = _mm256_mul_ps(field(kQ3), _mm256_sub_ps(_mm256_mul_ps(two_d, var), cov3));
  return _mm256_mul_ps(q, _mm256_add_ps(b, mean));
}

// Channels of 8 consecutive pixels from interleaved memory, and back.
template <int C>
inline void LoadPixels(const float* src, __m256* ch) {
  if (C == 3) jaxcomp::Deinterleave(_mm256_loadu_ps(src), _mm256_loadu_ps(src + 8),
                           _mm256_loadu_ps(src + 16), ch);
  else ch[0] = _mm256_loadu_ps(src);
}

template <int C>
inline void StorePixels8(const __m256* ch, float* dst) {
  if (C == 3) jaxcomp::Interleave(ch, dst);
  else _mm256_storeu_ps(dst, ch[0]);
}

// Planes of one block row of image n: P[c][k][w] = sum_i m[c][i] (scale x_i + shift) + off[c]
// for pixels inside the image, 0 in the padding. Eight pixels at a time, the rest one by one.
template <int C>
void LoadPlanes(const Shape& S, const float* x, int64_t n, int64_t row_block,
                const float* m, float scale, float shift, const float* off, float* P) {
  const int64_t wp = S.Wp(), w8 = S.w / 8 * 8;
  __m256 mv[C * C], ov[C];
  for (int i = 0; i < C * C; ++i) mv[i] = _mm256_set1_ps(m[i]);
  for (int c = 0; c < C; ++c) ov[c] = _mm256_set1_ps(off[c]);
  const __m256 sv = _mm256_set1_ps(scale), tv = _mm256_set1_ps(shift);
  for (int64_t k = 0; k < 8; ++k) {
    const int64_t r = row_block * 8 + k;
    if (r >= S.h) {
      for (int c = 0; c < C; ++c) std::fill(P + (c * 8 + k) * wp, P + (c * 8 + k + 1) * wp, 0.0f);
      continue;
    }
    const float* src = x + (n * S.h + r) * S.w * C;
    for (int64_t w = 0; w < w8; w += 8) {
      __m256 v[C];
      LoadPixels<C>(src + w * C, v);
      for (int i = 0; i < C; ++i) v[i] = _mm256_fmadd_ps(v[i], sv, tv);
      for (int c = 0; c < C; ++c) {
        __m256 acc = _mm256_mul_ps(mv[c * C], v[0]);
        for (int i = 1; i < C; ++i) acc = _mm256_fmadd_ps(mv[c * C + i], v[i], acc);
        _mm256_storeu_ps(P + (c * 8 + k) * wp + w, _mm256_add_ps(acc, ov[c]));
      }
    }
    for (int c = 0; c < C; ++c) {
      float* dst = P + (c * 8 + k) * wp;
      for (int64_t w = w8; w < S.w; ++w) {
        float acc = 0.0f;
        for (int i = 0; i < C; ++i) acc += m[c * C + i] * (src[w * C + i] * scale + shift);
        dst[w] = acc + off[c];
      }
      std::fill(dst + S.w, dst + wp, 0.0f);
    }
  }
}

// Pixels of one block row from planes: y_i = scale (sum_c m[i][c] (P[c] - off[c])) + shift,
// the padding cropped.
template <int C>
void StorePixels(const Shape& S, const float* P, int64_t n, int64_t row_block, const float* m,
                 const float* off, float scale, float shift, float* y) {
  const int64_t wp = S.Wp(), w8 = S.w / 8 * 8;
  __m256 mv[C * C], ov[C];
  for (int i = 0; i < C * C; ++i) mv[i] = _mm256_set1_ps(m[i]);
  for (int c = 0; c < C; ++c) ov[c] = _mm256_set1_ps(off[c]);
  const __m256 sv = _mm256_set1_ps(scale), tv = _mm256_set1_ps(shift);
  for (int64_t k = 0; k < 8 && row_block * 8 + k < S.h; ++k) {
    float* dst = y + (n * S.h + row_block * 8 + k) * S.w * C;
    for (int64_t w = 0; w < w8; w += 8) {
      __m256 p[C], out[C];
      for (int c = 0; c < C; ++c)
        p[c] = _mm256_sub_ps(_mm256_loadu_ps(P + (c * 8 + k) * wp + w), ov[c]);
      for (int i = 0; i < C; ++i) {
        __m256 acc = _mm256_mul_ps(mv[i * C], p[0]);
        for (int c = 1; c < C; ++c) acc = _mm256_fmadd_ps(mv[i * C + c], p[c], acc);
        out[i] = _mm256_fmadd_ps(acc, sv, tv);
      }
      StorePixels8<C>(out, dst + w * C);
    }
    for (int64_t w = w8; w < S.w; ++w)
      for (int i = 0; i < C; ++i) {
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) acc += m[i * C + c] * (P[(c * 8 + k) * wp + w] - off[c]);
        dst[w * C + i] = acc * scale + shift;
      }
  }
}

inline void LoadBlock(const float* P, int64_t wp, __m256* rows) {
  for (int k = 0; k < 8; ++k) rows[k] = _mm256_loadu_ps(P + k * wp);
}

inline void StoreBlock(const __m256* rows, int64_t wp, float* P) {
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(P + k * wp, rows[k]);
}

const float kZero[3] = {0.0f, 0.0f, 0.0f};

// One (image, block row) item of the forward pass: y, and with SAVE the quantizer's
// derivatives for the backward pass, res[item][c][block][round][field][64], the fields
// dz, dq and (S.fields = 3) dalpha.
template <int C, int L, bool SAVE>
void ForwardItem(const Shape& S, const Consts& K, const float* x, const Quantizer& Qz,
                 float* y, float* res, int64_t item, std::vector<float>& scratch) {
  const int64_t n = item / S.nh, rb = item % S.nh, wp = S.Wp(), R = S.rounds;
  scratch.resize(C * 8 * wp);
  float* P = scratch.data();
  LoadPlanes<C>(S, x, n, rb, K.m, K.in_scale, K.in_shift, K.off, P);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t bj = 0; bj < S.nw; ++bj) {
      __m256 rows[8], z[8];
      LoadBlock(P + c * 8 * wp + bj * 8, wp, rows);
      Dct2T(K, rows, z);
      for (int64_t r = 0; r < R; ++r) {
        const float* f = Qz.At(r, c, C);
        if (!SAVE) {
          for (int v = 0; v < 8; ++v)
            z[v] = Qz.Near(r, c, C, v)
                       ? Quantize<false, L, 1>(z[v], f, v, nullptr, nullptr, nullptr)
                       : Quantize<false, L, L - 1>(z[v], f, v, nullptr, nullptr, nullptr);
          continue;
        }
        float* rr = res + (((item * C + c) * S.nw + bj) * R + r) * S.fields * 64;
        for (int v = 0; v < 8; ++v) {
          __m256 dz, dq, da;
          z[v] = Qz.Near(r, c, C, v) ? Quantize<true, L, 1>(z[v], f, v, &dz, &dq, &da)
                                     : Quantize<true, L, L - 1>(z[v], f, v, &dz, &dq, &da);
          _mm256_storeu_ps(rr + 8 * v, dz);
          _mm256_storeu_ps(rr + 64 + 8 * v, dq);
          if (S.fields == 3) _mm256_storeu_ps(rr + 128 + 8 * v, da);
        }
      }
      Idct2T(K, z, rows);
      StoreBlock(rows, wp, P + c * 8 * wp + bj * 8);
    }
  StorePixels<C>(S, P, n, rb, K.minv, K.off, K.out_scale, K.out_shift, y);
}

// One item of the backward pass from the saved derivatives `res`: the gradients of the
// steps (and, S.fields = 3, of alpha) of this item into gtab[item], and with gx the
// image gradient.
template <int C>
void BackwardItem(const Shape& S, const Consts& K, const float* res, const float* ct,
                  float* gx, float* gtab, int64_t item, std::vector<float>& scratch) {
  const int64_t n = item / S.nh, rb = item % S.nh, wp = S.Wp(), R = S.rounds;
  scratch.resize(C * 8 * wp);
  float* G = scratch.data();                 // the cotangent's planes, then the gradient's
  // The adjoint of `StorePixels`: G[c] = sum_i Minv[i][c] out_scale ct_i (no offsets).
  float minv_t[9];
  for (int i = 0; i < C; ++i)
    for (int c = 0; c < C; ++c) minv_t[c * C + i] = K.minv[i * C + c];
  LoadPlanes<C>(S, ct, n, rb, minv_t, K.out_scale, 0.0f, kZero, G);
  const int64_t parts = S.fields - 1;
  float* gq_out = gtab + item * parts * R * C * 64;   // [parts, R, C, 64]
  float* ga_out = gq_out + R * C * 64;
  std::fill(gq_out, gq_out + parts * R * C * 64, 0.0f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t bj = 0; bj < S.nw; ++bj) {
      __m256 rows[8], g[8];
      LoadBlock(G + c * 8 * wp + bj * 8, wp, rows);
      Dct2T(K, rows, g);                     // the adjoint of the inverse DCT
      for (int64_t r = R - 1; r >= 0; --r) {
        const float* rr = res + (((item * C + c) * S.nw + bj) * R + r) * S.fields * 64;
        float* gq = gq_out + (r * C + c) * 64;
        float* ga = ga_out + (r * C + c) * 64;
        for (int v = 0; v < 8; ++v) {
          _mm256_storeu_ps(gq + 8 * v, _mm256_fmadd_ps(g[v], _mm256_loadu_ps(rr + 64 + 8 * v),
                                                       _mm256_loadu_ps(gq + 8 * v)));
          if (S.fields == 3)
            _mm256_storeu_ps(ga + 8 * v, _mm256_fmadd_ps(
                g[v], _mm256_loadu_ps(rr + 128 + 8 * v), _mm256_loadu_ps(ga + 8 * v)));
          g[v] = _mm256_mul_ps(g[v], _mm256_loadu_ps(rr + 8 * v));
        }
      }
      if (gx == nullptr) continue;
      Idct2T(K, g, rows);                    // the adjoint of the DCT
      StoreBlock(rows, wp, G + c * 8 * wp + bj * 8);
    }
  if (gx == nullptr) return;
  // The adjoint of `LoadPlanes`: gx_i = in_scale sum_c M[c][i] G[c], the padding cropped.
  float m_t[9];
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < C; ++i) m_t[i * C + c] = K.m[c * C + i];
  StorePixels<C>(S, G, n, rb, m_t, kZero, K.in_scale, 0.0f, gx);
}

// The forward item functions for C channels, by the number of candidates
// L = 1 .. kMaxCandidates (a compile-time L unrolls the quantizer's loops).
constexpr int kMaxCandidates = 8;

template <int C, bool SAVE>
struct ForwardItems {
  template <size_t... Ls>
  static constexpr auto Table(std::index_sequence<Ls...>) {
    return std::array{&ForwardItem<C, int(Ls) + 1, SAVE>...};
  }
  static constexpr auto kByCandidates = Table(std::make_index_sequence<kMaxCandidates>());
};

// The shape of x ([B, H, W, 1 or 3]) with R rounds and `fields` saved derivatives, and
// the constants.
ffi::Error Prepare(ffi::Span<const int64_t> xd, int64_t rounds, int64_t fields,
                   ffi::Buffer<ffi::F32>& consts, float in_scale, float in_shift,
                   float out_scale, float out_shift, Shape* S, Consts* K) {
  if (xd.size() != 4 || (xd[3] != 1 && xd[3] != 3))
    return ffi::Error::InvalidArgument("jpeg_dl_layer: x must be [B, H, W, 1 or 3]");
  const int64_t c = xd[3];
  if (consts.element_count() != 64 + 2 * c * c + c)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: consts must hold 64 + 2 C^2 + C values");
  if (fields != 2 && fields != 3)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: 2 or 3 saved derivatives per coefficient");
  *S = Shape{xd[0], xd[1], xd[2], c, rounds, (xd[1] + 7) / 8, (xd[2] + 7) / 8, fields};
  const float* k = consts.typed_data();
  for (int i = 0; i < 64; ++i) K->d[i] = _mm256_set1_ps(k[i]);
  std::copy(k + 64, k + 64 + c * c, K->m);
  std::copy(k + 64 + c * c, k + 64 + 2 * c * c, K->minv);
  std::copy(k + 64 + 2 * c * c, k + 64 + 2 * c * c + c, K->off);
  K->in_scale = in_scale;
  K->in_shift = in_shift;
  K->out_scale = out_scale;
  K->out_shift = out_shift;
  return ffi::Error::Success();
}

// The number of floats of the saved derivatives: [B, H/8, C, W/8, R, fields, 64].
int64_t ResidualSize(const Shape& S) {
  return S.b * S.nh * S.c * S.nw * S.rounds * S.fields * 64;
}

// Runs item(i) for every (image, block row) i, in tasks of consecutive items of >= 48
// blocks on XLA's intra-op pool, each with denormals flushed (`FlushDenormals`) and a
// scratch buffer of its thread's.
template <typename Item>
void ForEachItem(ffi::ThreadPool& pool, const Shape& S, Item item) {
  const int64_t items = S.b * S.nh;
  const int64_t per_task = std::max<int64_t>(1, (48 + S.nw * S.c - 1) / (S.nw * S.c));
  const int64_t tasks = (items + per_task - 1) / per_task;
  jaxcomp::ParallelTasks(pool, tasks, tasks - 1, [&](int64_t task) {
    FlushDenormals ftz;
    thread_local std::vector<float> scratch;
    for (int64_t i = task * per_task; i < std::min(items, (task + 1) * per_task); ++i)
      item(i, scratch);
  });
}

template <bool SAVE>
ffi::Error Forward(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& tables,
                   ffi::Buffer<ffi::F32>& consts, float* y, int64_t y_size, float* res,
                   int64_t res_size, int64_t fields, int64_t candidates, float in_scale,
                   float in_shift, float out_scale, float out_shift) {
  const auto td = tables.dimensions();
  const auto xd = x.dimensions();
  if (td.size() != 5 || td[0] != 4 || xd.size() != 4 || td[2] != xd[3] || td[3] != 8 ||
      td[4] != 8)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: tables must be [4, R, C, 8, 8]");
  if (candidates < 1 || candidates > kMaxCandidates)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: num_candidates must be in 1..8");
  Shape S;
  Consts K;
  ffi::Error err = Prepare(xd, td[1], fields, consts, in_scale, in_shift, out_scale, out_shift,
                           &S, &K);
  if (err.failure()) return err;
  if (y_size != x.element_count() || (SAVE && res_size != ResidualSize(S)))
    return ffi::Error::InvalidArgument("jpeg_dl_layer: inconsistent output shapes");
  const float* xp = x.typed_data();
  const Quantizer Qz(tables.typed_data(), S.rounds, S.c, candidates);
  const auto forward = (S.c == 3 ? ForwardItems<3, SAVE>::kByCandidates
                                 : ForwardItems<1, SAVE>::kByCandidates)[candidates - 1];
  ForEachItem(pool, S, [&](int64_t item, std::vector<float>& scratch) {
    forward(S, K, xp, Qz, y, res, item, scratch);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> tables,
                       ffi::Buffer<ffi::F32> consts, ffi::ResultBuffer<ffi::F32> y,
                       int64_t candidates, float in_scale, float in_shift, float out_scale,
                       float out_shift) {
  return Forward<false>(pool, x, tables, consts, y->typed_data(), y->element_count(), nullptr, 0,
                        2, candidates, in_scale, in_shift, out_scale, out_shift);
}

ffi::Error ForwardSaveImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                           ffi::Buffer<ffi::F32> tables, ffi::Buffer<ffi::F32> consts,
                           ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> res,
                           int64_t candidates, float in_scale, float in_shift, float out_scale,
                           float out_shift) {
  const auto rd = res->dimensions();
  return Forward<true>(pool, x, tables, consts, y->typed_data(), y->element_count(),
                       res->typed_data(), res->element_count(), rd.size() == 7 ? rd[5] : 0,
                       candidates, in_scale, in_shift, out_scale, out_shift);
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> res,
                        ffi::Buffer<ffi::F32> consts, ffi::Buffer<ffi::F32> ct,
                        ffi::ResultBuffer<ffi::F32> gx, ffi::ResultBuffer<ffi::F32> gtab,
                        float in_scale, float in_shift, float out_scale, float out_shift) {
  const auto rd = res.dimensions();
  if (rd.size() != 7 || rd[6] != 64)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: res must be [B, H/8, C, W/8, R, F, 64]");
  Shape S;
  Consts K;
  ffi::Error err = Prepare(ct.dimensions(), rd[4], rd[5], consts, in_scale, in_shift, out_scale,
                           out_shift, &S, &K);
  if (err.failure()) return err;
  // gx holds the image gradient, or nothing (0 elements) where it is not wanted.
  if (res.element_count() != ResidualSize(S) ||
      (gx->element_count() != ct.element_count() && gx->element_count() != 0) ||
      gtab->element_count() != S.b * S.nh * (S.fields - 1) * S.rounds * S.c * 64)
    return ffi::Error::InvalidArgument("jpeg_dl_layer: inconsistent cotangent or gradient shapes");
  const float *rp = res.typed_data(), *cp = ct.typed_data();
  float *gxp = gx->element_count() ? gx->typed_data() : nullptr, *gtp = gtab->typed_data();
  ForEachItem(pool, S, [&](int64_t item, std::vector<float>& scratch) {
    if (S.c == 3) BackwardItem<3>(S, K, rp, cp, gxp, gtp, item, scratch);
    else BackwardItem<1>(S, K, rp, cp, gxp, gtp, item, scratch);
  });
  return ffi::Error::Success();
}

// The bindings: x, tables, consts -> y (and res); the cotangent's; the scales' attributes.
auto ForwardBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()    // x
      .Arg<ffi::Buffer<ffi::F32>>()    // tables
      .Arg<ffi::Buffer<ffi::F32>>()    // consts
      .Ret<ffi::Buffer<ffi::F32>>();   // y
}

template <typename Binding>
auto WithScales(Binding binding) {
  return std::move(binding)
      .template Attr<float>("in_scale")
      .template Attr<float>("in_shift")
      .template Attr<float>("out_scale")
      .template Attr<float>("out_shift");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcompJpegDlForward, ForwardImpl,
    WithScales(ForwardBinding().Attr<int64_t>("num_candidates")));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcompJpegDlForwardSave, ForwardSaveImpl,
    WithScales(ForwardBinding()
                   .Ret<ffi::Buffer<ffi::F32>>()   // res
                   .Attr<int64_t>("num_candidates")));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcompJpegDlBackward, BackwardImpl,
    WithScales(ffi::Ffi::Bind()
                   .Ctx<ffi::ThreadPool>()
                   .Arg<ffi::Buffer<ffi::F32>>()    // res
                   .Arg<ffi::Buffer<ffi::F32>>()    // consts
                   .Arg<ffi::Buffer<ffi::F32>>()    // ct
                   .Ret<ffi::Buffer<ffi::F32>>()    // gx
                   .Ret<ffi::Buffer<ffi::F32>>())); // gtab
