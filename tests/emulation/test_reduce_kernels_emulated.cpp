// The CUDA reduction kernels (kernels/detail/reduce_kernels.cuh) run on the CPU through
// tests/emulation/cuda_emulation.hpp, each path picked by plan_reduce exactly as
// cuda::reduce launches it, against a sequential reduction: chunks of few long rows
// combined by a second pass (a whole-tensor sum), one block per row, one thread per row,
// and column tiles with interleaved slices (a bias gradient over strided rows); sum, mean,
// max and min, floats bit for bit on whole numbers, NaN winning max and min, and wrapping
// int64 sums.
#define CONDENSE_CUDA_EMULATION 1
#include "emulation/cuda_emulation.hpp"
// The emulation header must come first: the kernels see its threadIdx, __syncthreads, ...
#include "detail/reduce_kernels.cuh"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace test_reduce_kernels_emulated {

using namespace condense;
namespace rd = condense::cuda::reduce_detail;
namespace emu = condense_cuda_emulation;

namespace {

/// A strided view of `data`: sizes and strides in elements.
template <class T>
cuda::StridedArg view(std::vector<T>& data, std::vector<std::int64_t> sizes, std::vector<std::int64_t> strides) {
  cuda::StridedArg a;
  a.data = data.data();
  a.dtype = dtype_of<T>;
  a.ndim = static_cast<int>(sizes.size());
  for (int d = 0; d < a.ndim; ++d) {
    a.sizes[d] = sizes[static_cast<std::size_t>(d)];
    a.strides[d] = strides[static_cast<std::size_t>(d)];
  }
  return a;
}

/// Runs the reduction of the trailing `reduced_dims` dims of `in` in emulation, as
/// cuda::reduce does (float accumulators for float, int64 for int64); returns the outputs
/// and the path taken.
template <class T, class Acc>
std::pair<std::vector<T>, rd::ReducePath> reduce(const cuda::StridedArg& in, int reduced_dims, Acc acc) {
  using A = cuda::detail::compute_t<T>;
  const rd::ReducePlan plan = rd::plan_reduce(in, reduced_dims);
  std::vector<T> out(static_cast<std::size_t>(plan.rows));
  std::vector<A> partial(static_cast<std::size_t>(plan.splits * plan.rows));
  const T* x = static_cast<const T*>(in.data);
  switch (plan.path) {
    case rd::ReducePath::Columns:
      emu::launch(rd::column_grid(plan), rd::column_block(), 0, rd::reduce_columns<T, A, Acc>, out.data(),
                  plan.splits == 1 ? static_cast<A*>(nullptr) : partial.data(), x, plan.layout, plan.rows, plan.cols, plan.splits,
                  acc);
      if (plan.splits > 1)
        emu::launch(dim3(cuda::detail::grid_for(plan.rows, rd::reduce_threads)), dim3(rd::reduce_threads), 0,
                    rd::combine_column_partials<T, A, Acc>, out.data(), static_cast<const A*>(partial.data()), plan.rows, plan.cols,
                    plan.splits, acc);
      break;
    case rd::ReducePath::RowChunks:
      emu::launch(dim3(static_cast<unsigned>(plan.rows), static_cast<unsigned>(plan.splits)), dim3(rd::reduce_threads), 0,
                  rd::reduce_row_chunks<T, A, Acc>, partial.data(), x, plan.layout, plan.cols, plan.chunk, acc);
      emu::launch(dim3(static_cast<unsigned>(plan.rows)), dim3(rd::reduce_threads), 0, rd::combine_row_partials<T, A, Acc>,
                  out.data(), static_cast<const A*>(partial.data()), plan.rows, plan.cols, plan.splits, acc);
      break;
    case rd::ReducePath::BlockPerRow:
      emu::launch(dim3(rd::block_per_row_blocks(plan.rows)), dim3(rd::reduce_threads), 0, rd::reduce_block_per_row<T, A, Acc>,
                  out.data(), x, plan.layout, plan.rows, plan.cols, acc);
      break;
    case rd::ReducePath::ThreadPerRow:
      emu::launch(dim3(cuda::detail::grid_for(plan.rows, 128)), dim3(128), 0, rd::reduce_thread_per_row<T, A, Acc>,
                  out.data(), x, plan.layout, plan.rows, plan.cols, acc);
      break;
  }
  return {out, plan.path};
}

/// Sequential reduction of the same view: row r over the reduced positions in row-major order.
template <class T>
std::vector<T> reference(const cuda::StridedArg& in, int reduced_dims, cuda::ReduceOp op) {
  const int kept = in.ndim - reduced_dims;
  std::int64_t rows = 1, cols = 1;
  for (int d = 0; d < kept; ++d) rows *= in.sizes[d];
  for (int d = kept; d < in.ndim; ++d) cols *= in.sizes[d];
  const T* x = static_cast<const T*>(in.data);
  const auto offset = [&](std::int64_t i, int first, int last) {
    std::int64_t off = 0;
    for (int d = last; d-- > first;) {
      off += (i % in.sizes[d]) * in.strides[d];
      i /= in.sizes[d];
    }
    return off;
  };
  std::vector<T> out(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* base = x + offset(r, 0, kept);
    T acc = op == cuda::ReduceOp::Max ? std::numeric_limits<T>::lowest() : op == cuda::ReduceOp::Min ? std::numeric_limits<T>::max() : T(0);
    for (std::int64_t c = 0; c < cols; ++c) {
      const T v = base[offset(c, kept, in.ndim)];
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(acc)) continue;
        if (op == cuda::ReduceOp::Max) acc = std::isnan(v) || v > acc ? v : acc;
        else if (op == cuda::ReduceOp::Min) acc = std::isnan(v) || v < acc ? v : acc;
        else acc += v;
      } else {
        acc = static_cast<T>(static_cast<std::uint64_t>(acc) + static_cast<std::uint64_t>(v));
      }
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (op == cuda::ReduceOp::Mean) acc /= static_cast<T>(cols);
    }
    out[static_cast<std::size_t>(r)] = acc;
  }
  return out;
}

const char* path_name(rd::ReducePath p) {
  switch (p) {
    case rd::ReducePath::Columns: return "columns";
    case rd::ReducePath::RowChunks: return "row chunks";
    case rd::ReducePath::BlockPerRow: return "block per row";
    case rd::ReducePath::ThreadPerRow: return "thread per row";
  }
  return "?";
}

}  // namespace

TEST_CASE("emulated reduction kernels: every path equals a sequential reduction, bit for bit on whole numbers") {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-20, 20);
  struct Shape {
    std::vector<std::int64_t> sizes, strides;
    int reduced;
    rd::ReducePath path;
  };
  // Each view is over a buffer of 300000 elements.
  const std::vector<Shape> shapes = {
      {{100000}, {1}, 1, rd::ReducePath::RowChunks},                  // a whole-tensor sum
      {{3, 50000}, {50000, 1}, 1, rd::ReducePath::RowChunks},         // few long rows
      {{300, 100}, {100, 1}, 1, rd::ReducePath::BlockPerRow},         // many rows
      {{1000, 10}, {10, 1}, 1, rd::ReducePath::ThreadPerRow},         // short rows
      {{48, 5000}, {1, 48}, 1, rd::ReducePath::Columns},              // a bias gradient [5000, 48] -> [48]
      {{40, 4, 300}, {1, 40 * 300, 40}, 2, rd::ReducePath::Columns},  // two reduced dims, strided
      {{20, 3, 90}, {3 * 90 * 2, 90 * 2, 2}, 2, rd::ReducePath::BlockPerRow},  // every other element
  };
  std::vector<float> xf(300000);
  for (auto& v : xf) v = static_cast<float>(small(rng));
  std::vector<std::int64_t> xi(xf.size());
  for (auto& v : xi) v = std::numeric_limits<std::int64_t>::max() / 7 + small(rng);
  for (const auto& s : shapes) {
    const auto in = view(xf, s.sizes, s.strides);
    const auto plan = rd::plan_reduce(in, s.reduced);
    CAPTURE(path_name(plan.path));
    CAPTURE(plan.splits);
    CHECK(plan.path == s.path);
    for (const auto op : {cuda::ReduceOp::Sum, cuda::ReduceOp::Max, cuda::ReduceOp::Min}) {
      CAPTURE(static_cast<int>(op));
      CHECK(reduce<float>(in, s.reduced, rd::Accumulate<float>{op}).first == reference<float>(in, s.reduced, op));
    }
    const auto ini = view(xi, s.sizes, s.strides);
    CHECK(reduce<std::int64_t>(ini, s.reduced, rd::IntAccumulate<std::int64_t>{cuda::ReduceOp::Sum}).first ==
          reference<std::int64_t>(ini, s.reduced, cuda::ReduceOp::Sum));
  }
}

TEST_CASE("emulated reduction kernels: means, NaNs and random floats") {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(200000);
  for (auto& v : x) v = normal(rng);
  for (const auto& [sizes, strides] : std::vector<std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>>>{
           {{200000}, {1}}, {{64, 3000}, {1, 64}}, {{500, 400}, {400, 1}}}) {
    const auto in = view(x, sizes, strides);
    const auto got = reduce<float>(in, 1, rd::Accumulate<float>{cuda::ReduceOp::Mean}).first;
    const auto expected = reference<float>(in, 1, cuda::ReduceOp::Mean);
    for (std::size_t r = 0; r < got.size(); ++r) CHECK(got[r] == doctest::Approx(expected[r]).epsilon(1e-4).scale(1e-3));
  }
  x[123456] = std::nanf("");
  const auto whole = view(x, {200000}, {1});
  CHECK(std::isnan(reduce<float>(whole, 1, rd::Accumulate<float>{cuda::ReduceOp::Max}).first[0]));
  CHECK(std::isnan(reduce<float>(whole, 1, rd::Accumulate<float>{cuda::ReduceOp::Min}).first[0]));
}

}  // namespace test_reduce_kernels_emulated
