// matmul, bmm and linear: values against a plain double-precision triple loop for every rank
// combination, transposed / strided / expanded inputs, broadcast batch dims, the folded and
// batch-parallel kernel paths, gradchecks, error messages and size-0 dims.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/ops/matmul.hpp"
#include "test_util.hpp"

namespace test_matmul {

using namespace condense;
using condense::testing::GradInputs;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

/// PyTorch matmul semantics written out as index arithmetic and a triple loop in double.
Tensor<double> ref_matmul(const Tensor<double>& a, const Tensor<double>& b) {
  std::vector<std::int64_t> sa = a.shape().vec(), sb = b.shape().vec();
  const bool a_vec = sa.size() == 1, b_vec = sb.size() == 1;
  if (a_vec) sa.insert(sa.begin(), 1);
  if (b_vec) sb.push_back(1);
  const std::int64_t M = sa[sa.size() - 2], K = sa.back(), N = sb.back();
  REQUIRE(sb[sb.size() - 2] == K);
  const std::size_t ra = sa.size() - 2, rb = sb.size() - 2, rank = std::max(ra, rb);
  std::vector<std::int64_t> ea(rank, 1), eb(rank, 1), batch(rank, 1);
  for (std::size_t i = 0; i < ra; ++i) ea[rank - ra + i] = sa[i];
  for (std::size_t i = 0; i < rb; ++i) eb[rank - rb + i] = sb[i];
  std::int64_t count = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    REQUIRE((ea[i] == eb[i] || ea[i] == 1 || eb[i] == 1));
    batch[i] = std::max(ea[i], eb[i]);
    if (ea[i] == 0 || eb[i] == 0) batch[i] = 0;
    count *= batch[i];
  }
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out(static_cast<std::size_t>(count * M * N), 0.0);
  for (std::int64_t flat = 0; flat < count; ++flat) {
    std::int64_t rem = flat, ia = 0, ib = 0, ma = 1, mb = 1;
    for (std::size_t d = rank; d-- > 0;) {
      const std::int64_t i = rem % batch[d];
      rem /= batch[d];
      ia += (ea[d] == 1 ? 0 : i) * ma;
      ib += (eb[d] == 1 ? 0 : i) * mb;
      ma *= ea[d];
      mb *= eb[d];
    }
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n) {
        double acc = 0.0;
        for (std::int64_t k = 0; k < K; ++k)
          acc += va[static_cast<std::size_t>((ia * M + m) * K + k)] * vb[static_cast<std::size_t>((ib * K + k) * N + n)];
        out[static_cast<std::size_t>((flat * M + m) * N + n)] = acc;
      }
  }
  Shape shape(batch);
  if (!a_vec) shape.push_back(M);
  if (!b_vec) shape.push_back(N);
  return from_vector<double>(out, shape);
}

/// Checks matmul(a, b) against the reference, in float and double.
void check_matmul(const Tensor<double>& a, const Tensor<double>& b) {
  INFO("a ", a.shape(), " strides ", a.strides(), ", b ", b.shape(), " strides ", b.strides());
  const Tensor<double> expected = ref_matmul(a, b);
  const Tensor<double> got = matmul(a, b);
  REQUIRE(got.shape() == expected.shape());
  CHECK(max_abs_diff(got, expected) < 1e-10);
  const Tensor<float> got_f = matmul(a.cast<float>(), b.cast<float>());
  CHECK(max_abs_diff(got_f.cast<double>(), expected) < 1e-4 * (1.0 + static_cast<double>(a.size(-1))));
}

/// A tensor with `shape` whose last two dims are a transposed (column-major) view.
Tensor<double> col_major(const Shape& shape, Generator& gen) {
  Shape swapped = shape;
  std::swap(swapped[shape.size() - 1], swapped[shape.size() - 2]);
  return randn<double>(swapped, gen).transpose(-1, -2);
}

}  // namespace

TEST_CASE("matmul values for every rank combination") {
  Generator gen(11);
  const auto r = [&](const Shape& s) { return randn<double>(s, gen); };
  check_matmul(r({5}), r({5}));                      // dot
  check_matmul(r({4}), r({4, 3}));                   // vector @ matrix
  check_matmul(r({3, 4}), r({4}));                   // matrix @ vector
  check_matmul(r({3, 4}), r({4, 5}));                // matrix @ matrix
  check_matmul(r({4}), r({2, 4, 3}));                // vector @ batched
  check_matmul(r({2, 3, 4}), r({4}));                // batched @ vector
  check_matmul(r({3, 4}), r({2, 4, 5}));             // [T,D] @ [B,D,S]
  check_matmul(r({2, 3, 4}), r({4, 5}));             // [B,T,D] @ [D,S]
  check_matmul(r({2, 3, 4}), r({2, 4, 5}));          // batched
  check_matmul(r({2, 3, 3, 4}), r({2, 1, 4, 5}));    // [B,H,T,D] @ [B,1,D,S]
  check_matmul(r({2, 1, 3, 4}), r({5, 4, 2}));       // both sides broadcast
  check_matmul(r({1, 3, 4}), r({2, 3, 4, 6}));       // leading unit batch dim
  check_matmul(r({4}), r({2, 3, 4, 2}));
  check_matmul(r({2, 2, 3, 4}), r({4}));
  check_matmul(r({1, 1}), r({1, 1}));
  check_matmul(r({1, 7}), r({7, 1}));
  // large enough for Eigen's blocked GEMM (and its threads), and for the batch-parallel path
  check_matmul(r({70, 90}), r({90, 60}));
  check_matmul(r({8, 40, 30}), r({8, 30, 20}));
  check_matmul(r({3, 80, 64}), r({3, 64, 72}));
  check_matmul(r({6, 1, 17, 9}), r({6, 9, 13}));
  check_matmul(r({4, 40, 24}), r({24, 16}));         // shared b, rows >= 32: one GEMM per entry
  check_matmul(r({3, 2, 5, 24}), r({24, 16}));       // shared b, few rows: folded into one GEMM
  // integers take the same kernel, exactly
  auto ia = tensor<std::int32_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto ib = tensor<std::int32_t>({1, 0, -1, 2, 3, 1}, {3, 2});
  CHECK(values(matmul(ia, ib)) == std::vector<double>{8, 7, 17, 16});
  auto la = tensor<std::int64_t>({1, 2, 3});
  CHECK(matmul(la, la).item() == 14);
  CHECK(matmul(la, la).shape() == Shape{});
  Generator igen(21);
  auto ja = randint<std::int64_t>({3, 4, 5}, -9, 10, igen), jb = randint<std::int64_t>({6, 5}, -9, 10, igen);
  CHECK(values(matmul(ja, jb.transpose(0, 1))) ==
        values(ref_matmul(ja.cast<double>(), jb.cast<double>().transpose(0, 1).contiguous())));
}

TEST_CASE("cpu::gemm on every operand layout") {
  // row-major, column-major and (fallback loop) doubly-strided operands, with accumulation
  Generator gen(18);
  const auto base_a = randn<double>({6, 14}, gen), base_b = randn<double>({14, 10}, gen);
  const auto a = base_a.slice(1, 0, 14, 2), b = base_b.slice(0, 0, 14, 2);  // [6, 7] and [7, 10]
  const auto expected = ref_matmul(a.contiguous(), b.contiguous());
  const std::vector<Tensor<double>> as = {a.contiguous(), a.transpose(0, 1).contiguous().transpose(0, 1), a};
  const std::vector<Tensor<double>> bs = {b.contiguous(), b.transpose(0, 1).contiguous().transpose(0, 1), b};
  for (const auto& x : as) {
    for (const auto& y : bs) {
      for (bool col_major_out : {false, true}) {
        Tensor<double> c = col_major_out ? zeros<double>({10, 6}).transpose(0, 1) : zeros<double>({6, 10});
        const cpu::MatrixRef<const double> ma = detail::trailing_matrix(x), mb = detail::trailing_matrix(y);
        cpu::gemm(ma, mb, detail::trailing_matrix(c), false);
        CHECK(max_abs_diff(c, expected) < 1e-12);
        cpu::gemm(ma, mb, detail::trailing_matrix(c), true);
        CHECK(max_abs_diff(c, expected * 2.0) < 1e-12);
      }
    }
  }
  CHECK(!cpu::gemm_compatible(detail::trailing_matrix(a)));
  CHECK(cpu::gemm_compatible(detail::trailing_matrix(a.transpose(0, 1).contiguous().transpose(0, 1))));
  CHECK(!cpu::gemm_compatible(detail::trailing_matrix(randn<double>({1, 4}, gen).expand({3, 4}))));
}

TEST_CASE("cpu::gemm in float across the packed GEMM's blocks, on every operand layout") {
  // Extents around the register block (6 x 16) and past the packed blocks (72 rows, 512 inner
  // steps, 3072 columns), so edge blocks, several inner passes and several column blocks
  // occur; operands row-major, column-major, doubly strided and broadcast (stride 0); the
  // result in float against the double loop, relative to the size of the inner sum.
  Generator gen(19);
  struct Extents {
    std::int64_t m, k, n;
  };
  for (const Extents e : {Extents{1, 1, 1}, Extents{7, 5, 17}, Extents{73, 513, 33}, Extents{150, 40, 3090}}) {
    CAPTURE(e.m);
    CAPTURE(e.k);
    CAPTURE(e.n);
    const auto a = randn<float>({e.m, 2 * e.k}, gen).slice(1, 0, 2 * e.k, 2);  // doubly strided [m, k]
    const auto b = randn<float>({e.k, e.n}, gen);
    const auto row = randn<float>({1, e.n}, gen).expand({e.k, e.n});  // every row the same: stride 0
    const auto expected = ref_matmul(a.cast<double>().contiguous(), b.cast<double>());
    const double tol = 2e-6 * static_cast<double>(e.k) + 1e-5;
    for (const auto& x : {a, a.contiguous(), a.transpose(0, 1).contiguous().transpose(0, 1)}) {
      for (const auto& y : {b, b.transpose(0, 1).contiguous().transpose(0, 1)}) {
        for (bool col_major_out : {false, true}) {
          CAPTURE(col_major_out);
          Tensor<float> c = col_major_out ? zeros<float>({e.n, e.m}).transpose(0, 1) : zeros<float>({e.m, e.n});
          cpu::gemm<float>(detail::trailing_matrix(x), detail::trailing_matrix(y), detail::trailing_matrix(c), false);
          CHECK(max_abs_diff(c.cast<double>(), expected) <= tol);
          cpu::gemm<float>(detail::trailing_matrix(x), detail::trailing_matrix(y), detail::trailing_matrix(c), true);
          CHECK(max_abs_diff(c.cast<double>(), expected * 2.0) <= 2 * tol);
        }
      }
    }
    Tensor<float> c = zeros<float>({e.m, e.n});
    cpu::gemm<float>(detail::trailing_matrix(a), detail::trailing_matrix(row), detail::trailing_matrix(c), false);
    CHECK(max_abs_diff(c.cast<double>(), ref_matmul(a.cast<double>().contiguous(), row.cast<double>().contiguous())) <= tol);
  }
}

TEST_CASE("matmul hand-computed values") {
  auto a = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = tensor<float>({7, 8, 9, 10, 11, 12}, {3, 2});
  CHECK(values(matmul(a, b)) == std::vector<double>{58, 64, 139, 154});
  CHECK(values(matmul(tensor<float>({1, 1}), a)) == std::vector<double>{5, 7, 9});
  CHECK(values(matmul(a, tensor<float>({1, 0, -1}))) == std::vector<double>{-2, -2});
  CHECK(matmul(tensor<float>({1, 2, 3}), tensor<float>({4, 5, 6})).item() == 32.0f);
}

TEST_CASE("matmul on transposed, strided and expanded inputs") {
  Generator gen(12);
  // column-major operands go to Eigen as they are
  check_matmul(col_major({5, 7}, gen), randn<double>({7, 3}, gen));
  check_matmul(randn<double>({5, 7}, gen), col_major({7, 3}, gen));
  check_matmul(col_major({40, 50}, gen), col_major({50, 30}, gen));
  check_matmul(col_major({3, 5, 7}, gen), col_major({7, 4}, gen));
  check_matmul(col_major({4, 6}, gen), col_major({3, 6, 5}, gen));
  // rows with a gap (a narrow of the last dim) keep their leading dimension
  check_matmul(randn<double>({6, 10}, gen).narrow(1, 2, 5), randn<double>({5, 4}, gen));
  // strides in both matrix dims: copied first
  check_matmul(randn<double>({6, 10}, gen).slice(1, 0, 10, 2), randn<double>({10, 5}, gen).slice(0, 0, 10, 2));
  check_matmul(randn<double>({8}, gen).slice(0, 0, 8, 2), randn<double>({4, 9}, gen).slice(1, 0, 9, 3));
  // batch dims permuted in front of the matrix (no fold possible), and a batch-dim slice
  check_matmul(randn<double>({5, 3, 4}, gen).permute({1, 0, 2}), randn<double>({4, 6}, gen));
  check_matmul(randn<double>({6, 5, 4}, gen).slice(0, 0, 6, 2), randn<double>({3, 4, 2}, gen));
  check_matmul(randn<double>({2, 3, 4, 5}, gen).permute({2, 0, 1, 3}), randn<double>({2, 5, 2}, gen));
  // broadcast (stride-0) operands, in the batch dims and inside the matrix
  check_matmul(randn<double>({1, 3, 4}, gen).expand({5, 3, 4}), randn<double>({5, 4, 2}, gen));
  check_matmul(randn<double>({1, 4}, gen).expand({3, 4}), randn<double>({4, 6}, gen));
  check_matmul(randn<double>({3, 1}, gen).expand({3, 4}), randn<double>({4, 1}, gen).expand({4, 5}));
  // a result that is itself a view feeds another product
  const auto base = randn<double>({4, 6}, gen);
  check_matmul(base, base.transpose(0, 1));
}

TEST_CASE("bmm and linear values") {
  Generator gen(13);
  auto a = randn<double>({4, 3, 5}, gen), b = randn<double>({4, 5, 2}, gen);
  CHECK(max_abs_diff(bmm(a, b), ref_matmul(a, b)) < 1e-12);
  CHECK(bmm(a, b).shape() == Shape{4, 3, 2});

  auto x = randn<double>({2, 3, 5}, gen), w = randn<double>({4, 5}, gen), bias = randn<double>({4}, gen);
  const auto expected = ref_matmul(x, w.transpose(0, 1).contiguous());
  CHECK(max_abs_diff(linear(x, w), expected) < 1e-12);
  CHECK(max_abs_diff(linear(x, w, bias), expected + bias) < 1e-12);
  CHECK(linear(x, w, bias).shape() == Shape{2, 3, 4});
  auto v = randn<double>({5}, gen);
  CHECK(linear(v, w, bias).shape() == Shape{4});
  CHECK(max_abs_diff(linear(v, w, bias), ref_matmul(w, v) + bias) < 1e-12);
  // non-contiguous input, weight and bias
  auto xt = randn<double>({5, 6}, gen).transpose(0, 1);
  auto wt = randn<double>({5, 4}, gen).transpose(0, 1);
  auto bs = randn<double>({8}, gen).slice(0, 0, 8, 2);
  CHECK(max_abs_diff(linear(xt, wt, bs), ref_matmul(xt, wt.transpose(0, 1)) + bs) < 1e-12);
  // float, large enough for the folded GEMM with the bias accumulated onto it
  auto xf = randn<float>({4, 30, 64}, gen), wf = randn<float>({48, 64}, gen), bf = randn<float>({48}, gen);
  const auto ref = ref_matmul(xf.cast<double>(), wf.cast<double>().transpose(0, 1).contiguous()) + bf.cast<double>();
  CHECK(max_abs_diff(linear(xf, wf, bf).cast<double>(), ref) < 1e-3);
  CHECK(values(linear(tensor<std::int32_t>({1, 2}), tensor<std::int32_t>({1, 1, 2, -1}, {2, 2}),
                      tensor<std::int32_t>({10, 20}))) == std::vector<double>{13, 20});
}

TEST_CASE("matmul backward values on the folded and accumulating paths") {
  Generator gen(14);
  // [B,T,D] @ [D,S]: dA folds over rows, dB folds the batch into the contraction
  auto a = randn<double>({3, 20, 16}, gen).requires_grad_();
  auto b = randn<double>({16, 24}, gen).requires_grad_();
  auto g = randn<double>({3, 20, 24}, gen);
  matmul(a, b).backward(g);
  CHECK(max_abs_diff(a.grad(), ref_matmul(g, b.detach().transpose(0, 1).contiguous())) < 1e-10);
  Tensor<double> db = zeros<double>({16, 24});
  for (std::int64_t i = 0; i < 3; ++i)
    db = db + ref_matmul(a.detach().select(0, i).transpose(0, 1).contiguous(), g.select(0, i).contiguous());
  CHECK(max_abs_diff(b.grad(), db) < 1e-10);

  // [T,D] @ [B,D,S]: dA sums one product per batch entry into the same matrix
  auto a2 = randn<double>({20, 16}, gen).requires_grad_();
  auto b2 = randn<double>({4, 16, 24}, gen).requires_grad_();
  auto g2 = randn<double>({4, 20, 24}, gen);
  matmul(a2, b2).backward(g2);
  Tensor<double> da2 = zeros<double>({20, 16});
  for (std::int64_t i = 0; i < 4; ++i)
    da2 = da2 + ref_matmul(g2.select(0, i).contiguous(), b2.detach().select(0, i).transpose(0, 1).contiguous());
  CHECK(max_abs_diff(a2.grad(), da2) < 1e-10);
  CHECK(max_abs_diff(b2.grad(), ref_matmul(a2.detach().transpose(0, 1).contiguous(), g2)) < 1e-10);

  // linear on float: dW = dy^T x over all rows, db = column sums
  auto x = randn<float>({2, 50, 32}, gen).requires_grad_();
  auto w = randn<float>({40, 32}, gen).requires_grad_();
  auto bias = randn<float>({40}, gen).requires_grad_();
  auto gy = randn<float>({2, 50, 40}, gen);
  linear(x, w, bias).backward(gy);
  const auto xd = x.detach().cast<double>().reshape({100, 32}), gd = gy.cast<double>().reshape({100, 40});
  CHECK(max_abs_diff(w.grad().cast<double>(), ref_matmul(gd.transpose(0, 1).contiguous(), xd)) < 1e-3);
  CHECK(max_abs_diff(x.grad().cast<double>(), ref_matmul(gd, w.detach().cast<double>()).reshape({2, 50, 32})) < 1e-3);
  CHECK(max_abs_diff(bias.grad().cast<double>(), sum(gd, {0})) < 1e-3);
  CHECK(linear(x, w, bias).grad_fn_name() == "linear");
  CHECK(matmul(x, w.transpose(0, 1)).grad_fn_name() == "matmul");
  CHECK(!matmul(x.detach(), w.detach().transpose(0, 1)).requires_grad());
}

TEST_CASE("gradcheck: matmul rank combinations") {
  Generator gen(15);
  const auto r = [&](const Shape& s) { return randn<double>(s, gen); };
  const auto mm = [](const GradInputs& x) { return matmul(x[0], x[1]); };
  CHECK_GRADCHECK(mm, {r({4}), r({4})});
  CHECK_GRADCHECK(mm, {r({4}), r({4, 3})});
  CHECK_GRADCHECK(mm, {r({3, 4}), r({4})});
  CHECK_GRADCHECK(mm, {r({3, 4}), r({4, 2})});
  CHECK_GRADCHECK(mm, {r({2, 3, 4}), r({4, 2})});
  CHECK_GRADCHECK(mm, {r({3, 4}), r({2, 4, 2})});
  CHECK_GRADCHECK(mm, {r({4}), r({2, 4, 3})});
  CHECK_GRADCHECK(mm, {r({2, 3, 4}), r({4})});
  CHECK_GRADCHECK(mm, {r({2, 3, 4}), r({2, 4, 2})});
}

TEST_CASE("gradcheck: matmul with broadcast batch dims and non-contiguous inputs") {
  Generator gen(16);
  const auto mm = [](const GradInputs& x) { return matmul(x[0], x[1]); };
  CHECK_GRADCHECK(mm, {randn<double>({2, 2, 3, 4}, gen), randn<double>({2, 1, 4, 3}, gen)});
  CHECK_GRADCHECK(mm, {randn<double>({2, 1, 3, 4}, gen), randn<double>({3, 4, 2}, gen)});
  CHECK_GRADCHECK(mm, {randn<double>({1, 3, 4}, gen), randn<double>({2, 1, 4, 2}, gen)});
  // transposed (column-major) leaves, a strided slice and a permuted batch
  auto at = randn<double>({4, 3}, gen).transpose(0, 1);
  auto bt = randn<double>({2, 5, 4}, gen).transpose(1, 2);
  REQUIRE(!at.is_contiguous());
  CHECK_GRADCHECK(mm, {at, bt});
  CHECK_GRADCHECK(mm, {randn<double>({3, 8}, gen).slice(1, 0, 8, 2), randn<double>({4, 3}, gen)});
  CHECK_GRADCHECK(mm, {randn<double>({3, 2, 4}, gen).permute({1, 0, 2}), randn<double>({2, 4, 3}, gen).transpose(1, 2).transpose(1, 2)});
  // a chain of products, and a reused operand (gradients accumulate)
  CHECK_GRADCHECK([](const GradInputs& x) { return matmul(matmul(x[0], x[1]), x[0].transpose(0, 1)); },
                  {randn<double>({3, 4}, gen), randn<double>({4, 4}, gen)});
}

TEST_CASE("gradcheck: bmm and linear") {
  Generator gen(17);
  CHECK_GRADCHECK([](const GradInputs& x) { return bmm(x[0], x[1]); },
                  {randn<double>({3, 2, 4}, gen), randn<double>({3, 5, 4}, gen).transpose(1, 2)});
  const auto lin = [](const GradInputs& x) { return linear(x[0], x[1], x[2]); };
  const auto lin_nb = [](const GradInputs& x) { return linear(x[0], x[1]); };
  CHECK_GRADCHECK(lin, {randn<double>({2, 3, 4}, gen), randn<double>({5, 4}, gen), randn<double>({5}, gen)});
  CHECK_GRADCHECK(lin_nb, {randn<double>({3, 4}, gen), randn<double>({5, 4}, gen)});
  CHECK_GRADCHECK(lin, {randn<double>({4}, gen), randn<double>({2, 4}, gen), randn<double>({2}, gen)});
  CHECK_GRADCHECK(lin, {randn<double>({4, 2, 3}, gen).permute({1, 2, 0}), randn<double>({4, 5}, gen).transpose(0, 1),
                        randn<double>({10}, gen).slice(0, 0, 10, 2)});
}

TEST_CASE("matmul, bmm and linear errors") {
  auto a = zeros<float>({16, 127}), b = zeros<float>({128, 64});
  CHECK_THROWS_WITH_AS(matmul(a, b), "[matmul] inner dimensions differ: (16x127) @ (128x64)", Error);
  CHECK_THROWS_WITH_AS(matmul(zeros<float>({3}), zeros<float>({4})), "[matmul] inner dimensions differ: (3) @ (4)", Error);
  CHECK_THROWS_WITH_AS(matmul(zeros<float>({2, 3, 4}), zeros<float>({5, 4, 2})),
                       "[matmul] batch dimensions cannot be broadcast: (2x3x4) @ (5x4x2)", Error);
  CHECK_THROWS_WITH_AS(matmul(scalar_tensor<float>(1.0f), zeros<float>({3, 4})),
                       "[matmul] both arguments need at least one dimension, got () @ (3x4)", Error);
  CHECK_THROWS_WITH_AS(matmul(zeros<float>({3}), Tensor<float>()), "[matmul] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(bmm(zeros<float>({2, 3}), zeros<float>({2, 3, 4})),
                       "[bmm] expected 3-D tensors, got (2x3) @ (2x3x4)", Error);
  CHECK_THROWS_WITH_AS(bmm(zeros<float>({2, 3, 4}), zeros<float>({3, 4, 5})), "[bmm] batch sizes differ: (2x3x4) @ (3x4x5)",
                       Error);
  CHECK_THROWS_WITH_AS(bmm(zeros<float>({2, 3, 4}), zeros<float>({2, 5, 5})),
                       "[bmm] inner dimensions differ: (2x3x4) @ (2x5x5)", Error);
  CHECK_THROWS_WITH_AS(linear(zeros<float>({4, 3}), zeros<float>({5, 4})),
                       "[linear] input (4x3) has 3 features but weight (5x4) expects 4", Error);
  CHECK_THROWS_WITH_AS(linear(zeros<float>({4, 3}), zeros<float>({5, 3}), zeros<float>({4})),
                       "[linear] bias (4) does not match weight (5x3): expected (5)", Error);
  CHECK_THROWS_WITH_AS(linear(zeros<float>({4, 3}), zeros<float>({5, 3}), zeros<float>({1, 5})),
                       "[linear] bias (1x5) does not match weight (5x3): expected (5)", Error);
  CHECK_THROWS_WITH_AS(linear(zeros<float>({4, 3}), zeros<float>({3})), "[linear] weight must be 2-D [out, in], got (3)", Error);
  CHECK_THROWS_WITH_AS(linear(scalar_tensor<float>(1.0f), zeros<float>({5, 3})),
                       "[linear] input needs at least one dimension, got ()", Error);
}

TEST_CASE("size-0 dims") {
  CHECK(matmul(zeros<float>({0, 3}), ones<float>({3, 4})).shape() == Shape{0, 4});
  CHECK(matmul(ones<float>({2, 3}), ones<float>({3, 0})).shape() == Shape{2, 0});
  CHECK(matmul(ones<float>({0, 2, 3}), ones<float>({3, 4})).shape() == Shape{0, 2, 4});
  CHECK(matmul(ones<float>({2, 0, 2, 3}), ones<float>({1, 3, 4})).shape() == Shape{2, 0, 2, 4});
  // empty contraction: zeros (not uninitialised memory)
  CHECK(values(matmul(ones<float>({2, 0}), ones<float>({0, 3}))) == std::vector<double>(6, 0.0));
  CHECK(matmul(ones<double>({0}), ones<double>({0})).item() == 0.0);
  CHECK(values(linear(ones<float>({2, 0}), ones<float>({3, 0}), tensor<float>({1, 2, 3}))) ==
        std::vector<double>{1, 2, 3, 1, 2, 3});
  // gradients of empty products have the input shapes and are zero where defined
  auto a = ones<double>({3, 0}).requires_grad_();
  auto b = ones<double>({0, 2}).requires_grad_();
  sum(matmul(a, b)).backward();
  CHECK(a.grad().shape() == Shape{3, 0});
  CHECK(values(b.grad()).empty());
  auto x = ones<double>({0, 4}).requires_grad_();
  auto w = ones<double>({2, 4}).requires_grad_();
  auto bias = ones<double>({2}).requires_grad_();
  sum(linear(x, w, bias)).backward();
  CHECK(values(w.grad()) == std::vector<double>(8, 0.0));
  CHECK(values(bias.grad()) == std::vector<double>{0, 0});
  auto p = ones<double>({0, 2, 3}).requires_grad_();
  auto q = ones<double>({3, 4}).requires_grad_();
  sum(matmul(p, q)).backward();
  CHECK(values(q.grad()) == std::vector<double>(12, 0.0));
}

TEST_CASE("batch_folded_into_contraction: one product equals the batch sum, as views where the layout allows") {
  // The CUDA path of a c broadcast over the whole batch (a weight gradient) runs this fold;
  // its views are checked here on the CPU against the sum of the per-entry products.
  Generator gen(21);
  struct Case {
    std::string what;
    Tensor<double> a, b;
    Shape batch;
    bool a_view, b_view;  // whether the fold can use views
  };
  const auto g = randn<double>({3, 5, 4}, gen);  // [B, T, out]
  const auto x = randn<double>({3, 5, 6}, gen);  // [B, T, in]
  const auto big = randn<double>({2, 3, 4, 5}, gen);
  const std::vector<Case> cases = {
      {"weight gradient: g^T @ x", g.transpose(-1, -2), x, Shape{3}, true, true},
      {"row-major a (copied)", randn<double>({3, 4, 5}, gen), x, Shape{3}, false, true},
      {"broadcast a (copied)", randn<double>({4, 5}, gen), x, Shape{3}, false, true},
      {"transposed b (copied)", g.transpose(-1, -2), x.transpose(-1, -2).contiguous().transpose(-1, -2), Shape{3}, true,
       false},
      {"broadcast b (copied)", g.transpose(-1, -2), randn<double>({5, 6}, gen), Shape{3}, true, false},
      {"two batch dims", big.transpose(-1, -2), randn<double>({2, 3, 4, 7}, gen), Shape{2, 3}, true, true},
      {"empty batch", zeros<double>({0, 4, 5}), zeros<double>({0, 5, 6}), Shape{0}, false, true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    const auto [fa, fb] = detail::batch_folded_into_contraction(c.a, c.b, c.batch);
    const std::int64_t count = numel_of(c.batch);
    CHECK(fa.shape() == Shape{c.a.size(-2), count * c.a.size(-1)});
    CHECK(fb.shape() == Shape{count * c.b.size(-2), c.b.size(-1)});
    CHECK(fa.storage().same_block(c.a.storage()) == c.a_view);
    CHECK(fb.storage().same_block(c.b.storage()) == c.b_view);
    const auto expected = sum_to(matmul(c.a, c.b), Shape{c.a.size(-2), c.b.size(-1)});
    CHECK(max_abs_diff(matmul(fa, fb), expected) < 1e-12);
  }
}

}  // namespace test_matmul
