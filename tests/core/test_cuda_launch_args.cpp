// The host-side part of the CUDA launch path, which runs without a GPU: dim coalescing of
// launcher operands (jointly, for any rank), operand descriptions with broadcast strides,
// which policies have CUDA attention kernels and how attention() takes query offsets and
// key padding out of the combinators around a policy, the elementwise kernels' scalar parameters (exact int64), and
// the errors a CPU-only build gives for CUDA tensors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "condense/backend/cuda/attention.hpp"
#include "condense/backend/cuda/kernels.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/factories.hpp"
#include "condense/mask/policies.hpp"
#include "condense/ops/attention.hpp"
#include "condense/ops/indexing.hpp"
#include "test_util.hpp"

namespace test_cuda_launch_args {

using namespace condense;

namespace {

cuda::StridedArg make_arg(std::initializer_list<std::int64_t> sizes, std::initializer_list<std::int64_t> strides) {
  cuda::StridedArg a;
  for (auto s : sizes) a.sizes[a.ndim++] = s;
  int d = 0;
  for (auto s : strides) a.strides[d++] = s;
  return a;
}

std::vector<std::int64_t> sizes_of(const cuda::StridedArg& a) { return {a.sizes, a.sizes + a.ndim}; }
std::vector<std::int64_t> strides_of(const cuda::StridedArg& a) { return {a.strides, a.strides + a.ndim}; }

}  // namespace

TEST_CASE("cuda launch args: contiguous operands coalesce to one dim") {
  auto out = make_arg({2, 3, 4}, {12, 4, 1});
  auto in = make_arg({2, 3, 4}, {12, 4, 1});
  cuda::coalesce({&out, &in});
  CHECK(sizes_of(out) == std::vector<std::int64_t>{24});
  CHECK(strides_of(in) == std::vector<std::int64_t>{1});
  CHECK(out.is_contiguous());
}

TEST_CASE("cuda launch args: a broadcast operand keeps the dims apart, extent-1 dims drop") {
  auto out = make_arg({2, 1, 3, 4}, {12, 12, 4, 1});
  auto a = make_arg({2, 1, 3, 4}, {0, 7, 4, 1});  // broadcast along dim 0
  cuda::coalesce({&out, &a});
  CHECK(sizes_of(out) == std::vector<std::int64_t>{2, 12});
  CHECK(strides_of(out) == std::vector<std::int64_t>{12, 1});
  CHECK(strides_of(a) == std::vector<std::int64_t>{0, 1});
  CHECK(out.numel() == 24);
  CHECK(!a.is_contiguous());
}

TEST_CASE("cuda launch args: a transposed operand is not merged") {
  auto out = make_arg({3, 4}, {4, 1});
  auto in = make_arg({3, 4}, {1, 3});
  cuda::coalesce({&out, &in});
  CHECK(out.ndim == 2);
  CHECK(strides_of(in) == std::vector<std::int64_t>{1, 3});
}

TEST_CASE("cuda launch args: tensors become operands with broadcast strides") {
  const auto a = arange<float>(15).reshape({3, 1, 5});
  const auto arg = detail::cuda_arg("test", a, Shape{2, 3, 4, 5});
  CHECK(sizes_of(arg) == std::vector<std::int64_t>{2, 3, 4, 5});
  CHECK(strides_of(arg) == std::vector<std::int64_t>{0, 5, 0, 1});
  CHECK(arg.dtype == DType::Float32);
  CHECK(arg.data == static_cast<const void*>(a.data()));
  const auto t = arange<double>(24).reshape({2, 3, 4}).transpose(0, 2).slice(1, 1, 3);
  const auto targ = detail::cuda_arg("test", t);
  CHECK(sizes_of(targ) == std::vector<std::int64_t>{4, 2, 2});
  CHECK(strides_of(targ) == std::vector<std::int64_t>{1, 4, 12});
  CHECK(targ.data == static_cast<const void*>(t.data()));
  const auto many = zeros<float>({2, 2, 2, 2, 2, 2, 2, 2, 2});
  CHECK_THROWS_WITH_AS(detail::cuda_arg("test", many), doctest::Contains("at most 8 dims"), Error);
}

TEST_CASE("cuda launch args: operands of any rank merge their dims jointly before the 8-dim limit") {
  // A contiguous 9-dim tensor is one dim.
  const auto c = zeros<float>({2, 2, 2, 2, 2, 2, 2, 2, 2});
  const auto [only] = detail::cuda_args("test", c.shape(), c);
  CHECK(sizes_of(only) == std::vector<std::int64_t>{512});
  CHECK(strides_of(only) == std::vector<std::int64_t>{1});
  CHECK(only.data == static_cast<const void*>(c.data()));
  // A broadcast operand over 10 dims keeps apart only the dims where it changes pattern.
  const auto out = zeros<float>({2, 3, 2, 2, 2, 2, 2, 2, 2, 4});
  const auto b = arange<double>(12).reshape({3, 1, 1, 1, 1, 1, 1, 1, 4});
  const auto [out_arg, b_arg] = detail::cuda_args("test", out.shape(), out, b);
  CHECK(sizes_of(out_arg) == std::vector<std::int64_t>{2, 3, 128, 4});
  CHECK(sizes_of(b_arg) == sizes_of(out_arg));
  CHECK(strides_of(out_arg) == std::vector<std::int64_t>{1536, 512, 4, 1});
  CHECK(strides_of(b_arg) == std::vector<std::int64_t>{0, 4, 0, 1});
  CHECK(b_arg.dtype == DType::Float64);
  // Reversed dims do not merge: 9 remain, and the error names the op, the shape and the count.
  const auto reversed = c.permute({8, 7, 6, 5, 4, 3, 2, 1, 0});
  CHECK_THROWS_WITH_AS(detail::cuda_args("copy", reversed.shape(), c, reversed), doctest::Contains("[copy]"), Error);
  CHECK_THROWS_WITH_AS(detail::cuda_args("copy", reversed.shape(), c, reversed), doctest::Contains("9 dims left"), Error);
  // The dim merging itself: extent-1 dims drop, a dim merges into its outer neighbour when
  // every operand's strides allow it.
  std::int64_t sizes[] = {4, 1, 3, 5};
  std::int64_t first[] = {15, 99, 5, 1}, second[] = {1, 99, 20, 4};
  std::int64_t* strides[] = {first, second};
  CHECK(cuda::coalesce_dims(sizes, strides, 2, 4) == 2);
  CHECK(std::vector<std::int64_t>(sizes, sizes + 2) == std::vector<std::int64_t>{4, 15});
  CHECK(std::vector<std::int64_t>(first, first + 2) == std::vector<std::int64_t>{15, 1});
  CHECK(std::vector<std::int64_t>(second, second + 2) == std::vector<std::int64_t>{1, 4});
}

TEST_CASE("cuda launch args: indexing operands merge the dims on each side of the indexed one") {
  // gather of [B, T, V] along V with an index [B, T, 1]: B and T merge, the indexed dim stays
  // (extent 1 included), nothing follows it.
  const auto logits = zeros<float>({4, 6, 10});
  const auto picks = zeros<std::int64_t>({4, 6, 1});
  const auto out = zeros<float>({4, 6, 1});
  const auto walk = detail::cuda_indexing_args("gather", picks.shape(), 2, out, logits, picks);
  CHECK(walk.dim == 1);
  CHECK(sizes_of(walk.args[1]) == std::vector<std::int64_t>{24, 1});
  CHECK(strides_of(walk.args[1]) == std::vector<std::int64_t>{10, 1});
  CHECK(strides_of(walk.args[2]) == std::vector<std::int64_t>{1, 1});
  CHECK(walk.args[2].dtype == DType::Int64);
  // Along a middle dim of a transposed input: the dims before it do not merge for that input.
  const auto x = zeros<double>({5, 3, 4, 2}).transpose(0, 1);  // [3, 5, 4, 2]
  const auto index = zeros<std::int64_t>({3, 5, 7, 2});
  const auto rows = zeros<double>({3, 5, 7, 2});
  const auto mid = detail::cuda_indexing_args("gather", index.shape(), 2, rows, x, index);
  CHECK(mid.dim == 2);
  CHECK(sizes_of(mid.args[0]) == std::vector<std::int64_t>{3, 5, 7, 2});
  CHECK(strides_of(mid.args[1]) == std::vector<std::int64_t>{8, 24, 2, 1});
  // Nothing merges in a reversed 9-dim input: the error names the op and the dims left.
  const auto reversed = zeros<float>({2, 2, 2, 2, 2, 2, 2, 2, 2}).permute({8, 7, 6, 5, 4, 3, 2, 1, 0});
  const auto flat_index = zeros<std::int64_t>(reversed.shape());
  CHECK_THROWS_WITH_AS(detail::cuda_indexing_args("gather", reversed.shape(), 0, flat_index, reversed, flat_index),
                       doctest::Contains("9 dims left"), Error);
}

// attention() sends CUDA tensors only to policies whose kernels are built; the others throw.
static_assert(cuda::attention_kernels_built<mask::Causal>::value);
static_assert(cuda::attention_kernels_built<mask::Gist>::value);
static_assert(!cuda::attention_kernels_built<mask::Intersect<mask::KeyPadding, mask::Causal>>::value);

TEST_CASE("cuda launch args: elementwise scalars stay exact for int64 and saturate from doubles") {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  const std::int64_t odd = (std::int64_t{1} << 53) + 1;  // no double holds it
  CHECK(cuda::MapScalar(odd).integer == odd);
  CHECK(cuda::MapScalar(max).integer == max);
  CHECK(cuda::MapScalar(min).integer == min);
  CHECK(cuda::MapScalar(std::int32_t{-7}).integer == -7);
  CHECK(cuda::MapScalar(std::int32_t{-7}).real == -7.0);
  CHECK(cuda::MapScalar(2.5).real == 2.5);
  CHECK(cuda::MapScalar(2.5f).real == 2.5);
  CHECK(cuda::MapScalar(-2.5).integer == -2);
  CHECK(cuda::MapScalar(1e300).integer == max);
  CHECK(cuda::MapScalar(-1e300).integer == min);
  CHECK(cuda::MapScalar(0x1p63).integer == max);
  CHECK(cuda::MapScalar(-0x1p63).integer == min);
  CHECK(cuda::MapScalar(std::nan("")).integer == 0);
  // A kernel built from an op's integer bounds carries them exactly.
  const cuda::UnaryKernel clamp_kernel{cuda::UnaryOp::Clamp, odd, max};
  CHECK(clamp_kernel.s0.integer == odd);
  CHECK(clamp_kernel.s1.integer == max);
}

#if !CONDENSE_WITH_CUDA
TEST_CASE("cuda launch args: a CPU-only build names the op when asked for CUDA") {
  CHECK_FALSE(cuda::is_available());
  CHECK_THROWS_WITH_AS(zeros<float>({2}, Device::cuda()), doctest::Contains("built without CUDA"), Error);
  CHECK_THROWS_WITH_AS(cuda::gemm(cuda::GemmArgs{}, "matmul"), doctest::Contains("[matmul]"), Error);
  CHECK_THROWS_WITH_AS(cuda::synchronize(0), doctest::Contains("[cuda::synchronize]"), Error);
  CHECK(cuda::memory_stats().active_bytes == 0);
}
#endif

namespace {
/// A policy without CUDA kernels.
struct AllKeys {
  CONDENSE_HD bool allowed(int, int, int) const { return true; }
  CONDENSE_HD TileKind classify(int, int, int, int, int) const { return TileKind::Full; }
};

template <class Plan>
constexpr bool has_plan = !std::is_same_v<std::decay_t<Plan>, detail::NoCudaAttentionPlan>;
}  // namespace

TEST_CASE("cuda attention plan: query offsets and key padding come out of the combinators") {
  const auto plain = detail::cuda_attention_plan(mask::Causal{});
  static_assert(std::is_same_v<decltype(plain.base), mask::Causal>);
  CHECK(plain.query_offset == 0);
  CHECK_FALSE(plain.padded);

  const auto shifted = detail::cuda_attention_plan(mask::QueryOffset(mask::QueryOffset(mask::Causal{}, 7), 3));
  static_assert(std::is_same_v<decltype(shifted.base), mask::Causal>);
  CHECK(shifted.query_offset == 10);

  const auto padded = detail::cuda_attention_plan(mask::Causal{} & mask::KeyPadding(5));
  static_assert(std::is_same_v<decltype(padded.base), mask::Causal>);
  CHECK(padded.padded);
  CHECK(padded.padding.len(0) == 5);

  const auto both = detail::cuda_attention_plan(mask::KeyPadding(4) & mask::QueryOffset(mask::Gist(10, 13), 3));
  static_assert(std::is_same_v<decltype(both.base), mask::Gist>);
  CHECK(both.query_offset == 3);
  CHECK(both.padding.len(1) == 4);

  const auto outer_shift = detail::cuda_attention_plan(mask::QueryOffset(mask::Causal{} & mask::KeyPadding(6), 2));
  static_assert(std::is_same_v<decltype(outer_shift.base), mask::Causal>);
  CHECK(outer_shift.query_offset == 2);
  CHECK(outer_shift.padding.len(0) == 6);

  // No kernels: a policy of the user's, an intersection of two built-in policies.
  static_assert(!has_plan<decltype(detail::cuda_attention_plan(AllKeys{}))>);
  static_assert(!has_plan<decltype(detail::cuda_attention_plan(mask::Causal{} & mask::SlidingWindow(4, 0)))>);
  static_assert(!has_plan<decltype(detail::cuda_attention_plan(mask::QueryOffset(AllKeys{}, 1)))>);
  // Two paddings in one intersection are refused.
  CHECK_THROWS_AS(detail::cuda_attention_plan((mask::Causal{} & mask::KeyPadding(3)) & mask::KeyPadding(4)), Error);
}

}  // namespace test_cuda_launch_args
