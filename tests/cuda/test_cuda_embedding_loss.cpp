// CUDA parity of the lookup ops against the CPU path, values and gradients: embedding
// (int32 and int64 ids on the CPU or on the device, repeated ids, padding_idx, strided
// tables and ids, rows hit more often than one backward work item sums, a 50257 x 768
// table) and cross_entropy (every reduction, ignored targets up to all of them, label
// smoothing, 1 to 50257 classes, no, one or many rows, targets on the CPU or on the device,
// strided logits); repeated runs give identical bits; bad ids and targets and tensors on
// the wrong device throw. Every test skips with a message when no CUDA device is present.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "condense/condense.hpp"
#include "cuda/cuda_test_util.hpp"

namespace test_cuda_embedding_loss {

using namespace condense;
using condense::testing::allclose;
using condense::testing::check_cpu_cuda_parity;
using condense::testing::leaf_on;
using condense::testing::max_abs;
using condense::testing::max_abs_diff;
using condense::testing::values;

namespace {

/// Embedding: the forward pass copies bits; the backward pass sums in the CPU's order except
/// for rows hit more than cuda::embedding_grad_chunk times (summed in chunks).
template <FloatingElement T>
constexpr double embedding_tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
/// For rows hit thousands of times: sums of thousands of N(0, 1) terms, added in another
/// order, differ by up to about 1e-4 in float (one missing term would differ by about 1).
template <FloatingElement T>
constexpr double heavy_embedding_tol = std::is_same_v<T, float> ? 1e-3 : 1e-10;

/// cross_entropy: relative tolerance, and the absolute one as a fraction of the largest
/// |value| of the CPU result (gradients of a Mean over many rows are tiny everywhere).
template <FloatingElement T>
constexpr double loss_rtol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
template <FloatingElement T>
constexpr double loss_atol_fraction = std::is_same_v<T, float> ? 1e-6 : 1e-13;

/// The identity view of an input leaf.
struct Unchanged {
  template <FloatingElement T>
  Tensor<T> operator()(const Tensor<T>& t) const {
    return t;
  }
};

/// Checks embedding(weight, ids, padding_idx) on CUDA against the CPU, values and the
/// weight's gradient; `view` maps the weight leaf to the table (e.g. a transpose).
template <FloatingElement T, IndexElement I, class View = Unchanged>
void check_embedding(const Tensor<T>& weight, const Tensor<I>& ids, std::optional<std::int64_t> padding_idx,
                     bool ids_on_cuda, double tol, View view = {}) {
  CAPTURE(weight.shape().str());
  CAPTURE(ids.shape().str());
  CAPTURE(ids_on_cuda);
  CAPTURE(padding_idx.value_or(-1000));
  const Tensor<I> gpu_ids = ids_on_cuda ? ids.to(Device::cuda()) : ids;
  check_cpu_cuda_parity<T>(
      [&](const std::vector<Tensor<T>>& v) {
        return embedding(view(v[0]), v[0].device().is_cuda() ? gpu_ids : ids, padding_idx);
      },
      {weight}, tol, tol);
}

/// The ids 0 .. counts.size() - 1 (times `stride`), id k repeated counts[k] times, shuffled.
std::vector<std::int64_t> repeated_ids(const std::vector<std::int64_t>& counts, std::int64_t stride, Generator& gen) {
  std::vector<std::int64_t> ids;
  for (std::size_t k = 0; k < counts.size(); ++k) ids.insert(ids.end(), static_cast<std::size_t>(counts[k]), static_cast<std::int64_t>(k) * stride);
  for (std::size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[static_cast<std::size_t>(gen.below(i))]);
  return ids;
}

/// Converts int64 ids to index type I.
template <IndexElement I>
Tensor<I> ids_of(const std::vector<std::int64_t>& ids, const Shape& shape) {
  std::vector<I> converted(ids.begin(), ids.end());
  return from_vector<I>(converted, shape);
}

/// Runs cross_entropy(view(logits), targets, options) on the CPU and on CUDA (targets on the
/// CPU or on the device), back-propagates the same random weighting of the output on both,
/// and compares losses and logit gradients.
template <FloatingElement T, IndexElement I, class View = Unchanged>
void check_cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, const CrossEntropyOptions& options,
                         bool targets_on_cuda, View view = {}) {
  CAPTURE(logits.shape().str());
  CAPTURE(static_cast<int>(options.reduction));
  CAPTURE(options.label_smoothing);
  CAPTURE(options.ignore_index);
  CAPTURE(targets_on_cuda);
  const Tensor<T> x_cpu = leaf_on(logits, Device::cpu());
  const Tensor<T> x_gpu = leaf_on(logits, Device::cuda());
  const Tensor<I> t_gpu = targets_on_cuda ? targets.to(Device::cuda()) : targets;
  const Tensor<T> y_cpu = cross_entropy(view(x_cpu), targets, options);
  const Tensor<T> y_gpu = cross_entropy(view(x_gpu), t_gpu, options);
  REQUIRE(y_gpu.device() == Device::cuda());
  REQUIRE(y_gpu.shape() == y_cpu.shape());
  const double loss_atol = loss_atol_fraction<T> * std::max(1.0, max_abs(y_cpu));
  CHECK_MESSAGE(allclose(y_gpu.cpu(), y_cpu, loss_rtol<T>, loss_atol), "loss differs by ", max_abs_diff(y_gpu.cpu(), y_cpu));
  Generator gen(11);
  const Tensor<T> w = randn<T>(y_cpu.shape(), gen);
  sum(y_cpu * w).backward();
  sum(y_gpu * w.to(Device::cuda())).backward();
  REQUIRE(x_cpu.grad().defined());
  REQUIRE(x_gpu.grad().defined());
  CHECK(x_gpu.grad().device() == Device::cuda());
  const Tensor<T> g_cpu = x_cpu.grad(), g_gpu = x_gpu.grad().cpu();
  // Each gradient entry is at most |w| times the reduction's scale (1 / rows for Mean, and
  // there are at most numel rows) in size: that bound, not only the largest computed entry,
  // sets the absolute tolerance, so gradients that are exactly 0 (one class) may differ by
  // rounding residue (the CPU compiler may contract a product and a subtraction into an FMA).
  const double most_rows = static_cast<double>(std::max<std::int64_t>(1, x_cpu.numel()));
  const double grad_scale = options.reduction == Reduction::Mean ? max_abs(w) / most_rows : max_abs(w);
  const double grad_atol = loss_atol_fraction<T> * std::max(max_abs(g_cpu), grad_scale);
  CHECK_MESSAGE(allclose(g_gpu, g_cpu, loss_rtol<T>, grad_atol), "gradient differs by ", max_abs_diff(g_gpu, g_cpu),
                " (largest |gradient| ", max_abs(g_cpu), ")");
}

/// Targets for `rows` rows of `classes` classes: random classes, with every `ignore_every`-th
/// one (0: none) set to `ignore_index`.
template <IndexElement I>
Tensor<I> random_targets(const Shape& shape, std::int64_t classes, std::int64_t ignore_every, std::int64_t ignore_index,
                         Generator& gen) {
  Tensor<I> t = randint<I>(shape, 0, classes, gen);
  if (ignore_every > 0)
    for (std::int64_t r = 0; r < t.numel(); r += ignore_every) t.data()[r] = static_cast<I>(ignore_index);
  return t;
}

}  // namespace

// ---- embedding -------------------------------------------------------------------------

TEST_CASE_TEMPLATE("cuda parity: embedding values and gradients over dims, id types and id devices", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(21);
  const std::int64_t rows = 11;
  for (std::int64_t d : {1, 3, 64, 768}) {
    const Tensor<T> weight = randn<T>({rows, d}, gen);
    // [4, 7] ids over 11 rows: repeats; row 2 is always hit (the padding row below).
    Tensor<std::int64_t> ids64 = randint<std::int64_t>({4, 7}, 0, rows, gen);
    ids64.data()[5] = 2;
    ids64.data()[17] = 2;
    const Tensor<std::int32_t> ids32 = ids64.cast<std::int32_t>();
    for (bool on_cuda : {false, true}) {
      for (std::optional<std::int64_t> padding : {std::optional<std::int64_t>{}, std::optional<std::int64_t>{2},
                                                  std::optional<std::int64_t>{-1}}) {
        check_embedding(weight, ids64, padding, on_cuda, embedding_tol<T>);
        check_embedding(weight, ids32, padding, on_cuda, embedding_tol<T>);
      }
    }
  }
}

TEST_CASE_TEMPLATE("cuda parity: embedding of strided tables and ids, empty ids and empty rows", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(22);
  const Tensor<std::int64_t> ids = randint<std::int64_t>({3, 5}, 0, 9, gen);
  // A transposed table: the gather reads it after a device copy.
  const auto transpose = [](const Tensor<T>& w) { return w.transpose(0, 1); };
  for (bool on_cuda : {false, true}) check_embedding(randn<T>({6, 9}, gen), ids, std::nullopt, on_cuda, embedding_tol<T>, transpose);
  // A row slice of a table starts at an odd offset: the gather copies element by element.
  const auto offset_rows = [](const Tensor<T>& w) { return w.slice(0, 1, 10); };
  for (bool on_cuda : {false, true}) check_embedding(randn<T>({10, 5}, gen), ids, 3, on_cuda, embedding_tol<T>, offset_rows);
  // Strided ids on the device and on the CPU (every other column of a [3, 10] block).
  const Tensor<std::int64_t> wide = randint<std::int64_t>({3, 10}, 0, 9, gen);
  const Tensor<std::int64_t> cpu_view = wide.slice(1, 0, 10, 2);
  const Tensor<std::int64_t> gpu_view = wide.to(Device::cuda()).slice(1, 0, 10, 2);
  REQUIRE(!gpu_view.is_contiguous());
  check_cpu_cuda_parity<T>(
      [&](const std::vector<Tensor<T>>& v) { return embedding(v[0], v[0].device().is_cuda() ? gpu_view : cpu_view); },
      {randn<T>({9, 4}, gen)}, embedding_tol<T>, embedding_tol<T>);
  // No ids at all, and rows of no elements.
  for (bool on_cuda : {false, true}) {
    check_embedding(randn<T>({7, 3}, gen), Tensor<std::int64_t>::empty({0}), std::nullopt, on_cuda, embedding_tol<T>);
    check_embedding(randn<T>({7, 3}, gen), Tensor<std::int32_t>::empty({2, 0}), 1, on_cuda, embedding_tol<T>);
    check_embedding(randn<T>({7, 0}, gen), randint<std::int64_t>({4}, 0, 7, gen), std::nullopt, on_cuda, embedding_tol<T>);
  }
}

TEST_CASE_TEMPLATE("cuda parity: embedding rows hit more often than one backward work item sums", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(23);
  const std::int64_t chunk = cuda::embedding_grad_chunk;
  // Ids 0, 2, 4, ... hit 1, chunk - 1, chunk, chunk + 1, 2 chunk, 2 chunk + 1 and 3000 times.
  const std::vector<std::int64_t> counts = {1, chunk - 1, chunk, chunk + 1, 2 * chunk, 2 * chunk + 1, 3000};
  const std::vector<std::int64_t> ids = repeated_ids(counts, 2, gen);
  const auto n = static_cast<std::int64_t>(ids.size());
  REQUIRE(n % 2 == 0);
  const double tol = heavy_embedding_tol<T>;  // the chunked sums round differently
  for (std::int64_t d : {5, 64}) {
    const Tensor<T> weight = randn<T>({15, d}, gen);
    for (bool on_cuda : {false, true}) {
      check_embedding(weight, ids_of<std::int64_t>(ids, {n}), std::nullopt, on_cuda, tol);
      check_embedding(weight, ids_of<std::int32_t>(ids, {2, n / 2}), 12, on_cuda, tol);  // the 3000-times row padded
      check_embedding(weight, ids_of<std::int64_t>(ids, {n}), 6, on_cuda, tol);          // a chunk + 1 row padded
    }
  }
}

TEST_CASE("cuda parity: embedding of a 50257 x 768 table, few ids and 16k ids") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(24);
  const std::int64_t vocab = 50257;
  const Tensor<float> weight = randn<float>({vocab, 768}, gen);
  // Few ids: the first and last rows, a repeat; every other row gets a zero gradient.
  std::vector<std::int64_t> few(120);
  for (auto& id : few) id = static_cast<std::int64_t>(gen.below(vocab));
  few[0] = 0;
  few[1] = vocab - 1;
  few[50] = vocab - 1;
  few[51] = few[7];
  check_embedding(weight, ids_of<std::int64_t>(few, {3, 40}), std::nullopt, false, embedding_tol<float>);
  check_embedding(weight, ids_of<std::int32_t>(few, {120}), vocab - 1, true, embedding_tol<float>);
  // 16k ids, a quarter of them the last id (end-of-text used as padding without padding_idx).
  std::vector<std::int64_t> many(16384);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = i % 4 == 3 ? vocab - 1 : static_cast<std::int64_t>(gen.below(vocab));
  check_embedding(weight, ids_of<std::int64_t>(many, {8, 2048}), std::nullopt, true, heavy_embedding_tol<float>);
  check_embedding(weight, ids_of<std::int32_t>(many, {8, 2048}), vocab - 1, false, embedding_tol<float>);
}

TEST_CASE("cuda: embedding argument and device errors") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const auto cuda = Device::cuda();
  const auto w = zeros<float>({50, 8}, cuda);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({3, 57, 60})),
                       "[embedding] id 57 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({3, 57, 60}).to(cuda)),
                       "[embedding] id 57 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int32_t>({-1}).to(cuda)),
                       "[embedding] id -1 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({50}, {1, 1})),
                       "[embedding] id 50 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(zeros<float>({8}, cuda), tensor<std::int64_t>({0})),
                       "[embedding] weight must be a 2-D table [V, D], got shape (8)", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({0}), 50),
                       "[embedding] padding_idx 50 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, tensor<std::int64_t>({0}), -51),
                       "[embedding] padding_idx -51 out of range for a table of 50 rows (weight (50x8))", Error);
  CHECK_THROWS_WITH_AS(embedding(w, Tensor<std::int64_t>()), "[embedding] undefined tensor argument", Error);
  CHECK_THROWS_WITH_AS(embedding(zeros<float>({0, 4}, cuda), tensor<std::int64_t>({0})),
                       "[embedding] id 0 out of range for a table of 0 rows (weight (0x4))", Error);
  // A CPU table with ids on the device names both.
  const auto gpu_ids = tensor<std::int64_t>({1}).to(cuda);
  CHECK_THROWS_WITH_AS(embedding(w.cpu(), gpu_ids), doctest::Contains("ids int64 (1) cuda:0"), Error);
  CHECK_THROWS_WITH_AS(embedding(w.cpu(), gpu_ids), doctest::Contains("weight float32 (50x8) cpu"), Error);
}

TEST_CASE("cuda parity: LearnedPositions with a table on the device takes CPU or device positions") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator cpu_gen(25), gpu_gen(25);
  nn::LearnedPositions<float> cpu_positions(16, 6, cpu_gen);
  nn::LearnedPositions<float> gpu_positions(16, 6, gpu_gen);
  gpu_positions.to(Device::cuda());
  REQUIRE(gpu_positions.weight().device() == Device::cuda());
  const Tensor<std::int64_t> p = from_vector<std::int64_t>({0, 3, 15, 3, 7, 1}, {2, 3});
  const Tensor<float> expected = cpu_positions(p);
  const Tensor<float> from_cpu = gpu_positions(p);
  const Tensor<float> from_gpu = gpu_positions(p.to(Device::cuda()));
  CHECK(from_cpu.device() == Device::cuda());
  CHECK(values(from_cpu.cpu()) == values(expected));
  CHECK(values(from_gpu.cpu()) == values(expected));
  CHECK_THROWS_WITH_AS(gpu_positions(from_vector<std::int64_t>({16}, {1}).to(Device::cuda())),
                       "[LearnedPositions] position 16 out of range [0, 16)", Error);
  CHECK_THROWS_WITH_AS(cpu_positions(p.to(Device::cuda())), doctest::Contains("positions int64 (2x3) cuda:0"), Error);
}

// ---- cross_entropy ---------------------------------------------------------------------

TEST_CASE_TEMPLATE("cuda parity: cross_entropy over classes, rows, reductions and label smoothing", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(31);
  struct Size {
    std::int64_t classes, many_rows;
  };
  for (const Size size : {Size{1, 37}, Size{2, 37}, Size{1000, 37}, Size{50257, 9}}) {
    for (std::int64_t rows : {std::int64_t{0}, std::int64_t{1}, size.many_rows}) {
      const Tensor<T> logits = mul(randn<T>({rows, size.classes}, gen), T(3));
      const Tensor<std::int64_t> targets = random_targets<std::int64_t>({rows}, size.classes, 3, -100, gen);
      for (Reduction reduction : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
        for (double smoothing : {0.0, 0.1}) {
          for (bool on_cuda : {false, true}) {
            check_cross_entropy(logits, targets, {.reduction = reduction, .label_smoothing = smoothing}, on_cuda);
          }
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("cuda parity: cross_entropy ignored targets, int32 targets, strided and 3-D logits", T, float, double) {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(32);
  const Tensor<T> logits = randn<T>({12, 1001}, gen);
  for (Reduction reduction : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    for (bool on_cuda : {false, true}) {
      // Every target ignored: zero losses, a zero Mean, zero gradients.
      const Tensor<std::int64_t> all_ignored = full<std::int64_t>({12}, -100);
      check_cross_entropy(logits, all_ignored, {.reduction = reduction}, on_cuda);
      check_cross_entropy(logits, all_ignored, {.reduction = reduction, .label_smoothing = 0.1}, on_cuda);
      // An ignore_index inside [0, C): class 5 is skipped, the others count.
      Tensor<std::int32_t> t32 = randint<std::int32_t>({12}, 0, 1001, gen);
      t32.data()[0] = 5;
      t32.data()[7] = 5;
      check_cross_entropy(logits, t32, {.ignore_index = 5, .reduction = reduction, .label_smoothing = 0.1}, on_cuda);
      // Logits stored class-major: the kernels read a contiguous copy.
      const auto transpose = [](const Tensor<T>& x) { return x.transpose(0, 1); };
      check_cross_entropy(randn<T>({1001, 12}, gen), random_targets<std::int32_t>({12}, 1001, 5, -100, gen),
                          {.reduction = reduction}, on_cuda, transpose);
      // Rows that start off a 16-byte boundary (an odd offset into the storage).
      const auto offset_rows = [](const Tensor<T>& x) { return x.slice(0, 1, 9); };
      check_cross_entropy(randn<T>({9, 7}, gen), random_targets<std::int64_t>({8}, 7, 4, -100, gen),
                          {.reduction = reduction, .label_smoothing = 0.1}, on_cuda, offset_rows);
      // [B, T, C] logits with [B, T] targets.
      check_cross_entropy(randn<T>({2, 3, 50}, gen), random_targets<std::int64_t>({2, 3}, 50, 4, -100, gen),
                          {.reduction = reduction}, on_cuda);
      // A large logit: the log-sum-exp must not overflow.
      Tensor<T> peaked = randn<T>({3, 300}, gen);
      peaked.data()[17] = T(80);
      check_cross_entropy(peaked, random_targets<std::int64_t>({3}, 300, 0, -100, gen), {.reduction = reduction}, on_cuda);
    }
  }
}

TEST_CASE("cuda: embedding and cross_entropy repeat their results bit for bit") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  Generator gen(41);
  const auto cuda = Device::cuda();
  const Tensor<float> weight = randn<float>({300, 33}, gen).to(cuda);
  std::vector<std::int64_t> ids = repeated_ids({1, 40, 500, 3, 1000}, 7, gen);
  const Tensor<std::int64_t> id_tensor = ids_of<std::int64_t>(ids, {static_cast<std::int64_t>(ids.size())});
  const Tensor<float> upstream = randn<float>({static_cast<std::int64_t>(ids.size()), 33}, gen).to(cuda);
  const Tensor<float> logits = randn<float>({200, 5003}, gen).to(cuda);
  const Tensor<std::int64_t> targets = random_targets<std::int64_t>({200}, 5003, 9, -100, gen);
  std::vector<Tensor<float>> embedding_grads, losses, logit_grads;
  for (int run = 0; run < 2; ++run) {
    Tensor<float> w = weight.clone().detach();
    w.requires_grad_();
    sum(embedding(w, id_tensor) * upstream).backward();
    embedding_grads.push_back(w.grad().cpu());
    Tensor<float> x = logits.clone().detach();
    x.requires_grad_();
    const Tensor<float> loss = cross_entropy(x, targets, {.label_smoothing = 0.1});
    loss.backward();
    losses.push_back(loss.cpu());
    logit_grads.push_back(x.grad().cpu());
  }
  CHECK(values(embedding_grads[0]) == values(embedding_grads[1]));
  CHECK(values(losses[0]) == values(losses[1]));
  CHECK(values(logit_grads[0]) == values(logit_grads[1]));
}

TEST_CASE("cuda: cross_entropy argument and device errors") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const auto cuda = Device::cuda();
  const auto x = zeros<float>({4, 10}, cuda);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 12, 0, 0})),
                       "[cross_entropy] target 12 out of range for 10 classes (logits (4x10))", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 12, 0, 0}).to(cuda)),
                       "[cross_entropy] target 12 out of range for 10 classes (logits (4x10))", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int32_t>({1, -1, 0, 0}).to(cuda)),
                       "[cross_entropy] target -1 out of range for 10 classes (logits (4x10))", Error);
  // A target equal to ignore_index is skipped even when it is out of range.
  CHECK(cross_entropy(x, tensor<std::int64_t>({1, 0, 0, 10}).to(cuda), {.ignore_index = 10, .reduction = Reduction::Sum})
            .item() == doctest::Approx(3.0 * std::log(10.0)));
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<std::int64_t>({1, 2, 3})),
                       "[cross_entropy] targets of shape (3) do not match logits (4x10); expected targets of shape (4)", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, zeros<std::int64_t>({4}), {.label_smoothing = 1.5}),
                       "[cross_entropy] label_smoothing must be in [0, 1], got 1.5", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(scalar_tensor<float>(1.0f, cuda), scalar_tensor<std::int64_t>(0)),
                       "[cross_entropy] logits must have a class dimension, got shape ()", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros<float>({4, 0}, cuda), zeros<std::int64_t>({4})),
                       "[cross_entropy] logits of shape (4x0) have no classes", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x, Tensor<std::int64_t>()), "[cross_entropy] undefined tensor argument", Error);
  // CPU logits with targets on the device name both.
  const auto gpu_targets = zeros<std::int64_t>({4}, cuda);
  CHECK_THROWS_WITH_AS(cross_entropy(x.cpu(), gpu_targets), doctest::Contains("targets int64 (4) cuda:0"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(x.cpu(), gpu_targets), doctest::Contains("logits float32 (4x10) cpu"), Error);
}

TEST_CASE("cuda parity: cross_entropy with infinite logits takes the CPU's limits") {
  CONDENSE_REQUIRE_CUDA_DEVICE();
  const float inf = std::numeric_limits<float>::infinity();
  // Wide rows so that the +inf logits land in different threads' parts of the row.
  const std::int64_t classes = 700;
  Generator gen(41);
  Tensor<float> x = randn<float>({5, classes}, gen);
  float* p = x.data();
  p[3] = inf;                                          // row 0: one +inf
  p[classes + 10] = p[classes + 650] = inf;            // row 1: two +inf, far apart
  p[2 * classes + 0] = inf;                            // row 2: the target's logit is +inf
  p[3 * classes + 4] = -inf;                           // row 3: a -inf logit
  for (std::int64_t c = 0; c < classes; ++c) p[4 * classes + c] = -inf;  // row 4: no finite logit
  const auto targets = tensor<std::int64_t>({1, 2, 0, 1, 0});
  const auto cpu = values(cross_entropy(x, targets, {.reduction = Reduction::None}));
  const auto gpu = values(cross_entropy(x.to(Device::cuda()), targets, {.reduction = Reduction::None}).cpu());
  REQUIRE(cpu.size() == gpu.size());
  for (std::size_t r = 0; r < cpu.size(); ++r) {
    CAPTURE(r);
    CHECK(std::isnan(gpu[r]) == std::isnan(cpu[r]));
    if (std::isinf(cpu[r])) {
      CHECK(gpu[r] == cpu[r]);
    } else if (!std::isnan(cpu[r])) {
      CHECK(gpu[r] == doctest::Approx(cpu[r]).epsilon(1e-5));
    }
  }
  CHECK((std::isinf(cpu[1]) && cpu[1] > 0));
}

}  // namespace test_cuda_embedding_loss
