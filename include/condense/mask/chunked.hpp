// ChunkedLocal: the block-wise causal mask of chunked memory tokens (PIC). The sequence is
// [c1 m1 c2 m2 ... cN mN | tail]: N blocks of `chunk` context tokens followed by `mem`
// memory tokens, then an optional tail (e.g. the question and answer) that reads the
// memory tokens only.
#pragma once

#include <climits>

#include "condense/core/config.hpp"
#include "condense/core/error.hpp"
#include "condense/mask/policy.hpp"

namespace condense::mask {

/// Options of ChunkedLocal.
struct ChunkedLocalOptions {
  /// Number of [chunk, memory] blocks; positions from n_chunks * (chunk + mem) on are the
  /// tail. -1: the block layout repeats without end (no tail).
  int n_chunks = -1;
  /// Memory tokens also see the memory tokens of earlier blocks (a recurrent summary).
  bool memory_sees_earlier_memory = false;
};

/// Block-wise causal mask for chunked memory tokens. Block j covers positions
/// [j*P, (j+1)*P), P = chunk + mem: context [j*P, j*P + chunk), memory after it.
///  - a token inside the blocks sees the tokens of its own block up to itself (k <= q),
///    so each chunk is compressed into its memory tokens independently of the others;
///  - with memory_sees_earlier_memory, a memory token also sees every memory token of the
///    earlier blocks;
///  - a tail token (position >= n_chunks * P) sees every memory token of the blocks and
///    the tail up to itself, never the context tokens (the decoder reads the compressed
///    memory only).
/// Every token sees itself, so no query row is empty.
struct ChunkedLocal {
  int chunk = 1;
  int mem = 0;
  int n_chunks = -1;
  bool memory_sees_earlier_memory = false;

  ChunkedLocal(int chunk_tokens, int memory_tokens, ChunkedLocalOptions options = {})
      : chunk(chunk_tokens),
        mem(memory_tokens),
        n_chunks(options.n_chunks),
        memory_sees_earlier_memory(options.memory_sees_earlier_memory) {
    CONDENSE_CHECK(chunk_tokens >= 1, "ChunkedLocal", "chunk must be >= 1, got ", chunk_tokens);
    CONDENSE_CHECK(memory_tokens >= 0, "ChunkedLocal", "mem must be >= 0, got ", memory_tokens);
    CONDENSE_CHECK(static_cast<long long>(chunk_tokens) + memory_tokens <= INT_MAX, "ChunkedLocal",
                   "chunk + mem overflows int: ", chunk_tokens, " + ", memory_tokens);
    CONDENSE_CHECK(options.n_chunks >= -1, "ChunkedLocal", "n_chunks must be >= 0, or -1 for no tail, got ",
                   options.n_chunks);
    CONDENSE_CHECK(static_cast<long long>(options.n_chunks) * period() <= INT_MAX, "ChunkedLocal",
                   "n_chunks * (chunk + mem) overflows int: ", options.n_chunks, " * ", period());
  }

  /// Tokens per block (chunk + mem).
  constexpr CONDENSE_HD int period() const { return chunk + mem; }
  /// First tail position (n_chunks * period), or `unbounded` without a tail.
  constexpr CONDENSE_HD long long context_end() const {
    return n_chunks < 0 ? unbounded : static_cast<long long>(n_chunks) * period();
  }
  /// True for a memory position inside the blocks.
  constexpr CONDENSE_HD bool is_memory(int t) const { return t % period() >= chunk; }

  constexpr CONDENSE_HD bool allowed(int, int q, int k) const {
    const long long end = context_end();
    if (q >= end) return k >= end ? k <= q : is_memory(k);
    if (k > q) return false;
    if (q / period() == k / period()) return true;
    return memory_sees_earlier_memory && is_memory(q) && is_memory(k);
  }

  /// Exact: the rows are split by block and by context/memory part (at most
  /// (q1 - q0) / period + 2 blocks, stopping as soon as the tile is known to be Partial).
  constexpr CONDENSE_HD TileKind classify(int, int q0, int q1, int k0, int k1) const {
    TileParts parts;
    const long long end = context_end();
    const long long p = period();
    const int qe = detail::clamp_to(end, q0, q1);  // rows [q0, qe) are inside the blocks
    if (q0 < qe) {
      for (long long j = q0 / p, j_last = (qe - 1) / p; j <= j_last; ++j) {
        const long long block = j * p, memory = block + chunk, next = block + p;
        add_block_rows(parts, detail::clamp_to(block, q0, qe), detail::clamp_to(memory, q0, qe), block, next, k0, k1,
                       false);
        add_block_rows(parts, detail::clamp_to(memory, q0, qe), detail::clamp_to(next, q0, qe), block, next, k0, k1,
                       true);
        if (parts.mixed()) return TileKind::Partial;
      }
    }
    if (qe < q1) {  // tail rows: memory keys of the blocks, then causal within the tail
      const int ks = detail::clamp_to(end, k0, k1);
      if (k0 < ks) parts.add(classify_memory_keys(k0, ks));
      if (ks < k1) parts.add(classify_causal(qe, q1, ks, k1));
    }
    return parts.result();
  }

  /// Exact kind of "k is a memory position" over keys [a, e) inside the blocks.
  constexpr CONDENSE_HD TileKind classify_memory_keys(int a, int e) const {
    if (mem == 0) return TileKind::Empty;
    const int p = period();
    if (a / p != (e - 1) / p) return TileKind::Partial;  // spans a block boundary: both kinds
    if (a % p >= chunk) return TileKind::Full;
    if ((e - 1) % p < chunk) return TileKind::Empty;
    return TileKind::Partial;
  }

 private:
  /// Rows [r0, r1) of the block [block, next) (all context rows or all memory rows).
  constexpr CONDENSE_HD void add_block_rows(TileParts& parts, int r0, int r1, long long block, long long next, int k0,
                                            int k1, bool memory_rows) const {
    if (r0 >= r1) return;
    const int kb = detail::clamp_to(block, k0, k1), kn = detail::clamp_to(next, k0, k1);
    if (k0 < kb) parts.add(memory_rows && memory_sees_earlier_memory ? classify_memory_keys(k0, kb) : TileKind::Empty);
    if (kb < kn) parts.add(classify_causal(r0, r1, kb, kn));
    if (kn < k1) parts.add(TileKind::Empty);
  }
};

}  // namespace condense::mask
