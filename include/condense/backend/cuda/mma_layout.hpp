// Where each element of a warp-level tensor-core product lives: the fragment layouts of
// PTX mma.sync.m16n8k16 with 16-bit inputs and fp32 accumulators, as plain constexpr
// functions of (lane, element). The tensor-core attention kernels
// (kernels/attention/flash_attention_mma.cuh) compute every shared-memory address from
// these, and tests/core/test_mma_layout.cpp checks them on the CPU (a product emulated
// element by element, and the accumulator-to-operand reuse the kernels rely on).
#pragma once

#include "condense/core/config.hpp"

namespace condense::cuda::mma {

/// A (row, column) position inside one fragment's tile.
struct Coord {
  int row = 0;
  int col = 0;
};

/// Lanes in a warp; a fragment spreads its tile over all of them.
inline constexpr int warp_lanes = 32;
/// Shape of one product: D[16 x 8] += A[16 x 16] * B[16 x 8].
inline constexpr int tile_m = 16, tile_n = 8, tile_k = 16;
/// 16-bit elements per lane: A holds 8 (four 32-bit registers), B holds 4 (two registers);
/// the fp32 accumulator C/D holds 4 floats.
inline constexpr int a_elements = 8, b_elements = 4, c_elements = 4;

/// Element e (0..7) of lane's A fragment: register e / 2, low half when e is even.
// A: [16 (rows m), 16 (k)], row-major operand
CONDENSE_HD constexpr Coord a_coord(int lane, int e) {
  const int group = lane / 4, thread = lane % 4;
  return {group + ((e / 2) % 2) * 8, thread * 2 + e % 2 + (e / 4) * 8};
}

/// Element e (0..3) of lane's B fragment as (row k, column n): register e / 2, low half
/// when e is even. The two halves of a register are consecutive k of one column n, so a
/// register is one 32-bit load from a row-major [n][k] tile (K^T or V^T in attention).
// B: [16 (k), 8 (n)], column-major operand
CONDENSE_HD constexpr Coord b_coord(int lane, int e) {
  const int group = lane / 4, thread = lane % 4;
  return {thread * 2 + e % 2 + (e / 2) * 8, group};
}

/// Element e (0..3) of lane's fp32 accumulator (C and D).
// C, D: [16 (rows m), 8 (n)]
CONDENSE_HD constexpr Coord c_coord(int lane, int e) {
  const int group = lane / 4, thread = lane % 4;
  return {group + (e / 2) * 8, thread * 2 + e % 2};
}

/// The accumulator reuse of flash attention: element e of the A fragment of k-step j is
/// element a_from_c_element(e) of the accumulator of n-tile a_from_c_tile(j, e), so a row
/// block of scores (P or dS, [16, 8 * tiles]) becomes the left operand of the next product
/// without leaving registers.
CONDENSE_HD constexpr int a_from_c_tile(int k_step, int e) { return 2 * k_step + e / 4; }
CONDENSE_HD constexpr int a_from_c_element(int e) { return e % 4; }

/// Offset in a row-major tile (row stride `stride`) of the low half of register r (0..3)
/// of the A fragment of the 16 x 16 block at (row0, col0); the high half follows it.
CONDENSE_HD constexpr int a_offset(int lane, int r, int row0, int col0, int stride) {
  const Coord c = a_coord(lane, 2 * r);
  return (row0 + c.row) * stride + col0 + c.col;
}

/// Offset of half h (0 low, 1 high) of register r (0..3) of the A fragment that is the
/// transpose of a row-major tile: row i of the 16 x 16 block at (row0, col0) of A is tile
/// column (row0 + i), its k runs down that column from tile row col0 (dS in dQ = dS K, with
/// dS^T stored keys by rows).
CONDENSE_HD constexpr int a_transposed_offset(int lane, int r, int h, int row0, int col0, int stride) {
  const Coord c = a_coord(lane, 2 * r + h);
  return (col0 + c.col) * stride + row0 + c.row;
}

/// Offset of the low half of register r (0, 1) of the B fragment that is the transpose of
/// a row-major tile: column n of B is tile row (n0 + n), k runs along it from col0 (K^T in
/// S = Q K^T); the high half follows it.
CONDENSE_HD constexpr int b_transposed_offset(int lane, int r, int n0, int col0, int stride) {
  const Coord c = b_coord(lane, 2 * r);
  return (n0 + c.col) * stride + col0 + c.row;
}

/// Offset of half h (0 low, 1 high) of register r (0, 1) of the B fragment read straight
/// from a row-major tile: k is tile row (k0 + k), n is tile column (n0 + n) (V in O = P V).
CONDENSE_HD constexpr int b_offset(int lane, int r, int h, int k0, int n0, int stride) {
  const Coord c = b_coord(lane, 2 * r + h);
  return (k0 + c.row) * stride + n0 + c.col;
}

// ldmatrix.m8n8.x4 (b16): lane l gives the address of row l % 8 of 8 x 8 matrix l / 8 (a
// row of 8 consecutive elements, 16-byte aligned) and receives, in register i, row l / 4,
// columns 2 (l % 4) and 2 (l % 4) + 1 of matrix i; with .trans, rows 2 (l % 4) and
// 2 (l % 4) + 1 of column l / 4. The functions below give the row each lane points at, so
// that the four registers are exactly the fragments the offsets above describe.

/// The row lane points at for the A fragment of the 16 x 16 block at (row0, col0):
/// registers 0..3 = a[0..3].
CONDENSE_HD constexpr Coord ldmatrix_a_row(int lane, int row0, int col0) {
  const int matrix = lane / 8, row = lane % 8;
  return {row0 + row + (matrix % 2) * 8, col0 + (matrix / 2) * 8};
}

/// The row lane points at, for ldmatrix .trans, for the A fragment of the 16 x 16 block at
/// (row0, col0) of A = tile^T (A's rows are tile columns row0 .., its k tile rows col0 ..):
/// registers 0..3 = a[0..3].
CONDENSE_HD constexpr Coord ldmatrix_a_transposed_row(int lane, int row0, int col0) {
  const int matrix = lane / 8, row = lane % 8;
  return {col0 + row + (matrix / 2) * 8, row0 + (matrix % 2) * 8};
}

/// The row lane points at for the B fragments of two n-tiles of a transposed operand
/// (tile rows n0 .. n0 + 15, k along the row from col0): registers 0, 1 = b[0], b[1] of
/// n-tile n0, registers 2, 3 = those of n-tile n0 + 8.
CONDENSE_HD constexpr Coord ldmatrix_b_transposed_row(int lane, int n0, int col0) {
  const int matrix = lane / 8, row = lane % 8;
  return {n0 + row + (matrix / 2) * 8, col0 + (matrix % 2) * 8};
}

/// The row lane points at, for ldmatrix .trans, for the B fragments of two n-tiles read
/// straight from a row-major operand (k = tile rows k0 .. k0 + 15, n = columns n0 ..
/// n0 + 15): registers 0, 1 = b[0], b[1] of n-tile n0, registers 2, 3 = those of n0 + 8.
CONDENSE_HD constexpr Coord ldmatrix_b_row(int lane, int k0, int n0) {
  const int matrix = lane / 8, row = lane % 8;
  return {k0 + row + (matrix % 2) * 8, n0 + (matrix / 2) * 8};
}

}  // namespace condense::cuda::mma
