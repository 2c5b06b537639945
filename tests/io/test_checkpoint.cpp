// Checkpoints: bit-exact round trip of float and double weights and optimizer state, the
// step, and generator state (the restored generator continues the same random stream);
// in-place restore seen through shared handles; read_checkpoint; the file layout as plain
// safetensors; and every validation error, with nothing restored when one fails.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/checkpoint.hpp"
#include "io/io_test_util.hpp"
#include "test_util.hpp"

namespace test_checkpoint {

using namespace condense;
using namespace condense::io;
using condense::testing::temp_path;

namespace {

/// True when both tensors hold the same bits.
template <Element T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.shape() != b.shape()) return false;
  const auto va = a.contiguous().to_vector();
  const auto vb = b.contiguous().to_vector();
  return std::memcmp(va.data(), vb.data(), va.size() * sizeof(T)) == 0;
}

/// Overwrites every element of `t` with `value`.
template <Element T>
void fill(const Tensor<T>& t, T value) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = value;
}

/// Draws `n` normal samples.
std::vector<double> draws(Generator& g, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) out.push_back(g.normal());
  return out;
}

}  // namespace

TEST_CASE("checkpoint round trip is bit-exact: float weights, double optimizer state, step, generators") {
  const std::string path = temp_path("ckpt_roundtrip.safetensors");
  Generator init(11);
  auto w = randn<float>({4, 3}, init).requires_grad_();
  w.data()[0] = std::numeric_limits<float>::denorm_min();
  w.data()[1] = -0.0f;
  w.data()[2] = std::nanf("0x123");  // NaN payload kept
  auto bias = randn<float>({3}, init).requires_grad_();
  auto scale = scalar_tensor<float>(0.75f).requires_grad_();
  NamedTensors<float> model{{"layers.0.weight", w}, {"layers.0.bias", bias}, {"scale", scale}};
  auto m = randn<double>({4, 3}, init);
  auto v = rand<double>({4, 3}, init);
  NamedTensors<double> optim{{"layers.0.weight.exp_avg", m}, {"layers.0.weight.exp_avg_sq", v}};

  Generator data_gen(123), dropout_gen(456);
  draws(data_gen, 5);  // somewhere in the middle of the stream
  NamedGenerators gens{{"data", &data_gen}, {"dropout", &dropout_gen}};
  save_checkpoint(path, model, optim, 1234, gens, {{"run", "unit-test"}});

  // What the stream would have produced after the save.
  Generator data_copy = data_gen, dropout_copy = dropout_gen;
  const auto expected_data = draws(data_copy, 20);
  const auto expected_dropout = draws(dropout_copy, 20);

  // Keep the original values, then scribble over everything.
  const auto w0 = w.clone(), bias0 = bias.clone(), scale0 = scale.clone();
  const auto m0 = m.clone(), v0 = v.clone();
  const auto w_alias = w.detach();  // an optimizer's handle on the same storage
  fill(w, 9.0f);
  fill(bias, 9.0f);
  fill(scale, 9.0f);
  fill(m, 9.0);
  fill(v, 9.0);
  data_gen.seed_with(999);
  draws(dropout_gen, 3);

  const std::int64_t step = load_checkpoint(path, model, optim, gens);
  CHECK(step == 1234);
  CHECK(same_bits(w, w0));
  CHECK(same_bits(w_alias, w0));  // in place
  CHECK(std::isnan(w.data()[2]));
  CHECK(same_bits(bias, bias0));
  CHECK(same_bits(scale, scale0));
  CHECK(same_bits(m, m0));
  CHECK(same_bits(v, v0));
  CHECK(w.requires_grad());
  CHECK(draws(data_gen, 20) == expected_data);
  CHECK(draws(dropout_gen, 20) == expected_dropout);

  // The file is a plain safetensors file with the documented layout.
  const TensorFile file = load_safetensors(path);
  REQUIRE(file.tensors.size() == 7);
  CHECK(file.tensors[0].first == "model.layers.0.weight");
  CHECK(element_type(file.tensors[0].second) == DType::Float32);
  CHECK(file.tensors[3].first == "optim.layers.0.weight.exp_avg");
  CHECK(element_type(file.tensors[3].second) == DType::Float64);
  CHECK(file.tensors[5].first == "rng.data");
  const auto words = get_tensor<std::int64_t>(file, "rng.dropout");
  CHECK(words.shape() == Shape{4});
  Generator probe(456);
  for (std::size_t i = 0; i < 4; ++i) CHECK(std::bit_cast<std::uint64_t>(words.to_vector()[i]) == probe.state()[i]);
  CHECK(file.metadata == std::map<std::string, std::string>{
                             {"format", "condense-checkpoint-1"}, {"step", "1234"}, {"run", "unit-test"}});

  // read_checkpoint returns the same content without restoring anything.
  const Checkpoint<float> ck = read_checkpoint<float>(path);
  CHECK(ck.step == 1234);
  REQUIRE(ck.model.size() == 3);
  CHECK(ck.model[0].first == "layers.0.weight");
  CHECK(same_bits(ck.model[0].second, w0));
  REQUIRE(ck.optimizer.size() == 2);
  CHECK(ck.optimizer[1].first == "layers.0.weight.exp_avg_sq");
  CHECK(ck.optimizer[1].second.to_vector() == v0.cast<float>().to_vector());  // converted to float
  REQUIRE(ck.generators.size() == 2);
  CHECK(ck.generators[1].first == "dropout");
  CHECK(ck.generators[1].second == probe.state());
  CHECK(ck.metadata.at("run") == "unit-test");
  const Checkpoint<double> ckd = read_checkpoint<double>(path);
  CHECK(same_bits(ckd.optimizer[0].second, m0));
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint of double weights stays F64; empty optimizer state and no generators") {
  const std::string path = temp_path("ckpt_double.safetensors");
  Generator g(3);
  auto w = randn<double>({5}, g);
  const auto w0 = w.clone();
  save_checkpoint(path, NamedTensors<double>{{"w", w}}, {}, 0);
  fill(w, 0.0);
  CHECK(load_checkpoint(path, NamedTensors<double>{{"w", w}}, {}) == 0);
  CHECK(same_bits(w, w0));
  CHECK(element_type(load_safetensors(path).tensors[0].second) == DType::Float64);
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint errors: nothing is restored when a check fails") {
  const std::string path = temp_path("ckpt_errors.safetensors");
  auto w = tensor<float>({1, 2, 3, 4}, {2, 2});
  auto m = tensor<float>({5, 6, 7, 8}, {2, 2});
  Generator gen(5);
  NamedGenerators gens{{"data", &gen}};
  save_checkpoint(path, NamedTensors<float>{{"w", w}}, NamedTensors<float>{{"w.m", m}}, 7, gens);

  auto w2 = zeros<float>({2, 2});
  auto m_bad = zeros<float>({4});
  Generator gen2(77);
  const auto state2 = gen2.state();
  NamedGenerators gens2{{"data", &gen2}};
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{{"w.m", m_bad}}, gens2),
                       ("[checkpoint] " + path + ": tensor 'optim.w.m': file has shape (2x2), optimizer has (4)").c_str(),
                       Error);
  CHECK(testing::values(w2) == std::vector<double>{0, 0, 0, 0});  // the model part was not written either
  CHECK(gen2.state() == state2);

  auto w_bad = zeros<float>({2, 3});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w_bad}}, NamedTensors<float>{{"w.m", m}}, gens2),
                       ("[checkpoint] " + path + ": tensor 'model.w': file has shape (2x2), model has (2x3)").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(
      load_checkpoint(path, NamedTensors<float>{{"w", w2}, {"v", w2}}, NamedTensors<float>{{"w.m", m}}, gens2),
      ("[checkpoint] " + path + ": 1 tensor of the model missing from the file: 'model.v'").c_str(), Error);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{}, gens2),
                       ("[checkpoint] " + path + ": 1 unexpected tensor in the file: 'optim.w.m'").c_str(), Error);
  CHECK(testing::values(w2) == std::vector<double>{0, 0, 0, 0});
  Generator other(1);
  CHECK_THROWS_WITH_AS(
      load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{{"w.m", m}}, {{"other", &other}}),
      ("[checkpoint] " + path + ": 1 generator missing from the file: 'rng.other'").c_str(), Error);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{{"w.m", m}}),
                       ("[checkpoint] " + path + ": 1 unexpected generator in the file: 'rng.data'").c_str(), Error);
  CHECK_THROWS_WITH_AS(
      load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{{"w.m", m}}, {{"data", nullptr}}),
      ("[checkpoint] " + path + ": generator 'data' is a null pointer").c_str(), Error);
  CHECK(testing::values(w2) == std::vector<double>{0, 0, 0, 0});
  // Non-strict: extra entries are ignored (here the optimizer state and the generator).
  CHECK(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{}, {}, /*strict=*/false) == 7);
  CHECK(testing::values(w2) == std::vector<double>{1, 2, 3, 4});

  // Invalid arguments to save_checkpoint.
  CHECK_THROWS_WITH_AS(save_checkpoint(path, NamedTensors<float>{{"w", w}}, {}, -1),
                       ("[checkpoint] " + path + ": step must be >= 0, got -1").c_str(), Error);
  CHECK_THROWS_WITH_AS(save_checkpoint(path, NamedTensors<float>{{"w", w}}, {}, 1, {{"g", &gen}, {"g", &gen}}),
                       ("[checkpoint] " + path + ": generator 'g' is listed twice").c_str(), Error);
  CHECK_THROWS_WITH_AS(save_checkpoint(path, NamedTensors<float>{{"w", w}}, {}, 1, {}, {{"step", "3"}}),
                       ("[checkpoint] " + path + ": extra metadata may not set \"step\"").c_str(), Error);
  CHECK_THROWS_WITH_AS(save_checkpoint(path, NamedTensors<float>{{"w", w}, {"w", m}}, {}, 1),
                       ("[safetensors] " + path + ": tensor 'model.w' appears twice in the file").c_str(), Error);

  // Files that are not valid checkpoints.
  auto write = [&](const TensorFile& f) { save_safetensors(path, f); };
  TensorFile plain;
  plain.tensors.emplace_back("model.w", tensor<float>({1, 2, 3, 4}, {2, 2}));
  write(plain);
  CHECK_THROWS_WITH_AS(read_checkpoint<float>(path),
                       ("[checkpoint] " + path +
                        ": metadata has no \"format\" (not a condense checkpoint; expected \"condense-checkpoint-1\")")
                           .c_str(),
                       Error);
  plain.metadata = {{"format", "condense-checkpoint-0"}, {"step", "1"}};
  write(plain);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{}),
                       ("[checkpoint] " + path + ": format is 'condense-checkpoint-0', expected \"condense-checkpoint-1\"")
                           .c_str(),
                       Error);
  for (const char* bad_step : {"", "12a", "-3", " 4", "99999999999999999999"}) {
    plain.metadata = {{"format", "condense-checkpoint-1"}, {"step", bad_step}};
    write(plain);
    CHECK_THROWS_WITH_AS(read_checkpoint<float>(path),
                         ("[checkpoint] " + path + ": metadata \"step\" is '" + bad_step +
                          "', expected a non-negative integer")
                             .c_str(),
                         Error);
  }
  plain.metadata = {{"format", "condense-checkpoint-1"}};
  write(plain);
  CHECK_THROWS_WITH_AS(read_checkpoint<float>(path), ("[checkpoint] " + path + ": metadata has no \"step\"").c_str(),
                       Error);
  plain.metadata = {{"format", "condense-checkpoint-1"}, {"step", "2"}};
  plain.tensors.emplace_back("rng.g", tensor<std::int64_t>({1, 2, 3}));
  write(plain);
  Generator g3(3);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, NamedTensors<float>{{"w", w2}}, NamedTensors<float>{}, {{"g", &g3}}),
                       ("[checkpoint] " + path + ": tensor 'rng.g' is int64 (3) cpu, expected int64 (4) (a generator state)")
                           .c_str(),
                       Error);
  plain.tensors.back().second = zeros<std::int64_t>({4});
  write(plain);
  CHECK_THROWS_WITH_AS(read_checkpoint<float>(path),
                       ("[checkpoint] " + path +
                        ": tensor 'rng.g' is an all-zero generator state, which xoshiro256** cannot leave")
                           .c_str(),
                       Error);
  plain.tensors.back() = {"stray", tensor<float>({1})};
  write(plain);
  CHECK_THROWS_WITH_AS(read_checkpoint<float>(path),
                       ("[checkpoint] " + path + ": tensor 'stray' is not under \"model.\", \"optim.\" or \"rng.\"").c_str(),
                       Error);
  plain.tensors.back() = {"model.ids", tensor<std::int64_t>({1})};
  write(plain);
  CHECK_THROWS_WITH_AS(read_checkpoint<float>(path),
                       ("[checkpoint] " + path + ": tensor 'model.ids' is int64 (1) cpu, expected a floating tensor").c_str(),
                       Error);
  std::filesystem::remove(path);
}

}  // namespace test_checkpoint
