// Interleaved RGB <-> planar channels, 8 pixels at a time (AVX2), for jaxcomp's FFI handlers.
#ifndef JAXCOMP_OPS_CSRC_RGB_H_
#define JAXCOMP_OPS_CSRC_RGB_H_

#include <immintrin.h>

namespace jaxcomp {

// 8 RGB pixels <-> their three channels: a, b, c = the 24 interleaved floats.
inline void Deinterleave(__m256 a, __m256 b, __m256 c, __m256* rgb) {
  const __m256i r = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
  const __m256i g = _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6);
  const __m256i bl = _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7);
  rgb[0] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24), r);
  rgb[1] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49), g);
  rgb[2] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92), bl);
}

// The three channels of 8 pixels as the 24 interleaved floats out[0..2].
inline void Interleave(const __m256* rgb, __m256* out) {
  const __m256 r = _mm256_permutevar8x32_ps(rgb[0], _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
  const __m256 g = _mm256_permutevar8x32_ps(rgb[1], _mm256_setr_epi32(5, 0, 3, 6, 1, 4, 7, 2));
  const __m256 b = _mm256_permutevar8x32_ps(rgb[2], _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
  out[0] = _mm256_blend_ps(_mm256_blend_ps(r, g, 0x92), b, 0x24);
  out[1] = _mm256_blend_ps(_mm256_blend_ps(r, g, 0x24), b, 0x49);
  out[2] = _mm256_blend_ps(_mm256_blend_ps(r, g, 0x49), b, 0x92);
}

inline void Interleave(const __m256* rgb, float* dst) {
  __m256 out[3];
  Interleave(rgb, out);
  for (int q = 0; q < 3; ++q) _mm256_storeu_ps(dst + 8 * q, out[q]);
}

}  // namespace jaxcomp

#endif  // JAXCOMP_OPS_CSRC_RGB_H_
