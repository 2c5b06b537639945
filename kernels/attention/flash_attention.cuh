// Flash attention on the GPU, templated on the mask policy (the same policy types as the
// CPU path, called in device code): forward (output and log-sum-exp) and backward (dq, dk,
// dv and the bias gradient) without a Tq x Tk matrix in memory. Each block classifies its
// (query tile, key tile) pairs with policy.classify: Empty tiles are never loaded, Full
// tiles skip the per-element predicate, Partial tiles call policy.allowed per pair.
//
// This is the portable kernel (any sm_80+ GPU, CUDA cores, arithmetic in float or double):
// a block holds 16 query rows (4 warps x 4 rows) and walks key tiles of 32 keys, one key
// per lane, with K and V tiles in shared memory (rows padded by one element so that lanes
// reading one column of consecutive rows hit different banks). The backward runs one
// kernel for dq (and dbias) per query tile and one for dk and dv per tile of 16 keys, which
// loops over the group's query heads, so no gradient needs atomics. The kernels run every
// policy P as (QueryOffset<P> & KeyPadding) with the offset and the key lengths from
// AttentionArgs, so the models' cached decoding and padded batches reach P's kernels.
//
// Include this file in a .cu file and write CONDENSE_CUDA_INSTANTIATE_ATTENTION(Policy) to
// build the launchers of backend/cuda/attention.hpp for a policy of your own.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/mask/combinators.hpp"
#include "condense/mask/policy.hpp"
#include "attention/flash_attention_mma.cuh"
#include "detail/common.cuh"

/// 1: build the launchers for float16 and double too, and for head dims up to 256 (CMake
/// option CONDENSE_CUDA_ATTENTION_ALL); 0: float (portable kernels) and bfloat16 (tensor
/// cores) with head dims up to 128, which bounds the build time.
#ifndef CONDENSE_CUDA_ATTENTION_ALL
#define CONDENSE_CUDA_ATTENTION_ALL 0
#endif

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

/// Copies rows [r0, r0 + count) of a [rows, dim] tensor into a shared tile of `tile_rows`
/// padded rows, zero-filling rows past `limit`.
template <class T, class A, int DMax>
__device__ __forceinline__ void load_tile(A* tile, const T* src, int r0, int tile_rows, int limit, int dim) {
  for (int idx = threadIdx.x; idx < tile_rows * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx % dim;
    tile[r * padded<DMax> + d] = r0 + r < limit ? static_cast<A>(load(src + static_cast<std::int64_t>(r0 + r) * dim + d)) : A(0);
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
/// [q0, q1) from blockIdx.y, and the rows of q, k, v and the bias of that head.
template <class T>
struct QueryTile {
  int dim, tq, tk, b, q0, q1;
  std::int64_t bh;
  const T *q, *k, *v, *bias;

  __device__ explicit QueryTile(const AttentionArgs& a)
      : dim(static_cast<int>(a.dim)), tq(static_cast<int>(a.tq)), tk(static_cast<int>(a.tk)) {
    bh = blockIdx.x;
    b = static_cast<int>(bh / a.heads);
    const std::int64_t h = bh % a.heads, kvh = h / (a.heads / a.kv_heads);
    q0 = static_cast<int>(blockIdx.y) * block_q;
    q1 = min(tq, q0 + block_q);
    q = static_cast<const T*>(a.q) + bh * a.tq * a.dim;
    k = static_cast<const T*>(a.k) + (b * a.kv_heads + kvh) * a.tk * a.dim;
    v = static_cast<const T*>(a.v) + (b * a.kv_heads + kvh) * a.tk * a.dim;
    bias = bias_rows<T>(a, b, h);
  }
};

// ---- forward ----------------------------------------------------------------------------

template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads) flash_forward(AttentionArgs a, Policy policy, unsigned long long* stats) {
  using A = compute_t<T>;
  constexpr int slices = DMax / 32;
  constexpr A neg_inf = -INFINITY;
  extern __shared__ __align__(16) unsigned char smem[];
  A* sq = reinterpret_cast<A*>(smem);
  A* sk = sq + block_q * padded<DMax>;
  A* sv = sk + block_k * padded<DMax>;

  const QueryTile<T> tile(a);
  const int dim = tile.dim, tq = tile.tq, tk = tile.tk, b = tile.b, q0 = tile.q0, q1 = tile.q1;
  const std::int64_t bh = tile.bh;
  const T *q = tile.q, *k = tile.k, *v = tile.v, *bias = tile.bias;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sq, q, q0, block_q, tq, dim);
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
    load_tile<T, A, DMax>(sk, k, k0, block_k, tk, dim);
    load_tile<T, A, DMax>(sv, v, k0, block_k, tk, dim);
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

  T* out = static_cast<T*>(a.out) + bh * a.tq * a.dim;
  A* lse = static_cast<A*>(a.lse) + bh * a.tq;
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int row = q0 + warp * rows_per_warp + i;
    if (row >= tq) continue;
    const A inv = l[i] > A(0) ? A(1) / l[i] : A(0);
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) out[static_cast<std::int64_t>(row) * dim + d] = to_element<T>(acc[i][t] * inv);
    }
    if (lane == 0) lse[row] = l[i] > A(0) ? m[i] + d_log(l[i]) : neg_inf;
  }
}

// ---- backward ---------------------------------------------------------------------------

/// delta[r] = sum_d dout[r, d] * out[r, d], one warp per row.
template <class T>
__global__ void attention_delta(const T* out, const T* dout, compute_t<T>* delta, std::int64_t rows, int dim) {
  using A = compute_t<T>;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;
  A s = 0;
  for (int d = lane; d < dim; d += 32) s += static_cast<A>(load(out + warp * dim + d)) * static_cast<A>(load(dout + warp * dim + d));
  s = warp_sum(s);
  if (lane == 0) delta[warp] = s;
}

/// dq (and dbias) for one query tile of one (batch, head).
template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads) flash_backward_dq(AttentionArgs a, Policy policy, const compute_t<T>* delta) {
  using A = compute_t<T>;
  constexpr int slices = DMax / 32;
  constexpr A neg_inf = -INFINITY;
  extern __shared__ __align__(16) unsigned char smem[];
  A* sq = reinterpret_cast<A*>(smem);
  A* sdo = sq + block_q * padded<DMax>;
  A* sk = sdo + block_q * padded<DMax>;
  A* sv = sk + block_k * padded<DMax>;

  const QueryTile<T> tile(a);
  const int dim = tile.dim, tq = tile.tq, tk = tile.tk, b = tile.b, q0 = tile.q0, q1 = tile.q1;
  const std::int64_t bh = tile.bh;
  const T *q = tile.q, *k = tile.k, *v = tile.v, *bias = tile.bias;
  const T* dout = static_cast<const T*>(a.dout) + bh * a.tq * a.dim;
  T* dbias = a.dbias ? static_cast<T*>(a.dbias) + bh * a.tq * a.tk : nullptr;
  const A* lse = static_cast<const A*>(a.lse) + bh * a.tq;
  const A* row_delta = delta + bh * a.tq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sq, q, q0, block_q, tq, dim);
  load_tile<T, A, DMax>(sdo, dout, q0, block_q, tq, dim);
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
    load_tile<T, A, DMax>(sk, k, k0, block_k, tk, dim);
    load_tile<T, A, DMax>(sv, v, k0, block_k, tk, dim);
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

  T* dq_out = static_cast<T*>(a.dq) + bh * a.tq * a.dim;
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int row = q0 + warp * rows_per_warp + i;
    if (row >= tq) continue;
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) dq_out[static_cast<std::int64_t>(row) * dim + d] = to_element<T>(dq[i][t] * scale);
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
  extern __shared__ __align__(16) unsigned char smem[];
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
  const T* k = static_cast<const T*>(a.k) + bkv * a.tk * a.dim;
  const T* v = static_cast<const T*>(a.v) + bkv * a.tk * a.dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);

  load_tile<T, A, DMax>(sk, k, key0, dkdv_keys, tk, dim);
  load_tile<T, A, DMax>(sv, v, key0, dkdv_keys, tk, dim);
  A dk[rows_per_warp][slices], dv[rows_per_warp][slices];
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i)
#pragma unroll
    for (int t = 0; t < slices; ++t) dk[i][t] = dv[i][t] = 0;

  for (std::int64_t hg = 0; hg < group; ++hg) {
    const std::int64_t h = kvh * group + hg, bh = b * a.heads + h;
    const T* q = static_cast<const T*>(a.q) + bh * a.tq * a.dim;
    const T* dout = static_cast<const T*>(a.dout) + bh * a.tq * a.dim;
    const T* bias = bias_rows<T>(a, b, h);
    const A* lse = static_cast<const A*>(a.lse) + bh * a.tq;
    const A* row_delta = delta + bh * a.tq;
    for (int q0 = 0; q0 < tq; q0 += block_k) {
      const int q1 = min(tq, q0 + block_k);
      const TileKind kind = tile_kind(policy, a.skip_tiles, b, q0, q1, key0, key1);
      if (kind == TileKind::Empty) continue;
      __syncthreads();
      load_tile<T, A, DMax>(sq, q, q0, block_k, tq, dim);
      load_tile<T, A, DMax>(sdo, dout, q0, block_k, tq, dim);
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

  T* dk_out = static_cast<T*>(a.dk) + bkv * a.tk * a.dim;
  T* dv_out = static_cast<T*>(a.dv) + bkv * a.tk * a.dim;
#pragma unroll
  for (int i = 0; i < rows_per_warp; ++i) {
    const int key = key0 + warp * rows_per_warp + i;
    if (key >= tk) continue;
#pragma unroll
    for (int t = 0; t < slices; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) {
        dk_out[static_cast<std::int64_t>(key) * dim + d] = to_element<T>(dk[i][t] * scale);
        dv_out[static_cast<std::int64_t>(key) * dim + d] = to_element<T>(dv[i][t]);
      }
    }
  }
}

// ---- host side --------------------------------------------------------------------------

/// Checks the arguments both passes share; returns false when there is nothing to compute.
inline bool check_args(const AttentionArgs& a, std::string_view op) {
  CONDENSE_CHECK(a.batch >= 0 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0, op,
                 "CUDA attention: kv heads (", a.kv_heads, ") must divide query heads (", a.heads, ")");
  const std::int64_t max_dim = CONDENSE_CUDA_ATTENTION_ALL && a.dtype != DType::Float64 ? 256 : 128;
  CONDENSE_CHECK(a.dim > 0 && a.dim <= max_dim, op, "CUDA attention takes head dims 1..", max_dim, " for ",
                 dtype_name(a.dtype), " in this build (up to 256 with -DCONDENSE_CUDA_ATTENTION_ALL=ON), got ", a.dim);
  CONDENSE_CHECK(a.tq < (std::int64_t{1} << 31) && a.tk < (std::int64_t{1} << 31), op, "CUDA attention: sequence too long (Tq ",
                 a.tq, ", Tk ", a.tk, ")");
  CONDENSE_CHECK(a.bias_heads == 0 || a.bias_heads == 1 || a.bias_heads == a.heads, op, "CUDA attention: bias heads ",
                 a.bias_heads, " for ", a.heads, " heads");
  CONDENSE_CHECK(a.batch * a.heads < (std::int64_t{1} << 31), op, "CUDA attention: batch * heads too large");
  CONDENSE_CHECK((a.tq + block_q - 1) / block_q <= 65535 && (a.tk + dkdv_keys - 1) / dkdv_keys <= 65535, op,
                 "CUDA attention: at most ", 65535 * block_q, " positions per sequence, got Tq ", a.tq, ", Tk ", a.tk);
  return a.batch > 0 && a.tq > 0;
}

/// Calls f(T{}, DMax) for the element type and the smallest compiled head-dim bound >= dim
/// of the portable kernels: float (and, with CONDENSE_CUDA_ATTENTION_ALL, double, and the
/// 16-bit types above head dim 128, where the tensor-core kernels stop).
template <class F>
void dispatch(const AttentionArgs& a, std::string_view op, F&& f) {
#if CONDENSE_CUDA_ATTENTION_ALL
  dispatch_dtype<CONDENSE_CUDA_FLOAT_TYPES>(a.dtype, op, [&](auto tag) {
#else
  dispatch_dtype<float>(a.dtype, op, [&](auto tag) {
#endif
    using T = decltype(tag);
    if constexpr (attention_mma::is_16bit<T>) {
#if CONDENSE_CUDA_ATTENTION_ALL
      f(tag, std::integral_constant<int, 256>{});  // head dims up to 128 took the tensor cores
#endif
    } else if (a.dim <= 64) {
      f(tag, std::integral_constant<int, 64>{});
    } else if (a.dim <= 128) {
      f(tag, std::integral_constant<int, 128>{});
    } else {
#if CONDENSE_CUDA_ATTENTION_ALL
      if constexpr (!std::is_same_v<T, double>) f(tag, std::integral_constant<int, 256>{});
#endif
    }
  });
}

/// Calls f(T{}, D) for the tensor-core kernels when they take this call (a 16-bit element
/// type built in and head dim <= 128) and returns true; false otherwise.
template <class F>
bool dispatch_mma(const AttentionArgs& a, F&& f) {
  if (a.dim > 128) return false;
  const auto with_dims = [&](auto tag) {
    if (a.dim <= 64) {
      f(tag, std::integral_constant<int, 64>{});
    } else {
      f(tag, std::integral_constant<int, 128>{});
    }
  };
  if (a.dtype == DType::BFloat16) {
    with_dims(bfloat16{});
    return true;
  }
#if CONDENSE_CUDA_ATTENTION_ALL
  if (a.dtype == DType::Float16) {
    with_dims(float16{});
    return true;
  }
#endif
  return false;
}

/// out[i] = in[i] converted (float <-> bfloat16), contiguous.
template <class From, class To>
__global__ void convert_elements(const From* in, To* out, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_element<To>(load(in + i));
}

/// Device buffers of one bf16 tensor-core call on float tensors: bfloat16 copies of the
/// float operands and bfloat16 results converted back; freed (stream-ordered) at the end.
class Bf16Staging {
 public:
  Bf16Staging(int device, std::string_view op) : device_(device), op_(op) {}
  Bf16Staging(const Bf16Staging&) = delete;
  Bf16Staging& operator=(const Bf16Staging&) = delete;
  ~Bf16Staging() {
    for (void* p : buffers_) deallocate(p, device_);
  }
  /// A bfloat16 buffer of n elements, uninitialised.
  bfloat16* empty(std::int64_t n) {
    buffers_.push_back(allocate(static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(bfloat16), device_, op_));
    return static_cast<bfloat16*>(buffers_.back());
  }
  /// A bfloat16 copy of n floats at src (nullptr stays nullptr).
  const bfloat16* rounded(const void* src, std::int64_t n) {
    if (!src) return nullptr;
    bfloat16* dst = empty(n);
    if (n > 0)
      convert_elements<<<grid_for(n, threads), threads, 0, stream_of(device_)>>>(static_cast<const float*>(src), dst, n);
    return dst;
  }
  /// Writes n bfloat16 values of src to the floats at dst.
  void widen(void* dst, const bfloat16* src, std::int64_t n) const {
    if (dst && n > 0)
      convert_elements<<<grid_for(n, threads), threads, 0, stream_of(device_)>>>(src, static_cast<float*>(dst), n);
  }

 private:
  int device_;
  std::string_view op_;
  std::vector<void*> buffers_;
};

/// Whether a float call runs on the bf16 tensor cores (AttentionArgs::bf16_tensor_cores).
inline bool staged_in_bf16(const AttentionArgs& a) {
  return a.bf16_tensor_cores && a.dtype == DType::Float32 && a.dim <= 128;
}

/// Allows `bytes` of dynamic shared memory for `kernel` (needed above 48 KiB).
template <class Kernel>
void allow_shared_memory(Kernel kernel, std::size_t bytes, std::string_view op) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op,
          "cudaFuncSetAttribute (shared memory)");
}

/// The policy the kernels run for `Policy`: shifted by AttentionArgs::query_offset and
/// intersected with AttentionArgs::key_padding.
template <class Policy>
using KernelPolicy = mask::Intersect<mask::QueryOffset<Policy>, mask::KeyPadding>;

template <class Policy>
KernelPolicy<Policy> kernel_policy(const Policy& policy, const AttentionArgs& a) {
  return KernelPolicy<Policy>(mask::QueryOffset<Policy>(policy, a.query_offset), a.key_padding);
}

/// Queues the forward kernels for `a` (tensor cores for 16-bit types up to head dim 128,
/// the portable kernels otherwise).
template <class Kernel>
void launch_forward(const AttentionArgs& a, const Kernel& policy, unsigned long long* stats, std::string_view op) {
  const cudaStream_t stream = stream_of(a.device);
  const bool on_tensor_cores = dispatch_mma(a, [&](auto tag, auto dims) {
    using T = decltype(tag);
    constexpr int D = decltype(dims)::value;
    constexpr std::size_t bytes = attention_mma::forward_smem<D>;
    allow_shared_memory(attention_mma::flash_forward_mma<T, Kernel, D>, bytes, op);
    attention_mma::flash_forward_mma<T, Kernel, D><<<attention_mma::forward_grid(a), attention_mma::threads, bytes, stream>>>(
        a, policy, stats);
  });
  if (on_tensor_cores) return;
  dispatch(a, op, [&](auto tag, auto dmax) {
    using T = decltype(tag);
    using A = compute_t<T>;
    constexpr int DMax = decltype(dmax)::value;
    const std::size_t bytes = static_cast<std::size_t>(block_q + 2 * block_k) * padded<DMax> * sizeof(A);
    allow_shared_memory(flash_forward<T, Kernel, DMax>, bytes, op);
    const dim3 grid(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>((a.tq + block_q - 1) / block_q));
    flash_forward<T, Kernel, DMax><<<grid, threads, bytes, stream>>>(a, policy, stats);
  });
}

/// Queues the backward kernels for `a` (dbias already zeroed when wanted).
template <class Kernel>
void launch_backward(const AttentionArgs& a, const Kernel& policy, std::string_view op) {
  const cudaStream_t stream = stream_of(a.device);
  const std::int64_t rows = a.batch * a.heads * a.tq;
  const auto launch_delta = [&](auto tag, auto* delta) {
    using T = decltype(tag);
    const unsigned delta_blocks = static_cast<unsigned>((rows * 32 + threads - 1) / threads);
    attention_delta<T><<<delta_blocks, threads, 0, stream>>>(static_cast<const T*>(a.out), static_cast<const T*>(a.dout),
                                                             delta, rows, static_cast<int>(a.dim));
  };
  const bool on_tensor_cores = dispatch_mma(a, [&](auto tag, auto dims) {
    using T = decltype(tag);
    constexpr int D = decltype(dims)::value;
    namespace tc = attention_mma;
    float* delta = static_cast<float*>(allocate(static_cast<std::size_t>(rows) * sizeof(float), a.device, op));
    launch_delta(tag, delta);
    allow_shared_memory(tc::flash_backward_dq_mma<T, Kernel, D>, tc::dq_smem<D>, op);
    tc::flash_backward_dq_mma<T, Kernel, D><<<tc::dq_grid(a), tc::threads, tc::dq_smem<D>, stream>>>(a, policy, delta);
    if (a.tk > 0) {
      allow_shared_memory(tc::flash_backward_dkdv_mma<T, Kernel, D>, tc::dkdv_smem<D>, op);
      tc::flash_backward_dkdv_mma<T, Kernel, D><<<tc::dkdv_grid(a), tc::threads, tc::dkdv_smem<D>, stream>>>(a, policy, delta);
    }
    const cudaError_t launched = cudaGetLastError();
    deallocate(delta, a.device);  // stream-ordered: the cache reuses it only on this stream
    check(launched, op, "kernel launch");
  });
  if (on_tensor_cores) return;
  dispatch(a, op, [&](auto tag, auto dmax) {
    using T = decltype(tag);
    using A = compute_t<T>;
    constexpr int DMax = decltype(dmax)::value;
    A* delta = static_cast<A*>(allocate(static_cast<std::size_t>(rows) * sizeof(A), a.device, op));
    launch_delta(tag, delta);
    const std::size_t dq_bytes = static_cast<std::size_t>(2 * block_q + 2 * block_k) * padded<DMax> * sizeof(A);
    allow_shared_memory(flash_backward_dq<T, Kernel, DMax>, dq_bytes, op);
    const dim3 dq_grid(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>((a.tq + block_q - 1) / block_q));
    flash_backward_dq<T, Kernel, DMax><<<dq_grid, threads, dq_bytes, stream>>>(a, policy, delta);
    if (a.tk > 0) {
      const std::size_t kv_bytes =
          (static_cast<std::size_t>(2 * dkdv_keys + 2 * block_k) * padded<DMax> + 2 * block_k) * sizeof(A);
      allow_shared_memory(flash_backward_dkdv<T, Kernel, DMax>, kv_bytes, op);
      const dim3 kv_grid(static_cast<unsigned>(a.batch * a.kv_heads), static_cast<unsigned>((a.tk + dkdv_keys - 1) / dkdv_keys));
      flash_backward_dkdv<T, Kernel, DMax><<<kv_grid, threads, kv_bytes, stream>>>(a, policy, delta);
    }
    const cudaError_t launched = cudaGetLastError();
    deallocate(delta, a.device);
    check(launched, op, "kernel launch");
  });
}

}  // namespace condense::cuda::attention_detail

namespace condense::cuda {

template <class Policy>
void attention_forward(const AttentionArgs& a, const Policy& inner, std::string_view op) {
  static_assert(check_mask_policy<Policy>(), "see the message above");
  using namespace attention_detail;
  if (!check_args(a, op)) return;
  // The kernels see the policy shifted by the query offset and intersected with the key
  // padding (no-ops unless attention() took a QueryOffset or a KeyPadding out of the policy).
  using Kernel = KernelPolicy<Policy>;
  const Kernel policy = kernel_policy(inner, a);
  use_device(a.device, op);
  const cudaStream_t stream = stream_of(a.device);
  unsigned long long* stats = nullptr;
  if (a.tile_stats) {
    stats = static_cast<unsigned long long*>(allocate(3 * sizeof(unsigned long long), a.device, op));
    check(cudaMemsetAsync(stats, 0, 3 * sizeof(unsigned long long), stream), op, "cudaMemsetAsync");
  }
  if (staged_in_bf16(a)) {
    // float tensors on the bf16 tensor cores: bf16 copies in, the output widened back.
    Bf16Staging staging(a.device, op);
    AttentionArgs c = a;
    c.dtype = DType::BFloat16;
    c.q = staging.rounded(a.q, a.batch * a.heads * a.tq * a.dim);
    c.k = staging.rounded(a.k, a.batch * a.kv_heads * a.tk * a.dim);
    c.v = staging.rounded(a.v, a.batch * a.kv_heads * a.tk * a.dim);
    c.bias = staging.rounded(a.bias, a.batch * a.bias_heads * a.tq * a.tk);
    bfloat16* out = staging.empty(a.batch * a.heads * a.tq * a.dim);
    c.out = out;
    launch_forward(c, policy, stats, op);
    staging.widen(a.out, out, a.batch * a.heads * a.tq * a.dim);
  } else {
    launch_forward(a, policy, stats, op);
  }
  check_launch(op);
  if (stats) {
    unsigned long long counts[3] = {0, 0, 0};
    const cudaError_t status = cudaMemcpyAsync(counts, stats, sizeof counts, cudaMemcpyDeviceToHost, stream);
    const cudaError_t synced = status == cudaSuccess ? cudaStreamSynchronize(stream) : status;
    deallocate(stats, a.device);
    check(synced, op, "copying the tile counters");
    for (int i = 0; i < 3; ++i) a.tile_stats[i] = static_cast<std::int64_t>(counts[i]);
  }
}

template <class Policy>
void attention_backward(const AttentionArgs& a, const Policy& inner, std::string_view op) {
  static_assert(check_mask_policy<Policy>(), "see the message above");
  using namespace attention_detail;
  using Kernel = KernelPolicy<Policy>;
  const Kernel policy = kernel_policy(inner, a);
  if (!check_args(a, op)) {
    // No queries: the key and value gradients are zero.
    const std::size_t kv_bytes = static_cast<std::size_t>(a.batch * a.kv_heads * a.tk * a.dim) * dtype_size(a.dtype);
    if (kv_bytes) {
      memset_zero(a.dk, kv_bytes, a.device, op);
      memset_zero(a.dv, kv_bytes, a.device, op);
    }
    return;
  }
  use_device(a.device, op);
  const cudaStream_t stream = stream_of(a.device);
  const std::int64_t rows = a.batch * a.heads * a.tq;
  if (a.dbias)
    check(cudaMemsetAsync(a.dbias, 0, static_cast<std::size_t>(rows * a.tk) * dtype_size(a.dtype), stream), op,
          "cudaMemsetAsync");
  if (!staged_in_bf16(a)) {
    launch_backward(a, policy, op);
    return;
  }
  // float tensors on the bf16 tensor cores: bf16 copies in, the gradients widened back.
  Bf16Staging staging(a.device, op);
  const std::int64_t q_elems = rows * a.dim, kv_elems = a.batch * a.kv_heads * a.tk * a.dim;
  AttentionArgs c = a;
  c.dtype = DType::BFloat16;
  c.q = staging.rounded(a.q, q_elems);
  c.k = staging.rounded(a.k, kv_elems);
  c.v = staging.rounded(a.v, kv_elems);
  c.bias = staging.rounded(a.bias, a.batch * a.bias_heads * a.tq * a.tk);
  c.out = const_cast<bfloat16*>(staging.rounded(a.out, q_elems));
  c.dout = staging.rounded(a.dout, q_elems);
  bfloat16* dq = staging.empty(q_elems);
  bfloat16* dk = staging.empty(kv_elems);
  bfloat16* dv = staging.empty(kv_elems);
  bfloat16* dbias = a.dbias ? staging.empty(rows * a.tk) : nullptr;
  if (dbias) check(cudaMemsetAsync(dbias, 0, static_cast<std::size_t>(rows * a.tk) * sizeof(bfloat16), stream), op, "cudaMemsetAsync");
  c.dq = dq;
  c.dk = dk;
  c.dv = dv;
  c.dbias = dbias;
  launch_backward(c, policy, op);
  staging.widen(a.dq, dq, q_elems);
  staging.widen(a.dk, dk, kv_elems);
  staging.widen(a.dv, dv, kv_elems);
  if (dbias) staging.widen(a.dbias, dbias, rows * a.tk);
  check_launch(op);
}

}  // namespace condense::cuda

/// Builds condense::cuda::attention_forward/backward for a mask policy type (commas allowed,
/// e.g. condense::mask::Intersect<A, B>). Use once per policy, in one .cu file that includes
/// this header.
#define CONDENSE_CUDA_INSTANTIATE_ATTENTION(...)                                                              \
  template void condense::cuda::attention_forward<__VA_ARGS__>(const condense::cuda::AttentionArgs&,         \
                                                               const __VA_ARGS__&, std::string_view);         \
  template void condense::cuda::attention_backward<__VA_ARGS__>(const condense::cuda::AttentionArgs&,        \
                                                                const __VA_ARGS__&, std::string_view)
