// embedding: gathered values for int32/int64 ids of several shapes, the scatter-add
// backward (repeated ids, padding_idx, many rows over threads) against a plain loop,
// gradchecks (repeated ids, non-contiguous table) and argument errors.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/embedding.hpp"
#include "test_util.hpp"

namespace test_embedding {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;
using condense::testing::values;

TEST_CASE("embedding gathers rows") {
  auto w = arange<float>(12).reshape({4, 3});  // row v = (3v, 3v+1, 3v+2)
  auto ids = tensor<std::int64_t>({1, 0, 3, 1}, {2, 2});
  auto out = embedding(w, ids);
  CHECK(out.shape() == Shape{2, 2, 3});
  CHECK(values(out) == std::vector<double>{3, 4, 5, 0, 1, 2, 9, 10, 11, 3, 4, 5});
  auto ids32 = tensor<std::int32_t>({2, 2, 0});
  CHECK(values(embedding(w, ids32)) == std::vector<double>{6, 7, 8, 6, 7, 8, 0, 1, 2});
  // A scalar id gives one row; an empty id list an empty [0, D] result.
  auto one = embedding(w, scalar_tensor<std::int64_t>(3));
  CHECK(one.shape() == Shape{3});
  CHECK(values(one) == std::vector<double>{9, 10, 11});
  CHECK(embedding(w, zeros<std::int64_t>({0})).shape() == Shape{0, 3});
  // Non-contiguous table and ids.
  auto wt = arange<double>(12).reshape({3, 4}).transpose(0, 1);  // (4x3): row v = (v, v+4, v+8)
  auto idt = tensor<std::int32_t>({0, 1, 2, 3}, {2, 2}).transpose(0, 1);  // (0, 2), (1, 3)
  CHECK(values(embedding(wt, idt)) == std::vector<double>{0, 4, 8, 2, 6, 10, 1, 5, 9, 3, 7, 11});
  // Integer tables gather too (no gradient).
  auto wi = tensor<std::int32_t>({1, 2, 3, 4}, {2, 2});
  CHECK(values(embedding(wi, tensor<std::int64_t>({1, 1}))) == std::vector<double>{3, 4, 3, 4});
}

TEST_CASE("embedding backward scatter-adds repeated ids") {
  auto w = zeros<double>({5, 2}).requires_grad_();
  auto ids = tensor<std::int64_t>({4, 1, 4, 4, 0}, {5});
  auto out = embedding(w, ids);
  CHECK(out.grad_fn_name() == "embedding");
  auto g = arange<double>(10).reshape({5, 2});  // row n = (2n, 2n+1)
  out.backward(g);
  // row 4 <- rows 0, 2, 3 of g; row 1 <- row 1; row 0 <- row 4; rows 2, 3 untouched.
  CHECK(values(w.grad()) == std::vector<double>{8, 9, 2, 3, 0, 0, 0, 0, 0 + 4 + 6, 1 + 5 + 7});
}

TEST_CASE("embedding backward: padding_idx receives no gradient") {
  auto w = ones<double>({4, 3}).requires_grad_();
  auto ids = tensor<std::int32_t>({0, 2, 2, 3, 0});
  auto out = embedding(w, ids, 2);
  CHECK(values(out.select(0, 1)) == std::vector<double>{1, 1, 1});  // forward still returns the stored row
  sum(out).backward();
  CHECK(values(w.grad()) == std::vector<double>{2, 2, 2, 0, 0, 0, 0, 0, 0, 1, 1, 1});
  auto w2 = ones<double>({4, 3}).requires_grad_();
  sum(embedding(w2, ids, -1)).backward();  // -1 is row 3
  CHECK(values(w2.grad()) == std::vector<double>{2, 2, 2, 0, 0, 0, 2, 2, 2, 0, 0, 0});
}

TEST_CASE("embedding backward over many rows matches a plain loop") {
  Generator gen(21);
  const std::int64_t v = 1000, d = 48, n = 6000;
  auto w = randn<float>({v, d}, gen).requires_grad_();
  auto ids = randint<std::int64_t>({3, n / 3}, 0, v, gen);
  auto out = embedding(w, ids);
  auto g = randn<float>(out.shape(), gen);
  out.backward(g);
  std::vector<double> expect(static_cast<std::size_t>(v * d), 0.0);
  const auto idv = ids.to_vector();
  const auto gv = values(g);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) expect[static_cast<std::size_t>(idv[static_cast<std::size_t>(i)] * d + j)] += gv[static_cast<std::size_t>(i * d + j)];
  const auto got = values(w.grad());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expect[i]));
  CHECK(worst < 1e-4);
  // Forward rows are exact copies.
  const auto wv = values(w), ov = values(out);
  bool same = true;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) same &= ov[static_cast<std::size_t>(i * d + j)] == wv[static_cast<std::size_t>(idv[static_cast<std::size_t>(i)] * d + j)];
  CHECK(same);
}

TEST_CASE("gradcheck: embedding") {
  Generator gen(22);
  auto w = randn<double>({6, 4}, gen);
  auto ids = tensor<std::int64_t>({5, 0, 5, 2, 5, 0}, {2, 3});
  CHECK_GRADCHECK([ids](const GradInputs& t) { return embedding(t[0], ids); }, {w});
  auto ids32 = tensor<std::int32_t>({1, 1, 1, 3});
  CHECK_GRADCHECK([ids32](const GradInputs& t) { return embedding(t[0], ids32); }, {w});
  auto wt = randn<double>({4, 6}, gen).transpose(0, 1);
  REQUIRE(!wt.is_contiguous());
  CHECK_GRADCHECK([ids](const GradInputs& t) { return embedding(t[0], ids) * 2.0; }, {wt});
}

TEST_CASE("embedding: argument errors") {
  auto w = zeros<float>({50, 8});
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({3, 57, 60})),
                       "[embedding] id 57 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int32_t>({-1})),
                       "[embedding] id -1 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({50}, {1, 1})),
                       "[embedding] id 50 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(zeros<float>({8}), tensor<std::int64_t>({0})),
                       "[embedding] weight must be a 2-D table [V, D], got shape (8)", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({0}), 50),
                       "[embedding] padding_idx 50 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({0}), -51),
                       "[embedding] padding_idx -51 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, Tensor<std::int64_t>()), "[embedding] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(embedding(zeros<float>({0, 4}), tensor<std::int64_t>({0})),
                       "[embedding] id 0 out of range for a table of 0 rows (weight (0x4))", Error);
}

}  // namespace test_embedding
