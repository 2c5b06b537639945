// The host side of the embedding backward, without a GPU: the counting sort of the ids
// (shared by the CPU and CUDA paths) and the work plan the CUDA kernels follow (items of at
// most `chunk` occurrences, heavy rows summed from partial rows, the padding row and
// untouched rows left out). A reference executor applies a plan the way the kernels do and
// must match the CPU scatter-add.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/condense.hpp"
#include "test_util.hpp"

namespace test_embedding_grad_plan {

using namespace condense;

namespace {

using Ints = std::vector<std::int64_t>;

/// What the CUDA kernels compute from a plan: zeroed rows, then each item's in-order sum
/// into its row or partial row, then each heavy row's in-order sum of its partial rows.
std::vector<double> apply_plan(const detail::EmbeddingGradPlan& plan, const std::vector<double>& g, std::int64_t rows,
                               std::int64_t d) {
  std::vector<double> out(static_cast<std::size_t>(rows * d), 0.0);
  std::vector<double> partials(static_cast<std::size_t>(plan.partial_rows * d), 0.0);
  const std::int64_t* order = plan.data.data();
  const std::int64_t* items = order + plan.positions;
  const std::int64_t* heavy = items + 3 * plan.items;
  for (std::int64_t i = 0; i < plan.items; ++i) {
    const std::int64_t destination = items[3 * i], begin = items[3 * i + 1], end = items[3 * i + 2];
    double* dst = destination >= 0 ? &out[static_cast<std::size_t>(destination * d)]
                                   : &partials[static_cast<std::size_t>((-1 - destination) * d)];
    for (std::int64_t j = 0; j < d; ++j) {
      double acc = 0;
      for (std::int64_t k = begin; k < end; ++k) acc += g[static_cast<std::size_t>(order[k] * d + j)];
      dst[j] = acc;
    }
  }
  for (std::int64_t h = 0; h < plan.heavy_rows; ++h) {
    const std::int64_t row = heavy[3 * h], first = heavy[3 * h + 1], count = heavy[3 * h + 2];
    for (std::int64_t j = 0; j < d; ++j) {
      double acc = 0;
      for (std::int64_t p = first; p < first + count; ++p) acc += partials[static_cast<std::size_t>(p * d + j)];
      out[static_cast<std::size_t>(row * d + j)] = acc;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("embedding ids bucket by id, stably") {
  const std::vector<std::int32_t> ids = {3, 0, 3, 1, 3, 0};
  const auto b = detail::bucket_embedding_ids(ids.data(), 6, 5);
  CHECK(b.start == Ints{0, 2, 3, 3, 6, 6});
  CHECK(b.order == Ints{1, 5, 3, 0, 2, 4});
  const auto empty = detail::bucket_embedding_ids(static_cast<const std::int64_t*>(nullptr), 0, 3);
  CHECK(empty.start == Ints{0, 0, 0, 0});
  CHECK(empty.order.empty());
}

TEST_CASE("embedding grad plan: items per hit row, heavy rows in chunks, padding and untouched rows left out") {
  // Row 0: 1 hit, row 1: none, row 2: 5 hits (heavy with chunk 2), row 3: 2 hits, row 4: 3 hits (padding).
  const std::vector<std::int64_t> ids = {2, 0, 2, 4, 3, 2, 4, 2, 3, 4, 2};
  const auto plan = detail::embedding_grad_plan(detail::bucket_embedding_ids(ids.data(), 11, 5), 4, 2);
  CHECK(plan.positions == 11);
  CHECK(plan.items == 5);  // row 0, three chunks of row 2, row 3
  CHECK(plan.heavy_rows == 1);
  CHECK(plan.partial_rows == 3);
  const Ints order(plan.data.begin(), plan.data.begin() + 11);
  CHECK(order == Ints{1, 0, 2, 5, 7, 10, 4, 8, 3, 6, 9});
  const Ints items(plan.data.begin() + 11, plan.data.begin() + 11 + 15);
  CHECK(items == Ints{0, 0, 1, /**/ -1, 1, 3, /**/ -2, 3, 5, /**/ -3, 5, 6, /**/ 3, 6, 8});
  const Ints heavy(plan.data.begin() + 26, plan.data.end());
  CHECK(heavy == Ints{2, 0, 3});
  // Without padding, row 4 (3 hits) is heavy too; its partial rows follow row 2's.
  const auto unpadded = detail::embedding_grad_plan(detail::bucket_embedding_ids(ids.data(), 11, 5), -1, 2);
  CHECK(unpadded.items == 7);
  CHECK(unpadded.heavy_rows == 2);
  CHECK(unpadded.partial_rows == 5);
  CHECK(Ints(unpadded.data.end() - 6, unpadded.data.end()) == Ints{2, 0, 3, 4, 3, 2});
  // No ids: an empty plan.
  const auto none = detail::embedding_grad_plan(detail::bucket_embedding_ids(ids.data(), 0, 5), -1, 2);
  CHECK(none.data.empty());
  CHECK(none.items == 0);
  CHECK_THROWS_WITH_AS(detail::embedding_grad_plan(detail::bucket_embedding_ids(ids.data(), 0, 5), -1, 0),
                       doctest::Contains("chunk must be positive"), Error);
}

TEST_CASE("embedding grad plan applied as the kernels do matches the CPU scatter-add") {
  Generator gen(5);
  for (std::int64_t chunk : {1, 3, 32}) {
    for (std::int64_t skip : {-1, 0, 4}) {
      const std::int64_t rows = 9, d = 3, n = 200;
      // Skewed ids: row 4 is hit about half the time.
      std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
      for (auto& id : ids) id = gen.below(2) == 0 ? 4 : static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(rows)));
      const Tensor<double> g = randn<double>({n, d}, gen);
      std::vector<double> expected(static_cast<std::size_t>(rows * d));
      detail::embedding_scatter_add(g.data(), ids.data(), n, rows, d, skip, expected.data());
      const auto plan = detail::embedding_grad_plan(detail::bucket_embedding_ids(ids.data(), n, rows), skip, chunk);
      const std::vector<double> got = apply_plan(plan, g.to_vector(), rows, d);
      CAPTURE(chunk);
      CAPTURE(skip);
      REQUIRE(got.size() == expected.size());
      for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-12));
    }
  }
}

}  // namespace test_embedding_grad_plan
