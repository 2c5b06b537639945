// Flash attention on tensor cores: the bfloat16 / float16 kernels (mma.sync m16n8k16,
// fp32 accumulation) for head dims up to 128, forward (output and log-sum-exp) and
// backward (dq and the bias gradient; dk and dv), templated on the mask policy exactly as
// the portable kernels of flash_attention.cuh, which includes this file and launches these
// for 16-bit element types.
//
// Layout: a block has 4 warps. The forward and dq kernels give each warp 16 query rows
// (64 per block) and walk key tiles of 64 keys; the dk/dv kernel gives each warp 16 keys
// (64 per block) and walks query tiles of 32 rows over every query head of its group, so no
// gradient needs atomics. Tiles live in shared memory as 16-bit rows padded by 8 elements
// (16 bytes), which keeps the ldmatrix fragment loads free of bank conflicts; the tiles a
// block walks over come in two stages, the next non-empty one copied with cp.async while
// the current one is used. Scores stay in
// registers: the accumulator of S = Q K^T (or of dS) is reused as the left operand of the
// next product (mma::a_from_c_tile), rounded to the element type. Softmax runs in base 2
// on scores pre-multiplied by log2(e); the saved log-sum-exp is in natural units, like the
// portable kernels', so either backward can follow either forward.
//
// Tiles are classified per block with policy.classify: Empty tiles are never loaded, Full
// tiles skip policy.allowed (but still drop rows past Tq and keys past Tk), Partial tiles
// call it per element. The rows each lane hands to ldmatrix come from
// condense/backend/cuda/mma_layout.hpp, whose layouts tests/core/test_mma_layout.cpp checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cuda/mma_layout.hpp"
#include "condense/core/dtype.hpp"
#include "condense/mask/policy.hpp"
#include "detail/common.cuh"

namespace condense::cuda::attention_mma {

using namespace condense::cuda::detail;

constexpr int warps = 4;
constexpr int threads = warps * 32;
constexpr int block_m = warps * mma::tile_m;  ///< query rows per forward / dq block
constexpr int block_n = 64;                   ///< keys per forward / dq key tile
constexpr int dkdv_keys = warps * mma::tile_m;  ///< keys per dk/dv block
constexpr int dkdv_queries = 32;                ///< query rows per dk/dv query tile
constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

/// True for the element types these kernels take.
template <class T>
constexpr bool is_16bit = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

/// Shared-memory row stride (elements) of a tile for head dims up to D.
template <int D>
constexpr int stride = D + 8;

/// Two 16-bit elements in one register, `low` in the low half.
__device__ __forceinline__ std::uint32_t pack_bits(std::uint16_t low, std::uint16_t high) {
  return static_cast<std::uint32_t>(low) | (static_cast<std::uint32_t>(high) << 16);
}

/// Two floats rounded to T (round to nearest even) in one register, `low` in the low half.
template <class T>
__device__ __forceinline__ std::uint32_t pack_floats(float low, float high) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return pack_bits(__bfloat16_as_ushort(__float2bfloat16_rn(low)), __bfloat16_as_ushort(__float2bfloat16_rn(high)));
  } else {
    return pack_bits(__half_as_ushort(__float2half_rn(low)), __half_as_ushort(__float2half_rn(high)));
  }
}

/// d += a * b on tensor cores: one m16n8k16 product of T inputs into fp32.
// a: [16, 16] (4 registers), b: [16, 8] (2 registers), d: [16, 8] fp32
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// The 32-bit shared-memory address of p.
__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// ldmatrix.x4: four 8 x 8 matrices of 16-bit elements, this lane pointing at one row.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

/// ldmatrix.x4.trans: the same four matrices, each transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const std::uint16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

/// The element at a fragment position of a row-major shared tile.
template <int D>
__device__ __forceinline__ const std::uint16_t* at(const std::uint16_t* tile, mma::Coord c) {
  return tile + c.row * stride<D> + c.col;
}

/// The A fragment of the 16 x 16 block at (row0, col0) of a row-major shared tile.
template <int D>
__device__ __forceinline__ void load_a(std::uint32_t (&a)[4], const std::uint16_t* tile, int row0, int col0, int lane) {
  ldmatrix_x4(a, at<D>(tile, mma::ldmatrix_a_row(lane, row0, col0)));
}

/// The B fragments of n-tiles n0 and n0 + 8 whose column n is row (n0 + n) of a row-major
/// shared tile and whose k runs along that row from col0: B = tile^T (K^T in S = Q K^T).
/// b[0], b[1]: n-tile n0; b[2], b[3]: n-tile n0 + 8.
template <int D>
__device__ __forceinline__ void load_b_transposed(std::uint32_t (&b)[4], const std::uint16_t* tile, int n0, int col0, int lane) {
  ldmatrix_x4(b, at<D>(tile, mma::ldmatrix_b_transposed_row(lane, n0, col0)));
}

/// The B fragments of n-tiles n0 and n0 + 8 whose k is row (k0 + k) and whose column n is
/// column (n0 + n) of a row-major shared tile: B = tile (V in O = P V).
template <int D>
__device__ __forceinline__ void load_b(std::uint32_t (&b)[4], const std::uint16_t* tile, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, at<D>(tile, mma::ldmatrix_b_row(lane, k0, n0)));
}

/// acc[t] += a * B and acc[t + 1] += a * B' for the two n-tiles of b (from load_b*).
template <class T, int Tiles>
__device__ __forceinline__ void mma_pair(float (&acc)[Tiles][4], int t, const std::uint32_t (&a)[4], const std::uint32_t (&b)[4]) {
  mma_16816<T>(acc[t], a, b[0], b[1]);
  mma_16816<T>(acc[t + 1], a, b[2], b[3]);
}

/// The two score products of the backward kernels, over the head dim: first = A1 B1^T and
/// second = A2 B2^T, with A1, A2 the warp's 16 rows (from row0) of shared tiles a1, a2 and
/// B1, B2 the first Tiles * 8 rows of shared tiles b1, b2 (S = Q K^T and dP = dO V^T in the
/// dq kernel, S^T = K Q^T and dP^T = V dO^T in the dk/dv kernel).
template <class T, int D, int Tiles>
__device__ __forceinline__ void score_products(float (&first)[Tiles][4], float (&second)[Tiles][4], const std::uint16_t* a1,
                                               const std::uint16_t* a2, int row0, const std::uint16_t* b1,
                                               const std::uint16_t* b2, int lane) {
#pragma unroll
  for (int t = 0; t < Tiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) first[t][e] = second[t][e] = 0.f;
#pragma unroll
  for (int step = 0; step < D / 16; ++step) {
    std::uint32_t fa[4], sa[4];
    load_a<D>(fa, a1, row0, step * 16, lane);
    load_a<D>(sa, a2, row0, step * 16, lane);
#pragma unroll
    for (int t = 0; t < Tiles; t += 2) {
      std::uint32_t fb[4], sb[4];
      load_b_transposed<D>(fb, b1, t * 8, step * 16, lane);
      load_b_transposed<D>(sb, b2, t * 8, step * 16, lane);
      mma_pair<T>(first, t, fa, fb);
      mma_pair<T>(second, t, sa, sb);
    }
  }
}

/// The A fragment of k-step `step` made of accumulator tiles (rounded to T): scores or
/// score gradients of 16 rows become the left operand of the next product.
template <class T, int Tiles>
__device__ __forceinline__ void a_from_accumulators(std::uint32_t (&a)[4], const float (&acc)[Tiles][4], int step) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float(&tile)[4] = acc[mma::a_from_c_tile(step, 2 * r)];
    a[r] = pack_floats<T>(tile[mma::a_from_c_element(2 * r)], tile[mma::a_from_c_element(2 * r + 1)]);
  }
}

/// acc += S B: S the warp's scores (or score gradients) over Tiles * 8 columns, rounded to
/// T and reused as A operands, and B the first Tiles * 8 rows of a shared tile (O += P V in
/// the forward, dQ += dS K in dq, dV += P^T dO and dK += dS^T Q in dk/dv).
template <class T, int D, int Tiles>
__device__ __forceinline__ void scores_times_tile(float (&acc)[D / 8][4], const float (&scores)[Tiles][4],
                                                  const std::uint16_t* tile, int lane) {
#pragma unroll
  for (int step = 0; step < Tiles / 2; ++step) {
    std::uint32_t sa[4];
    a_from_accumulators<T>(sa, scores, step);
#pragma unroll
    for (int t = 0; t < D / 8; t += 2) {
      std::uint32_t b[4];
      load_b<D>(b, tile, step * 16, t * 8, lane);
      mma_pair<T>(acc, t, sa, b);
    }
  }
}

/// Copies rows [r0, r0 + rows) of a [*, dim] tensor of 16-bit elements into a shared tile
/// of `rows` rows of stride<D>, zero-filling rows past `limit` and columns past dim (so the
/// products over the padded head dim add nothing). `vectorized`: dim is a multiple of 8 and
/// src 16-byte aligned, so whole 16-byte chunks are copied.
template <int D>
__device__ __forceinline__ void load_tile(std::uint16_t* tile, const std::uint16_t* src, int r0, int rows, int limit,
                                          int dim, bool vectorized) {
  constexpr int chunks = D / 8;
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = (idx % chunks) * 8, row = r0 + r;
    std::uint16_t* dst = tile + r * stride<D> + c;
    const std::uint16_t* from = src + static_cast<std::int64_t>(row) * dim + c;
    if (vectorized && row < limit && c < dim) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(from);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) dst[j] = row < limit && c + j < dim ? from[j] : std::uint16_t(0);
    }
  }
}

/// cp.async of 16 bytes from global to shared memory; `valid` false writes 16 zero bytes
/// and reads nothing (src must still be a valid global address).
__device__ __forceinline__ void copy_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/// Waits until at most `Pending` committed groups of this thread are still in flight.
template <int Pending>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

/// load_tile, asynchronously when `vectorized` (cp.async, completed by wait_async and made
/// visible by a barrier); element by element otherwise.
template <int D>
__device__ __forceinline__ void load_tile_async(std::uint16_t* tile, const std::uint16_t* src, int r0, int rows, int limit,
                                                int dim, bool vectorized) {
  if (!vectorized) {
    load_tile<D>(tile, src, r0, rows, limit, dim, false);
    return;
  }
  constexpr int chunks = D / 8;
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = (idx % chunks) * 8, row = r0 + r;
    const bool valid = row < limit && c < dim;
    copy_async_16(tile + r * stride<D> + c, valid ? src + static_cast<std::int64_t>(row) * dim + c : src, valid);
  }
}

/// Reduction over the four lanes that share an accumulator row.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// The tile kind a block acts on (every tile Partial when skipping is off).
template <class Policy>
__device__ __forceinline__ TileKind tile_kind(const Policy& policy, bool skip, int b, int q0, int q1, int k0, int k1) {
  return skip ? policy.classify(b, q0, q1, k0, k1) : TileKind::Partial;
}

/// Whether (row, key) takes part: inside the sequences and allowed by the policy (asked
/// only on Partial tiles).
template <class Policy>
__device__ __forceinline__ bool pair_allowed(const Policy& policy, TileKind kind, int b, int row, int row_end, int key,
                                             int key_end) {
  return row < row_end && key < key_end && (kind == TileKind::Full || policy.allowed(b, row, key));
}

/// The first key tile of block_n keys at or after k0 that is not Empty for the query rows
/// [q0, q1) (tk when none), its kind in *kind; every tile classified on the way is counted
/// in stats (Empty, Partial, Full) when given. The same for the whole block.
template <class Policy>
__device__ __forceinline__ int next_key_tile(const Policy& policy, bool skip, int b, int q0, int q1, int k0, int tk,
                                             TileKind* kind, unsigned long long* stats) {
  for (; k0 < tk; k0 += block_n) {
    *kind = tile_kind(policy, skip, b, q0, q1, k0, min(tk, k0 + block_n));
    if (stats && threadIdx.x == 0) atomicAdd(stats + static_cast<int>(*kind), 1ull);
    if (*kind != TileKind::Empty) return k0;
  }
  return tk;
}

/// True when every operand that load_tile copies in 16-byte chunks allows it.
__device__ __forceinline__ bool chunks_aligned(const AttentionArgs& a, const void* extra0 = nullptr, const void* extra1 = nullptr) {
  const auto bits = reinterpret_cast<std::uintptr_t>(a.q) | reinterpret_cast<std::uintptr_t>(a.k) |
                    reinterpret_cast<std::uintptr_t>(a.v) | reinterpret_cast<std::uintptr_t>(extra0) |
                    reinterpret_cast<std::uintptr_t>(extra1);
  return a.dim % 8 == 0 && bits % 16 == 0;
}

/// The bits of a 16-bit element tensor.
template <class T>
__device__ __forceinline__ const std::uint16_t* bits_of(const void* p) {
  return static_cast<const std::uint16_t*>(p);
}

/// The rows a forward or dq block works on: (batch, head) = blockIdx.x, the query tile
/// [q0, q1) = 64 rows from blockIdx.y, and the q, k, v and bias rows of that head.
template <class T>
struct QueryBlock {
  int dim, tq, tk, b, q0, q1;
  std::int64_t bh;
  const std::uint16_t *q, *k, *v;
  const T* bias;

  __device__ explicit QueryBlock(const AttentionArgs& a)
      : dim(static_cast<int>(a.dim)), tq(static_cast<int>(a.tq)), tk(static_cast<int>(a.tk)) {
    bh = blockIdx.x;
    b = static_cast<int>(bh / a.heads);
    const std::int64_t h = bh % a.heads, kvh = h / (a.heads / a.kv_heads);
    q0 = static_cast<int>(blockIdx.y) * block_m;
    q1 = min(tq, q0 + block_m);
    q = bits_of<T>(a.q) + bh * a.tq * a.dim;
    k = bits_of<T>(a.k) + (b * a.kv_heads + kvh) * a.tk * a.dim;
    v = bits_of<T>(a.v) + (b * a.kv_heads + kvh) * a.tk * a.dim;
    bias = a.bias ? static_cast<const T*>(a.bias) + (b * a.bias_heads + (a.bias_heads == 1 ? 0 : h)) * a.tq * a.tk : nullptr;
  }
};

// ---- forward ----------------------------------------------------------------------------

template <class T, class Policy, int D>
__global__ void __launch_bounds__(threads) flash_forward_mma(AttentionArgs a, Policy policy, unsigned long long* stats) {
  constexpr int k_steps = D / 16;         // over the head dim
  constexpr int key_tiles = block_n / 8;  // n-tiles of S
  constexpr int dim_tiles = D / 8;        // n-tiles of O
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* sq = reinterpret_cast<std::uint16_t*>(smem);
  // Two stages of (K tile, V tile): the next non-empty tile loads while this one is used.
  std::uint16_t* const stage_base = sq + block_m * stride<D>;
  constexpr int stage_elements = 2 * block_n * stride<D>;

  const QueryBlock<T> blk(a);
  const int tq = blk.tq, tk = blk.tk, b = blk.b, q0 = blk.q0, q1 = blk.q1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * mma::tile_m;  // the warp's first row in the block
  const bool vectorized = chunks_aligned(a);
  const float scale_log2 = static_cast<float>(a.scale) * log2e;

  const auto next_tile = [&](int k0, TileKind* kind) {
    return next_key_tile(policy, a.skip_tiles, b, q0, q1, k0, tk, kind, stats);
  };
  const auto load_stage = [&](int stage, int k0) {
    std::uint16_t* sk = stage_base + stage * stage_elements;
    load_tile_async<D>(sk, blk.k, k0, block_n, tk, blk.dim, vectorized);
    load_tile_async<D>(sk + block_n * stride<D>, blk.v, k0, block_n, tk, blk.dim, vectorized);
  };
  TileKind kind = TileKind::Empty;
  int k0 = next_tile(0, &kind);
  if (k0 < tk) load_stage(0, k0);
  commit_async();

  load_tile<D>(sq, blk.q, q0, block_m, tq, blk.dim, vectorized);
  __syncthreads();
  std::uint32_t qa[k_steps][4];
#pragma unroll
  for (int s = 0; s < k_steps; ++s) load_a<D>(qa[s], sq, wrow, s * 16, lane);

  // This lane's accumulator rows: element e belongs to row rows[e / 2].
  const int rows[2] = {q0 + wrow + mma::c_coord(lane, 0).row, q0 + wrow + mma::c_coord(lane, 2).row};
  float o[dim_tiles][4];
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int stage = 0; k0 < tk; stage ^= 1) {
    const int k1 = min(tk, k0 + block_n);
    // Start the next non-empty tile's copy into the other stage (last read before the
    // barrier that ended the previous iteration), then wait for this tile's.
    TileKind next_kind = TileKind::Empty;
    const int next_k0 = next_tile(k0 + block_n, &next_kind);
    if (next_k0 < tk) load_stage(stage ^ 1, next_k0);
    commit_async();
    wait_async<1>();
    __syncthreads();
    const std::uint16_t* sk = stage_base + stage * stage_elements;
    const std::uint16_t* sv = sk + block_n * stride<D>;

    // S = Q K^T for the warp's 16 rows and the tile's 64 keys.
    float s[key_tiles][4];
#pragma unroll
    for (int t = 0; t < key_tiles; ++t) s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
#pragma unroll
    for (int t = 0; t < key_tiles; t += 2) {
#pragma unroll
      for (int st = 0; st < k_steps; ++st) {
        std::uint32_t kb[4];
        load_b_transposed<D>(kb, sk, t * 8, st * 16, lane);
        mma_pair<T>(s, t, qa[st], kb);
      }
    }
    // Scale (base 2), bias, mask; the new running maxima.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int t = 0; t < key_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rows[e / 2], key = k0 + t * 8 + mma::c_coord(lane, e).col;
        float x = -INFINITY;
        if (pair_allowed(policy, kind, b, row, tq, key, k1)) {
          x = s[t][e] * scale_log2;
          if (blk.bias) x += load(blk.bias + static_cast<std::int64_t>(row) * tk + key) * log2e;
        }
        s[t][e] = x;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], x);
      }
    }
    float alpha[2], shift[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float m_new = fmaxf(m[i], quad_max(tile_max[i]));
      // A row with no allowed key so far keeps m = -inf: shift by 0 so exp2 gives zeros.
      shift[i] = m_new == -INFINITY ? 0.f : m_new;
      alpha[i] = exp2f(m[i] - shift[i]);
      m[i] = m_new;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int t = 0; t < key_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[t][e] = exp2f(s[t][e] - shift[e / 2]);
        l[e / 2] += s[t][e];  // this lane's part of the row sum; the quad adds up at the end
      }
    }
#pragma unroll
    for (int t = 0; t < dim_tiles; ++t) {
      o[t][0] *= alpha[0];
      o[t][1] *= alpha[0];
      o[t][2] *= alpha[1];
      o[t][3] *= alpha[1];
    }
    // O += P V, P rounded to T.
    scores_times_tile<T, D>(o, s, sv, lane);
    __syncthreads();  // this stage is read by every warp before the next copy into it
    k0 = next_k0;
    kind = next_kind;
  }

  T* out = static_cast<T*>(a.out) + blk.bh * a.tq * a.dim;
  float* lse = static_cast<float*>(a.lse) + blk.bh * a.tq;
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] = quad_sum(l[i]);
    inv[i] = l[i] > 0.f ? 1.f / l[i] : 0.f;
    if (lane % 4 == 0 && rows[i] < tq) lse[rows[i]] = l[i] > 0.f ? m[i] * ln2 + logf(l[i]) : -INFINITY;
  }
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = rows[e / 2], col = t * 8 + mma::c_coord(lane, e).col;
      if (row < tq && col < blk.dim) out[static_cast<std::int64_t>(row) * blk.dim + col] = to_element<T>(o[t][e] * inv[e / 2]);
    }
  }
}

// ---- backward ---------------------------------------------------------------------------

/// dq (and dbias) for one 64-row query tile of one (batch, head).
template <class T, class Policy, int D>
__global__ void __launch_bounds__(threads) flash_backward_dq_mma(AttentionArgs a, Policy policy, const float* delta) {
  constexpr int key_tiles = block_n / 8;
  constexpr int dim_tiles = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* sq = reinterpret_cast<std::uint16_t*>(smem);
  std::uint16_t* sdo = sq + block_m * stride<D>;
  // Two stages of (K tile, V tile), as in the forward kernel.
  std::uint16_t* const stage_base = sdo + block_m * stride<D>;
  constexpr int stage_elements = 2 * block_n * stride<D>;

  const QueryBlock<T> blk(a);
  const int tq = blk.tq, tk = blk.tk, b = blk.b, q0 = blk.q0, q1 = blk.q1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * mma::tile_m;
  const bool vectorized = chunks_aligned(a, a.dout);
  const float scale = static_cast<float>(a.scale), scale_log2 = scale * log2e;
  T* dbias = a.dbias ? static_cast<T*>(a.dbias) + blk.bh * a.tq * a.tk : nullptr;

  const auto load_stage = [&](int stage, int k0) {
    std::uint16_t* sk = stage_base + stage * stage_elements;
    load_tile_async<D>(sk, blk.k, k0, block_n, tk, blk.dim, vectorized);
    load_tile_async<D>(sk + block_n * stride<D>, blk.v, k0, block_n, tk, blk.dim, vectorized);
  };
  TileKind kind = TileKind::Empty;  // dbias stays zero on Empty tiles
  int k0 = next_key_tile(policy, a.skip_tiles, b, q0, q1, 0, tk, &kind, nullptr);
  if (k0 < tk) load_stage(0, k0);
  commit_async();

  load_tile<D>(sq, blk.q, q0, block_m, tq, blk.dim, vectorized);
  load_tile<D>(sdo, bits_of<T>(a.dout) + blk.bh * a.tq * a.dim, q0, block_m, tq, blk.dim, vectorized);
  const int rows[2] = {q0 + wrow + mma::c_coord(lane, 0).row, q0 + wrow + mma::c_coord(lane, 2).row};
  float lse_log2[2], row_delta[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const std::int64_t at = blk.bh * a.tq + rows[i];
    lse_log2[i] = rows[i] < tq ? static_cast<const float*>(a.lse)[at] * log2e : -INFINITY;
    row_delta[i] = rows[i] < tq ? delta[at] : 0.f;
  }
  float dq[dim_tiles][4];
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) dq[t][0] = dq[t][1] = dq[t][2] = dq[t][3] = 0.f;

  for (int stage = 0; k0 < tk; stage ^= 1) {
    const int k1 = min(tk, k0 + block_n);
    TileKind next_kind = TileKind::Empty;
    const int next_k0 = next_key_tile(policy, a.skip_tiles, b, q0, q1, k0 + block_n, tk, &next_kind, nullptr);
    if (next_k0 < tk) load_stage(stage ^ 1, next_k0);
    commit_async();
    wait_async<1>();
    __syncthreads();  // also orders the first tile after the q / dout loads
    const std::uint16_t* sk = stage_base + stage * stage_elements;
    const std::uint16_t* sv = sk + block_n * stride<D>;

    // S = Q K^T and dP = dO V^T.
    float s[key_tiles][4], dp[key_tiles][4];
    score_products<T, D>(s, dp, sq, sdo, wrow, sk, sv, lane);
    // dS = P * (dP - delta), P = exp(S - lse); dbias = dS.
#pragma unroll
    for (int t = 0; t < key_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2, row = rows[i], key = k0 + t * 8 + mma::c_coord(lane, e).col;
        float ds = 0.f;
        if (lse_log2[i] != -INFINITY && pair_allowed(policy, kind, b, row, tq, key, k1)) {
          float x = s[t][e] * scale_log2;
          if (blk.bias) x += load(blk.bias + static_cast<std::int64_t>(row) * tk + key) * log2e;
          ds = exp2f(x - lse_log2[i]) * (dp[t][e] - row_delta[i]);
        }
        if (dbias && row < tq && key < k1) dbias[static_cast<std::int64_t>(row) * tk + key] = to_element<T>(ds);
        s[t][e] = ds;
      }
    }
    // dQ += dS K (scaled at the end).
    scores_times_tile<T, D>(dq, s, sk, lane);
    __syncthreads();  // this stage is read by every warp before the next copy into it
    k0 = next_k0;
    kind = next_kind;
  }

  T* dq_out = static_cast<T*>(a.dq) + blk.bh * a.tq * a.dim;
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = rows[e / 2], col = t * 8 + mma::c_coord(lane, e).col;
      if (row < tq && col < blk.dim) dq_out[static_cast<std::int64_t>(row) * blk.dim + col] = to_element<T>(dq[t][e] * scale);
    }
  }
}

/// dk and dv for one tile of 64 keys of one (batch, kv head), summed over the query heads of
/// its group and every 32-row query tile.
template <class T, class Policy, int D>
__global__ void __launch_bounds__(threads) flash_backward_dkdv_mma(AttentionArgs a, Policy policy, const float* delta) {
  constexpr int query_tiles = dkdv_queries / 8;  // n-tiles of S^T
  constexpr int dim_tiles = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* sk = reinterpret_cast<std::uint16_t*>(smem);
  std::uint16_t* sv = sk + dkdv_keys * stride<D>;
  // Two stages of (Q tile, dO tile) and of (lse in base 2, delta) for those rows.
  std::uint16_t* const stage_base = sv + dkdv_keys * stride<D>;
  constexpr int stage_elements = 2 * dkdv_queries * stride<D>;
  float* const stage_rows = reinterpret_cast<float*>(stage_base + 2 * stage_elements);

  const int dim = static_cast<int>(a.dim), tq = static_cast<int>(a.tq), tk = static_cast<int>(a.tk);
  const std::int64_t bkv = blockIdx.x;
  const int b = static_cast<int>(bkv / a.kv_heads);
  const std::int64_t kvh = bkv % a.kv_heads, group = a.heads / a.kv_heads;
  const int key0 = static_cast<int>(blockIdx.y) * dkdv_keys, key1 = min(tk, key0 + dkdv_keys);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * mma::tile_m;
  const bool vectorized = chunks_aligned(a, a.dout);
  const float scale = static_cast<float>(a.scale), scale_log2 = scale * log2e;

  // The work items: (query head of the group, query tile), flattened; Empty ones skipped.
  const int query_blocks = (tq + dkdv_queries - 1) / dkdv_queries;
  const int items = static_cast<int>(group) * query_blocks;
  const auto next_item = [&](int i, TileKind* kind) {
    for (; i < items; ++i) {
      const int q0 = (i % query_blocks) * dkdv_queries;
      *kind = tile_kind(policy, a.skip_tiles, b, q0, min(tq, q0 + dkdv_queries), key0, key1);
      if (*kind != TileKind::Empty) return i;  // the same for the whole block
    }
    return items;
  };
  const auto head_of = [&](int i) { return b * a.heads + kvh * group + i / query_blocks; };
  const auto load_stage = [&](int stage, int i) {
    const std::int64_t bh = head_of(i);
    const int q0 = (i % query_blocks) * dkdv_queries;
    std::uint16_t* sq = stage_base + stage * stage_elements;
    load_tile_async<D>(sq, bits_of<T>(a.q) + bh * a.tq * a.dim, q0, dkdv_queries, tq, dim, vectorized);
    load_tile_async<D>(sq + dkdv_queries * stride<D>, bits_of<T>(a.dout) + bh * a.tq * a.dim, q0, dkdv_queries, tq, dim,
                       vectorized);
    if (threadIdx.x < dkdv_queries) {
      const int row = q0 + threadIdx.x;
      const std::int64_t at = bh * a.tq + row;
      float* rows_of_stage = stage_rows + stage * 2 * dkdv_queries;
      rows_of_stage[threadIdx.x] = row < tq ? static_cast<const float*>(a.lse)[at] * log2e : -INFINITY;
      rows_of_stage[dkdv_queries + threadIdx.x] = row < tq ? delta[at] : 0.f;
    }
  };
  TileKind kind = TileKind::Empty;
  int item = next_item(0, &kind);
  if (item < items) load_stage(0, item);
  commit_async();

  load_tile<D>(sk, bits_of<T>(a.k) + bkv * a.tk * a.dim, key0, dkdv_keys, tk, dim, vectorized);
  load_tile<D>(sv, bits_of<T>(a.v) + bkv * a.tk * a.dim, key0, dkdv_keys, tk, dim, vectorized);
  const int keys[2] = {key0 + wrow + mma::c_coord(lane, 0).row, key0 + wrow + mma::c_coord(lane, 2).row};
  float dk[dim_tiles][4], dv[dim_tiles][4];
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[t][e] = dv[t][e] = 0.f;

  for (int stage = 0; item < items; stage ^= 1) {
    TileKind next_kind = TileKind::Empty;
    const int next = next_item(item + 1, &next_kind);
    if (next < items) load_stage(stage ^ 1, next);
    commit_async();
    wait_async<1>();
    __syncthreads();  // also orders the first item after the K and V loads
    const std::int64_t bh = head_of(item), h = bh - static_cast<std::int64_t>(b) * a.heads;
    const int q0 = (item % query_blocks) * dkdv_queries, q1 = min(tq, q0 + dkdv_queries);
    const T* bias = a.bias ? static_cast<const T*>(a.bias) + (b * a.bias_heads + (a.bias_heads == 1 ? 0 : h)) * a.tq * a.tk : nullptr;
    const std::uint16_t* sq = stage_base + stage * stage_elements;
    const std::uint16_t* sdo = sq + dkdv_queries * stride<D>;
    const float* slse = stage_rows + stage * 2 * dkdv_queries;
    const float* sdelta = slse + dkdv_queries;
    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys and the tile's 32 queries.
    float st[query_tiles][4], dpt[query_tiles][4];
    score_products<T, D>(st, dpt, sk, sv, wrow, sq, sdo, lane);
    // P^T and dS^T = P^T * (dP^T - delta).
#pragma unroll
    for (int t = 0; t < query_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = keys[e / 2], qi = t * 8 + mma::c_coord(lane, e).col, row = q0 + qi;
        float p = 0.f;
        if (slse[qi] != -INFINITY && pair_allowed(policy, kind, b, row, q1, key, tk)) {
          float x = st[t][e] * scale_log2;
          if (bias) x += load(bias + static_cast<std::int64_t>(row) * tk + key) * log2e;
          p = exp2f(x - slse[qi]);
        }
        st[t][e] = p;
        dpt[t][e] = p * (dpt[t][e] - sdelta[qi]);
      }
    }
    // dV += P^T dO and dK += dS^T Q (scaled at the end).
    scores_times_tile<T, D>(dv, st, sdo, lane);
    scores_times_tile<T, D>(dk, dpt, sq, lane);
    __syncthreads();  // this stage is read by every warp before the next copy into it
    item = next;
    kind = next_kind;
  }

  T* dk_out = static_cast<T*>(a.dk) + bkv * a.tk * a.dim;
  T* dv_out = static_cast<T*>(a.dv) + bkv * a.tk * a.dim;
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = keys[e / 2], col = t * 8 + mma::c_coord(lane, e).col;
      if (key < tk && col < dim) {
        const std::int64_t at = static_cast<std::int64_t>(key) * dim + col;
        dk_out[at] = to_element<T>(dk[t][e] * scale);
        dv_out[at] = to_element<T>(dv[t][e]);
      }
    }
  }
}

// ---- launch sizes -----------------------------------------------------------------------

template <int D>
constexpr std::size_t forward_smem = static_cast<std::size_t>(block_m + 4 * block_n) * stride<D> * 2;
template <int D>
constexpr std::size_t dq_smem = static_cast<std::size_t>(2 * block_m + 4 * block_n) * stride<D> * 2;
template <int D>
constexpr std::size_t dkdv_smem =
    static_cast<std::size_t>(2 * dkdv_keys + 4 * dkdv_queries) * stride<D> * 2 + 4 * dkdv_queries * sizeof(float);

}  // namespace condense::cuda::attention_mma
