// Flash attention on CUDA cores, the portable kernels (any sm_80+ GPU, arithmetic in float
// or double), templated on the mask policy (the same policy types as the CPU path, called
// in device code): forward (output and log-sum-exp) and backward (dq, dk, dv and the bias
// gradient) without a Tq x Tk matrix in memory. Each block classifies its (query tile, key
// tile) pairs with policy.classify: Empty tiles are never loaded, Full tiles skip the
// per-element predicate, Partial tiles call policy.allowed per pair.
//
// A block holds 16 query rows (4 warps x 4 rows) and walks key tiles of 32 keys, one key
// per lane, with K and V tiles in shared memory (rows padded by one element so that lanes
// reading one column of consecutive rows hit different banks). The backward runs one
// kernel for dq (and dbias) per query tile and one for dk and dv per tile of 16 keys, which
// loops over the group's query heads, so no gradient needs atomics. attention_delta (the
// row sums of dout * out) serves both these and the tensor-core kernels.
//
// Kernels only: flash_attention.cuh launches them (and tests/emulation runs them on the CPU).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "condense/backend/cuda/attention.hpp"
#include "condense/mask/policy.hpp"
#include "detail/common.cuh"

namespace condense::cuda::attention_detail {

using namespace condense::cuda::detail;

constexpr int warps = 4;
constexpr int rows_per_warp = 4;
constexpr int block_q = warps * rows_per_warp;  ///< query rows per forward / dq block
constexpr int block_k = 32;                     ///< keys per tile: one per lane
constexpr int dkdv_keys = warps * rows_per_warp;  ///< keys per dk/dv block
constexpr int threads = warps * 32;
constexpr unsigned full_mask = 0xffffffffu;

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(full_mask, v, offset);
  return v;
}

template <class A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const A other = __shfl_xor_sync(full_mask, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

/// Row stride (elements) of a shared-memory tile for head dim <= DMax.
template <int DMax>
constexpr int padded = DMax + 1;

/// Copies rows [r0, r0 + count) of a [rows, dim] tensor (rows `row_stride` elements apart)
/// into a shared tile of `tile_rows` padded rows, zero-filling rows past `limit`.
template <class T, class A, int DMax>
__device__ __forceinline__ void load_tile(A* tile, const T* src, std::int64_t row_stride, int r0, int tile_rows, int limit,
                                          int dim) {
  for (int idx = threadIdx.x; idx < tile_rows * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx % dim;
    tile[r * padded<DMax> + d] = r0 + r < limit ? static_cast<A>(load(src + (r0 + r) * row_stride + d)) : A(0);
  }
}

template <class A, int DMax>
__device__ __forceinline__ A dot_rows(const A* x, const A* y, int dim) {
  A s = 0;
  for (int d = 0; d < dim; ++d) s += x[d] * y[d];
  return s;
}

/// The tile kind the kernels act on (every tile Partial when skipping is off).
template <class Policy>
__device__ __forceinline__ TileKind tile_kind(const Policy& policy, bool skip, int b, int q0, int q1, int k0, int k1) {
  return skip ? policy.classify(b, q0, q1, k0, k1) : TileKind::Partial;
}

/// The bias rows of head h of batch row b ([Tq, Tk]), or nullptr without a bias.
template <class T>
__device__ __forceinline__ const T* bias_rows(const AttentionArgs& a, std::int64_t b, std::int64_t h) {
  return a.bias ? static_cast<const T*>(a.bias) + (b * a.bias_heads + (a.bias_heads == 1 ? 0 : h)) * a.tq * a.tk : nullptr;
}

/// What a forward or dq block works on: (batch, head) = blockIdx.x, the query tile
/// [q0, q1) from blockIdx.y, and the rows of q, k, v and the bias of that head (q, k, v
/// rows a.q_rows.token, a.k_rows.token, a.v_rows.token elements apart).
template <class T>
struct QueryTile {
  int dim, tq, tk, b, q0, q1;
  std::int64_t bh, h;
  const T *q, *k, *v, *bias;

  __device__ explicit QueryTile(const AttentionArgs& a)
      : dim(static_cast<int>(a.dim)), tq(static_cast<int>(a.tq)), tk(static_cast<int>(a.tk)) {
    bh = blockIdx.x;
    b = static_cast<int>(bh / a.heads);
    h = bh % a.heads;
    const std::int64_t kvh = h / (a.heads / a.kv_heads);
    q0 = static_cast<int>(blockIdx.y) * block_q;
    q1 = min(tq, q0 + block_q);
    q = static_cast<const T*>(a.q) + a.q_rows.at(b, h, 0);
    k = static_cast<const T*>(a.k) + a.k_rows.at(b, kvh, 0);
    v = static_cast<const T*>(a.v) + a.v_rows.at(b, kvh, 0);
    bias = bias_rows<T>(a, b, h);
  }
};

// ---- forward ----------------------------------------------------------------------------

template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads) flash_forward(AttentionArgs a, Policy policy, unsigned long long* stats) {
  using A = compute_t<T>;
  constexpr int slices = DMax / 32;
  constexpr A neg_inf = -INFINITY;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  A* sq = reinterpret_cast<A*>(smem);
  A* sk = sq + block_q * padded<DMax>;
  A* sv = sk + block_k * padded<DMax>;

  const QueryTile<T> tile(a);
  const int dim = tile.dim, tq = tile.tq, tk = tile.tk, b = tile.b, q0 = tile.q0, q1 = tile.q1;
  const std::int64_t bh = tile.bh;
  const T *q = tile.q, *k = tile.k, *v = tile.v, *bias = tile.bias;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sq, q, a.q_rows.token, q0, block_q, tq, dim);
  A acc[rows_per_warp][slices];
  A m[rows_per_warp], l[rows_per_warp];
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    m[i] = neg_inf;
    l[i] = 0;
#pragma unroll
    for (int t = 0; t < slices; ++t) acc[i][t] = 0;
  }

  for (int k0 = 0; k0 < tk; k0 += block_k) {
    const int k1 = min(tk, k0 + block_k);
    const TileKind kind = tile_kind(policy, a.skip_tiles, b, q0, q1, k0, k1);
    if (stats && threadIdx.x == 0) atomicAdd(stats + static_cast<int>(kind), 1ull);
    if (kind == TileKind::Empty) continue;  // the same for the whole block
    __syncthreads();                        // the previous tile is no longer read
    load_tile<T, A, DMax>(sk, k, a.k_rows.token, k0, block_k, tk, dim);
    load_tile<T, A, DMax>(sv, v, a.v_rows.token, k0, block_k, tk, dim);
    __syncthreads();
    const int key = k0 + lane;
#pragma unroll
    for (int i = 0; i < rows_per_warp; ++i) {
      const int r = warp * rows_per_warp + i, row = q0 + r;
      if (row >= tq) continue;  // the same for the whole warp
      A s = neg_inf;
      if (key < k1) {
        s = dot_rows<A, DMax>(sq + r * padded<DMax>, sk + lane * padded<DMax>, dim) * scale;
        if (bias) s += static_cast<A>(load(bias + static_cast<std::int64_t>(row) * a.tk + key));
        if (kind == TileKind::Partial && !policy.allowed(b, row, key)) s = neg_inf;
      }
      const A m_tile = warp_max(s);
      const A m_new = m_tile > m[i] ? m_tile : m[i];
      // A row still fully masked keeps m = -inf: shift by 0 so exp gives exact zeros.
      const A shift = m_new == neg_inf ? A(0) : m_new;
      const A p = d_exp(s - shift);
      const A alpha = d_exp(m[i] - shift);
      l[i] = l[i] * alpha + warp_sum(p);
#pragma unroll
      for (int t = 0; t < slices; ++t) acc[i][t] *= alpha;
      for (int j = 0; j < block_k; ++j) {
        const A pj = __shfl_sync(full_mask, p, j);
        if (pj == A(0)) continue;  // the same for the whole warp
#pragma unroll
        for (int t = 0; t < slices; ++t) {
          const int d = lane + 32 * t;
          if (d < dim) acc[i][t] += pj * sv[j * padded<DMax> + d];
        }
      }
      m[i] = m_new;
    }
  }

  T* out = static_cast<T*>(a.out) + a.out_rows.at(b, tile.h, 0);
  A* lse = static_cast<A*>(a.lse) + bh * a.tq;
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int row = q0 + warp * rows_per_warp + i;
    if (row >= tq) continue;
    const A inv = l[i] > A(0) ? A(1) / l[i] : A(0);
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) out[row * a.out_rows.token + d] = to_element<T>(acc[i][t] * inv);
    }
    if (lane == 0) lse[row] = l[i] > A(0) ? m[i] + d_log(l[i]) : neg_inf;
  }
}

// ---- backward ---------------------------------------------------------------------------

/// delta[r] = sum_d dout[r, d] * out[r, d], one warp per row r = (b * heads + h) * tq + t
/// (delta contiguous; out and dout laid out as their layouts say).
template <class T>
__global__ void attention_delta(const T* out, RowLayout out_rows, const T* dout, RowLayout dout_rows, compute_t<T>* delta,
                                std::int64_t heads, std::int64_t tq, std::int64_t rows, int dim) {
  using A = compute_t<T>;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;
  const std::int64_t t = warp % tq, h = warp / tq % heads, b = warp / tq / heads;
  const T* out_row = out + out_rows.at(b, h, t);
  const T* dout_row = dout + dout_rows.at(b, h, t);
  A s = 0;
  for (int d = lane; d < dim; d += 32) s += static_cast<A>(load(out_row + d)) * static_cast<A>(load(dout_row + d));
  s = warp_sum(s);
  if (lane == 0) delta[warp] = s;
}

/// dq (and dbias) for one query tile of one (batch, head).
template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads) flash_backward_dq(AttentionArgs a, Policy policy, const compute_t<T>* delta) {
  using A = compute_t<T>;
  constexpr int slices = DMax / 32;
  constexpr A neg_inf = -INFINITY;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  A* sq = reinterpret_cast<A*>(smem);
  A* sdo = sq + block_q * padded<DMax>;
  A* sk = sdo + block_q * padded<DMax>;
  A* sv = sk + block_k * padded<DMax>;

  const QueryTile<T> tile(a);
  const int dim = tile.dim, tq = tile.tq, tk = tile.tk, b = tile.b, q0 = tile.q0, q1 = tile.q1;
  const std::int64_t bh = tile.bh;
  const T *q = tile.q, *k = tile.k, *v = tile.v, *bias = tile.bias;
  const T* dout = static_cast<const T*>(a.dout) + a.dout_rows.at(b, tile.h, 0);
  T* dbias = a.dbias ? static_cast<T*>(a.dbias) + bh * a.tq * a.tk : nullptr;
  const A* lse = static_cast<const A*>(a.lse) + bh * a.tq;
  const A* row_delta = delta + bh * a.tq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sq, q, a.q_rows.token, q0, block_q, tq, dim);
  load_tile<T, A, DMax>(sdo, dout, a.dout_rows.token, q0, block_q, tq, dim);
  A dq[rows_per_warp][slices];
  A row_lse[rows_per_warp], row_dl[rows_per_warp];
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int row = q0 + warp * rows_per_warp + i;
    row_lse[i] = row < tq ? lse[row] : neg_inf;
    row_dl[i] = row < tq ? row_delta[row] : A(0);
#pragma unroll
    for (int t = 0; t < slices; ++t) dq[i][t] = 0;
  }

  for (int k0 = 0; k0 < tk; k0 += block_k) {
    const int k1 = min(tk, k0 + block_k);
    const TileKind kind = tile_kind(policy, a.skip_tiles, b, q0, q1, k0, k1);
    if (kind == TileKind::Empty) continue;  // dbias stays zero there
    __syncthreads();
    load_tile<T, A, DMax>(sk, k, a.k_rows.token, k0, block_k, tk, dim);
    load_tile<T, A, DMax>(sv, v, a.v_rows.token, k0, block_k, tk, dim);
    __syncthreads();
    const int key = k0 + lane;
#pragma unroll
    for (int i = 0; i < rows_per_warp; ++i) {
      const int r = warp * rows_per_warp + i, row = q0 + r;
      if (row >= tq) continue;
      A ds = 0;
      if (key < k1 && row_lse[i] != neg_inf && (kind == TileKind::Full || policy.allowed(b, row, key))) {
        A s = dot_rows<A, DMax>(sq + r * padded<DMax>, sk + lane * padded<DMax>, dim) * scale;
        if (bias) s += static_cast<A>(load(bias + static_cast<std::int64_t>(row) * a.tk + key));
        const A p = d_exp(s - row_lse[i]);
        const A dp = dot_rows<A, DMax>(sdo + r * padded<DMax>, sv + lane * padded<DMax>, dim);
        ds = p * (dp - row_dl[i]);
      }
      if (dbias && key < k1) dbias[static_cast<std::int64_t>(row) * a.tk + key] = to_element<T>(ds);
      for (int j = 0; j < block_k; ++j) {
        const A dsj = __shfl_sync(full_mask, ds, j);
        if (dsj == A(0)) continue;
#pragma unroll
        for (int t = 0; t < slices; ++t) {
          const int d = lane + 32 * t;
          if (d < dim) dq[i][t] += dsj * sk[j * padded<DMax> + d];
        }
      }
    }
  }

  T* dq_out = static_cast<T*>(a.dq) + a.dq_rows.at(b, tile.h, 0);
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int row = q0 + warp * rows_per_warp + i;
    if (row >= tq) continue;
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) dq_out[row * a.dq_rows.token + d] = to_element<T>(dq[i][t] * scale);
    }
  }
}

/// dk and dv for one tile of 16 keys of one (batch, kv head), summed over the query heads
/// of its group and every query tile; one query per lane.
template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads) flash_backward_dkdv(AttentionArgs a, Policy policy, const compute_t<T>* delta) {
  using A = compute_t<T>;
  constexpr int slices = DMax / 32;
  constexpr A neg_inf = -INFINITY;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  A* sk = reinterpret_cast<A*>(smem);
  A* sv = sk + dkdv_keys * padded<DMax>;
  A* sq = sv + dkdv_keys * padded<DMax>;
  A* sdo = sq + block_k * padded<DMax>;
  A* slse = sdo + block_k * padded<DMax>;
  A* sdelta = slse + block_k;

  const int dim = static_cast<int>(a.dim), tq = static_cast<int>(a.tq), tk = static_cast<int>(a.tk);
  const std::int64_t bkv = blockIdx.x;
  const int b = static_cast<int>(bkv / a.kv_heads);
  const std::int64_t kvh = bkv % a.kv_heads, group = a.heads / a.kv_heads;
  const int key0 = static_cast<int>(blockIdx.y) * dkdv_keys;
  const int key1 = min(tk, key0 + dkdv_keys);
  const T* k = static_cast<const T*>(a.k) + a.k_rows.at(b, kvh, 0);
  const T* v = static_cast<const T*>(a.v) + a.v_rows.at(b, kvh, 0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sk, k, a.k_rows.token, key0, dkdv_keys, tk, dim);
  load_tile<T, A, DMax>(sv, v, a.v_rows.token, key0, dkdv_keys, tk, dim);
  A dk[rows_per_warp][slices], dv[rows_per_warp][slices];
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i)
#pragma unroll
    for (int t = 0; t < slices; ++t) dk[i][t] = dv[i][t] = 0;

  for (std::int64_t hg = 0; hg < group; ++hg) {
    const std::int64_t h = kvh * group + hg, bh = b * a.heads + h;
    const T* q = static_cast<const T*>(a.q) + a.q_rows.at(b, h, 0);
    const T* dout = static_cast<const T*>(a.dout) + a.dout_rows.at(b, h, 0);
    const T* bias = bias_rows<T>(a, b, h);
    const A* lse = static_cast<const A*>(a.lse) + bh * a.tq;
    const A* row_delta = delta + bh * a.tq;
    for (int q0 = 0; q0 < tq; q0 += block_k) {
      const int q1 = min(tq, q0 + block_k);
      const TileKind kind = tile_kind(policy, a.skip_tiles, b, q0, q1, key0, key1);
      if (kind == TileKind::Empty) continue;
      __syncthreads();
      load_tile<T, A, DMax>(sq, q, a.q_rows.token, q0, block_k, tq, dim);
      load_tile<T, A, DMax>(sdo, dout, a.dout_rows.token, q0, block_k, tq, dim);
      if (threadIdx.x < block_k) {
        const int row = q0 + threadIdx.x;
        slse[threadIdx.x] = row < tq ? lse[row] : neg_inf;
        sdelta[threadIdx.x] = row < tq ? row_delta[row] : A(0);
      }
      __syncthreads();
      const int row = q0 + lane;
#pragma unroll
      for (int i = 0; i < rows_per_warp; ++i) {
        const int kk = warp * rows_per_warp + i, key = key0 + kk;
        if (key >= tk) continue;  // the same for the whole warp
        A p = 0, ds = 0;
        if (row < q1 && slse[lane] != neg_inf && (kind == TileKind::Full || policy.allowed(b, row, key))) {
          A s = dot_rows<A, DMax>(sq + lane * padded<DMax>, sk + kk * padded<DMax>, dim) * scale;
          if (bias) s += static_cast<A>(load(bias + static_cast<std::int64_t>(row) * a.tk + key));
          p = d_exp(s - slse[lane]);
          const A dp = dot_rows<A, DMax>(sdo + lane * padded<DMax>, sv + kk * padded<DMax>, dim);
          ds = p * (dp - sdelta[lane]);
        }
        for (int j = 0; j < block_k; ++j) {
          const A pj = __shfl_sync(full_mask, p, j);
          const A dsj = __shfl_sync(full_mask, ds, j);
          if (pj == A(0) && dsj == A(0)) continue;
#pragma unroll
          for (int t = 0; t < slices; ++t) {
            const int d = lane + 32 * t;
            if (d < dim) {
              dv[i][t] += pj * sdo[j * padded<DMax> + d];
              dk[i][t] += dsj * sq[j * padded<DMax> + d];
            }
          }
        }
      }
    }
  }

  T* dk_out = static_cast<T*>(a.dk) + a.dk_rows.at(b, kvh, 0);
  T* dv_out = static_cast<T*>(a.dv) + a.dv_rows.at(b, kvh, 0);
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int key = key0 + warp * rows_per_warp + i;
    if (key >= tk) continue;
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) {
        dk_out[key * a.dk_rows.token + d] = to_element<T>(dk[i][t] * scale);
        dv_out[key * a.dv_rows.token + d] = to_element<T>(dv[i][t]);
      }
    }
  }
}

// ---- launch sizes -----------------------------------------------------------------------

/// Shared memory of the three kernels for compute type A and head-dim bound DMax.
template <class A, int DMax>
constexpr std::size_t forward_smem = static_cast<std::size_t>(block_q + 2 * block_k) * padded<DMax> * sizeof(A);
template <class A, int DMax>
constexpr std::size_t dq_smem = static_cast<std::size_t>(2 * block_q + 2 * block_k) * padded<DMax> * sizeof(A);
template <class A, int DMax>
constexpr std::size_t dkdv_smem = (static_cast<std::size_t>(2 * dkdv_keys + 2 * block_k) * padded<DMax> + 2 * block_k) * sizeof(A);

/// The grids of the three kernels for `a` (blocks of `threads` threads): (batch * heads,
/// query tiles) for the forward and dq kernels, (batch * kv_heads, key tiles) for dk/dv.
inline dim3 forward_grid(const AttentionArgs& a) {
  return dim3(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>((a.tq + block_q - 1) / block_q));
}
inline dim3 dq_grid(const AttentionArgs& a) { return forward_grid(a); }
inline dim3 dkdv_grid(const AttentionArgs& a) {
  return dim3(static_cast<unsigned>(a.batch * a.kv_heads), static_cast<unsigned>((a.tk + dkdv_keys - 1) / dkdv_keys));
}
/// Blocks of attention_delta for `rows` rows (one warp per row).
inline unsigned delta_blocks(std::int64_t rows) { return static_cast<unsigned>((rows * 32 + threads - 1) / threads); }

}  // namespace condense::cuda::attention_detail
