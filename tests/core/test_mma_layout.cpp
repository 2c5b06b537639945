// The tensor-core fragment layouts the CUDA attention kernels address shared memory with
// (condense/backend/cuda/mma_layout.hpp), checked on the CPU: each layout covers its tile
// once, register halves are the consecutive elements one 32-bit load reads, a few lanes
// against the PTX ISA tables, and one warp's steps of the flash forward (S = Q K^T from a
// Q tile and a K tile, then O = P V with P reused from the S accumulators) emulated lane by
// lane through the kernels' offset functions, against the plain products; and that the row
// a lane hands to ldmatrix is its row for the origin (0, 0) plus the fragment's origin.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "condense/backend/cuda/mma_layout.hpp"

namespace test_mma_layout {

namespace mma = condense::cuda::mma;

namespace {

template <class F>
std::set<std::pair<int, int>> covered(int elements, F coord) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < mma::warp_lanes; ++lane)
    for (int e = 0; e < elements; ++e) {
      const mma::Coord c = coord(lane, e);
      seen.insert({c.row, c.col});
    }
  return seen;
}

/// Per-lane fragments of one m16n8k16 product, as registers hold them.
struct Fragments {
  std::array<std::array<float, mma::a_elements>, mma::warp_lanes> a{};
  std::array<std::array<float, mma::b_elements>, mma::warp_lanes> b{};
};

/// What mma.sync computes: the tiles assembled from the lanes' fragments (by the PTX
/// layouts), multiplied, and the product scattered back into the lanes' accumulators.
void emulate_mma(std::array<std::array<float, mma::c_elements>, mma::warp_lanes>& acc, const Fragments& f) {
  float a[mma::tile_m][mma::tile_k] = {}, b[mma::tile_k][mma::tile_n] = {};
  for (int lane = 0; lane < mma::warp_lanes; ++lane) {
    for (int e = 0; e < mma::a_elements; ++e) a[mma::a_coord(lane, e).row][mma::a_coord(lane, e).col] = f.a[lane][e];
    for (int e = 0; e < mma::b_elements; ++e) b[mma::b_coord(lane, e).row][mma::b_coord(lane, e).col] = f.b[lane][e];
  }
  for (int lane = 0; lane < mma::warp_lanes; ++lane)
    for (int e = 0; e < mma::c_elements; ++e) {
      const mma::Coord c = mma::c_coord(lane, e);
      for (int k = 0; k < mma::tile_k; ++k) acc[lane][e] += a[c.row][k] * b[k][c.col];
    }
}

}  // namespace

TEST_CASE("mma layout: every fragment covers its tile exactly once") {
  CHECK(covered(mma::a_elements, mma::a_coord).size() == std::size_t(mma::tile_m * mma::tile_k));
  CHECK(covered(mma::b_elements, mma::b_coord).size() == std::size_t(mma::tile_k * mma::tile_n));
  CHECK(covered(mma::c_elements, mma::c_coord).size() == std::size_t(mma::tile_m * mma::tile_n));
  for (const auto& [row, col] : covered(mma::a_elements, mma::a_coord)) CHECK((row < 16 && col < 16));
  for (const auto& [row, col] : covered(mma::b_elements, mma::b_coord)) CHECK((row < 16 && col < 8));
}

TEST_CASE("mma layout: register halves are consecutive elements, and lanes match the PTX tables") {
  for (int lane = 0; lane < mma::warp_lanes; ++lane) {
    for (int r = 0; r < 4; ++r) {
      CHECK(mma::a_coord(lane, 2 * r + 1).row == mma::a_coord(lane, 2 * r).row);
      CHECK(mma::a_coord(lane, 2 * r + 1).col == mma::a_coord(lane, 2 * r).col + 1);
    }
    for (int r = 0; r < 2; ++r) {  // consecutive k of one column: one 32-bit load of a [n][k] row
      CHECK(mma::b_coord(lane, 2 * r + 1).row == mma::b_coord(lane, 2 * r).row + 1);
      CHECK(mma::b_coord(lane, 2 * r + 1).col == mma::b_coord(lane, 2 * r).col);
    }
    // Accumulator elements 0, 1 share a row, and 2, 3 the row 8 below (the kernels' rows[e / 2]).
    CHECK(mma::c_coord(lane, 1).row == mma::c_coord(lane, 0).row);
    CHECK(mma::c_coord(lane, 3).row == mma::c_coord(lane, 0).row + 8);
  }
  // PTX ISA, mma.m16n8k16 with .bf16 / .f16 inputs: lane 6 is group 1, thread 2.
  CHECK(mma::a_coord(6, 0).row == 1);
  CHECK(mma::a_coord(6, 0).col == 4);
  CHECK(mma::a_coord(6, 2).row == 9);  // a2: row groupID + 8
  CHECK(mma::a_coord(6, 4).col == 12);  // a4: column + 8
  CHECK(mma::b_coord(6, 0).row == 4);
  CHECK(mma::b_coord(6, 0).col == 1);
  CHECK(mma::b_coord(6, 2).row == 12);  // b2: row + 8
  CHECK(mma::c_coord(31, 3).row == 15);
  CHECK(mma::c_coord(31, 3).col == 7);
}

TEST_CASE("mma layout: one warp's flash forward steps, emulated through the kernels' offsets") {
  // One warp: 16 query rows, a 64-key tile, head dim 32, tiles with padded row stride.
  constexpr int rows = 16, keys = 64, dim = 32, stride = dim + 8;
  std::vector<float> q(rows * stride, -1e9f), k(keys * stride, -1e9f), v(keys * stride, -1e9f);  // padding poisoned
  for (int r = 0; r < rows; ++r)
    for (int d = 0; d < dim; ++d) q[r * stride + d] = float((r * 7 + d * 3) % 11) - 5;
  for (int j = 0; j < keys; ++j)
    for (int d = 0; d < dim; ++d) {
      k[j * stride + d] = float((j * 5 + d) % 9) - 4;
      v[j * stride + d] = float((j + d * 13) % 7) - 3;
    }

  // S = Q K^T: n-tiles of 8 keys, k-steps of 16 over the head dim.
  constexpr int key_tiles = keys / 8, k_steps = dim / 16, dim_tiles = dim / 8;
  std::array<std::array<std::array<float, 4>, mma::warp_lanes>, key_tiles> s{};
  for (int t = 0; t < key_tiles; ++t)
    for (int st = 0; st < k_steps; ++st) {
      Fragments f;
      for (int lane = 0; lane < mma::warp_lanes; ++lane) {
        for (int r = 0; r < 4; ++r) {
          const int at = mma::a_offset(lane, r, 0, st * 16, stride);
          f.a[lane][2 * r] = q[at];
          f.a[lane][2 * r + 1] = q[at + 1];
        }
        for (int r = 0; r < 2; ++r) {
          const int at = mma::b_transposed_offset(lane, r, t * 8, st * 16, stride);
          f.b[lane][2 * r] = k[at];
          f.b[lane][2 * r + 1] = k[at + 1];
        }
      }
      emulate_mma(s[t], f);
    }
  for (int t = 0; t < key_tiles; ++t)
    for (int lane = 0; lane < mma::warp_lanes; ++lane)
      for (int e = 0; e < 4; ++e) {
        const mma::Coord c = mma::c_coord(lane, e);
        float expected = 0;
        for (int d = 0; d < dim; ++d) expected += q[c.row * stride + d] * k[(t * 8 + c.col) * stride + d];
        CHECK(s[t][lane][e] == expected);
      }

  // O = S V with S reused as the A operand (a_from_c), V read as B straight from its rows.
  std::array<std::array<std::array<float, 4>, mma::warp_lanes>, dim_tiles> o{};
  for (int t = 0; t < dim_tiles; ++t)
    for (int st = 0; st < keys / 16; ++st) {
      Fragments f;
      for (int lane = 0; lane < mma::warp_lanes; ++lane) {
        for (int e = 0; e < mma::a_elements; ++e) f.a[lane][e] = s[mma::a_from_c_tile(st, e)][lane][mma::a_from_c_element(e)];
        for (int r = 0; r < 2; ++r)
          for (int h = 0; h < 2; ++h) f.b[lane][2 * r + h] = v[mma::b_offset(lane, r, h, st * 16, t * 8, stride)];
      }
      emulate_mma(o[t], f);
    }
  for (int t = 0; t < dim_tiles; ++t)
    for (int lane = 0; lane < mma::warp_lanes; ++lane)
      for (int e = 0; e < 4; ++e) {
        const mma::Coord c = mma::c_coord(lane, e);
        double expected = 0;
        for (int j = 0; j < keys; ++j) {
          double sj = 0;
          for (int d = 0; d < dim; ++d) sj += double(q[c.row * stride + d]) * k[j * stride + d];
          expected += sj * v[j * stride + t * 8 + c.col];
        }
        CHECK(o[t][lane][e] == doctest::Approx(expected));
      }
}

namespace {

/// The four registers (low, high halves) each lane receives from ldmatrix.x4 when lane l
/// points at the row `rows[l]` of a row-major tile: matrix i is made of the rows lanes
/// 8 i .. 8 i + 7 point at.
using Registers = std::array<std::array<std::pair<int, int>, 4>, mma::warp_lanes>;
Registers emulate_ldmatrix(const std::vector<int>& tile, int stride, const std::array<mma::Coord, 32>& rows, bool trans) {
  Registers out{};
  for (int lane = 0; lane < mma::warp_lanes; ++lane)
    for (int i = 0; i < 4; ++i) {
      const auto element = [&](int r, int c) { return tile[rows[8 * i + r].row * stride + rows[8 * i + r].col + c]; };
      const int a = lane / 4, b = 2 * (lane % 4);
      out[lane][i] = trans ? std::pair{element(b, a), element(b + 1, a)} : std::pair{element(a, b), element(a, b + 1)};
    }
  return out;
}

template <class F>
std::array<mma::Coord, 32> lane_rows(F f) {
  std::array<mma::Coord, 32> rows{};
  for (int lane = 0; lane < mma::warp_lanes; ++lane) rows[lane] = f(lane);
  return rows;
}

}  // namespace

TEST_CASE("mma layout: ldmatrix row addresses give the same fragments as the element offsets") {
  constexpr int stride = 40, tile_rows = 48;
  std::vector<int> tile(tile_rows * stride);
  for (std::size_t i = 0; i < tile.size(); ++i) tile[i] = int(i);
  for (const auto& [r0, c0] : {std::pair{0, 0}, std::pair{16, 8}, std::pair{32, 16}}) {
    CAPTURE(r0);
    CAPTURE(c0);
    const Registers a = emulate_ldmatrix(tile, stride, lane_rows([&](int l) { return mma::ldmatrix_a_row(l, r0, c0); }), false);
    const Registers bt =
        emulate_ldmatrix(tile, stride, lane_rows([&](int l) { return mma::ldmatrix_b_transposed_row(l, r0, c0); }), false);
    const Registers b = emulate_ldmatrix(tile, stride, lane_rows([&](int l) { return mma::ldmatrix_b_row(l, r0, c0); }), true);
    const Registers a_transposed =
        emulate_ldmatrix(tile, stride, lane_rows([&](int l) { return mma::ldmatrix_a_transposed_row(l, c0, r0); }), true);
    for (int lane = 0; lane < mma::warp_lanes; ++lane) {
      for (int r = 0; r < 4; ++r) {
        const int at = mma::a_offset(lane, r, r0, c0, stride);
        CHECK(a[lane][r] == std::pair{tile[at], tile[at + 1]});
        // A = tile^T: its block at (c0, r0) reads tile rows r0 .. and columns c0 ..
        CHECK(a_transposed[lane][r] == std::pair{tile[mma::a_transposed_offset(lane, r, 0, c0, r0, stride)],
                                        tile[mma::a_transposed_offset(lane, r, 1, c0, r0, stride)]});
      }
      for (int pair = 0; pair < 2; ++pair)
        for (int r = 0; r < 2; ++r) {
          const int at = mma::b_transposed_offset(lane, r, r0 + 8 * pair, c0, stride);
          CHECK(bt[lane][2 * pair + r] == std::pair{tile[at], tile[at + 1]});
          CHECK(b[lane][2 * pair + r] == std::pair{tile[mma::b_offset(lane, r, 0, r0, c0 + 8 * pair, stride)],
                                                   tile[mma::b_offset(lane, r, 1, r0, c0 + 8 * pair, stride)]});
        }
    }
  }
}

TEST_CASE("mma layout: a lane's ldmatrix row moves with the fragment's origin and nothing else") {
  // The attention kernels form a fragment's address as the lane's row for the origin (0, 0)
  // plus the origin's offset (flash_attention_mma.cuh, load_a and the others), which holds
  // only while every layout is the lane's part plus the origin.
  for (int lane = 0; lane < mma::warp_lanes; ++lane)
    for (int r0 = 0; r0 <= 112; r0 += 16)
      for (int c0 = 0; c0 <= 112; c0 += 8) {
        const auto shifted = [&](mma::Coord c, int rows, int cols) { return mma::Coord{c.row + rows, c.col + cols}; };
        const auto same = [](mma::Coord x, mma::Coord y) { return x.row == y.row && x.col == y.col; };
        CHECK(same(mma::ldmatrix_a_row(lane, r0, c0), shifted(mma::ldmatrix_a_row(lane, 0, 0), r0, c0)));
        CHECK(same(mma::ldmatrix_b_transposed_row(lane, r0, c0), shifted(mma::ldmatrix_b_transposed_row(lane, 0, 0), r0, c0)));
        CHECK(same(mma::ldmatrix_b_row(lane, r0, c0), shifted(mma::ldmatrix_b_row(lane, 0, 0), r0, c0)));
        // A = tile^T: A's row origin is a tile column, its k origin a tile row.
        CHECK(same(mma::ldmatrix_a_transposed_row(lane, r0, c0), shifted(mma::ldmatrix_a_transposed_row(lane, r0, 0), c0, 0)));
      }
}

}  // namespace test_mma_layout
