// Interleaved RGB <-> planar channels, 8 pixels at a time (AVX2), for jaxcomp's FFI handlers.
#ifndef JAXCOMP_OPS_CSRC_RGB_H_
#define JAXCOMP_OPS_CSRC_RGB_H_

#include <immintrin.h>

namespace jaxcomp {

// The order of 8 pixels in a channel vector: position p holds pixel PixelAt(p) (and
// pixel k sits at PositionOf(k)); natural, or with EVEN_ODD the 4 even pixels, then the
// 4 odd ones (0, 2, 4, 6, 1, 3, 5, 7).
template <bool EVEN_ODD>
constexpr int PixelAt(int p) { return EVEN_ODD ? (p < 4 ? 2 * p : 2 * (p - 4) + 1) : p; }
template <bool EVEN_ODD>
constexpr int PositionOf(int k) { return EVEN_ODD ? (k % 2 ? 4 + k / 2 : k / 2) : k; }

// 8 RGB pixels -> their three channels (pixel order above): a, b, c = the 24
// interleaved floats; three blends and one permutation per channel.
template <bool EVEN_ODD = false>
inline void Deinterleave(__m256 a, __m256 b, __m256 c, __m256* rgb) {
  // src[k]: the entry of a channel's blend that holds pixel k.
  constexpr int r[8] = {0, 3, 6, 1, 4, 7, 2, 5}, g[8] = {1, 4, 7, 2, 5, 0, 3, 6},
                bl[8] = {2, 5, 0, 3, 6, 1, 4, 7};
  const auto order = [](const int* src) {
    return _mm256_setr_epi32(src[PixelAt<EVEN_ODD>(0)], src[PixelAt<EVEN_ODD>(1)],
                             src[PixelAt<EVEN_ODD>(2)], src[PixelAt<EVEN_ODD>(3)],
                             src[PixelAt<EVEN_ODD>(4)], src[PixelAt<EVEN_ODD>(5)],
                             src[PixelAt<EVEN_ODD>(6)], src[PixelAt<EVEN_ODD>(7)]);
  };
  rgb[0] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24),
                                    order(r));
  rgb[1] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49),
                                    order(g));
  rgb[2] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92),
                                    order(bl));
}

// The three channels of 8 pixels (pixel order above) as the 24 interleaved floats out[0..2].
template <bool EVEN_ODD = false>
inline void Interleave(const __m256* rgb, __m256* out) {
  // Entry q of a channel's permutation feeds the blends with pixel pixel[q].
  constexpr int r[8] = {0, 3, 6, 1, 4, 7, 2, 5}, g[8] = {5, 0, 3, 6, 1, 4, 7, 2},
                bl[8] = {2, 5, 0, 3, 6, 1, 4, 7};
  const auto order = [](const int* pixel) {
    return _mm256_setr_epi32(PositionOf<EVEN_ODD>(pixel[0]), PositionOf<EVEN_ODD>(pixel[1]),
                             PositionOf<EVEN_ODD>(pixel[2]), PositionOf<EVEN_ODD>(pixel[3]),
                             PositionOf<EVEN_ODD>(pixel[4]), PositionOf<EVEN_ODD>(pixel[5]),
                             PositionOf<EVEN_ODD>(pixel[6]), PositionOf<EVEN_ODD>(pixel[7]));
  };
  const __m256 rr = _mm256_permutevar8x32_ps(rgb[0], order(r));
  const __m256 gg = _mm256_permutevar8x32_ps(rgb[1], order(g));
  const __m256 bb = _mm256_permutevar8x32_ps(rgb[2], order(bl));
  out[0] = _mm256_blend_ps(_mm256_blend_ps(rr, gg, 0x92), bb, 0x24);
  out[1] = _mm256_blend_ps(_mm256_blend_ps(rr, gg, 0x24), bb, 0x49);
  out[2] = _mm256_blend_ps(_mm256_blend_ps(rr, gg, 0x49), bb, 0x92);
}

inline void Interleave(const __m256* rgb, float* dst) {
  __m256 out[3];
  Interleave(rgb, out);
  for (int q = 0; q < 3; ++q) _mm256_storeu_ps(dst + 8 * q, out[q]);
}

}  // namespace jaxcomp

#endif  // JAXCOMP_OPS_CSRC_RGB_H_
