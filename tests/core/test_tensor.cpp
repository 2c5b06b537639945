// Tensor<T> basics: factories, metadata, views sharing storage, to_vector/at/item, 16-bit
// storage types, printing and the generator.
#include <doctest/doctest.h>

#include "condense/core/factories.hpp"
#include "condense/core/print.hpp"
#include "test_util.hpp"

namespace test_tensor {

using namespace condense;
using condense::testing::values;

TEST_CASE("factories fill shapes and values") {
  auto z = zeros<float>({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.numel() == 6);
  CHECK(values(z) == std::vector<double>(6, 0.0));
  CHECK(values(ones<double>({2})) == std::vector<double>{1, 1});
  CHECK(values(full<std::int32_t>({3}, 7)) == std::vector<double>{7, 7, 7});
  CHECK(values(arange<std::int64_t>(4)) == std::vector<double>{0, 1, 2, 3});
  CHECK(values(arange<float>(1.0, 2.0, 0.25)) == std::vector<double>{1, 1.25, 1.5, 1.75});
  auto t = tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.at({1, 2}) == 6.0f);
  CHECK(t.is_contiguous());
  CHECK(scalar_tensor<double>(2.5).item() == 2.5);
  CHECK_THROWS_WITH_AS(from_vector<float>({1, 2, 3}, {2, 2}), "[from_vector] 3 values for shape (2x2)", Error);
  CHECK_THROWS_WITH_AS(zeros<float>({2, -1}), "[zeros] negative extent in shape (2x-1)", Error);
}

TEST_CASE("random tensors are reproducible from a seed") {
  Generator g1(42), g2(42), g3(43);
  auto a = randn<float>({100}, g1);
  auto b = randn<float>({100}, g2);
  auto c = randn<float>({100}, g3);
  CHECK(values(a) == values(b));
  CHECK(values(a) != values(c));
  double m = 0, v = 0;
  auto big = randn<double>({20000}, g1).to_vector();
  for (double x : big) m += x;
  m /= big.size();
  for (double x : big) v += (x - m) * (x - m);
  v /= big.size();
  CHECK(std::abs(m) < 0.03);
  CHECK(std::abs(v - 1.0) < 0.05);
  auto u = uniform<float>({1000}, -2.0, 3.0, g1).to_vector();
  for (float x : u) CHECK((x >= -2.0f && x < 3.0f));
  auto state = g1.state();
  const double next = g1.normal();
  g1.set_state(state);
  CHECK(g1.normal() == next);
  manual_seed(7);
  auto r1 = rand<float>({5});
  manual_seed(7);
  CHECK(values(rand<float>({5})) == values(r1));
}

TEST_CASE("views share storage and change only geometry") {
  auto t = arange<float>(24).reshape({2, 3, 4});
  auto tt = t.transpose(0, 2);
  CHECK(tt.shape() == Shape{4, 3, 2});
  CHECK(!tt.is_contiguous());
  CHECK(tt.storage().same_block(t.storage()));
  CHECK(tt.at({3, 2, 1}) == t.at({1, 2, 3}));
  auto c = tt.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.at({3, 2, 1}) == 23.0f);
  auto n = t.narrow(1, 1, 2);
  CHECK(n.shape() == Shape{2, 2, 4});
  CHECK(n.at({0, 0, 0}) == 4.0f);
  auto s = t.slice(2, 0, 4, 2);
  CHECK(values(s.select(0, 0).select(0, 0)) == std::vector<double>{0, 2});
  auto u = t.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 2, 3, 4});
  CHECK(u.squeeze(0).shape() == t.shape());
  auto e = tensor<float>({1, 2, 3}).reshape({3, 1}).expand({3, 4});
  CHECK(e.shape() == Shape{3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(values(e.contiguous().select(0, 2)) == std::vector<double>{3, 3, 3, 3});
  CHECK(t.flatten(1).shape() == Shape{2, 12});
  CHECK(t.permute({2, 0, 1}).shape() == Shape{4, 2, 3});
  CHECK(t.reshape({-1, 6}).shape() == Shape{4, 6});
  // reshape of a non-contiguous tensor copies; view refuses.
  CHECK(!tt.reshape({24}).storage().same_block(t.storage()));
  CHECK_THROWS_WITH_AS(tt.view({24}), doctest::Contains("[view] tensor of shape (4x3x2)"), Error);
}

TEST_CASE("bad view arguments throw with the op and shapes") {
  auto t = zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(t.reshape({4, 2}), "[reshape] cannot view (2x3) (6 elements) as (4x2)", Error);
  CHECK_THROWS_WITH_AS(t.transpose(0, 2), "[transpose] dim 2 out of range for a tensor of rank 2", Error);
  CHECK_THROWS_WITH_AS(t.narrow(1, 2, 2), "[narrow] range [2, 4) out of bounds for dim 1 of shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(t.expand({4, 3}), "[expand] cannot expand (2x3) to (4x3)", Error);
  CHECK_THROWS_WITH_AS(t.squeeze(0), "[squeeze] dim 0 of shape (2x3) has extent 2, not 1", Error);
  CHECK_THROWS_WITH_AS(t.at({2, 0}), "[at] index 2 out of range for dim 0 of shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(t.item(), "[item] tensor of shape (2x3) has 6 elements, expected 1", Error);
  CHECK_THROWS_WITH_AS(t.permute({0, 0}), "[permute] dim 0 repeated in order for shape (2x3)", Error);
  CHECK_THROWS_WITH_AS(Tensor<float>().shape(), "[tensor] use of an undefined tensor", Error);
}

TEST_CASE("bfloat16 and float16 round-trip through float") {
  for (float x : {0.0f, 1.0f, -2.5f, 3.140625f, 65504.0f, 1e-5f, -0.333f}) {
    CHECK(static_cast<float>(float16(x)) == doctest::Approx(x).epsilon(1e-3));
    CHECK(static_cast<float>(bfloat16(x)) == doctest::Approx(x).epsilon(1e-2));
  }
  CHECK(static_cast<float>(float16(1e6f)) == INFINITY);
  CHECK(std::isnan(static_cast<float>(bfloat16(NAN))));
  CHECK(float16(1.0f).bits == 0x3c00);
  CHECK(bfloat16(1.0f).bits == 0x3f80);
  CHECK(static_cast<float>(float16::from_bits(0x0001)) == doctest::Approx(5.960464477539063e-8));
  auto h = tensor<float>({0.5f, -1.25f, 100.0f}).cast<float16>();
  CHECK(Tensor<float16>::dtype() == DType::Float16);
  CHECK(values(h.cast<float>()) == std::vector<double>{0.5, -1.25, 100.0});
  auto b = tensor<float>({0.5f, -1.25f}).cast<bfloat16>().cast<double>();
  CHECK(values(b) == std::vector<double>{0.5, -1.25});
}

TEST_CASE("bool tensors hold masks") {
  auto m = from_vector<bool>({true, false, true, true}, {2, 2});
  CHECK(Tensor<bool>::dtype() == DType::Bool);
  CHECK(m.to_vector() == std::vector<bool>{true, false, true, true});
  CHECK(m.transpose(0, 1).to_vector() == std::vector<bool>{true, true, false, true});
  CHECK(to_string(m) == "Tensor<bool>(2x2, cpu) [[true, false], [true, true]]");
}

TEST_CASE("printing shows dtype, shape, device and elided values") {
  auto t = arange<float>(10);
  const std::string s = to_string(t);
  CHECK(s.find("Tensor<float32>(10, cpu)") == 0);
  CHECK(s.find("...") != std::string::npos);
  auto m = tensor<std::int64_t>({1, 2, 3, 4}, {2, 2});
  CHECK(to_string(m) == "Tensor<int64>(2x2, cpu) [[1, 2], [3, 4]]");
}

TEST_CASE("CUDA tensors fail clearly without a device") {
  if (cuda::is_available()) return;  // covered by tests/cuda on a GPU machine
  CHECK_THROWS_AS(zeros<float>({2}, Device::cuda()), Error);
  if (!cuda::built_with_cuda) {
    CHECK_THROWS_WITH_AS(zeros<float>({2}, Device::cuda()),
                         doctest::Contains("[zeros] CUDA device requested but condense was built without CUDA"), Error);
  }
}

}  // namespace test_tensor
