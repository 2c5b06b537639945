// Flash attention on tensor cores: the bfloat16 / float16 kernels (mma.sync m16n8k16,
// fp32 accumulation) for head dims up to 128, forward (output and log-sum-exp) and
// backward (dq and the bias gradient; dk and dv), templated on the mask policy exactly as
// the portable kernels of flash_attention.cuh, which includes this file and launches these
// for 16-bit element types.
//
// Layout: the forward and dq blocks have 4 warps. The forward kernel gives each warp 32
// query rows (two m-tiles, 128 per block: each K and V fragment read from shared memory
// serves both), the dq kernel 16 (64 per block); both walk key tiles of 64 keys. The dk/dv
// kernel has 8 warps and gives each 16 keys (128 per block, as FlashAttention-2's backward:
// each Q and dO tile it loads serves 128 keys, and dq by atomics takes one addition per
// element per 128 keys) and walks query tiles of 32 rows over every query head of its
// group, so dk and dv need no atomics. dq (and dbias) come either from the dq kernel (which
// recomputes S and dP: deterministic) or from the dk/dv kernel itself, which then also forms
// dQ += dS K from the dS it already holds and adds it in float to an accumulator with
// atomics (five products per tile instead of seven, as in FlashAttention-2);
// dq_from_accumulator scales and rounds it. Tiles live in shared memory as 16-bit rows
// padded by 8 elements (16 bytes), which keeps the ldmatrix fragment loads free of bank
// conflicts; the tiles a block walks over come in two stages, the next non-empty one copied
// with cp.async while the current one is used (TileStages; on devices with 99 KiB of
// shared memory per block, sm_86 and sm_89, the head-dim-128 kernels run with one stage
// instead). Scores stay in registers: the accumulator of
// S = Q K^T (or of dS) is reused as the left operand of the next product
// (mma::a_from_c_tile), rounded to the element type. Softmax runs in base 2: the scores
// are scaled by scale * log2(e) inside the exponent (exp2(s * c - shift): one FFMA and one
// ex2.approx, ScoreScale and fast_exp2) or, with a bias, before it; the saved log-sum-exp
// is in natural units, like the portable kernels', so either backward can follow either
// forward.
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
#include "condense/backend/score_scale.hpp"
#include "condense/core/dtype.hpp"
#include "condense/mask/policy.hpp"
#include "detail/common.cuh"

namespace condense::cuda::attention_mma {

using namespace condense::cuda::detail;

constexpr int warps = 4;
constexpr int threads = warps * 32;
constexpr int forward_m_tiles = 2;  ///< m-tiles of 16 query rows per warp in the forward kernel
constexpr int forward_block_m = warps * forward_m_tiles * mma::tile_m;  ///< query rows per forward block
constexpr int block_m = warps * mma::tile_m;  ///< query rows per dq block
constexpr int block_n = 64;                   ///< keys per forward / dq key tile
constexpr int dkdv_warps = 8;                          ///< warps per dk/dv block (16 keys each)
constexpr int dkdv_threads = dkdv_warps * 32;
constexpr int dkdv_keys = dkdv_warps * mma::tile_m;  ///< keys per dk/dv block
constexpr int dkdv_queries = 32;                ///< query rows per dk/dv query tile
constexpr int ds_stride = dkdv_queries + 8;     ///< row stride of the dk/dv kernel's dS^T tile (keys by rows)
constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

/// True for the element types these kernels take.
template <class T>
constexpr bool is_16bit = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

/// Whether the forward kernel keeps the warp's Q fragments in registers for head dims up
/// to D (they take 16 * D / 32 registers per m-tile).
template <int D>
constexpr bool forward_q_in_registers = D <= 64;

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
#if defined(CONDENSE_CUDA_EMULATION)
  condense_cuda_emulation::mma_16816(d, a, b0, b1, std::is_same_v<T, bfloat16>);
#else
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
#endif
}

/// The 32-bit shared-memory address of p.
__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// A tile of 16-bit elements in shared memory (rows of stride<D>) by its 32-bit shared
/// address. shared_tile() hides the address from the compiler's loop-invariant code
/// motion, so the fragment addresses derived from it are formed where they are used (the
/// tile's address plus a constant that folds into the ldmatrix instruction) instead of
/// being hoisted out of the key-tile loop into a register each.
struct SharedTile {
  unsigned address;
};

/// The tile at p, its address taken here (inside the loop that uses it).
__device__ __forceinline__ SharedTile shared_tile(const std::uint16_t* p) {
  unsigned address = shared_address(p);
#if !defined(CONDENSE_CUDA_EMULATION)
  asm volatile("" : "+r"(address));
#endif
  return {address};
}

/// ldmatrix.x4: four 8 x 8 matrices of 16-bit elements, this lane pointing at one row.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], unsigned row) {
#if defined(CONDENSE_CUDA_EMULATION)
  condense_cuda_emulation::ldmatrix_x4(r, row, false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
#endif
}

/// ldmatrix.x4.trans: the same four matrices, each transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], unsigned row) {
#if defined(CONDENSE_CUDA_EMULATION)
  condense_cuda_emulation::ldmatrix_x4(r, row, true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
#endif
}

/// The byte offset of element (row, col) in a row-major tile of stride<D>.
template <int D>
__device__ __forceinline__ unsigned offset(int row, int col) {
  return 2u * static_cast<unsigned>(row * stride<D> + col);
}

/// The shared address of the element at a fragment position of a row-major tile.
template <int D>
__device__ __forceinline__ unsigned at(SharedTile tile, mma::Coord c) {
  return tile.address + offset<D>(c.row, c.col);
}

// The fragment loads below form the address a lane hands to ldmatrix as the lane's row for
// the fragment at (0, 0) plus the offset of the fragment's origin (the layouts are linear in
// the origin: tests/core/test_mma_layout.cpp). The lane's part is then formed once per tile
// and each fragment's offset, a constant in the unrolled loops, folds into the ldmatrix
// instruction. Written as layout(lane, row0, col0), the compiler turned row0 + lane's row
// into an OR of disjoint bits and multiplied it by the stride anew for every fragment.

/// The A fragment of the 16 x 16 block at (row0, col0) of a row-major shared tile.
template <int D>
__device__ __forceinline__ void load_a(std::uint32_t (&a)[4], SharedTile tile, int row0, int col0, int lane) {
  ldmatrix_x4(a, at<D>(tile, mma::ldmatrix_a_row(lane, 0, 0)) + offset<D>(row0, col0));
}

/// The B fragments of n-tiles n0 and n0 + 8 whose column n is row (n0 + n) of a row-major
/// shared tile and whose k runs along that row from col0: B = tile^T (K^T in S = Q K^T).
/// b[0], b[1]: n-tile n0; b[2], b[3]: n-tile n0 + 8.
template <int D>
__device__ __forceinline__ void load_b_transposed(std::uint32_t (&b)[4], SharedTile tile, int n0, int col0, int lane) {
  ldmatrix_x4(b, at<D>(tile, mma::ldmatrix_b_transposed_row(lane, 0, 0)) + offset<D>(n0, col0));
}

/// The B fragments of n-tiles n0 and n0 + 8 whose k is row (k0 + k) and whose column n is
/// column (n0 + n) of a row-major shared tile: B = tile (V in O = P V).
template <int D>
__device__ __forceinline__ void load_b(std::uint32_t (&b)[4], SharedTile tile, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, at<D>(tile, mma::ldmatrix_b_row(lane, 0, 0)) + offset<D>(k0, n0));
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
__device__ __forceinline__ void score_products(float (&first)[Tiles][4], float (&second)[Tiles][4], SharedTile a1,
                                               SharedTile a2, int row0, SharedTile b1, SharedTile b2, int lane) {
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
                                                  SharedTile tile, int lane) {
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

/// Copies rows [r0, r0 + rows) of a [*, dim] tensor of 16-bit elements (rows `row_stride`
/// elements apart) into a shared tile of `rows` rows of stride<D>, zero-filling rows past
/// `limit` and columns past dim (so the products over the padded head dim add nothing).
/// `vectorized`: dim and row_stride are multiples of 8 and src is 16-byte aligned, so whole
/// 16-byte chunks are copied.
template <int D>
__device__ __forceinline__ void load_tile(std::uint16_t* tile, const std::uint16_t* src, std::int64_t row_stride, int r0,
                                          int rows, int limit, int dim, bool vectorized) {
  constexpr int chunks = D / 8;
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = (idx % chunks) * 8, row = r0 + r;
    std::uint16_t* dst = tile + r * stride<D> + c;
    const std::uint16_t* from = src + row * row_stride + c;
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
#if defined(CONDENSE_CUDA_EMULATION)
  condense_cuda_emulation::copy_async_16(shared_address(dst), src, valid);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
#endif
}
__device__ __forceinline__ void commit_async() {
#if !defined(CONDENSE_CUDA_EMULATION)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/// Waits until at most `Pending` committed groups of this thread are still in flight.
template <int Pending>
__device__ __forceinline__ void wait_async() {
#if !defined(CONDENSE_CUDA_EMULATION)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

/// The copies of the tiles a block walks (key tiles; the dk/dv kernel's query tiles) into
/// Stages shared-memory stages. Two stages: the next tile's copy starts before the current
/// tile is used, so it overlaps the products. One stage (devices with 99 KiB of shared
/// memory per block, sm_86 and sm_89, where two stages of head-dim-128 tiles do not fit):
/// the next copy starts once every warp is done with the current tile. The first tile's
/// copy is started (and committed) before the loop, into stage 0.
template <int Stages>
struct TileStages {
  static_assert(Stages == 1 || Stages == 2, "one or two stages");
  int current = 0;  ///< the stage the current tile is in

  /// Before the current tile is used: with two stages, starts the next tile's copy
  /// (load(stage), when there is a next tile); waits for the current tile's copy; a barrier
  /// makes it visible to every warp.
  template <class Load>
  __device__ __forceinline__ void begin_tile(bool has_next, const Load& load) {
    if constexpr (Stages == 2) {
      if (has_next) load(current ^ 1);
      commit_async();
      wait_async<1>();
    } else {
      wait_async<0>();
    }
    __syncthreads();
  }

  /// After the current tile's last use: a barrier (every warp is done with its stage), then,
  /// with one stage, the next tile's copy into it; the next tile becomes the current one.
  template <class Load>
  __device__ __forceinline__ void end_tile(bool has_next, const Load& load) {
    __syncthreads();
    if constexpr (Stages == 2) {
      current ^= 1;
    } else {
      if (has_next) load(0);
      commit_async();
    }
  }
};

/// load_tile, asynchronously when `vectorized` (cp.async, completed by wait_async and made
/// visible by a barrier); element by element otherwise.
template <int D>
__device__ __forceinline__ void load_tile_async(std::uint16_t* tile, const std::uint16_t* src, std::int64_t row_stride,
                                                int r0, int rows, int limit, int dim, bool vectorized) {
  if (!vectorized) {
    load_tile<D>(tile, src, row_stride, r0, rows, limit, dim, false);
    return;
  }
  constexpr int chunks = D / 8;
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = (idx % chunks) * 8, row = r0 + r;
    const bool valid = row < limit && c < dim;
    copy_async_16(tile + r * stride<D> + c, valid ? src + row * row_stride + c : src, valid);
  }
}

/// 2^x on the special function unit alone (ex2.approx.ftz): results below 2^-126 flush
/// to zero, which no softmax weight misses next to its row maximum's 1. exp2f adds a
/// rescaling of that range around it, three more instructions per element.
__device__ __forceinline__ float fast_exp2(float x) {
#if defined(CONDENSE_CUDA_EMULATION)
  return condense_cuda_emulation::ex2_approx_ftz(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
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

/// p[0] += x and p[1] += y in global memory, atomically (one 8-byte atomic on sm_90;
/// p 8-byte aligned).
__device__ __forceinline__ void atomic_add_pair(float* p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(x, y));
#else
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
#endif
}

/// The tile kind a block acts on (every tile Partial when skipping is off).
template <class Policy>
__device__ __forceinline__ TileKind tile_kind(const Policy& policy, bool skip, int b, int q0, int q1, int k0, int k1) {
  return skip ? policy.classify(b, q0, q1, k0, k1) : TileKind::Partial;
}

/// The mask of one block's (batch row b) pairs, as prepare_scores asks it: `allowed(b, q,
/// k)` for keys below `key_end`. A policy in general keeps its own test and key_end = Tk.
template <class Policy>
struct BlockMask {
  Policy policy;
  int key_end;
  __device__ BlockMask(const Policy& p, int, int tk) : policy(p), key_end(tk) {}
  __device__ __forceinline__ bool allowed(int b, int q, int k) const { return policy.allowed(b, q, k); }
};

/// The kernels' form of every policy (QueryOffset<P> & KeyPadding): the key padding of row b
/// is read once per block and becomes key_end, so the per-element test is P's alone (no
/// load of the row's length per element, which also kept the compiler from predicating it).
template <class P>
struct BlockMask<mask::Intersect<mask::QueryOffset<P>, mask::KeyPadding>> {
  mask::QueryOffset<P> policy;
  int key_end;
  __device__ BlockMask(const mask::Intersect<mask::QueryOffset<P>, mask::KeyPadding>& p, int b, int tk)
      : policy(p.first), key_end(min(tk, p.second.len(b))) {}
  __device__ __forceinline__ bool allowed(int b, int q, int k) const { return policy.allowed(b, q, k); }
};

/// The log-sum-exp of a row in base 2 for P = exp2(s * exponent - lse): +inf for a row with
/// no allowed key (lse -inf) or past the sequence, so that every P of it is exp2(-inf) = 0
/// without a test per element.
__device__ __forceinline__ float lse_base2(float lse, bool in_sequence) {
  return in_sequence && lse != -INFINITY ? lse * log2e : INFINITY;
}

/// Prepares one 16-row m-tile of a warp's scores (the accumulators of S = Q K^T, or of
/// S^T = K Q^T when KeysAlongRows) for the softmax: scaled to base 2 by `scale.before`
/// (ScoreScale), the bias added (times log2(e)), and
/// -inf where a pair does not take part (outside [0, query_end) x [0, key_end), or not
/// allowed by the policy on a Partial tile). The accumulator rows of this lane are `own`
/// (queries, or keys when KeysAlongRows), its columns start at col0; `mask` is the block's
/// (BlockMask). `whole`: every row and column of the block's tile lies inside the
/// sequences, so a Full tile needs no per-element test at all. The branches on the bias
/// and on the tile are uniform over the block; the mask itself is applied with selects.
template <bool KeysAlongRows, class T, class Policy, int Tiles>
__device__ __forceinline__ void prepare_scores(float (&s)[Tiles][4], const BlockMask<Policy>& mask, TileKind kind, bool whole, int b,
                                               const int (&own)[2], int col0, int query_end, int key_end, const ScoreScale<float>& scale,
                                               const T* bias, int tk, int lane) {
  const auto query_of = [&](int t, int e) { return KeysAlongRows ? col0 + t * 8 + mma::c_coord(lane, e).col : own[e / 2]; };
  const auto key_of = [&](int t, int e) { return KeysAlongRows ? own[e / 2] : col0 + t * 8 + mma::c_coord(lane, e).col; };
  if (scale.before != 1.f) {
#pragma unroll
    for (int t = 0; t < Tiles; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[t][e] *= scale.before;
  }
  if (bias) {
#pragma unroll
    for (int t = 0; t < Tiles; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int query = query_of(t, e), key = key_of(t, e);
        if (query < query_end && key < key_end) s[t][e] += load(bias + static_cast<std::int64_t>(query) * tk + key) * log2e;
      }
  }
  if (kind == TileKind::Full && whole) return;
  const int mask_key_end = min(key_end, mask.key_end);
#pragma unroll
  for (int t = 0; t < Tiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int query = query_of(t, e), key = key_of(t, e);
      const bool takes_part =
          query < query_end && key < mask_key_end && (kind == TileKind::Full || mask.allowed(b, query, key));
      s[t][e] = takes_part ? s[t][e] : -INFINITY;
    }
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

/// The bits of a layout's strides that keep 16-byte chunks of 16-bit elements aligned (0
/// when every stride is a multiple of 8 elements).
__device__ __forceinline__ std::int64_t misaligned_strides(const RowLayout& l) { return (l.batch | l.head | l.token) % 8; }

/// True when every operand that load_tile copies in 16-byte chunks allows it: q, k, v (and
/// dout when `with_dout`), their pointers 16-byte aligned and their strides multiples of 8.
__device__ __forceinline__ bool chunks_aligned(const AttentionArgs& a, bool with_dout) {
  const auto bits = reinterpret_cast<std::uintptr_t>(a.q) | reinterpret_cast<std::uintptr_t>(a.k) |
                    reinterpret_cast<std::uintptr_t>(a.v) | reinterpret_cast<std::uintptr_t>(with_dout ? a.dout : nullptr);
  const std::int64_t strides = misaligned_strides(a.q_rows) | misaligned_strides(a.k_rows) | misaligned_strides(a.v_rows) |
                               (with_dout ? misaligned_strides(a.dout_rows) : 0);
  return a.dim % 8 == 0 && bits % 16 == 0 && strides == 0;
}

/// The bits of a 16-bit element tensor.
template <class T>
__device__ __forceinline__ const std::uint16_t* bits_of(const void* p) {
  return static_cast<const std::uint16_t*>(p);
}

/// The rows a forward or dq block works on: (batch, head) = blockIdx.x, the query tile
/// [q0, q1) of `rows` rows, and the q, k, v and bias rows of that head. Query tiles go in
/// reverse order of blockIdx.y: the blocks the GPU starts first take the last rows, which
/// under causal-like masks have the most keys, so the short ones fill the tail.
template <class T>
struct QueryBlock {
  int dim, tq, tk, b, q0, q1;
  std::int64_t bh, h;
  const std::uint16_t *q, *k, *v;
  const T* bias;

  __device__ QueryBlock(const AttentionArgs& a, int rows)
      : dim(static_cast<int>(a.dim)), tq(static_cast<int>(a.tq)), tk(static_cast<int>(a.tk)) {
    bh = blockIdx.x;
    b = static_cast<int>(bh / a.heads);
    h = bh % a.heads;
    const std::int64_t kvh = h / (a.heads / a.kv_heads);
    q0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * rows;
    q1 = min(tq, q0 + rows);
    q = bits_of<T>(a.q) + a.q_rows.at(b, h, 0);
    k = bits_of<T>(a.k) + a.k_rows.at(b, kvh, 0);
    v = bits_of<T>(a.v) + a.v_rows.at(b, kvh, 0);
    bias = a.bias ? static_cast<const T*>(a.bias) + (b * a.bias_heads + (a.bias_heads == 1 ? 0 : h)) * a.tq * a.tk : nullptr;
  }
};

// ---- forward ----------------------------------------------------------------------------

/// acc[m] += P[m] B for the warp's M m-tiles of 16 rows: P[m] their probabilities over
/// Steps * 16 columns, already A fragments of T (a_from_accumulators), and B the first
/// Steps * 16 rows of a shared tile (O += P V). Each B fragment is loaded once and used for
/// all M m-tiles.
template <class T, int D, int Steps, int M>
__device__ __forceinline__ void rows_times_tile(float (&acc)[M][D / 8][4], const std::uint32_t (&p)[M][Steps][4],
                                                SharedTile tile, int lane) {
#pragma unroll
  for (int step = 0; step < Steps; ++step) {
#pragma unroll
    for (int t = 0; t < D / 8; t += 2) {
      std::uint32_t b[4];
      load_b<D>(b, tile, step * 16, t * 8, lane);
#pragma unroll
      for (int m = 0; m < M; ++m) mma_pair<T>(acc[m], t, p[m][step], b);
    }
  }
}

template <class T, class Policy, int D, int Stages = 2>
__global__ void __launch_bounds__(threads) flash_forward_mma(AttentionArgs a, Policy policy, unsigned long long* stats) {
  constexpr int M = forward_m_tiles;      // m-tiles of 16 rows per warp
  constexpr int k_steps = D / 16;         // over the head dim
  constexpr int key_tiles = block_n / 8;  // n-tiles of S
  constexpr int dim_tiles = D / 8;        // n-tiles of O
  constexpr bool q_in_registers = forward_q_in_registers<D>;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  std::uint16_t* sq = reinterpret_cast<std::uint16_t*>(smem);
  // Stages of (K tile, V tile): with two, the next non-empty tile loads while this one is used.
  std::uint16_t* const stage_base = sq + forward_block_m * stride<D>;
  constexpr int stage_elements = 2 * block_n * stride<D>;

  const QueryBlock<T> blk(a, forward_block_m);
  const int tq = blk.tq, tk = blk.tk, b = blk.b, q0 = blk.q0, q1 = blk.q1;
  const BlockMask<Policy> mask(policy, b, tk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * M * mma::tile_m;  // the warp's first row in the block
  const bool vectorized = chunks_aligned(a, false);
  const ScoreScale<float> scale(static_cast<float>(a.scale) * log2e, blk.bias != nullptr);

  const auto next_tile = [&](int k0, TileKind* kind) {
    return next_key_tile(policy, a.skip_tiles, b, q0, q1, k0, tk, kind, stats);
  };
  const auto load_stage = [&](int stage, int k0) {
    std::uint16_t* sk = stage_base + stage * stage_elements;
    load_tile_async<D>(sk, blk.k, a.k_rows.token, k0, block_n, tk, blk.dim, vectorized);
    load_tile_async<D>(sk + block_n * stride<D>, blk.v, a.v_rows.token, k0, block_n, tk, blk.dim, vectorized);
  };
  TileKind kind = TileKind::Empty;
  int k0 = next_tile(0, &kind);
  if (k0 < tk) load_stage(0, k0);
  commit_async();

  load_tile<D>(sq, blk.q, a.q_rows.token, q0, forward_block_m, tq, blk.dim, vectorized);
  __syncthreads();
  // The warp's Q fragments stay in registers where they fit; otherwise (head dim 128: they
  // would take 64 registers next to the 128 of O) they are read from shared memory per
  // key tile, as FlashAttention-2 does.
  std::uint32_t qa[q_in_registers ? M : 1][q_in_registers ? k_steps : 1][4];
  if constexpr (q_in_registers) {
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int st = 0; st < k_steps; ++st) load_a<D>(qa[m][st], shared_tile(sq), wrow + m * mma::tile_m, st * 16, lane);
  }

  // This lane's accumulator rows: element e of m-tile m belongs to row rows[m][e / 2].
  int rows[M][2];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    rows[m][0] = q0 + wrow + m * mma::tile_m + mma::c_coord(lane, 0).row;
    rows[m][1] = q0 + wrow + m * mma::tile_m + mma::c_coord(lane, 2).row;
  }
  float o[M][dim_tiles][4], row_max[M][2], row_sum[M][2];
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int t = 0; t < dim_tiles; ++t) o[m][t][0] = o[m][t][1] = o[m][t][2] = o[m][t][3] = 0.f;
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.f;
  }

  TileStages<Stages> stages;
  while (k0 < tk) {
    const int k1 = min(tk, k0 + block_n);
    const bool whole = q1 - q0 == forward_block_m && k1 - k0 == block_n;
    // With two stages, start the next non-empty tile's copy into the other stage (last read
    // before the barrier that ended the previous iteration); wait for this tile's.
    TileKind next_kind = TileKind::Empty;
    const int next_k0 = next_tile(k0 + block_n, &next_kind);
    const auto load_next = [&](int stage) { load_stage(stage, next_k0); };
    stages.begin_tile(next_k0 < tk, load_next);
    const int stage = stages.current;
    const SharedTile tile_q = shared_tile(sq), tile_k = shared_tile(stage_base + stage * stage_elements),
                     tile_v = shared_tile(stage_base + stage * stage_elements + block_n * stride<D>);

    // S = Q K^T for the warp's 16 * M rows and the tile's 64 keys; each K fragment is
    // loaded once for all M m-tiles.
    float s[M][key_tiles][4];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int t = 0; t < key_tiles; ++t) s[m][t][0] = s[m][t][1] = s[m][t][2] = s[m][t][3] = 0.f;
#pragma unroll
    for (int st = 0; st < k_steps; ++st) {
      std::uint32_t qf[M][4];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if constexpr (q_in_registers) {
#pragma unroll
          for (int r = 0; r < 4; ++r) qf[m][r] = qa[m][st][r];
        } else {
          load_a<D>(qf[m], tile_q, wrow + m * mma::tile_m, st * 16, lane);
        }
      }
#pragma unroll
      for (int t = 0; t < key_tiles; t += 2) {
        std::uint32_t kb[4];
        load_b_transposed<D>(kb, tile_k, t * 8, st * 16, lane);
#pragma unroll
        for (int m = 0; m < M; ++m) mma_pair<T>(s[m], t, qf[m], kb);
      }
    }
    // P rounded to T as the A fragments of O += P V; S dies here, which keeps the
    // registers of the product below those of the softmax.
    std::uint32_t p[M][key_tiles / 2][4];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      // Scale (base 2, unless the exponent does), bias, mask; the new running maxima (in
      // base 2, scaled).
      prepare_scores<false>(s[m], mask, kind, whole, b, rows[m], k0, tq, k1, scale, blk.bias, tk, lane);
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int t = 0; t < key_tiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[m][t][e]);
      float alpha[2], shift[2];
      bool max_moved = false;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float m_new = fmaxf(row_max[m][i], quad_max(tile_max[i]) * scale.exponent);
        // A row with no allowed key so far keeps the maximum -inf: shift by 0 so exp2 gives zeros.
        shift[i] = m_new == -INFINITY ? 0.f : m_new;
        alpha[i] = fast_exp2(row_max[m][i] - shift[i]);
        max_moved = max_moved || m_new != row_max[m][i];
        row_max[m][i] = m_new;
        row_sum[m][i] *= alpha[i];
      }
#pragma unroll
      for (int t = 0; t < key_tiles; ++t) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[m][t][e] = fast_exp2(fmaf(s[m][t][e], scale.exponent, -shift[e / 2]));
          row_sum[m][e / 2] += s[m][t][e];  // this lane's part of the row sum; the quad adds up at the end
        }
      }
#pragma unroll
      for (int step = 0; step < key_tiles / 2; ++step) a_from_accumulators<T>(p[m][step], s[m], step);
      // Rescale O only when a row maximum of the warp's m-tile moved (alpha is 1 for a row
      // whose maximum stayed): on long rows most key tiles move none, and the vote keeps
      // the branch uniform over the warp.
      if (__any_sync(0xffffffffu, max_moved)) {
#pragma unroll
        for (int t = 0; t < dim_tiles; ++t) {
          o[m][t][0] *= alpha[0];
          o[m][t][1] *= alpha[0];
          o[m][t][2] *= alpha[1];
          o[m][t][3] *= alpha[1];
        }
      }
    }
    // O += P V.
    rows_times_tile<T, D>(o, p, tile_v, lane);
    stages.end_tile(next_k0 < tk, load_next);  // this stage is read by every warp before the next copy into it
    k0 = next_k0;
    kind = next_kind;
  }

  T* out = static_cast<T*>(a.out) + a.out_rows.at(b, blk.h, 0);
  float* lse = static_cast<float*>(a.lse) + blk.bh * a.tq;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float l = quad_sum(row_sum[m][i]);
      inv[i] = l > 0.f ? 1.f / l : 0.f;
      if (lane % 4 == 0 && rows[m][i] < tq) lse[rows[m][i]] = l > 0.f ? row_max[m][i] * ln2 + logf(l) : -INFINITY;
    }
#pragma unroll
    for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rows[m][e / 2], col = t * 8 + mma::c_coord(lane, e).col;
        if (row < tq && col < blk.dim) out[row * a.out_rows.token + col] = to_element<T>(o[m][t][e] * inv[e / 2]);
      }
    }
  }
}

// ---- backward ---------------------------------------------------------------------------

/// dq (and dbias) for one 64-row query tile of one (batch, head).
template <class T, class Policy, int D, int Stages = 2>
__global__ void __launch_bounds__(threads) flash_backward_dq_mma(AttentionArgs a, Policy policy, const float* delta) {
  constexpr int key_tiles = block_n / 8;
  constexpr int dim_tiles = D / 8;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  std::uint16_t* sq = reinterpret_cast<std::uint16_t*>(smem);
  std::uint16_t* sdo = sq + block_m * stride<D>;
  // Stages of (K tile, V tile), as in the forward kernel.
  std::uint16_t* const stage_base = sdo + block_m * stride<D>;
  constexpr int stage_elements = 2 * block_n * stride<D>;

  const QueryBlock<T> blk(a, block_m);
  const int tq = blk.tq, tk = blk.tk, b = blk.b, q0 = blk.q0, q1 = blk.q1;
  const BlockMask<Policy> mask(policy, b, tk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * mma::tile_m;
  const bool vectorized = chunks_aligned(a, true);
  const float scale = static_cast<float>(a.scale);
  const ScoreScale<float> score_scale(scale * log2e, blk.bias != nullptr);
  T* dbias = a.dbias ? static_cast<T*>(a.dbias) + blk.bh * a.tq * a.tk : nullptr;

  const auto load_stage = [&](int stage, int k0) {
    std::uint16_t* sk = stage_base + stage * stage_elements;
    load_tile_async<D>(sk, blk.k, a.k_rows.token, k0, block_n, tk, blk.dim, vectorized);
    load_tile_async<D>(sk + block_n * stride<D>, blk.v, a.v_rows.token, k0, block_n, tk, blk.dim, vectorized);
  };
  TileKind kind = TileKind::Empty;  // dbias stays zero on Empty tiles
  int k0 = next_key_tile(policy, a.skip_tiles, b, q0, q1, 0, tk, &kind, nullptr);
  if (k0 < tk) load_stage(0, k0);
  commit_async();

  load_tile<D>(sq, blk.q, a.q_rows.token, q0, block_m, tq, blk.dim, vectorized);
  load_tile<D>(sdo, bits_of<T>(a.dout) + a.dout_rows.at(b, blk.h, 0), a.dout_rows.token, q0, block_m, tq, blk.dim,
               vectorized);
  const int rows[2] = {q0 + wrow + mma::c_coord(lane, 0).row, q0 + wrow + mma::c_coord(lane, 2).row};
  float lse_log2[2], row_delta[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const std::int64_t at = blk.bh * a.tq + rows[i];
    lse_log2[i] = lse_base2(rows[i] < tq ? static_cast<const float*>(a.lse)[at] : 0.f, rows[i] < tq);
    row_delta[i] = rows[i] < tq ? delta[at] : 0.f;
  }
  float dq[dim_tiles][4];
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) dq[t][0] = dq[t][1] = dq[t][2] = dq[t][3] = 0.f;

  TileStages<Stages> stages;
  while (k0 < tk) {
    const int k1 = min(tk, k0 + block_n);
    TileKind next_kind = TileKind::Empty;
    const int next_k0 = next_key_tile(policy, a.skip_tiles, b, q0, q1, k0 + block_n, tk, &next_kind, nullptr);
    const auto load_next = [&](int stage) { load_stage(stage, next_k0); };
    stages.begin_tile(next_k0 < tk, load_next);  // its barrier also orders the first tile after the q / dout loads
    const int stage = stages.current;
    const SharedTile tile_k = shared_tile(stage_base + stage * stage_elements),
                     tile_v = shared_tile(stage_base + stage * stage_elements + block_n * stride<D>);

    // S = Q K^T and dP = dO V^T.
    float s[key_tiles][4], dp[key_tiles][4];
    score_products<T, D>(s, dp, shared_tile(sq), shared_tile(sdo), wrow, tile_k, tile_v, lane);
    // dS = P * (dP - delta), P = exp(S - lse), 0 where a pair does not take part; dbias = dS.
    prepare_scores<false>(s, mask, kind, q1 - q0 == block_m && k1 - k0 == block_n, b, rows, k0, tq, k1, score_scale,
                          blk.bias, tk, lane);
#pragma unroll
    for (int t = 0; t < key_tiles; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[t][e] = fast_exp2(fmaf(s[t][e], score_scale.exponent, -lse_log2[e / 2])) * (dp[t][e] - row_delta[e / 2]);
    if (dbias) {
#pragma unroll
      for (int t = 0; t < key_tiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = rows[e / 2], key = k0 + t * 8 + mma::c_coord(lane, e).col;
          if (row < tq && key < k1) dbias[static_cast<std::int64_t>(row) * tk + key] = to_element<T>(s[t][e]);
        }
    }
    // dQ += dS K (scaled at the end).
    scores_times_tile<T, D>(dq, s, tile_k, lane);
    stages.end_tile(next_k0 < tk, load_next);  // this stage is read by every warp before the next copy into it
    k0 = next_k0;
    kind = next_kind;
  }

  T* dq_out = static_cast<T*>(a.dq) + a.dq_rows.at(b, blk.h, 0);
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = rows[e / 2], col = t * 8 + mma::c_coord(lane, e).col;
      if (row < tq && col < blk.dim) dq_out[row * a.dq_rows.token + col] = to_element<T>(dq[t][e] * scale);
    }
  }
}

/// dQ += dS K for one query tile of the dk/dv kernel, added to the float accumulator with
/// atomics: dS^T (the block's 128 keys by rows, the tile's 32 queries by columns) is in the
/// shared tile `ds` (row stride ds_stride), K in `tile_k`; each of the 8 warps takes 16
/// rows and D / 4 head-dim columns. `rows`: the accumulator of the query head, [Tq, D]; q0,
/// q1: the tile's query rows.
template <class T, int D>
__device__ __forceinline__ void accumulate_dq(float* rows, SharedTile ds, SharedTile tile_k, int q0, int q1, int dim,
                                              int warp, int lane) {
  constexpr int column_groups = dkdv_warps / (dkdv_queries / mma::tile_m);  // 4
  constexpr int n_tiles = D / 8 / column_groups;  // head-dim n-tiles per warp: 2 (D 64), 4 (D 128)
  static_assert(n_tiles % 2 == 0, "each warp takes pairs of n-tiles");
  const int row0 = (warp / column_groups) * mma::tile_m, col0 = (warp % column_groups) * n_tiles * 8;
  float acc[n_tiles][4];
#pragma unroll
  for (int t = 0; t < n_tiles; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
#pragma unroll
  for (int step = 0; step < dkdv_keys / mma::tile_k; ++step) {
    std::uint32_t a[4];
    // The lane's row plus the block's origin (A = ds^T: the origin's column is a row of ds).
    const mma::Coord c = mma::ldmatrix_a_transposed_row(lane, row0, 0);
    ldmatrix_x4_trans(a, ds.address + 2u * static_cast<unsigned>(c.row * ds_stride + c.col + step * mma::tile_k * ds_stride));
#pragma unroll
    for (int t = 0; t < n_tiles; t += 2) {
      std::uint32_t b[4];
      load_b<D>(b, tile_k, step * mma::tile_k, col0 + t * 8, lane);
      mma_pair<T>(acc, t, a, b);
    }
  }
#pragma unroll
  for (int t = 0; t < n_tiles; ++t)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const mma::Coord c = mma::c_coord(lane, 2 * half);
      const int row = q0 + row0 + c.row, col = col0 + t * 8 + c.col;
      // col is even and D a multiple of 8: the pair is 8-byte aligned; past dim it adds 0.
      if (row < q1 && col < dim)
        atomic_add_pair(rows + static_cast<std::int64_t>(row) * D + col, acc[t][2 * half], acc[t][2 * half + 1]);
    }
}

/// dk and dv for one tile of 128 keys of one (batch, kv head), summed over the query heads of
/// its group and every 32-row query tile. With dq_accum ([B, H, Tq, D] floats, zeroed) it
/// also adds each tile's unscaled dS K to the rows of dq (accumulate_dq) and writes dbias
/// (= dS) when wanted; the dq kernel is then not needed.
template <class T, class Policy, int D, int Stages = 2>
__global__ void __launch_bounds__(dkdv_threads)
    flash_backward_dkdv_mma(AttentionArgs a, Policy policy, const float* delta, float* dq_accum) {
  constexpr int query_tiles = dkdv_queries / 8;  // n-tiles of S^T
  constexpr int dim_tiles = D / 8;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  std::uint16_t* sk = reinterpret_cast<std::uint16_t*>(smem);
  std::uint16_t* sv = sk + dkdv_keys * stride<D>;
  // Stages of (Q tile, dO tile) and of (lse in base 2, delta) for those rows.
  std::uint16_t* const stage_base = sv + dkdv_keys * stride<D>;
  constexpr int stage_elements = 2 * dkdv_queries * stride<D>;
  float* const stage_rows = reinterpret_cast<float*>(stage_base + Stages * stage_elements);
  // dS^T of the current query tile, rounded to T, when this kernel also forms dq.
  std::uint16_t* const sds = reinterpret_cast<std::uint16_t*>(stage_rows + Stages * 2 * dkdv_queries);

  const int dim = static_cast<int>(a.dim), tq = static_cast<int>(a.tq), tk = static_cast<int>(a.tk);
  const std::int64_t bkv = blockIdx.x;
  const int b = static_cast<int>(bkv / a.kv_heads);
  const std::int64_t kvh = bkv % a.kv_heads, group = a.heads / a.kv_heads;
  const int key0 = static_cast<int>(blockIdx.y) * dkdv_keys, key1 = min(tk, key0 + dkdv_keys);
  const BlockMask<Policy> mask(policy, b, tk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * mma::tile_m;
  const bool vectorized = chunks_aligned(a, true);
  const float scale = static_cast<float>(a.scale);
  const ScoreScale<float> score_scale(scale * log2e, a.bias != nullptr);

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
    const std::int64_t bh = head_of(i), h = bh - static_cast<std::int64_t>(b) * a.heads;
    const int q0 = (i % query_blocks) * dkdv_queries;
    std::uint16_t* sq = stage_base + stage * stage_elements;
    load_tile_async<D>(sq, bits_of<T>(a.q) + a.q_rows.at(b, h, 0), a.q_rows.token, q0, dkdv_queries, tq, dim, vectorized);
    load_tile_async<D>(sq + dkdv_queries * stride<D>, bits_of<T>(a.dout) + a.dout_rows.at(b, h, 0), a.dout_rows.token, q0,
                       dkdv_queries, tq, dim, vectorized);
    if (threadIdx.x < dkdv_queries) {
      const int row = q0 + threadIdx.x;
      const std::int64_t at = bh * a.tq + row;
      float* rows_of_stage = stage_rows + stage * 2 * dkdv_queries;
      rows_of_stage[threadIdx.x] = lse_base2(row < tq ? static_cast<const float*>(a.lse)[at] : 0.f, row < tq);
      rows_of_stage[dkdv_queries + threadIdx.x] = row < tq ? delta[at] : 0.f;
    }
  };
  TileKind kind = TileKind::Empty;
  int item = next_item(0, &kind);
  if (item < items) load_stage(0, item);
  commit_async();

  load_tile<D>(sk, bits_of<T>(a.k) + a.k_rows.at(b, kvh, 0), a.k_rows.token, key0, dkdv_keys, tk, dim, vectorized);
  load_tile<D>(sv, bits_of<T>(a.v) + a.v_rows.at(b, kvh, 0), a.v_rows.token, key0, dkdv_keys, tk, dim, vectorized);
  const int keys[2] = {key0 + wrow + mma::c_coord(lane, 0).row, key0 + wrow + mma::c_coord(lane, 2).row};
  float dk[dim_tiles][4], dv[dim_tiles][4];
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[t][e] = dv[t][e] = 0.f;

  TileStages<Stages> stages;
  while (item < items) {
    TileKind next_kind = TileKind::Empty;
    const int next = next_item(item + 1, &next_kind);
    const auto load_next = [&](int stage) { load_stage(stage, next); };
    stages.begin_tile(next < items, load_next);  // its barrier also orders the first item after the K and V loads
    const int stage = stages.current;
    const std::int64_t bh = head_of(item), h = bh - static_cast<std::int64_t>(b) * a.heads;
    const int q0 = (item % query_blocks) * dkdv_queries, q1 = min(tq, q0 + dkdv_queries);
    const T* bias = a.bias ? static_cast<const T*>(a.bias) + (b * a.bias_heads + (a.bias_heads == 1 ? 0 : h)) * a.tq * a.tk : nullptr;
    const SharedTile tile_q = shared_tile(stage_base + stage * stage_elements),
                     tile_do = shared_tile(stage_base + stage * stage_elements + dkdv_queries * stride<D>);
    const float* slse = stage_rows + stage * 2 * dkdv_queries;
    const float* sdelta = slse + dkdv_queries;
    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys and the tile's 32 queries.
    float st[query_tiles][4], dpt[query_tiles][4];
    score_products<T, D>(st, dpt, shared_tile(sk), shared_tile(sv), wrow, tile_q, tile_do, lane);
    // P^T (0 where a pair does not take part) and dS^T = P^T * (dP^T - delta).
    prepare_scores<true>(st, mask, kind, key1 - key0 == dkdv_keys && q1 - q0 == dkdv_queries, b, keys, q0, q1, tk,
                         score_scale, bias, tk, lane);
#pragma unroll
    for (int t = 0; t < query_tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = t * 8 + mma::c_coord(lane, e).col;
        const float p = fast_exp2(fmaf(st[t][e], score_scale.exponent, -slse[qi]));
        st[t][e] = p;
        dpt[t][e] = p * (dpt[t][e] - sdelta[qi]);
      }
    }
    if (dq_accum) {
      // The warp's rows of dS^T, as the A operands of dK += dS^T Q will round them (and as
      // the dq kernel rounds dbias).
#pragma unroll
      for (int t = 0; t < query_tiles; ++t)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const mma::Coord c = mma::c_coord(lane, 2 * half);
          *reinterpret_cast<std::uint32_t*>(sds + (wrow + c.row) * ds_stride + t * 8 + c.col) =
              pack_floats<T>(dpt[t][2 * half], dpt[t][2 * half + 1]);
        }
    }
    // dV += P^T dO and dK += dS^T Q (scaled at the end).
    scores_times_tile<T, D>(dv, st, tile_do, lane);
    scores_times_tile<T, D>(dk, dpt, tile_q, lane);
    if (dq_accum) {
      __syncthreads();  // every warp's dS^T is in sds
      accumulate_dq<T, D>(dq_accum + bh * a.tq * D, shared_tile(sds), shared_tile(sk), q0, q1, dim, warp, lane);
      if (a.dbias) {
        // dbias = dS, a row of 128 keys per query: consecutive threads write consecutive keys.
        std::uint16_t* dbias = static_cast<std::uint16_t*>(a.dbias) + bh * a.tq * a.tk;
        for (int i = threadIdx.x; i < dkdv_queries * dkdv_keys; i += dkdv_threads) {
          const int query = q0 + i / dkdv_keys, key = key0 + i % dkdv_keys;
          if (query < q1 && key < key1)
            dbias[static_cast<std::int64_t>(query) * tk + key] = sds[(i % dkdv_keys) * ds_stride + i / dkdv_keys];
        }
      }
    }
    stages.end_tile(next < items, load_next);  // this stage (and sds) is read by every warp before the next copy into it
    item = next;
    kind = next_kind;
  }

  T* dk_out = static_cast<T*>(a.dk) + a.dk_rows.at(b, kvh, 0);
  T* dv_out = static_cast<T*>(a.dv) + a.dv_rows.at(b, kvh, 0);
#pragma unroll
  for (int t = 0; t < dim_tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = keys[e / 2], col = t * 8 + mma::c_coord(lane, e).col;
      if (key < tk && col < dim) {
        dk_out[key * a.dk_rows.token + col] = to_element<T>(dk[t][e] * scale);
        dv_out[key * a.dv_rows.token + col] = to_element<T>(dv[t][e]);
      }
    }
  }
}

/// dq = scale * accum rounded to T, for the rows of the dk/dv kernel's accumulator; row
/// r = (b * heads + h) * tq + t of it is dq's row (b, h, t).
// accum: [rows, D] floats; dq: [B, heads, tq, dim] laid out as dq_rows
template <class T, int D>
__global__ void dq_from_accumulator(const float* accum, T* dq, RowLayout dq_rows, std::int64_t heads, std::int64_t tq,
                                    std::int64_t rows, int dim, float scale) {
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    T* dq_row = dq + dq_rows.at(row / tq / heads, row / tq % heads, row % tq);
    for (int col = threadIdx.x; col < dim; col += blockDim.x) dq_row[col] = to_element<T>(accum[row * D + col] * scale);
  }
}

// ---- launch sizes -----------------------------------------------------------------------

/// The grids of the three kernels for `a`: (batch * heads, query tiles) for the forward and
/// dq kernels (blocks of `threads` threads), (batch * kv_heads, key tiles) for dk/dv (blocks
/// of `dkdv_threads`).
inline dim3 forward_grid(const AttentionArgs& a) {
  return dim3(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>((a.tq + forward_block_m - 1) / forward_block_m));
}
inline dim3 dq_grid(const AttentionArgs& a) {
  return dim3(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>((a.tq + block_m - 1) / block_m));
}
inline dim3 dkdv_grid(const AttentionArgs& a) {
  return dim3(static_cast<unsigned>(a.batch * a.kv_heads), static_cast<unsigned>((a.tk + dkdv_keys - 1) / dkdv_keys));
}

template <int D, int Stages = 2>
constexpr std::size_t forward_smem = static_cast<std::size_t>(forward_block_m + Stages * 2 * block_n) * stride<D> * 2;
template <int D, int Stages = 2>
constexpr std::size_t dq_smem = static_cast<std::size_t>(2 * block_m + Stages * 2 * block_n) * stride<D> * 2;
template <int D, int Stages = 2>
constexpr std::size_t dkdv_smem = static_cast<std::size_t>(2 * dkdv_keys + Stages * 2 * dkdv_queries) * stride<D> * 2 +
                                  Stages * 2 * dkdv_queries * sizeof(float) + dkdv_keys * ds_stride * 2;

}  // namespace condense::cuda::attention_mma
