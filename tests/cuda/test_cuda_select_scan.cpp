// CUDA parity of comparisons, masks and selection (eq..ge, logical ops, any/all, where,
// masked_fill), the extremum reductions (amax/amin, max/min along a dim with indices,
// argmax/argmin, logsumexp) and the scans (cumsum, cumprod), values and gradients, against
// the CPU path. Every test skips with a message when no CUDA device is present.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"

namespace test_cuda_select_scan {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::values;

namespace {

template <FloatingElement T>
constexpr double select_tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;

/// Whole numbers in [-4, 4] as T: many ties for the extremum reductions.
template <Element T>
Tensor<T> small_integers(const Shape& shape, Generator& gen) {
  return randint<std::int64_t>(shape, -4, 5, gen).template cast<T>();
}

/// The CPU and CUDA results of a bool-valued op agree element for element.
template <class F>
void check_mask_parity(F f) {
  const Tensor<bool> cpu = f(Device::cpu());
  const Tensor<bool> gpu = f(Device::cuda());
  REQUIRE(gpu.device() == Device::cuda());
  CHECK(gpu.shape() == cpu.shape());
  CHECK(values(gpu.cpu()) == values(cpu));
}

}  // namespace

TEST_CASE_TEMPLATE("cuda parity: comparisons, logical ops, any and all", T, float, double, std::int32_t, std::int64_t) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // Small integers so that ties occur; a broadcast row and a transposed view.
  Generator gen(21);
  const auto a = randint<std::int64_t>({7, 9}, -3, 4, gen).template cast<T>();
  const auto b = randint<std::int64_t>({1, 9}, -3, 4, gen).template cast<T>();
  const auto c = randint<std::int64_t>({9, 7}, -3, 4, gen).template cast<T>();
  const auto on = [](const Tensor<T>& t, Device d) { return t.to(d); };
  check_mask_parity([&](Device d) { return eq(on(a, d), on(b, d)); });
  check_mask_parity([&](Device d) { return ne(on(a, d), on(b, d)); });
  check_mask_parity([&](Device d) { return lt(on(a, d), on(c, d).transpose(0, 1)); });
  check_mask_parity([&](Device d) { return le(on(a, d), on(b, d)); });
  check_mask_parity([&](Device d) { return gt(on(b, d), on(a, d)); });
  check_mask_parity([&](Device d) { return ge(on(a, d).transpose(0, 1), on(c, d)); });
  check_mask_parity([&](Device d) { return eq(on(a, d), T(1)); });
  check_mask_parity([&](Device d) { return lt(on(a, d), T(0)); });
  check_mask_parity([&](Device d) { return ge(on(a, d), T(2)); });
  const auto m1 = [&](Device d) { return gt(on(a, d), T(0)); };
  const auto m2 = [&](Device d) { return lt(on(b, d), T(1)); };
  check_mask_parity([&](Device d) { return logical_and(m1(d), m2(d)); });
  check_mask_parity([&](Device d) { return logical_or(m1(d), m2(d)); });
  check_mask_parity([&](Device d) { return logical_xor(m1(d), m2(d)); });
  check_mask_parity([&](Device d) { return logical_not(m1(d)); });
  for (const auto& mask : {m1(Device::cpu()), lt(a, T(100)), gt(a, T(100))}) {
    const auto on_gpu = mask.to(Device::cuda());
    CHECK(any(on_gpu) == any(mask));
    CHECK(all(on_gpu) == all(mask));
  }
  CHECK_FALSE(any(zeros<bool>({0}, Device::cuda())));
  CHECK(all(zeros<bool>({0}, Device::cuda())));
  // A long mask takes the block-per-row reduction of any/all.
  auto long_mask = zeros<bool>({100000});
  long_mask.data()[99999] = true;
  CHECK(any(long_mask.to(Device::cuda())));
  CHECK_FALSE(all(long_mask.to(Device::cuda())));
}

TEST_CASE_TEMPLATE("cuda parity: NaN compares unequal", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  const auto x = tensor<T>({nan, 1, 2});
  const auto y = tensor<T>({nan, 1, nan});
  check_mask_parity([&](Device d) { return eq(x.to(d), y.to(d)); });
  check_mask_parity([&](Device d) { return ne(x.to(d), y.to(d)); });
  check_mask_parity([&](Device d) { return le(x.to(d), y.to(d)); });
}

TEST_CASE_TEMPLATE("cuda parity: where and masked_fill with their gradients", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(22);
  const auto a = randn<T>({4, 1, 6}, gen);
  const auto b = randn<T>({5, 6}, gen);
  const auto cond_cpu = gt(randn<T>({4, 5, 1}, gen), T(0));
  const auto select = [&](const std::vector<Tensor<T>>& v) {
    return where(cond_cpu.to(v[0].device()), v[0], v[1]);
  };
  check_cpu_cuda_parity<T>(select, {a, b}, select_tol<T>, select_tol<T>);
  check_cpu_cuda_parity<T>([&](const auto& v) { return where(cond_cpu.to(v[0].device()), v[0], T(2.5)); }, {a},
                           select_tol<T>, select_tol<T>);
  check_cpu_cuda_parity<T>([&](const auto& v) { return masked_fill(v[0], cond_cpu.to(v[0].device()), T(-1)); },
                           {randn<T>({4, 5, 6}, gen)}, select_tol<T>, select_tol<T>);
  // Integer where, and a condition on another device.
  const auto ints = arange<std::int64_t>(6).reshape({2, 3});
  const auto cond = gt(ints, std::int64_t(2));
  CHECK(values(where(cond.to(Device::cuda()), ints.to(Device::cuda()), std::int64_t(-1)).cpu()) ==
        values(where(cond, ints, std::int64_t(-1))));
  CHECK_THROWS_AS(where(cond, ints.to(Device::cuda()), ints.to(Device::cuda())), Error);
}

TEST_CASE_TEMPLATE("cuda parity: amax, amin and logsumexp over dim sets", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(23);
  // Whole numbers, so that several inputs tie for the extreme (the gradient is shared).
  const auto x = small_integers<T>({5, 40, 3}, gen);
  const std::vector<std::vector<std::int64_t>> dim_sets = {{}, {0}, {1}, {2}, {0, 2}, {-1, 1}};
  for (const auto& dims : dim_sets) {
    for (bool keepdim : {false, true}) {
      CAPTURE(dims.size());
      CAPTURE(keepdim);
      check_cpu_cuda_parity<T>([&](const auto& v) { return amax(v[0], dims, keepdim); }, {x}, select_tol<T>, select_tol<T>);
      check_cpu_cuda_parity<T>([&](const auto& v) { return amin(v[0], dims, keepdim); }, {x}, select_tol<T>, select_tol<T>);
      check_cpu_cuda_parity<T>([&](const auto& v) { return logsumexp(v[0], dims, keepdim); }, {x}, select_tol<T>,
                               select_tol<T>);
    }
  }
  // Long rows (a vocabulary), and the edge cases: all -inf, +inf, NaN, an empty dim.
  check_cpu_cuda_parity<T>([](const auto& v) { return logsumexp(v[0], {1}); }, {randn<T>({3, 50257}, gen)}, select_tol<T>,
                           select_tol<T>);
  constexpr T inf = std::numeric_limits<T>::infinity();
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  const auto edges = tensor<T>({-inf, -inf, -inf, 1, inf, 2, 1, nan, 2, 0, 1, 2}).reshape({4, 3});
  const auto lse_gpu = values(logsumexp(edges.to(Device::cuda()), {1}).cpu());
  const auto lse_cpu = values(logsumexp(edges, {1}));
  CHECK(lse_gpu[0] == -inf);
  CHECK(lse_gpu[1] == inf);
  CHECK(std::isnan(lse_gpu[2]));
  CHECK(lse_gpu[3] == doctest::Approx(lse_cpu[3]));
  CHECK(values(logsumexp(zeros<T>({2, 0}, Device::cuda()), {1}).cpu()) == std::vector<double>{-inf, -inf});
  CHECK(std::isnan(values(amax(edges.to(Device::cuda()), {1}).cpu())[2]));
  CHECK_THROWS_AS(amax(zeros<T>({2, 0}, Device::cuda()), {1}), Error);
}

TEST_CASE_TEMPLATE("cuda parity: max, min, argmax and argmin along a dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(24);
  const auto x = small_integers<T>({6, 35, 4}, gen);  // ties: the first position wins
  for (std::int64_t dim : {0, 1, 2, -1}) {
    for (bool keepdim : {false, true}) {
      CAPTURE(dim);
      CAPTURE(keepdim);
      check_cpu_cuda_parity<T>([&](const auto& v) { return max(v[0], dim, keepdim).values; }, {x}, select_tol<T>,
                               select_tol<T>);
      check_cpu_cuda_parity<T>([&](const auto& v) { return min(v[0], dim, keepdim).values; }, {x}, select_tol<T>,
                               select_tol<T>);
      const auto gx = x.to(Device::cuda());
      CHECK(values(max(gx, dim, keepdim).indices.cpu()) == values(max(x, dim, keepdim).indices));
      CHECK(values(argmax(gx, dim, keepdim).cpu()) == values(argmax(x, dim, keepdim)));
      CHECK(values(argmin(gx, dim, keepdim).cpu()) == values(argmin(x, dim, keepdim)));
    }
  }
  // Flattened argmax, a vocabulary-sized row (block-per-row kernel) and a NaN, which wins.
  CHECK(values(argmax(x.to(Device::cuda())).cpu()) == values(argmax(x)));
  const auto logits = small_integers<T>({3, 50257}, gen);
  CHECK(values(argmax(logits.to(Device::cuda()), -1).cpu()) == values(argmax(logits, -1)));
  CHECK(values(argmin(logits.to(Device::cuda()), -1).cpu()) == values(argmin(logits, -1)));
  auto with_nan = logits.clone();
  with_nan.data()[50257 + 4000] = std::numeric_limits<T>::quiet_NaN();
  with_nan.data()[50257 + 9000] = std::numeric_limits<T>::quiet_NaN();
  CHECK(values(argmax(with_nan.to(Device::cuda()), -1).cpu()) == values(argmax(with_nan, -1)));
  CHECK(values(argmax(with_nan.to(Device::cuda()), -1).cpu())[1] == 4000);
  // Integers, and an empty dim.
  const auto ints = randint<std::int64_t>({4, 9}, -5, 5, gen);
  CHECK(values(argmax(ints.to(Device::cuda()), 1).cpu()) == values(argmax(ints, 1)));
  CHECK(values(amax(ints.to(Device::cuda()), {1}).cpu()) == values(amax(ints, {1})));
  CHECK_THROWS_AS(argmax(zeros<T>({2, 0}, Device::cuda()), 1), Error);
}

TEST_CASE_TEMPLATE("cuda parity: cumsum and cumprod along every dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(25);
  const auto x = randn<T>({4, 33, 5}, gen);
  auto with_zeros = add(randn<T>({3, 7}, gen), T(0.5));
  with_zeros.data()[3] = T(0);
  with_zeros.data()[10] = T(0);
  with_zeros.data()[11] = T(0);
  for (std::int64_t dim : {0, 1, 2, -1}) {
    CAPTURE(dim);
    check_cpu_cuda_parity<T>([&](const auto& v) { return cumsum(v[0], dim); }, {x}, select_tol<T>, select_tol<T>);
    check_cpu_cuda_parity<T>([&](const auto& v) { return cumprod(v[0], dim); }, {x}, select_tol<T>, select_tol<T>);
    check_cpu_cuda_parity<T>([&](const auto& v) { return cumsum(v[0].transpose(0, 2), dim); }, {x}, select_tol<T>,
                             select_tol<T>);
  }
  // Exact zeros: cumprod's division-free backward stays exact.
  check_cpu_cuda_parity<T>([](const auto& v) { return cumprod(v[0], 1); }, {with_zeros}, select_tol<T>, select_tol<T>);
  // A long line of random signs takes the chunked kernel, which adds in another order than
  // the CPU: float prefixes near 0 differ by a few 1e-4 (their magnitude reaches ~100).
  const double long_tol = std::is_same_v<T, float> ? 1e-3 : 1e-10;
  check_cpu_cuda_parity<T>([](const auto& v) { return cumsum(v[0], 0); }, {randn<T>({5000}, gen)}, 1e-4, long_tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return cumsum(v[0], 0); }, {tensor<T>({2.5})}, select_tol<T>,
                           select_tol<T>);
  CHECK(cumsum(zeros<T>({3, 0}, Device::cuda()), 1).shape() == Shape{3, 0});
  // Integers keep their type.
  const auto ints = randint<std::int64_t>({3, 6}, -4, 5, gen);
  CHECK(values(cumsum(ints.to(Device::cuda()), 1).cpu()) == values(cumsum(ints, 1)));
  CHECK(values(cumprod(ints.to(Device::cuda()), 1).cpu()) == values(cumprod(ints, 1)));
}

TEST_CASE_TEMPLATE("cuda parity: cumsum over long contiguous lines in chunks, bit for bit on whole numbers", T, float, double,
                   bfloat16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(41);
  // Whole numbers in [-4, 4]: every partial sum is exact in the accumulation type, so the
  // chunked order of additions must give the CPU's sequential results exactly. Lines of 300
  // (one chunk ending inside a round of 256), 4096 * 2 + 1 (a chunk boundary and one more)
  // and 70000 (18 chunks); forward, and the reverse scan of the backward with whole-number
  // weights.
  for (const Shape& shape : {Shape{300}, Shape{5, 4096 * 2 + 1}, Shape{3, 70000}}) {
    CAPTURE(shape.back());
    const auto x = small_integers<T>(shape, gen);
    const auto weights = small_integers<T>(shape, gen);
    const auto cpu_x = x.clone().requires_grad_();
    const auto gpu_x = x.to(Device::cuda()).clone().requires_grad_();
    const auto cpu_y = cumsum(cpu_x, -1), gpu_y = cumsum(gpu_x, -1);
    CHECK(values(gpu_y.cpu()) == values(cpu_y));
    sum(cpu_y * weights).backward();
    sum(gpu_y * weights.to(Device::cuda())).backward();
    CHECK(values(gpu_x.grad().cpu()) == values(cpu_x.grad()));
  }
}

TEST_CASE("cuda parity: integer cumsum over long lines wraps around as on the CPU") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(43);
  const std::int64_t big = std::int64_t{1} << 61;
  const auto x = randint<std::int64_t>({2, 9000}, -big, big, gen);
  CHECK(cumsum(x.to(Device::cuda()), 1).cpu().to_vector() == cumsum(x, 1).to_vector());
  const auto y = randint<std::int64_t>({4, 5000}, -1000000, 1000000, gen).cast<std::int32_t>();
  CHECK(cumsum(y.to(Device::cuda()), 1).cpu().to_vector() == cumsum(y, 1).to_vector());
}

}  // namespace test_cuda_select_scan
