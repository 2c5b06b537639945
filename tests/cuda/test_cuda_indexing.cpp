// CUDA parity of the joining and indexing ops: cat and stack along every dim (contiguous and
// strided pieces), index_select, gather and scatter_add along every dim (repeated indices,
// indices on the CPU or on the device, more than 8 dims), values and gradients against the
// CPU path; KV caches that grow, clone, select rows and move between devices. Skips without
// a device.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"

namespace test_cuda_indexing {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::values;

TEST_CASE_TEMPLATE("cuda parity: cat and stack along every dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(31);
  const auto a = randn<T>({3, 4, 5}, gen);
  const auto b = randn<T>({3, 2, 5}, gen);
  const auto c = randn<T>({5, 4, 3}, gen);  // transposed below: a strided piece
  check_cpu_cuda_parity<T>([](const auto& v) { return cat({v[0], v[1], v[0]}, 1); }, {a, b}, 1e-12, 1e-12);
  check_cpu_cuda_parity<T>([](const auto& v) { return cat({v[0], v[1].transpose(0, 2)}, 0); }, {a, c}, 1e-12, 1e-12);
  for (std::int64_t dim : {0, 1, 2, 3, -1}) {
    CAPTURE(dim);
    check_cpu_cuda_parity<T>([dim](const auto& v) { return stack({v[0], v[1].transpose(0, 2)}, dim); }, {a, c}, 1e-12,
                             1e-12);
  }
  // An empty piece, and mixed devices.
  check_cpu_cuda_parity<T>([](const auto& v) { return cat({v[0], v[1]}, 1); }, {a, zeros<T>({3, 0, 5})}, 1e-12, 1e-12);
  CHECK_THROWS_AS(cat({a, b.to(Device::cuda())}, 1), Error);
}

TEST_CASE_TEMPLATE("cuda parity: index_select along every dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(32);
  const auto x = randn<T>({4, 6, 3}, gen);
  const auto index = tensor<std::int64_t>({5, 0, 5, 2, 5});  // repeats: the gradient accumulates
  for (std::int64_t dim : {0, 1, 2, -2}) {
    CAPTURE(dim);
    const auto picks = tensor<std::int64_t>({2, 0, 2});  // valid along every dim
    check_cpu_cuda_parity<T>([&](const auto& v) { return index_select(v[0], dim, picks); }, {x}, 1e-12, 1e-12);
    check_cpu_cuda_parity<T>([&](const auto& v) { return index_select(v[0], dim, picks.to(v[0].device())); }, {x}, 1e-12,
                             1e-12);
  }
  check_cpu_cuda_parity<T>([&](const auto& v) { return index_select(v[0], 1, index); }, {x}, 1e-12, 1e-12);
  const auto int32_index = tensor<std::int32_t>({3, 1});
  check_cpu_cuda_parity<T>([&](const auto& v) { return index_select(v[0].transpose(0, 1), 0, int32_index); }, {x}, 1e-12,
                           1e-12);
  CHECK_THROWS_WITH_AS(index_select(x.to(Device::cuda()), 1, tensor<std::int64_t>({6})), doctest::Contains("out of range"),
                       Error);
  // Integer and bool tensors are gathered too.
  const auto ints = arange<std::int64_t>(12).reshape({3, 4});
  CHECK(values(index_select(ints.to(Device::cuda()), 1, tensor<std::int64_t>({3, 3, 0})).cpu()) ==
        values(index_select(ints, 1, tensor<std::int64_t>({3, 3, 0}))));
}

TEST_CASE_TEMPLATE("cuda parity: gather and scatter_add along every dim", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(34);
  const auto x = randn<T>({4, 5, 6}, gen);
  const auto x_transposed = randn<T>({6, 5, 4}, gen);  // transposed back: a strided [4, 5, 6] base
  for (std::int64_t dim : {0, 1, 2, -1}) {
    CAPTURE(dim);
    const auto d = static_cast<std::size_t>(dim < 0 ? dim + 3 : dim);
    // An index shorter than x outside `dim` and longer along it, with repeated values.
    Shape shape{3, 4, 5};
    shape[d] = 7;
    const auto index = randint<std::int64_t>(shape, 0, x.shape()[d], gen);
    check_cpu_cuda_parity<T>([&](const auto& v) { return gather(v[0], dim, index.to(v[0].device())); }, {x}, 1e-12, 1e-12);
    check_cpu_cuda_parity<T>([&](const auto& v) { return gather(v[0], dim, index); }, {x}, 1e-12, 1e-12);
    const auto src = randn<T>(shape, gen);
    check_cpu_cuda_parity<T>([&](const auto& v) { return scatter_add(v[0], dim, index, v[1]); }, {x, src}, 1e-12, 1e-12);
    // A transposed (strided) base and an index narrower than src.
    check_cpu_cuda_parity<T>(
        [&](const auto& v) { return scatter_add(v[0].transpose(0, 2), dim, index.narrow(2, 0, 2), v[1]); },
        {x_transposed, src}, 1e-12, 1e-12);
  }
  const auto bad = full<std::int64_t>({1, 1, 1}, 9);
  CHECK_THROWS_WITH_AS(gather(x.to(Device::cuda()), 1, bad), doctest::Contains("out of range"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x.to(Device::cuda()), 1, bad, x.to(Device::cuda())), doctest::Contains("out of range"),
                       Error);
  // Integer scatter_add.
  const auto ints = zeros<std::int64_t>({2, 3});
  const auto where_to = tensor<std::int64_t>({2, 2, 0, 1, 1, 1}).reshape({2, 3});
  const auto ones_src = ones<std::int64_t>({2, 3});
  CHECK(values(scatter_add(ints.to(Device::cuda()), 1, where_to, ones_src.to(Device::cuda())).cpu()) ==
        values(scatter_add(ints, 1, where_to, ones_src)));
}

TEST_CASE_TEMPLATE("cuda parity: gather and scatter_add of more than 8 dims merge the dims around the indexed one", T,
                   float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(35);
  // 10 dims; indexed along dim 5. The dims before it and the dims after it merge on each
  // side (an index of extent 1 in dim 0 drops it; one of extent 1 in dim 8 keeps 7 and 9
  // apart in the input), so few dims reach the kernels.
  const auto x = randn<T>({2, 3, 2, 2, 2, 3, 2, 2, 2, 2}, gen);
  for (const std::int64_t narrow_dim : {0, 8}) {
    CAPTURE(narrow_dim);
    Shape shape = x.shape();
    shape[5] = 4;
    shape[static_cast<std::size_t>(narrow_dim)] = 1;
    const auto index = randint<std::int64_t>(shape, 0, 3, gen);  // repeated values along dim 5
    check_cpu_cuda_parity<T>([&](const auto& v) { return gather(v[0], 5, index.to(v[0].device())); }, {x}, 1e-12, 1e-12);
    const auto src = randn<T>(shape, gen);
    check_cpu_cuda_parity<T>([&](const auto& v) { return scatter_add(v[0], 5, index, v[1]); }, {x, src}, 1e-12, 1e-12);
  }
  // An input whose dims are all reversed merges nothing: 10 dims, and the op says so.
  const auto reversed = x.to(Device::cuda()).permute({9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  const auto index = zeros<std::int64_t>(reversed.shape());
  CHECK_THROWS_WITH_AS(gather(reversed, 0, index), doctest::Contains("10 dims left"), Error);
  CHECK_THROWS_WITH_AS(gather(reversed, 0, index), doctest::Contains("[gather]"), Error);
}

TEST_CASE("cuda: KV caches grow, clone, select rows and move between devices") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(33);
  const auto k1 = randn<float>({3, 2, 4, 8}, gen), v1 = randn<float>({3, 2, 4, 8}, gen);
  const auto k2 = randn<float>({3, 2, 5, 8}, gen), v2 = randn<float>({3, 2, 5, 8}, gen);
  nn::LayerKV<float> cpu, gpu;
  cpu.append(k1, v1);
  cpu.append(k2, v2);
  gpu.append(k1.to(Device::cuda()), v1.to(Device::cuda()));
  gpu.append(k2.to(Device::cuda()), v2.to(Device::cuda()));
  CHECK(gpu.keys().device() == Device::cuda());
  CHECK(values(gpu.keys().cpu()) == values(cpu.keys()));
  CHECK(values(gpu.clone().values().cpu()) == values(cpu.values()));
  const auto rows = tensor<std::int64_t>({2, 0, 2});
  CHECK(values(gpu.select_rows(rows).keys().cpu()) == values(cpu.select_rows(rows).keys()));
  CHECK(values(cpu.to(Device::cuda()).keys().cpu()) == values(cpu.keys()));
  CHECK(values(gpu.to(Device::cpu()).values()) == values(cpu.values()));
  CHECK_THROWS_AS(gpu.append(k1, v1), Error);  // CPU keys into a GPU cache
}

}  // namespace test_cuda_indexing
