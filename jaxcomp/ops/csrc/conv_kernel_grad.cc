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
// split into (image, block of output rows, block of output channels) items (`Cut`),
// in slots of consecutive items run on XLA's intra-op thread pool (parallel.h). Built
// and loaded by jaxcomp/ops/cpu_kernels.py; jaxcomp/ops/conv.py decides where it is
// used (jaxcomp/ops/conv_kernel_grad.py wraps it as a JAX primitive).

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t n, h, w, c;       // x
  int64_t ho, wo, o;        // g
  int64_t kh, kw;           // kernel taps
  int64_t sh, sw, ph, pw, dh, dw;
};

// Bytes of g per work item (`Cut`): its rows of g (and the matching rows of x) are
// reread by every tap and tile, so they should stay in the L2 cache.
constexpr int64_t kItemBytes = 96 * 1024;
// Output channels per item (a multiple of 32, so only the last block has a remainder).
constexpr int64_t kChannelBlock = 64;
// Output positions per chunk of a tap's contraction (whole rows; `Accumulate`).
constexpr int64_t kChunkPositions = 96;

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

// Calls body(xr, gr) for the output positions of rows [p0, p1), columns [q0, q1) of
// image n and tap row i: xr points at x's channel c0 of the position's input pixel
// (x column of q0: x_col0), gr at g's output channel o0 of the position.
template <typename Body>
__attribute__((always_inline)) inline void ForEachPosition(
    const Geometry& G, const float* x, const float* g, int64_t c0, int64_t o0, int64_t n,
    int64_t p0, int64_t p1, int64_t i, int64_t q0, int64_t q1, int64_t x_col0, Body&& body) {
  const int64_t xstep = G.sw * G.c;
  for (int64_t p = p0; p < p1; ++p) {
    const float* xr = x + ((n * G.h + p * G.sh + i * G.dh - G.ph) * G.w + x_col0) * G.c + c0;
    const float* gr = g + ((n * G.ho + p) * G.wo + q0) * G.o + o0;
    for (int64_t q = q0; q < q1; ++q, xr += xstep, gr += G.o) body(xr, gr);
  }
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
  ForEachPosition(G, x, g, c0, o0, n, p0, p1, i, q0, q1, x_col0,
                  [&](const float* xr, const float* gr) __attribute__((always_inline)) {
    const __m256 g0 = MASKED ? _mm256_maskload_ps(gr, mask) : _mm256_loadu_ps(gr);
    const __m256 g1 = OV > 1 ? _mm256_loadu_ps(gr + 8) : g0;
    const __m256 g2 = OV > 2 ? _mm256_loadu_ps(gr + 16) : g0;
    const __m256 g3 = OV > 3 ? _mm256_loadu_ps(gr + 24) : g0;
    JAXCOMP_FOR_TILE(JAXCOMP_FMA)
  });
  JAXCOMP_FOR_TILE(JAXCOMP_STORE)
}

using TileFn = void (*)(const Geometry&, const float*, const float*, float*, int64_t, int64_t,
                        __m256i, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

// Tile<ct, OV, MASKED> for ct = 1..6, by index ct - 1.
template <int OV, bool MASKED>
constexpr TileFn kTiles[] = {Tile<1, OV, MASKED>, Tile<2, OV, MASKED>, Tile<3, OV, MASKED>,
                             Tile<4, OV, MASKED>, Tile<5, OV, MASKED>, Tile<6, OV, MASKED>};

// Narrow outputs (O < 8, e.g. a layer to RGB): a tile of 8*CV input channels x OT
// output channels, vectors over the input channels of x (contiguous in NHWC) and
// broadcasts of g, accumulated into a transposed dk, [O, C] per tap
// (b<t><v> holds dkT[o0 + t, c0 + 8v : c0 + 8v + 8]); the masked tiles of the main
// path would use 3 of 8 lanes for O = 3.
#define JAXCOMP_FOR_NARROW(M) M(0, 0) M(0, 1) M(0, 2) M(0, 3) M(1, 0) M(1, 1) M(1, 2) M(1, 3) \
  M(2, 0) M(2, 1) M(2, 2) M(2, 3)
#define JAXCOMP_N_DECLARE(t, v) __m256 b##t##v;
#define JAXCOMP_N_LOAD(t, v) \
  if constexpr (OT > t && CV > v) b##t##v = _mm256_loadu_ps(dkt_tap + (o0 + t) * G.c + c0 + 8 * v);
#define JAXCOMP_N_STORE(t, v) \
  if constexpr (OT > t && CV > v) _mm256_storeu_ps(dkt_tap + (o0 + t) * G.c + c0 + 8 * v, b##t##v);
#define JAXCOMP_N_FMA(t, v) \
  if constexpr (OT > t && CV > v) b##t##v = _mm256_fmadd_ps(xv##v, gb##t, b##t##v);

template <int OT, int CV>
void NarrowTile(const Geometry& G, const float* x, const float* g, float* dkt_tap, int64_t c0,
                int64_t o0, int64_t n, int64_t p0, int64_t p1, int64_t i, int64_t q0, int64_t q1,
                int64_t x_col0) {
  static_assert(OT >= 1 && OT <= 3 && (CV == 1 || CV == 2 || CV == 4));
  JAXCOMP_FOR_NARROW(JAXCOMP_N_DECLARE)
  JAXCOMP_FOR_NARROW(JAXCOMP_N_LOAD)
  ForEachPosition(G, x, g, c0, o0, n, p0, p1, i, q0, q1, x_col0,
                  [&](const float* xr, const float* gr) __attribute__((always_inline)) {
    const __m256 xv0 = _mm256_loadu_ps(xr);
    const __m256 xv1 = CV > 1 ? _mm256_loadu_ps(xr + 8) : xv0;
    const __m256 xv2 = CV > 2 ? _mm256_loadu_ps(xr + 16) : xv0;
    const __m256 xv3 = CV > 3 ? _mm256_loadu_ps(xr + 24) : xv0;
    const __m256 gb0 = _mm256_broadcast_ss(gr);
    const __m256 gb1 = OT > 1 ? _mm256_broadcast_ss(gr + 1) : gb0;
    const __m256 gb2 = OT > 2 ? _mm256_broadcast_ss(gr + 2) : gb0;
    JAXCOMP_FOR_NARROW(JAXCOMP_N_FMA)
  });
  JAXCOMP_FOR_NARROW(JAXCOMP_N_STORE)
}

using NarrowFn = void (*)(const Geometry&, const float*, const float*, float*, int64_t, int64_t,
                          int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

// NarrowTile<ot, CV> for ot = 1..3, by index ot - 1.
template <int CV>
constexpr NarrowFn kNarrowTiles[] = {NarrowTile<1, CV>, NarrowTile<2, CV>, NarrowTile<3, CV>};

// Whether the narrow tiles (and a transposed dk) are used.
bool Narrow(const Geometry& G) { return G.o < 8 && G.c % 8 == 0; }

// The first output index p >= 0 with p*s + off >= 0, and the end of those with p*s + off < size.
void ValidRange(int64_t out, int64_t s, int64_t off, int64_t size, int64_t* lo, int64_t* hi) {
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = size - 1 - off < 0 ? 0 : (size - 1 - off) / s + 1;
  *lo = std::min(l, out);
  *hi = std::max(*lo, std::min(h, out));
}

// How the work is cut: an item is (image, block of output rows, block of output
// channels), small enough that its rows of g (and the matching rows of x) stay in the
// L2 cache while every tap and tile passes over them, and long enough (rows x Wo
// positions) that a tile's accumulators are loaded and stored rarely.
struct Items {
  int64_t rows, row_blocks, channels, channel_blocks;
  int64_t count() const { return row_blocks * channel_blocks; }
};

Items Cut(const Geometry& G) {
  Items it;
  it.channels = std::min<int64_t>(G.o, kChannelBlock);
  it.channel_blocks = (G.o + it.channels - 1) / it.channels;
  const int64_t row_bytes = std::max<int64_t>(1, G.wo * it.channels * sizeof(float));
  it.rows = std::max<int64_t>(1, std::min<int64_t>(G.ho, kItemBytes / row_bytes));
  it.row_blocks = (G.ho + it.rows - 1) / it.rows;
  return it;
}

// Adds the items [first, last) of all images' (items.count() per image) into dk.
void Accumulate(const Geometry& G, const Items& items, const float* x, const float* g, float* dk,
                int64_t first, int64_t last) {
  // Input-channel tiles of 5-6 (as even as C allows); output-channel tiles of 16 (12
  // accumulators), of 32 where C <= 3 (3 x 4), then of 8 and a masked one for O % 8;
  // or, for narrow outputs (`Narrow`), 32 / 16 / 8 input channels x up to 3 outputs.
  const int64_t c_tiles = (G.c + 5) / 6;
  int32_t lanes[8];
  for (int k = 0; k < 8; ++k) lanes[k] = k < G.o % 8 ? -1 : 0;
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes));
  for (int64_t item = first; item < last; ++item) {
    const int64_t n = item / items.count(), rest = item % items.count();
    const int64_t pb0 = (rest / items.channel_blocks) * items.rows;
    const int64_t pb1 = std::min(G.ho, pb0 + items.rows);
    const int64_t ob0 = (rest % items.channel_blocks) * items.channels;
    const int64_t ob1 = std::min(G.o, ob0 + items.channels);
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
        // Chunks of ~kChunkPositions positions, so that a tile's rows of x and g stay in
        // the L1 cache while the other tiles reuse them.
        const int64_t chunk_rows = std::max<int64_t>(1, kChunkPositions / (q1 - q0));
        for (int64_t r0 = p0; r0 < p1; r0 += chunk_rows) {
          const int64_t r1 = std::min(p1, r0 + chunk_rows);
          if (Narrow(G)) {  // dk is [KH, KW, O, C] here
            for (int64_t o0 = ob0; o0 < ob1; o0 += 3) {
              const int ot = static_cast<int>(std::min<int64_t>(3, ob1 - o0));
              int64_t c0 = 0;
              for (; c0 + 32 <= G.c; c0 += 32)
                kNarrowTiles<4>[ot - 1](G, x, g, dk_tap, c0, o0, n, r0, r1, i, q0, q1, x_col0);
              for (; c0 + 16 <= G.c; c0 += 16)
                kNarrowTiles<2>[ot - 1](G, x, g, dk_tap, c0, o0, n, r0, r1, i, q0, q1, x_col0);
              for (; c0 < G.c; c0 += 8)
                kNarrowTiles<1>[ot - 1](G, x, g, dk_tap, c0, o0, n, r0, r1, i, q0, q1, x_col0);
            }
            continue;
          }
          for (int64_t t = 0; t < c_tiles; ++t) {
            const int64_t c0 = G.c * t / c_tiles;
            const int ct = static_cast<int>(G.c * (t + 1) / c_tiles - c0);
            int64_t o0 = ob0;
            if (G.c <= 3)
              for (; o0 + 32 <= ob1; o0 += 32)
                kTiles<4, false>[ct - 1](G, x, g, dk_tap, c0, o0, mask, n, r0, r1, i, q0, q1, x_col0);
            for (; o0 + 16 <= ob1; o0 += 16)
              kTiles<2, false>[ct - 1](G, x, g, dk_tap, c0, o0, mask, n, r0, r1, i, q0, q1, x_col0);
            for (; o0 + 8 <= ob1; o0 += 8)
              kTiles<1, false>[ct - 1](G, x, g, dk_tap, c0, o0, mask, n, r0, r1, i, q0, q1, x_col0);
            if (o0 < ob1)
              kTiles<1, true>[ct - 1](G, x, g, dk_tap, c0, o0, mask, n, r0, r1, i, q0, q1, x_col0);
          }
        }
      }
    }
  }
}

ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dk,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dilation_h, int64_t dilation_w) {
  const auto xd = x.dimensions();
  const auto gd = g.dimensions();
  const auto kd = dk->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || kd.size() != 4)
    return ffi::Error::InvalidArgument("conv_kernel_grad: x, g and dk must have rank 4");
  const Geometry G{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], gd[3], kd[0], kd[1],
                   stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w};
  if (gd[0] != G.n || kd[2] != G.c || kd[3] != G.o || G.sh < 1 || G.sw < 1 ||
      G.dh < 1 || G.dw < 1)
    return ffi::Error::InvalidArgument("conv_kernel_grad: inconsistent shapes or geometry");
  const Items cut = Cut(G);
  const int64_t items = G.n * cut.count();
  const int64_t size = G.kh * G.kw * G.c * G.o;
  float* out = dk->typed_data();
  std::memset(out, 0, size * sizeof(float));
  // Narrow outputs accumulate a transposed dk ([KH, KW, O, C]), transposed at the end.
  std::vector<float> transposed(Narrow(G) ? size : 0, 0.0f);
  float* sum = Narrow(G) ? transposed.data() : out;
  // Slots of consecutive items, each summed into its own buffer and the buffers added
  // in slot order: the result does not depend on which thread ran which slot. Four
  // slots per pool thread (a thread that starts late leaves its share to the others),
  // at most one per item and per ~4M multiply-adds.
  const int64_t macs = G.n * G.ho * G.wo * size;
  const int64_t slots = std::max<int64_t>(
      1, std::min<int64_t>({4 * int64_t{pool.num_threads()}, items, macs >> 22}));
  std::vector<std::vector<float>> partials(slots - 1, std::vector<float>(size, 0.0f));
  const float *xp = x.typed_data(), *gp = g.typed_data();
  jaxcomp::ParallelTasks(pool, slots, slots - 1, [&](int64_t slot) {
    Accumulate(G, cut, xp, gp, slot == 0 ? sum : partials[slot - 1].data(),
               items * slot / slots, items * (slot + 1) / slots);
  });
  for (const auto& p : partials)
    for (int64_t k = 0; k < size; ++k) sum[k] += p[k];
  if (Narrow(G))
    for (int64_t tap = 0; tap < G.kh * G.kw; ++tap)
      for (int64_t o = 0; o < G.o; ++o)
        for (int64_t c = 0; c < G.c; ++c)
          out[(tap * G.c + c) * G.o + o] = sum[(tap * G.o + o) * G.c + c];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompConvKernelGrad, ConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_h")
                                  .Attr<int64_t>("pad_w")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w"));
