// Flash attention forward for a few queries per sequence (decoding steps: one new token per
// sequence after a cache, or a short chunk of them), templated on the mask policy: the
// keys are split across blocks ("flash decoding") and the partial results combined, so a
// step over a long cache keeps the whole GPU reading K and V instead of one block per
// (batch, head) walking every key for one query row.
//
// A block holds up to 16 query rows of one (batch, kv head): rows r = g * Tq + t for the
// query heads g of the kv head's group and the queries t, so each K and V row it loads
// serves every query head that reads it (grouped-query attention costs no extra traffic).
// Its 4 warps walk the key tiles (64 keys) of one split of the keys: K and V tiles are
// copied to shared memory with cp.async (V still in flight while the scores are formed),
// one thread per (row, key) forms a score (16-byte reads of the key row), one warp per row
// runs the online softmax, and one thread per (row, head-dim element) accumulates P V.
// Tiles are classified per block with policy.classify over the block's query positions:
// Empty tiles are never loaded, Full tiles skip policy.allowed. Arithmetic in float (double
// for double tensors). With one split per block the block writes out and lse itself;
// otherwise every split writes its normalised partial output and log-sum-exp (float or
// double, [splits, B * H * Tq, D] and [splits, B * H * Tq]) and decode_combine merges them.
//
// Kernels and their launch plan only: flash_attention.cuh launches them for calls with at
// most decode_max_queries queries (tests/emulation runs them on the CPU).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "condense/backend/cuda/attention.hpp"
#include "condense/mask/policy.hpp"
#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_portable.cuh"
#include "detail/common.cuh"

namespace condense::cuda::attention_decode {

using namespace condense::cuda::detail;

constexpr int threads = 128;
constexpr int warps = threads / 32;
constexpr int block_keys = 64;  ///< keys per tile
constexpr int block_rows = 16;  ///< query rows per block ((query heads of a kv head) x Tq)
/// The most queries per sequence the launcher hands to these kernels (more take the
/// general kernels, whose 128-row blocks then do little wasted work).
constexpr std::int64_t max_queries = 16;

/// Elements of T in a 16-byte chunk (the unit of the K and V copies and reads).
template <class T>
constexpr int chunk_elements = 16 / static_cast<int>(sizeof(T));
/// Row stride (elements) of the shared K and V tiles: padded by one chunk, so that the
/// 16-byte reads of 8 consecutive rows by a quarter warp hit different banks.
template <class T, int DMax>
constexpr int tile_stride = DMax + chunk_elements<T>;

/// Shared memory of decode_forward: the K and V tiles, the block's query rows (compute
/// type), the scores / probabilities of a tile, and per row its rescale factor, running
/// maximum and sum.
template <class T, int DMax>
constexpr std::size_t smem_bytes = 2 * block_keys * tile_stride<T, DMax> * sizeof(T) +
                                   (block_rows * DMax + block_rows * block_keys + 3 * block_rows) * sizeof(compute_t<T>);

/// How a call is cut: key tiles per split, splits, and blocks of rows per (batch, kv head).
struct DecodePlan {
  int tiles_per_split = 1;
  int splits = 1;
  int row_blocks = 1;
};

/// The plan for `a` on a device with `multiprocessors` SMs: enough splits that the grid
/// covers the device about twice (each split at least one key tile).
inline DecodePlan decode_plan(const AttentionArgs& a, int multiprocessors) {
  DecodePlan plan;
  const std::int64_t rows = a.heads / a.kv_heads * a.tq;
  plan.row_blocks = static_cast<int>((rows + block_rows - 1) / block_rows);
  const std::int64_t tiles = std::max<std::int64_t>(1, (a.tk + block_keys - 1) / block_keys);
  const std::int64_t blocks = a.batch * a.kv_heads * plan.row_blocks;
  const std::int64_t wanted = std::max<std::int64_t>(1, (2 * std::int64_t{multiprocessors} + blocks - 1) / blocks);
  plan.tiles_per_split = static_cast<int>((tiles + std::min(wanted, tiles) - 1) / std::min(wanted, tiles));
  plan.splits = static_cast<int>((tiles + plan.tiles_per_split - 1) / plan.tiles_per_split);
  return plan;
}

/// The grid of decode_forward: (batch * kv heads, splits, row blocks).
inline dim3 decode_grid(const AttentionArgs& a, const DecodePlan& plan) {
  return dim3(static_cast<unsigned>(a.batch * a.kv_heads), static_cast<unsigned>(plan.splits),
              static_cast<unsigned>(plan.row_blocks));
}

/// The compute-type values of the 16-byte chunk of T at p (shared memory, 16-byte aligned).
template <class T>
__device__ __forceinline__ void widen_chunk(const T* p, compute_t<T> (&values)[chunk_elements<T>]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  if constexpr (sizeof(T) == 2) {
    std::uint16_t bits[chunk_elements<T>];
    __builtin_memcpy(bits, &raw, sizeof raw);
#pragma unroll
    for (int e = 0; e < chunk_elements<T>; ++e) {
      const T element = T::from_bits(bits[e]);
      values[e] = load(&element);
    }
  } else {
    __builtin_memcpy(values, &raw, sizeof raw);  // float or double: already the compute type
  }
}

/// Whether the K and V rows can be copied in 16-byte chunks: both pointers 16-byte aligned,
/// every stride and the head dim whole chunks.
template <class T>
__device__ __forceinline__ bool rows_in_chunks(const AttentionArgs& a) {
  constexpr int n = chunk_elements<T>;
  const auto bits = reinterpret_cast<std::uintptr_t>(a.k) | reinterpret_cast<std::uintptr_t>(a.v);
  const std::int64_t strides = a.k_rows.batch | a.k_rows.head | a.k_rows.token | a.v_rows.batch | a.v_rows.head | a.v_rows.token;
  return bits % 16 == 0 && strides % n == 0 && a.dim % n == 0;
}

/// Copies rows [k0, k0 + n) of K (or V) into a shared tile: cp.async in 16-byte chunks when
/// `chunked`, else element by element with the head dim zero-filled up to whole chunks.
template <class T, int DMax>
__device__ __forceinline__ void load_rows(T* tile, const T* src, std::int64_t row_stride, int k0, int n, int dim,
                                          int padded_dim, bool chunked) {
  constexpr int ce = chunk_elements<T>;
  if (chunked) {
    const int chunks = dim / ce;
    for (int idx = threadIdx.x; idx < n * chunks; idx += threads) {
      const int j = idx / chunks, c = idx % chunks * ce;
      attention_mma::copy_async_16(tile + j * tile_stride<T, DMax> + c, src + (k0 + j) * row_stride + c, true);
    }
  } else {
    for (int idx = threadIdx.x; idx < n * padded_dim; idx += threads) {
      const int j = idx / padded_dim, d = idx % padded_dim;
      tile[j * tile_stride<T, DMax> + d] = d < dim ? src[(k0 + j) * row_stride + d] : to_element<T>(0.0f);
    }
  }
}

/// One split of the keys for up to block_rows query rows of one (batch, kv head); see the
/// top of this file. part_out / part_lse: the partial results when the plan has more than
/// one split (nullptr otherwise: out and lse written directly).
template <class T, class Policy, int DMax>
__global__ void __launch_bounds__(threads)
    decode_forward(AttentionArgs a, Policy policy, int tiles_per_split, compute_t<T>* part_out, compute_t<T>* part_lse) {
  using A = compute_t<T>;
  constexpr A neg_inf = -INFINITY;
  constexpr int ce = chunk_elements<T>;
  constexpr int stride = tile_stride<T, DMax>;
  // Head-dim elements per thread in P V: each of `row_threads` threads of a row owns
  // `columns` of its elements; `row_groups` rows are accumulated side by side.
  constexpr int row_threads = DMax < threads ? DMax : threads;
  constexpr int columns = DMax / row_threads;
  constexpr int row_groups = threads / row_threads;
  constexpr int rows_per_thread = block_rows / row_groups;
  CONDENSE_DYNAMIC_SHARED_MEMORY(smem);
  T* sk = reinterpret_cast<T*>(smem);
  T* sv = sk + block_keys * stride;
  A* sq = reinterpret_cast<A*>(sv + block_keys * stride);
  A* sp = sq + block_rows * DMax;
  A* salpha = sp + block_rows * block_keys;
  A* smax = salpha + block_rows;
  A* ssum = smax + block_rows;

  const int dim = static_cast<int>(a.dim), tq = static_cast<int>(a.tq), tk = static_cast<int>(a.tk);
  const int padded_dim = (dim + ce - 1) / ce * ce;
  const std::int64_t bkv = blockIdx.x, group = a.heads / a.kv_heads;
  const int b = static_cast<int>(bkv / a.kv_heads);
  const std::int64_t kvh = bkv % a.kv_heads;
  const int group_rows = static_cast<int>(group) * tq;
  const int row0 = static_cast<int>(blockIdx.z) * block_rows;
  const int rows = min(block_rows, group_rows - row0);
  // The query positions of the block's rows: one head's [t0, t1], or every position.
  const int first_t = row0 % tq, last_t = (row0 + rows - 1) % tq;
  const bool one_head = row0 / tq == (row0 + rows - 1) / tq;
  const int q_lo = one_head ? first_t : 0, q_hi = one_head ? last_t + 1 : tq;
  const std::int64_t split_keys = std::int64_t{tiles_per_split} * block_keys;
  const int key_begin = static_cast<int>(blockIdx.y * split_keys);
  const int key_end = static_cast<int>(min(std::int64_t{tk}, key_begin + split_keys));
  const T* k = static_cast<const T*>(a.k) + a.k_rows.at(b, kvh, 0);
  const T* v = static_cast<const T*>(a.v) + a.v_rows.at(b, kvh, 0);
  const bool chunked = rows_in_chunks<T>(a);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = static_cast<A>(a.scale);
  // Row r of the block: query head kvh * group + (row0 + r) / tq, position (row0 + r) % tq.
  const auto head_of = [&](int r) { return kvh * group + (row0 + r) / tq; };
  const auto position_of = [&](int r) { return (row0 + r) % tq; };

  for (int idx = threadIdx.x; idx < rows * padded_dim; idx += threads) {
    const int r = idx / padded_dim, d = idx % padded_dim;
    const T* q = static_cast<const T*>(a.q) + a.q_rows.at(b, head_of(r), position_of(r));
    sq[r * DMax + d] = d < dim ? load(q + d) : A(0);
  }
  // The online softmax state of the rows r = warp + warps * i, held by their warp.
  A m[block_rows / warps], l[block_rows / warps];
#pragma unroll
  for (int i = 0; i < block_rows / warps; ++i) {
    m[i] = neg_inf;
    l[i] = 0;
  }
  A acc[rows_per_thread][columns];
#pragma unroll
  for (int i = 0; i < rows_per_thread; ++i)
#pragma unroll
    for (int c = 0; c < columns; ++c) acc[i][c] = 0;
  const int own_row = threadIdx.x / row_threads, own_column = threadIdx.x % row_threads;

  for (int k0 = key_begin; k0 < key_end; k0 += block_keys) {
    const int k1 = min(key_end, k0 + block_keys), n = k1 - k0;
    const TileKind kind = attention_detail::tile_kind(policy, a.skip_tiles, b, q_lo, q_hi, k0, k1);
    if (kind == TileKind::Empty) continue;  // the same for the whole block
    __syncthreads();                        // the previous tile is no longer read
    load_rows<T, DMax>(sk, k, a.k_rows.token, k0, n, dim, padded_dim, chunked);
    attention_mma::commit_async();
    load_rows<T, DMax>(sv, v, a.v_rows.token, k0, n, dim, padded_dim, chunked);
    attention_mma::commit_async();
    attention_mma::wait_async<1>();  // this thread's K copies (V may still be in flight)
    __syncthreads();

    // Scores: thread (r, j) for key k0 + j.
    for (int pair = threadIdx.x; pair < rows * block_keys; pair += threads) {
      const int r = pair / block_keys, j = pair % block_keys;
      if (j >= n) continue;
      const A* qr = sq + r * DMax;
      const T* kr = sk + j * stride;
      A s0 = 0, s1 = 0;
      for (int d = 0; d < padded_dim; d += ce) {
        A kv[ce];
        widen_chunk(kr + d, kv);
#pragma unroll
        for (int e = 0; e < ce; e += 2) {  // two chains: ce is even
          s0 += qr[d + e] * kv[e];
          s1 += qr[d + e + 1] * kv[e + 1];
        }
      }
      A s = (s0 + s1) * scale;
      const int t = position_of(r), key = k0 + j;
      const T* bias = attention_detail::bias_rows<T>(a, b, head_of(r));
      if (bias) s += load(bias + static_cast<std::int64_t>(t) * a.tk + key);
      if (kind == TileKind::Partial && !policy.allowed(b, t, key)) s = neg_inf;
      sp[r * block_keys + j] = s;
    }
    __syncthreads();

    // Online softmax: warp w for rows w, w + 4, ...; the scores become probabilities.
#pragma unroll
    for (int i = 0; i < block_rows / warps; ++i) {
      const int r = warp + warps * i;
      if (r >= rows) continue;  // the same for the whole warp
      A* pr = sp + r * block_keys;
      const A s0 = lane < n ? pr[lane] : neg_inf, s1 = lane + 32 < n ? pr[lane + 32] : neg_inf;
      const A m_tile = attention_detail::warp_max(s0 > s1 ? s0 : s1);
      const A m_new = m_tile > m[i] ? m_tile : m[i];
      // A row still fully masked keeps m = -inf: shift by 0 so exp gives exact zeros.
      const A shift = m_new == neg_inf ? A(0) : m_new;
      const A p0 = d_exp(s0 - shift), p1 = d_exp(s1 - shift);
      const A alpha = d_exp(m[i] - shift);
      l[i] = l[i] * alpha + attention_detail::warp_sum(p0 + p1);
      m[i] = m_new;
      if (lane < n) pr[lane] = p0;
      if (lane + 32 < n) pr[lane + 32] = p1;
      if (lane == 0) salpha[r] = alpha;
    }
    attention_mma::wait_async<0>();  // this thread's V copies
    __syncthreads();

    // P V: thread (row group, column) for rows own_row + row_groups * i.
#pragma unroll
    for (int i = 0; i < rows_per_thread; ++i) {
      const int r = own_row + row_groups * i;
      if (r < rows) {
#pragma unroll
        for (int c = 0; c < columns; ++c) acc[i][c] *= salpha[r];
      }
    }
    for (int j = 0; j < n; ++j) {
      A vj[columns];
#pragma unroll
      for (int c = 0; c < columns; ++c) vj[c] = load(sv + j * stride + own_column + row_threads * c);
#pragma unroll
      for (int i = 0; i < rows_per_thread; ++i) {
        const int r = own_row + row_groups * i;
        if (r >= rows) continue;
        const A p = sp[r * block_keys + j];
#pragma unroll
        for (int c = 0; c < columns; ++c) acc[i][c] += p * vj[c];
      }
    }
  }

  // The rows' maxima and sums to every thread; then each thread writes what it holds.
#pragma unroll
  for (int i = 0; i < block_rows / warps; ++i) {
    const int r = warp + warps * i;
    if (r < rows && lane == 0) {
      smax[r] = m[i];
      ssum[r] = l[i];
    }
  }
  __syncthreads();
  const std::int64_t split = blockIdx.y, query_rows = a.batch * a.heads * a.tq;
#pragma unroll
  for (int i = 0; i < rows_per_thread; ++i) {
    const int r = own_row + row_groups * i;
    if (r >= rows) continue;
    const std::int64_t h = head_of(r);
    const int t = position_of(r);
    const std::int64_t row = (b * a.heads + h) * a.tq + t;  // in lse's [B, H, Tq]
    const A sum = ssum[r], inv = sum > A(0) ? A(1) / sum : A(0);
    const A row_lse = sum > A(0) ? smax[r] + d_log(sum) : neg_inf;
    if (part_out) {
      A* po = part_out + (split * query_rows + row) * a.dim;
#pragma unroll
      for (int c = 0; c < columns; ++c) {
        const int d = own_column + row_threads * c;
        if (d < dim) po[d] = acc[i][c] * inv;
      }
      if (own_column == 0) part_lse[split * query_rows + row] = row_lse;
    } else {
      T* out = static_cast<T*>(a.out) + a.out_rows.at(b, h, t);
#pragma unroll
      for (int c = 0; c < columns; ++c) {
        const int d = own_column + row_threads * c;
        if (d < dim) out[d] = to_element<T>(acc[i][c] * inv);
      }
      if (own_column == 0) static_cast<A*>(a.lse)[row] = row_lse;
    }
  }
}

/// Merges the splits' partial results into out and lse: one warp per query row (b, h, t).
/// Each split's output is weighted by exp(its lse - the largest); rows no split saw any
/// allowed key of get zeros and lse = -inf.
template <class T>
__global__ void __launch_bounds__(threads) decode_combine(AttentionArgs a, int splits, const compute_t<T>* part_out,
                                                          const compute_t<T>* part_lse) {
  using A = compute_t<T>;
  constexpr A neg_inf = -INFINITY;
  const std::int64_t query_rows = a.batch * a.heads * a.tq;
  const std::int64_t warps_in_grid = static_cast<std::int64_t>(gridDim.x) * (threads / 32);
  const int lane = threadIdx.x % 32, dim = static_cast<int>(a.dim);
  for (std::int64_t row = (static_cast<std::int64_t>(blockIdx.x) * threads + threadIdx.x) / 32; row < query_rows;
       row += warps_in_grid) {
    A top = neg_inf;
    for (int s = lane; s < splits; s += 32) {
      const A x = part_lse[s * query_rows + row];
      top = x > top ? x : top;
    }
    top = attention_detail::warp_max(top);
    const std::int64_t t = row % a.tq, h = row / a.tq % a.heads, b = row / a.tq / a.heads;
    T* out = static_cast<T*>(a.out) + a.out_rows.at(b, h, t);
    if (top == neg_inf) {
      for (int d = lane; d < dim; d += 32) out[d] = to_element<T>(A(0));
      if (lane == 0) static_cast<A*>(a.lse)[row] = neg_inf;
      continue;
    }
    A total = 0;
    for (int s = lane; s < splits; s += 32) total += d_exp(part_lse[s * query_rows + row] - top);
    total = attention_detail::warp_sum(total);
    const A inv = A(1) / total;
    for (int d = lane; d < dim; d += 32) {
      A x = 0;
      for (int s = 0; s < splits; ++s) {
        const A w = part_lse[s * query_rows + row];  // the same for the whole warp
        if (w != neg_inf) x += d_exp(w - top) * part_out[(s * query_rows + row) * a.dim + d];
      }
      out[d] = to_element<T>(x * inv);
    }
    if (lane == 0) static_cast<A*>(a.lse)[row] = top + d_log(total);
  }
}

}  // namespace condense::cuda::attention_decode
