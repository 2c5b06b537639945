// CUDA parity of the core ops: each op and its gradient on CUDA against the CPU result
// (elementwise maps with broadcasting and strided views, reductions, softmax, matmul and
// linear), the 16-bit floats through the data-movement and lookup ops, device-side copies,
// casts and fills, the caching allocator's counters, and an MLP training step. Every test
// skips with a message when no CUDA device is present.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"

namespace test_cuda_ops {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

template <FloatingElement T>
using Fn = std::function<Tensor<T>(const std::vector<Tensor<T>>&)>;

/// Tolerances per element type: float kernels use the fast single-precision functions.
template <FloatingElement T>
constexpr double cuda_rtol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
template <FloatingElement T>
constexpr double cuda_atol = std::is_same_v<T, float> ? 2e-6 : 1e-13;

}  // namespace

TEST_CASE_TEMPLATE("cuda parity: unary maps and their gradients", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(1);
  const auto x = randn<T>({37, 29}, gen);                      // any sign
  const auto pos = add(abs(randn<T>({37, 29}, gen)), T(0.1));  // for log, sqrt, rsqrt, pow
  const std::vector<std::pair<std::string, Fn<T>>> any_sign = {
      {"neg", [](const auto& v) { return neg(v[0]); }},
      {"abs", [](const auto& v) { return abs(v[0]); }},
      {"square", [](const auto& v) { return square(v[0]); }},
      {"exp", [](const auto& v) { return exp(v[0]); }},
      {"tanh", [](const auto& v) { return tanh(v[0]); }},
      {"sigmoid", [](const auto& v) { return sigmoid(v[0]); }},
      {"relu", [](const auto& v) { return relu(v[0]); }},
      {"silu", [](const auto& v) { return silu(v[0]); }},
      {"gelu", [](const auto& v) { return gelu(v[0]); }},
      {"gelu tanh", [](const auto& v) { return gelu(v[0], GeluApproximation::Tanh); }},
      {"add scalar", [](const auto& v) { return v[0] + T(1.5); }},
      {"mul scalar", [](const auto& v) { return v[0] * T(-2.5); }},
      {"clamp", [](const auto& v) { return clamp(v[0], T(-0.5), T(0.7)); }},
      {"clamp_min", [](const auto& v) { return clamp_min(v[0], T(-0.2)); }},
      {"clamp_max", [](const auto& v) { return clamp_max(v[0], T(0.3)); }},
      {"pow 2", [](const auto& v) { return pow(v[0], T(2)); }},
      {"pow 3", [](const auto& v) { return pow(v[0], T(3)); }},
  };
  for (const auto& [name, f] : any_sign) {
    CAPTURE(name);
    check_cpu_cuda_parity<T>(f, {x}, cuda_rtol<T>, cuda_atol<T>);
  }
  const std::vector<std::pair<std::string, Fn<T>>> positive = {
      {"log", [](const auto& v) { return log(v[0]); }},
      {"sqrt", [](const auto& v) { return sqrt(v[0]); }},
      {"rsqrt", [](const auto& v) { return rsqrt(v[0]); }},
      {"pow 1.7", [](const auto& v) { return pow(v[0], T(1.7)); }},
      {"pow -0.5", [](const auto& v) { return pow(v[0], T(-0.5)); }},
      {"rdiv", [](const auto& v) { return T(3) / v[0]; }},
  };
  for (const auto& [name, f] : positive) {
    CAPTURE(name);
    check_cpu_cuda_parity<T>(f, {pos}, cuda_rtol<T>, cuda_atol<T>);
  }
}

TEST_CASE_TEMPLATE("cuda parity: binary maps with broadcasting and strided views", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(2);
  const auto a = randn<T>({3, 1, 5}, gen);
  const auto b = randn<T>({4, 5}, gen);
  const auto c = add(abs(randn<T>({3, 4, 5}, gen)), T(0.5));
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0] + v[1]; }, {a, b}, cuda_rtol<T>, cuda_atol<T>);
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0] - v[1]; }, {a, b}, cuda_rtol<T>, cuda_atol<T>);
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0] * v[1]; }, {a, b}, cuda_rtol<T>, cuda_atol<T>);
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0] / v[1]; }, {a, c}, cuda_rtol<T>, cuda_atol<T>);
  // transposed and sliced operands take the strided kernels
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0].transpose(0, 2) * v[1].slice(0, 1, 6, 2); },
                           {randn<T>({5, 4, 3}, gen), randn<T>({7, 4, 5}, gen)}, cuda_rtol<T>, cuda_atol<T>);
  // a long contiguous run exercises the vectorised path and its tail
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0] * v[1] + v[0]; },
                           {randn<T>({100003}, gen), randn<T>({100003}, gen)}, cuda_rtol<T>, cuda_atol<T>);
  // an offset view is not 16-byte aligned: the scalar path
  check_cpu_cuda_parity<T>([](const auto& v) { return exp(v[0].slice(0, 1, 1001)); }, {randn<T>({1001}, gen)}, cuda_rtol<T>,
                           cuda_atol<T>);
}

TEST_CASE("cuda parity: integer elementwise maps and division by zero") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const auto a = tensor<std::int64_t>({7, -8, 9, 10});
  const auto b = tensor<std::int64_t>({2, 3, -4, 5});
  const auto da = a.to(Device::cuda()), db = b.to(Device::cuda());
  CHECK(values((da + db).cpu()) == values(a + b));
  CHECK(values((da * db).cpu()) == values(a * b));
  CHECK(values((da / db).cpu()) == values(a / b));
  CHECK(values(abs(da).cpu()) == values(abs(a)));
  CHECK(values(clamp(da, std::int64_t(-5), std::int64_t(8)).cpu()) == values(clamp(a, std::int64_t(-5), std::int64_t(8))));
  for (std::int64_t e : {0, 1, 3, 7, 40})  // 40 wraps around, as on the CPU
    CHECK(values(pow(da, e).cpu()) == values(pow(a, e)));
  CHECK_THROWS_WITH_AS(da / zeros<std::int64_t>({4}, Device::cuda()), doctest::Contains("integer division by zero"), Error);
  // int64 scalars reach the kernels exactly: beyond 2^53, and INT64_MAX as a clamp bound
  // (no sum or product here overflows).
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  const std::int64_t odd = (std::int64_t{1} << 53) + 1;
  const auto big = tensor<std::int64_t>({1, -3, max - odd - 5, std::numeric_limits<std::int64_t>::min() + 7});
  const auto dbig = big.to(Device::cuda());
  CHECK((dbig + odd).cpu().to_vector() == (big + odd).to_vector());
  const auto small = tensor<std::int64_t>({1, -2, 3, 0});
  CHECK((small.to(Device::cuda()) * odd).cpu().to_vector() == (small * odd).to_vector());
  CHECK(clamp(dbig, std::nullopt, max).cpu().to_vector() == big.to_vector());
  CHECK(clamp(dbig, odd, max).cpu().to_vector() == clamp(big, odd, max).to_vector());
}

TEST_CASE_TEMPLATE("cuda parity: abs of -0 and pow's exact exponents, bit for bit", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  constexpr T inf = std::numeric_limits<T>::infinity();
  const auto x = tensor<T>({-0.0, 0.0, -1.5, 2.0, 3.0, -inf, inf, 0.1, -7.25});
  const auto dx = x.to(Device::cuda());
  const auto bits_equal = [](const Tensor<T>& got, const Tensor<T>& want) {
    const auto g = got.cpu().to_vector(), w = want.to_vector();
    REQUIRE(g.size() == w.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      CAPTURE(i);
      if (std::isnan(w[i])) {
        CHECK(std::isnan(g[i]));  // the sign of a NaN is the hardware's
      } else {
        CHECK(g[i] == w[i]);
        CHECK(std::signbit(g[i]) == std::signbit(w[i]));
      }
    }
  };
  bits_equal(abs(dx), abs(x));  // +0 for -0, as std::abs
  for (const T e : {T(0), T(1), T(2), T(3), T(-1), T(-2), T(0.5)}) {
    CAPTURE(e);
    bits_equal(pow(dx, e), pow(x, e));
  }
  // The gradient of pow(x, 3) reads x^2, the same exact form on both devices.
  check_cpu_cuda_parity<T>([](const auto& v) { return pow(v[0], T(3)); }, {tensor<T>({-1.5, 0.25, 3.0})}, 0.0, 0.0);
}

TEST_CASE_TEMPLATE("cuda parity: reductions", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(3);
  const auto x = randn<T>({6, 70, 5}, gen);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  const std::vector<std::vector<std::int64_t>> dim_sets = {{}, {0}, {1}, {2}, {0, 2}, {1, 2}, {-1, 0}};
  for (const auto& dims : dim_sets) {
    for (bool keepdim : {false, true}) {
      CAPTURE(dims.size());
      CAPTURE(keepdim);
      check_cpu_cuda_parity<T>([&](const auto& v) { return sum(v[0], dims, keepdim); }, {x}, tol, tol);
      check_cpu_cuda_parity<T>([&](const auto& v) { return mean(v[0], dims, keepdim); }, {x}, tol, tol);
    }
  }
  // sum over a transposed view, and sum_to (the backward of broadcasting)
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0].transpose(0, 1), {0}); }, {x}, tol, tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return sum_to(v[0], Shape{1, 70, 1}); }, {x}, tol, tol);
  // long rows take the block-per-row kernel, short ones the thread-per-row kernel
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0], {1}); }, {randn<T>({3, 5000}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return mean(v[0], {1}); }, {randn<T>({3000, 3}, gen)}, tol, tol);
  // Outputs adjacent in memory with the reduced dims outer take the column kernel: in slices
  // combined by a second pass ([5000, 77] over dim 0, a bias gradient's sum_to), or in one
  // pass ([100, 20]); amax there too, with a NaN that must win its column, exactly. The long
  // sums add positive values: the CPU adds a column's 5000 floats one by one, and with random
  // signs that order alone would put sums near 0 outside a relative tolerance.
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0], {0}); }, {uniform<T>({5000, 77}, 0.5, 1.5, gen)}, tol,
                           tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return mean(v[0], {0}); }, {randn<T>({100, 20}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return sum_to(v[0], Shape{50}); }, {uniform<T>({40, 30, 50}, 0.5, 1.5, gen)},
                           tol, tol);
  auto with_nan = randn<T>({300, 40}, gen);
  with_nan.data()[7 * 40 + 3] = std::numeric_limits<T>::quiet_NaN();
  const auto max_cpu = amax(with_nan, {0}), max_gpu = amax(with_nan.to(Device::cuda()), {0}).cpu();
  CHECK(std::isnan(values(max_gpu)[3]));
  for (std::int64_t c = 0; c < 40; ++c)
    if (c != 3) CHECK(values(max_gpu)[static_cast<std::size_t>(c)] == values(max_cpu)[static_cast<std::size_t>(c)]);
  const auto counts = randint<std::int64_t>({700, 33}, -1000, 1000, gen);
  CHECK(sum(counts.to(Device::cuda()), {0}).cpu().to_vector() == sum(counts, {0}).to_vector());
  // empty reductions: sum 0, mean NaN
  const auto empty = zeros<T>({3, 0}, Device::cuda());
  CHECK(values(sum(empty, {1}).cpu()) == std::vector<double>{0, 0, 0});
  CHECK(std::isnan(values(mean(empty, {1}).cpu())[0]));
}

TEST_CASE_TEMPLATE("cuda parity: reductions of long rows too few to fill the device, in chunks (whole-tensor sums)", T, float,
                   double, bfloat16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(31);
  // Whole numbers in [0, 7]: every partial sum is exact in the accumulation type, so the
  // chunked order of additions must give the CPU's sums bit for bit. One row of 2^20 (256
  // chunks), three rows of 200003 (chunks that do not divide the row), a strided view.
  const auto x = randint<std::int64_t>({1 << 20}, 0, 8, gen).template cast<T>();
  const auto gx = x.to(Device::cuda());
  CHECK(values(sum(gx).cpu()) == values(sum(x)));
  CHECK(values(mean(gx).cpu()) == values(mean(x)));
  const auto rows = randint<std::int64_t>({3, 200003}, 0, 8, gen).template cast<T>();
  CHECK(values(sum(rows.to(Device::cuda()), {1}).cpu()) == values(sum(rows, {1})));
  const auto view = randint<std::int64_t>({600, 500}, 0, 8, gen).template cast<T>();
  CHECK(values(sum(view.to(Device::cuda()).transpose(0, 1)).cpu()) == values(sum(view.transpose(0, 1))));
  if constexpr (!HalfElement<T>) {  // amax and amin take no 16-bit floats
    // The extremes: one NaN among a million values wins wherever its chunk is; otherwise the
    // largest and smallest values, exactly.
    auto spiked = randn<T>({1 << 20}, gen);
    spiked.data()[123457] = T(100);
    spiked.data()[987653] = T(-100);
    CHECK(values(amax(spiked.to(Device::cuda())).cpu()) == std::vector<double>{100});
    CHECK(values(amin(spiked.to(Device::cuda())).cpu()) == std::vector<double>{-100});
    spiked.data()[700001] = T(std::numeric_limits<float>::quiet_NaN());
    CHECK(std::isnan(values(amax(spiked.to(Device::cuda())).cpu())[0]));
  }
  // Integers, exactly.
  const auto counts = randint<std::int64_t>({1 << 19}, -1000000, 1000000, gen);
  CHECK(sum(counts.to(Device::cuda())).cpu().to_vector() == sum(counts).to_vector());
  // The gradient of a whole-tensor mean of a large tensor (the loss of most training loops).
  check_cpu_cuda_parity<T>([](const auto& v) { return mean(v[0]); }, {randn<T>({1 << 18}, gen)}, 1e-2, 1e-5);
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit floats through arithmetic, sums, casts and their gradients", T, bfloat16, float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(9);
  const auto a = randn<T>({3, 1, 5}, gen);
  const auto b = randn<T>({4, 5}, gen);
  const auto c = add(abs(randn<float>({3, 4, 5}, gen)), 0.5f).template cast<T>();
  const auto long_a = randn<T>({100003}, gen), long_b = randn<T>({100003}, gen);
  const auto on_gpu = [](const Tensor<T>& t) { return t.to(Device::cuda()); };
  // Both devices widen to float, compute one op in float and round once: bit for bit.
  CHECK(values((on_gpu(a) + on_gpu(b)).cpu()) == values(a + b));
  CHECK(values((on_gpu(a) - on_gpu(b)).cpu()) == values(a - b));
  CHECK(values((on_gpu(a) * on_gpu(b)).cpu()) == values(a * b));
  CHECK(values((on_gpu(a) / on_gpu(c)).cpu()) == values(a / c));
  CHECK(values((-on_gpu(a)).cpu()) == values(-a));
  CHECK(values((on_gpu(a) * T(-3.125f) + T(0.375f)).cpu()) == values(a * T(-3.125f) + T(0.375f)));
  CHECK(values((on_gpu(a) / T(0.625f)).cpu()) == values(a / T(0.625f)));
  CHECK(values((T(1.375f) / on_gpu(c)).cpu()) == values(T(1.375f) / c));
  CHECK(values((on_gpu(long_a) * on_gpu(long_b)).cpu()) == values(long_a * long_b));  // vectorised path and tail
  CHECK(values((on_gpu(c).transpose(0, 2) + on_gpu(c).transpose(0, 2)).cpu()) == values(c.transpose(0, 2) + c.transpose(0, 2)));
  CHECK(values(on_gpu(a).template cast<float>().cpu()) == values(a.template cast<float>()));
  // Sums accumulate in float in another order, and gradients round at every node: within a
  // couple of units in the last place of the 16-bit type.
  const double eps = condense::testing::half_epsilon<T>;
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0], {1}); }, {c}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return mean(v[0], {0, 2}, true); }, {c}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0]); }, {long_a}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return (v[0] * v[1] - v[0] / v[2]) * T(2.0f) + v[1]; }, {a, b, c}, 4 * eps,
                           4 * eps);
  // The ops that run through the float kernels: float results a few float ulps apart, so
  // the rounded values may differ by one unit of the 16-bit type.
  check_cpu_cuda_parity<T>([](const auto& v) { return exp(v[0]) + tanh(v[1]); }, {a, b}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return gelu(v[0]) * sigmoid(v[0]) - silu(v[0]); }, {c}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return log_softmax(softmax(v[0], 1), 2) + log(v[0]); }, {c}, 2 * eps, 2 * eps);
  const auto x = randn<T>({2, 3, 8}, gen), w = randn<T>({8}, gen), weight = randn<T>({5, 8}, gen);
  check_cpu_cuda_parity<T>([](const auto& v) { return layer_norm(v[0], v[1], v[1]) + rms_norm(v[0], v[1]); }, {x, w}, 2 * eps,
                           4 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return linear(v[0], v[1]); }, {x, weight}, 2 * eps, 4 * eps);
  const auto targets = tensor<std::int64_t>({0, 4, 2, 1, 3, 4});
  check_cpu_cuda_parity<T>([&](const auto& v) { return cross_entropy(v[0], targets.to(v[0].device())); }, {randn<T>({6, 5}, gen)},
                           2 * eps, 2 * eps);
}

TEST_CASE_TEMPLATE("cuda parity: 16-bit floats through embedding, rope, masks, indexing, scans and rand", T, bfloat16,
                   float16) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(10);
  const auto on_gpu = [](const auto& t) { return t.to(Device::cuda()); };
  const double eps = condense::testing::half_epsilon<T>;
  // Data movement: the same bits on both devices.
  const auto weight = randn<T>({6, 9}, gen);
  const auto ids = randint<std::int64_t>({4, 15}, 0, 6, gen);  // under 32 hits per row: one ordered sum
  CHECK(values(embedding(on_gpu(weight), ids).cpu()) == values(embedding(weight, ids)));
  CHECK(values(embedding(on_gpu(weight), on_gpu(ids), 2).cpu()) == values(embedding(weight, ids, 2)));
  const auto a = randn<T>({3, 4}, gen), b = randn<T>({4}, gen);
  const auto cond = gt(randn<float>({3, 4}, gen), 0.0f);
  constexpr float inf = std::numeric_limits<float>::infinity();
  CHECK(values(where(on_gpu(cond), on_gpu(a), on_gpu(b)).cpu()) == values(where(cond, a, b)));
  CHECK(values(where(on_gpu(cond), on_gpu(a), 0.1f).cpu()) == values(where(cond, a, 0.1f)));
  CHECK(values(masked_fill(on_gpu(a), on_gpu(cond), -inf).cpu()) == values(masked_fill(a, cond, -inf)));
  CHECK(values(cat({on_gpu(a), on_gpu(a)}, 1).cpu()) == values(cat({a, a}, 1)));
  CHECK(values(stack({on_gpu(a), on_gpu(a)}, 2).cpu()) == values(stack({a, a}, 2)));
  const auto repeats = tensor<std::int64_t>({3, 0, 3, 3, 1});
  CHECK(values(index_select(on_gpu(a), 1, repeats).cpu()) == values(index_select(a, 1, repeats)));
  const auto from = randint<std::int64_t>({7, 4}, 0, 3, gen);
  CHECK(values(gather(on_gpu(a), 0, on_gpu(from)).cpu()) == values(gather(a, 0, from)));
  // Comparisons in float, with 16-bit scalars and with float scalars (exact in T or not).
  const auto c = randn<T>({3, 4}, gen);
  CHECK(values(lt(on_gpu(a), on_gpu(c)).cpu()) == values(lt(a, c)));
  CHECK(values(ge(on_gpu(a), on_gpu(b)).cpu()) == values(ge(a, b)));
  CHECK(values(eq(on_gpu(a), on_gpu(a)).cpu()) == values(eq(a, a)));
  CHECK(values(ne(on_gpu(a), T(0.5f)).cpu()) == values(ne(a, T(0.5f))));
  CHECK(values(gt(on_gpu(a), 0.5f).cpu()) == values(gt(a, 0.5f)));
  const float above = std::nextafter(static_cast<float>(T(0.3f)), 1.0f);  // not exact in T
  const auto near = tensor<float>({static_cast<float>(T(0.3f)), 1.0f, -1.0f}).template cast<T>();
  CHECK(values(lt(on_gpu(near), above).cpu()) == values(lt(near, above)));
  CHECK(values(le(on_gpu(a), above).cpu()) == values(le(a, above)));
  // rand on the device: drawn on the host, so the same draws.
  Generator g1(3), g2(3);
  CHECK(values(rand<T>({1000}, g1, Device::cuda()).cpu()) == values(rand<T>({1000}, g2)));
  // Gradients: sums in float rounded once on both devices; the float ops through which
  // rope, scatter_add and the scans run may differ by a float ulp, so one unit of T.
  check_cpu_cuda_parity<T>([&](const auto& v) { return embedding(v[0], ids); }, {weight}, eps, eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return where(cond.to(v[0].device()), v[0], v[1]); }, {a, b}, eps, eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return masked_fill(v[0], cond.to(v[0].device()), -1.5f); }, {a}, eps, eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return cat({v[0], v[1].reshape({1, 4})}, 0); }, {a, b}, eps, eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return index_select(v[0], 1, repeats); }, {a}, eps, eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return gather(v[0], 0, from.to(v[0].device())); }, {a}, eps, eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return scatter_add(v[0], 0, from.to(v[0].device()), v[1]); },
                           {a, randn<T>({7, 4}, gen)}, 2 * eps, 2 * eps);
  const auto x = randn<T>({2, 3, 5, 8}, gen);
  const auto positions = tensor<std::int64_t>({0, 1, 2, 7, 100});
  const RopeTable<float> table = rope_table<float>(positions, 8);
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0], table); }, {x}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([&](const auto& v) { return rope(v[0].transpose(1, 2), positions.to(v[0].device())); },
                           {randn<T>({2, 5, 3, 8}, gen)}, 2 * eps, 2 * eps);
  check_cpu_cuda_parity<T>([](const auto& v) { return cumsum(v[0], 1); }, {randn<T>({3, 40, 5}, gen)}, 2 * eps, 2 * eps);
  const auto near_one = add(mul(randn<float>({3, 12, 5}, gen), 0.1f), 1.0f).template cast<T>();
  check_cpu_cuda_parity<T>([](const auto& v) { return cumprod(v[0], 1); }, {near_one}, 2 * eps, 4 * eps);
}

TEST_CASE_TEMPLATE("cuda parity: softmax and log_softmax along every dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(4);
  const auto x = mul(randn<T>({4, 9, 300}, gen), T(3));  // rows of 4, 9 and 300
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (std::int64_t dim : {0, 1, 2, -1}) {
    CAPTURE(dim);
    check_cpu_cuda_parity<T>([&](const auto& v) { return softmax(v[0], dim); }, {x}, tol, tol);
    check_cpu_cuda_parity<T>([&](const auto& v) { return log_softmax(v[0], dim); }, {x}, tol, tol);
  }
  // a row of only -inf: zeros (softmax) and -inf (log_softmax), as on the CPU
  constexpr T inf = std::numeric_limits<T>::infinity();
  const auto masked = tensor<T>({-inf, -inf, -inf, 1, 2, 3}).reshape({2, 3});
  const auto soft = values(softmax(masked.to(Device::cuda()), 1).cpu());
  CHECK(std::vector<double>(soft.begin(), soft.begin() + 3) == std::vector<double>{0, 0, 0});
  CHECK(allclose(softmax(masked.to(Device::cuda()), 1).cpu(), softmax(masked, 1), 1e-6, 1e-7));
  const auto logsoft = values(log_softmax(masked.to(Device::cuda()), 1).cpu());
  CHECK(std::vector<double>(logsoft.begin(), logsoft.begin() + 3) == std::vector<double>(3, -inf));
}

TEST_CASE_TEMPLATE("cuda parity: matmul, bmm and linear", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(5);
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
  const auto mm = [](const auto& v) { return matmul(v[0], v[1]); };
  check_cpu_cuda_parity<T>(mm, {randn<T>({17, 33}, gen), randn<T>({33, 9}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>(mm, {randn<T>({33}, gen), randn<T>({33, 9}, gen)}, tol, tol);              // vector @ matrix
  check_cpu_cuda_parity<T>(mm, {randn<T>({17, 33}, gen), randn<T>({33}, gen)}, tol, tol);             // matrix @ vector
  check_cpu_cuda_parity<T>(mm, {randn<T>({2, 3, 17, 33}, gen), randn<T>({33, 9}, gen)}, tol, tol);    // shared weight
  check_cpu_cuda_parity<T>(mm, {randn<T>({2, 1, 17, 33}, gen), randn<T>({3, 33, 9}, gen)}, tol, tol); // broadcast batch
  check_cpu_cuda_parity<T>([](const auto& v) { return matmul(v[0].transpose(-1, -2), v[1].transpose(-1, -2)); },
                           {randn<T>({4, 33, 17}, gen), randn<T>({4, 9, 33}, gen)}, tol, tol);  // column-major operands
  check_cpu_cuda_parity<T>([](const auto& v) { return matmul(v[0].slice(2, 0, 33, 2), v[1]); },
                           {randn<T>({4, 17, 33}, gen), randn<T>({4, 17, 9}, gen)}, tol, tol);  // copied operand
  check_cpu_cuda_parity<T>([](const auto& v) { return bmm(v[0], v[1]); }, {randn<T>({5, 8, 16}, gen), randn<T>({5, 16, 4}, gen)},
                           tol, tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return linear(v[0], v[1], v[2]); },
                           {randn<T>({3, 7, 32}, gen), randn<T>({24, 32}, gen), randn<T>({24}, gen)}, tol, tol);
  check_cpu_cuda_parity<T>([](const auto& v) { return linear(v[0], v[1]); }, {randn<T>({32}, gen), randn<T>({24, 32}, gen)},
                           tol, tol);
  // an empty contraction gives zeros
  const auto z = matmul(zeros<T>({3, 0}, Device::cuda()), zeros<T>({0, 4}, Device::cuda()));
  CHECK(values(z.cpu()) == std::vector<double>(12, 0.0));
}

TEST_CASE("cuda: device-side copies, casts and fills") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(6);
  const auto h = randn<float>({4, 5, 6}, gen);
  const auto d = h.to(Device::cuda());
  const auto view = d.permute({2, 0, 1}).slice(1, 1, 4);
  CHECK(values(view.contiguous().cpu()) == values(h.permute({2, 0, 1}).slice(1, 1, 4).contiguous()));
  CHECK(values(view.cpu()) == values(h.permute({2, 0, 1}).slice(1, 1, 4)));
  CHECK(values(d.cast<double>().cpu()) == values(h.cast<double>()));
  CHECK(values(d.cast<bfloat16>().cpu()) == values(h.cast<bfloat16>()));
  CHECK(values(d.cast<float16>().cast<float>().cpu()) == values(h.cast<float16>().cast<float>()));
  CHECK(values(d.cast<std::int32_t>().cpu()) == values(h.cast<std::int32_t>()));
  CHECK(values(full<float>({3, 2}, 2.5f, Device::cuda()).cpu()) == std::vector<double>(6, 2.5));
  CHECK(values(full<bfloat16>({3}, bfloat16(1.5f), Device::cuda()).cpu()) == std::vector<double>(3, 1.5));
  CHECK(values(full<std::int64_t>({2}, std::int64_t{1} << 60, Device::cuda()).cpu()) ==
        std::vector<double>(2, static_cast<double>(std::int64_t{1} << 60)));
}

TEST_CASE_TEMPLATE("cuda: copies of views move the widest units the layout allows, element for element", T, bfloat16,
                   float, double, std::int64_t, bool) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(12);
  // Innermost rows of 64, 8, 6, 3 and 1 elements, whole and from an odd offset (narrowed):
  // 16-, 8-, 4-, 2-byte and element-sized units; transposes, a broadcast row and a
  // contiguous copy. Every element must land where the CPU puts it.
  for (const std::int64_t inner : {64, 8, 6, 3, 1}) {
    CAPTURE(inner);
    const auto h = randint<std::int64_t>({3, 5, 4, inner}, -100, 100, gen).cast<T>();
    const auto d = h.to(Device::cuda());
    const auto same = [](const Tensor<T>& gpu, const Tensor<T>& cpu) {
      REQUIRE(gpu.shape() == cpu.shape());
      CHECK(gpu.contiguous().cpu().to_vector() == cpu.contiguous().to_vector());
    };
    same(d.transpose(1, 2), h.transpose(1, 2));                                  // [B, T, H, D] -> [B, H, T, D]
    same(d.permute({2, 0, 1, 3}), h.permute({2, 0, 1, 3}));
    same(d.clone(), h);                                                          // contiguous
    same(d.narrow(3, inner > 1 ? 1 : 0, inner > 1 ? inner - 1 : 1).transpose(0, 1),  // odd start and length
         h.narrow(3, inner > 1 ? 1 : 0, inner > 1 ? inner - 1 : 1).transpose(0, 1));
    same(d.narrow(0, 1, 1).expand({4, 5, 4, inner}), h.narrow(0, 1, 1).expand({4, 5, 4, inner}));  // broadcast
    same(d.slice(1, 0, 5, 2), h.slice(1, 0, 5, 2));                              // every other row
  }
}

TEST_CASE("cuda: copies and maps of views past 2^31 elements take the 64-bit index path") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  // One row of 7 expanded to [rows, 7] with 7 * rows > 2^31: neither the element count nor
  // the output's offsets fit the 31-bit fast path of the strided kernels (4.3 GB per
  // bfloat16 result). Rows at the start, the middle and the end must hold the row.
  const std::int64_t rows = (std::int64_t{1} << 31) / 7 + 3;
  const auto row = tensor<float>({0, 1, 2, 3, 4, 5, 6}).cast<bfloat16>().reshape({1, 7}).to(Device::cuda());
  const auto wide = row.expand({rows, 7});
  const auto check_rows = [&](const Tensor<bfloat16>& t, double shift) {
    REQUIRE(t.shape() == Shape{rows, 7});
    for (const std::int64_t r : {std::int64_t{0}, rows / 2, rows - 1}) {
      CAPTURE(r);
      const auto got = values(t.narrow(0, r, 1).cpu());
      for (std::size_t c = 0; c < 7; ++c) CHECK(got[c] == static_cast<double>(c) + shift);
    }
  };
  try {
    check_rows(wide.contiguous(), 0.0);                   // a copy of one element type
    check_rows(add(wide, bfloat16(1.0f)), 1.0);            // a map
    check_rows(wide.cast<float>().cast<bfloat16>(), 0.0);  // a converting copy and back
  } catch (const Error& e) {  // a device with less than the ~13 GB this needs at its peak
    if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
    MESSAGE("SKIPPED: not enough device memory: ", std::string(e.what()));
  }
}

TEST_CASE_TEMPLATE("cuda parity: tensors of more than 8 dims run when their merged dims fit", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(14);
  const double rtol = cuda_rtol<T>, atol = cuda_atol<T>;
  // 10 dims of extent > 1. The launchers take 8 dims; the operands of one launch merge
  // their neighbouring dims jointly first, so contiguous, broadcast and partly permuted
  // operands of any rank run.
  const Shape big{2, 3, 2, 2, 2, 2, 2, 2, 3, 2};
  const auto x = randn<T>(big, gen);
  const auto y = randn<T>({3, 1, 1, 1, 1, 1, 1, 3, 2}, gen);  // broadcasts to [2, 3, 64, 6] merged
  check_cpu_cuda_parity<T>([](const auto& v) { return exp(v[0]); }, {x}, rtol, atol);
  check_cpu_cuda_parity<T>([](const auto& v) { return mul(v[0], v[1]); }, {x, y}, rtol, atol);
  check_cpu_cuda_parity<T>([](const auto& v) { return where(gt(v[0], T(0)), v[0], v[1]); }, {x, y}, rtol, atol);
  // Sums over scattered dims (kept and reduced dims each merged), with and without keepdim;
  // the gradients expand back over 10 dims.
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0], {1, 4, 5, 9}, true); }, {x}, rtol, atol);
  check_cpu_cuda_parity<T>([](const auto& v) { return sum(v[0], {0, 2, 3, 8}); }, {x}, rtol, atol);
  // Two swapped leading dims: dims 2..9 still merge into one (3 dims in all).
  check_cpu_cuda_parity<T>([](const auto& v) { return v[0].transpose(0, 1).contiguous() * T(2); }, {x}, rtol, atol);
  // Dropout draws the CPU's mask over the 10-dim input.
  Generator g_cpu(3), g_gpu(3);
  CHECK(values(dropout(x.to(Device::cuda()), 0.5, g_gpu).cpu()) == values(dropout(x, 0.5, g_cpu)));
  // Fully reversed dims cannot merge: 10 dims remain, and the op says so.
  std::vector<std::int64_t> reversed(big.size());
  for (std::size_t d = 0; d < big.size(); ++d) reversed[d] = static_cast<std::int64_t>(big.size() - 1 - d);
  const auto xd = x.to(Device::cuda());
  CHECK_THROWS_WITH_AS(xd.permute(reversed).contiguous(), doctest::Contains("[contiguous]"), Error);
  CHECK_THROWS_WITH_AS(xd.permute(reversed).contiguous(), doctest::Contains("10 dims left"), Error);
  CHECK_THROWS_WITH_AS(sum(xd.permute(reversed), {0}), doctest::Contains("dims left"), Error);
}

TEST_CASE("cuda: the caching allocator reuses blocks and counts bytes") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  cuda::synchronize(0);
  cuda::empty_cache();
  const MemoryStats before = cuda::memory_stats(0);
  const void* first = nullptr;
  {
    auto t = empty<float>({1000, 1000}, Device::cuda());
    first = t.data();
    CHECK(cuda::memory_stats(0).active_bytes >= before.active_bytes + 4000000);
  }
  const MemoryStats freed = cuda::memory_stats(0);
  CHECK(freed.active_bytes == before.active_bytes);
  CHECK(freed.cached_bytes >= 4000000);
  {
    auto t = empty<float>({999, 1001}, Device::cuda());  // same size class: the cached block
    CHECK(static_cast<const void*>(t.data()) == first);
    CHECK(cuda::memory_stats(0).hits == freed.hits + 1);
  }
  cuda::empty_cache();
  CHECK(cuda::memory_stats(0).cached_bytes == 0);
  CHECK(cuda::memory_stats(0).peak_bytes >= before.active_bytes + 4000000);
  CHECK_THROWS_WITH_AS(empty<float>({std::int64_t{1} << 40}, Device::cuda()), doctest::Contains("out of memory"), Error);
}

TEST_CASE("cuda parity: an MLP training step (linear, gelu, log_softmax, mean)") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(7);
  const auto x = randn<float>({16, 32}, gen);
  const auto w1 = mul(randn<float>({64, 32}, gen), 0.2f);
  const auto b1 = randn<float>({64}, gen);
  const auto w2 = mul(randn<float>({10, 64}, gen), 0.2f);
  const auto onehot = zeros<float>({16, 10});
  check_cpu_cuda_parity<float>(
      [](const auto& v) {
        const auto h = gelu(linear(v[0], v[1], v[2]));
        const auto logp = log_softmax(linear(h, v[3]), -1);
        return mean(neg(logp * v[4]) + square(logp) * 1e-3f, {1});
      },
      {x, w1, b1, w2, onehot + 0.1f}, 1e-4, 1e-5);
}

namespace {
/// Turns cuda::allow_bf16_matmul on for a scope.
struct Bf16MatmulScope {
  Bf16MatmulScope() { cuda::set_allow_bf16_matmul(true); }
  ~Bf16MatmulScope() { cuda::set_allow_bf16_matmul(false); }
  Bf16MatmulScope(const Bf16MatmulScope&) = delete;
  Bf16MatmulScope& operator=(const Bf16MatmulScope&) = delete;
};

/// t with every element rounded to bfloat16 (and back to float).
Tensor<float> rounded_to_bf16(const Tensor<float>& t) { return t.cast<bfloat16>().cast<float>(); }
}  // namespace

TEST_CASE("cuda: the bf16 GEMM mode rounds float operands to bfloat16 and accumulates in float") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(6);
  const auto a = randn<float>({3, 17, 64}, gen);
  const auto b = randn<float>({64, 24}, gen);
  const auto w = randn<float>({24, 64}, gen);
  const auto g = randn<float>({3, 17, 24}, gen);
  Tensor<float> product, projected, grad_a, grad_w;
  {
    const Bf16MatmulScope bf16;
    CHECK(cuda::allow_bf16_matmul());
    product = matmul(a.to(Device::cuda()), b.to(Device::cuda())).cpu();
    auto da = testing::leaf_on(a, Device::cuda());
    auto dw = testing::leaf_on(w, Device::cuda());
    const auto y = linear(da, dw);
    projected = y.cpu();
    sum(y * g.to(Device::cuda())).backward();
    grad_a = da.grad().cpu();
    grad_w = dw.grad().cpu();
  }
  CHECK_FALSE(cuda::allow_bf16_matmul());
  // The CPU reference rounds the same operands, then multiplies in float: only the order of
  // the float sums differs.
  const auto ra = rounded_to_bf16(a), rb = rounded_to_bf16(b), rw = rounded_to_bf16(w), rg = rounded_to_bf16(g);
  CHECK(allclose(product, matmul(ra, rb), 1e-5, 1e-4));
  CHECK(allclose(projected, linear(ra, rw), 1e-5, 1e-4));
  CHECK(allclose(grad_a, matmul(rg, rw), 1e-5, 1e-4));  // g W
  CHECK(allclose(grad_w, matmul(rg.reshape({51, 24}).transpose(0, 1), ra.reshape({51, 64})), 1e-5, 1e-4));  // g^T a
  // The mode is really on: the float product differs by far more than the tolerance.
  CHECK(max_abs_diff(product, matmul(a, b)) > 1e-3);
}

}  // namespace test_cuda_ops
