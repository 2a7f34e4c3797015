// The kernel gradient of a 2-D NHWC / HWIO convolution on the CPU, as an XLA FFI handler.
//
//   dk[i, j, c, o] = sum_{n, p, q} x[n, p*sh + i*dh - ph, q*sw + j*dw - pw, c] * g[n, p, q, o]
//
// (terms whose x index falls in the padding are zero). x: [N, H, W, C] float32,
// g: [N, Ho, Wo, O] float32, dk: [KH, KW, C, O] float32.
//
// No copy of x or g is made: per tap (i, j) the contraction runs over the output
// positions with x read at a constant offset from the output position, a register
// tile of CT input channels x 8*OV output channels accumulated by AVX2 FMAs. Work is
// split into (image, block of output rows) items small enough that their rows of x
// and g stay in the L2 cache while all taps and tiles pass over them; the items are
// shared among threads (one private dk each, summed at the end). Built and loaded by
// jaxcomp/ops/cpu_kernels.py; jaxcomp/ops/conv.py decides where it is used.

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t n, h, w, c;       // x
  int64_t ho, wo, o;        // g
  int64_t kh, kw;           // kernel taps
  int64_t sh, sw, ph, pw, dh, dw;
};

// Bytes of g per work item: its rows of g (and the matching rows of x) are reread
// by every tap and tile, so they should stay in the L2 cache.
constexpr int64_t kItemBytes = 96 * 1024;

// The accumulators of a tile: a<t><v> holds dk[c0 + t, o0 + 8v : o0 + 8v + 8]. Named
// variables, not an array: GCC stored an array's elements back to the stack at every step.
// MASKED tiles (OV = 1) cover the last O % 8 output channels.
#define JAXCOMP_FOR_TILE(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define JAXCOMP_DECLARE(t) __m256 a##t##0, a##t##1, a##t##2, a##t##3;
#define JAXCOMP_LOAD_V(t, v)                                                     \
  if constexpr (OV > v) {                                                        \
    const float* p = dk_tap + (c0 + t) * G.o + o0 + 8 * v;                       \
    a##t##v = MASKED ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);         \
  }
#define JAXCOMP_STORE_V(t, v)                                                    \
  if constexpr (OV > v) {                                                        \
    float* p = dk_tap + (c0 + t) * G.o + o0 + 8 * v;                             \
    if constexpr (MASKED) _mm256_maskstore_ps(p, mask, a##t##v);                 \
    else _mm256_storeu_ps(p, a##t##v);                                           \
  }
#define JAXCOMP_FMA_V(t, v) \
  if constexpr (OV > v) a##t##v = _mm256_fmadd_ps(xb, g##v, a##t##v);
#define JAXCOMP_LOAD(t) \
  if constexpr (CT > t) { JAXCOMP_LOAD_V(t, 0) JAXCOMP_LOAD_V(t, 1) JAXCOMP_LOAD_V(t, 2) JAXCOMP_LOAD_V(t, 3) }
#define JAXCOMP_STORE(t) \
  if constexpr (CT > t) { JAXCOMP_STORE_V(t, 0) JAXCOMP_STORE_V(t, 1) JAXCOMP_STORE_V(t, 2) JAXCOMP_STORE_V(t, 3) }
#define JAXCOMP_FMA(t)                                                           \
  if constexpr (CT > t) {                                                        \
    const __m256 xb = _mm256_broadcast_ss(xr + t);                               \
    JAXCOMP_FMA_V(t, 0) JAXCOMP_FMA_V(t, 1) JAXCOMP_FMA_V(t, 2) JAXCOMP_FMA_V(t, 3) \
  }

// dk_tap[c0 : c0 + CT, o0 : o0 + 8*OV] += the tap's x^T g over rows [p0, p1), columns [q0, q1)
// of image n (x column of q0: x_col0).
template <int CT, int OV, bool MASKED>
void Tile(const Geometry& G, const float* x, const float* g, float* dk_tap, int64_t c0,
          int64_t o0, __m256i mask, int64_t n, int64_t p0, int64_t p1, int64_t i, int64_t q0,
          int64_t q1, int64_t x_col0) {
  static_assert(CT >= 1 && CT <= 6 && (OV == 1 || OV == 2 || OV == 4) && (!MASKED || OV == 1));
  JAXCOMP_FOR_TILE(JAXCOMP_DECLARE)
  JAXCOMP_FOR_TILE(JAXCOMP_LOAD)
  const int64_t xstep = G.sw * G.c;
  for (int64_t p = p0; p < p1; ++p) {
    const float* xr = x + ((n * G.h + p * G.sh + i * G.dh - G.ph) * G.w + x_col0) * G.c + c0;
    const float* gr = g + ((n * G.ho + p) * G.wo + q0) * G.o + o0;
    for (int64_t q = q0; q < q1; ++q) {
      const __m256 g0 = MASKED ? _mm256_maskload_ps(gr, mask) : _mm256_loadu_ps(gr);
      const __m256 g1 = OV > 1 ? _mm256_loadu_ps(gr + 8) : g0;
      const __m256 g2 = OV > 2 ? _mm256_loadu_ps(gr + 16) : g0;
      const __m256 g3 = OV > 3 ? _mm256_loadu_ps(gr + 24) : g0;
      JAXCOMP_FOR_TILE(JAXCOMP_FMA)
      xr += xstep;
      gr += G.o;
    }
  }
  JAXCOMP_FOR_TILE(JAXCOMP_STORE)
}

using TileFn = void (*)(const Geometry&, const float*, const float*, float*, int64_t, int64_t,
                        __m256i, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

template <int OV, bool MASKED>
TileFn TileFor(int ct) {
  switch (ct) {
    case 1: return Tile<1, OV, MASKED>;
    case 2: return Tile<2, OV, MASKED>;
    case 3: return Tile<3, OV, MASKED>;
    case 4: return Tile<4, OV, MASKED>;
    case 5: return Tile<5, OV, MASKED>;
    default: return Tile<6, OV, MASKED>;
  }
}

// The first output index p >= 0 with p*s + off >= 0, and the end of those with p*s + off < size.
void ValidRange(int64_t out, int64_t s, int64_t off, int64_t size, int64_t* lo, int64_t* hi) {
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = size - 1 - off < 0 ? 0 : (size - 1 - off) / s + 1;
  *lo = std::min(l, out);
  *hi = std::max(*lo, std::min(h, out));
}

// Adds the items [first, last) (item = image x block of `rows` output rows) into dk.
void Accumulate(const Geometry& G, const float* x, const float* g, float* dk, int64_t rows,
                int64_t first, int64_t last) {
  const int64_t blocks = (G.ho + rows - 1) / rows;
  // Input-channel tiles of 6, the last one shorter; output-channel tiles of 16 (12
  // accumulators), of 32 where C <= 3 (3 x 4), then of 8 and a masked one for O % 8.
  int32_t lanes[8];
  for (int k = 0; k < 8; ++k) lanes[k] = k < G.o % 8 ? -1 : 0;
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes));
  for (int64_t item = first; item < last; ++item) {
    const int64_t n = item / blocks, b = item % blocks;
    const int64_t pb0 = b * rows, pb1 = std::min(G.ho, pb0 + rows);
    for (int64_t i = 0; i < G.kh; ++i) {
      int64_t p0, p1;
      ValidRange(G.ho, G.sh, i * G.dh - G.ph, G.h, &p0, &p1);
      p0 = std::max(p0, pb0);
      p1 = std::min(p1, pb1);
      if (p0 >= p1) continue;
      for (int64_t j = 0; j < G.kw; ++j) {
        int64_t q0, q1;
        ValidRange(G.wo, G.sw, j * G.dw - G.pw, G.w, &q0, &q1);
        if (q0 >= q1) continue;
        const int64_t x_col0 = q0 * G.sw + j * G.dw - G.pw;
        float* dk_tap = dk + (i * G.kw + j) * G.c * G.o;
        for (int64_t c0 = 0; c0 < G.c; c0 += 6) {
          const int ct = static_cast<int>(std::min<int64_t>(6, G.c - c0));
          int64_t o0 = 0;
          if (G.c <= 3)
            for (; o0 + 32 <= G.o; o0 += 32)
              TileFor<4, false>(ct)(G, x, g, dk_tap, c0, o0, mask, n, p0, p1, i, q0, q1, x_col0);
          for (; o0 + 16 <= G.o; o0 += 16)
            TileFor<2, false>(ct)(G, x, g, dk_tap, c0, o0, mask, n, p0, p1, i, q0, q1, x_col0);
          for (; o0 + 8 <= G.o; o0 += 8)
            TileFor<1, false>(ct)(G, x, g, dk_tap, c0, o0, mask, n, p0, p1, i, q0, q1, x_col0);
          if (o0 < G.o)
            TileFor<1, true>(ct)(G, x, g, dk_tap, c0, o0, mask, n, p0, p1, i, q0, q1, x_col0);
        }
      }
    }
  }
}

int Threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

ffi::Error ConvKernelGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                              ffi::ResultBuffer<ffi::F32> dk, int64_t stride_h,
                              int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                              int64_t dilation_w) {
  const auto xd = x.dimensions();
  const auto gd = g.dimensions();
  const auto kd = dk->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || kd.size() != 4)
    return ffi::Error::InvalidArgument("conv_kernel_grad: x, g and dk must have rank 4");
  Geometry G{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], gd[3], kd[0], kd[1],
             stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w};
  if (gd[0] != G.n || kd[2] != G.c || kd[3] != G.o || G.sh < 1 || G.sw < 1 ||
      G.dh < 1 || G.dw < 1)
    return ffi::Error::InvalidArgument("conv_kernel_grad: inconsistent shapes or geometry");
  const int64_t size = G.kh * G.kw * G.c * G.o;
  const int64_t row_bytes = G.wo * G.o * static_cast<int64_t>(sizeof(float));
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(G.ho, kItemBytes / std::max<int64_t>(1, row_bytes)));
  const int64_t items = G.n * ((G.ho + rows - 1) / rows);
  // One thread per ~4M multiply-adds at least (a thread costs ~50 us to start).
  const int64_t macs = G.n * G.ho * G.wo * size;
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({Threads(), items, macs >> 22})));
  float* out = dk->typed_data();
  std::memset(out, 0, size * sizeof(float));
  if (threads == 1 || size == 0) {
    Accumulate(G, x.typed_data(), g.typed_data(), out, rows, 0, items);
    return ffi::Error::Success();
  }
  std::vector<std::vector<float>> partial(threads - 1, std::vector<float>(size, 0.0f));
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t)
    workers.emplace_back([&, t] {
      Accumulate(G, x.typed_data(), g.typed_data(), partial[t - 1].data(), rows,
                 items * t / threads, items * (t + 1) / threads);
    });
  Accumulate(G, x.typed_data(), g.typed_data(), out, rows, 0, items / threads);
  for (auto& worker : workers) worker.join();
  for (const auto& p : partial)
    for (int64_t k = 0; k < size; ++k) out[k] += p[k];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompConvKernelGrad, ConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_h")
                                  .Attr<int64_t>("pad_w")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w"));
