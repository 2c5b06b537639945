// Training checkpoints: model weights, optimizer state, the step counter and the state of
// random generators in one safetensors file. Layout: tensors "model.<name>" and
// "optim.<name>" in their own dtype, an I64 tensor "rng.<name>" of shape [4] per Generator
// (its xoshiro256** words bit-cast to int64), and metadata {"format":
// "condense-checkpoint-1", "step": "<decimal>"} plus any extra string pairs. Restoring is
// bit-exact: float stays F32, double stays F64, and a restored generator continues the
// same random stream. save_training_checkpoint / load_training_checkpoint do the whole
// round trip for a module and an optimizer.
#pragma once

#include <bit>
#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/core/random.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/io/any_tensor.hpp"
#include "condense/io/safetensors.hpp"

namespace condense::io {

/// The "format" metadata value of checkpoints written by this version.
inline constexpr std::string_view checkpoint_format = "condense-checkpoint-1";

/// Named generators whose state a checkpoint saves and restores.
using NamedGenerators = std::vector<std::pair<std::string, Generator*>>;

/// A checkpoint read into memory (read_checkpoint): tensors without their prefixes, in file
/// order, converted to T; generator states by name; all metadata (including "format" and
/// "step").
template <DifferentiableElement T>
struct Checkpoint {
  NamedTensors<T> model;
  NamedTensors<T> optimizer;
  std::int64_t step = 0;
  std::vector<std::pair<std::string, Generator::State>> generators;
  std::map<std::string, std::string> metadata;
};

namespace detail {

/// Parses the decimal "step" metadata value (the whole string must be a number >= 0).
inline std::int64_t parse_step(const std::string& where, const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find("step");
  CONDENSE_CHECK(it != metadata.end(), "checkpoint", where, "metadata has no \"step\"");
  const std::string& s = it->second;
  std::int64_t step = -1;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
  CONDENSE_CHECK(ec == std::errc() && end == s.data() + s.size() && step >= 0, "checkpoint", where,
                 "metadata \"step\" is ", quote_name(s), ", expected a non-negative integer");
  return step;
}

/// Checks the "format" metadata value.
inline void check_format(const std::string& where, const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find("format");
  CONDENSE_CHECK(it != metadata.end(), "checkpoint", where,
                 "metadata has no \"format\" (not a condense checkpoint; expected \"", checkpoint_format, "\")");
  CONDENSE_CHECK(it->second == checkpoint_format, "checkpoint", where, "format is ", quote_name(it->second),
                 ", expected \"", checkpoint_format, "\"");
}

/// The generator state held by the tensor `name` of `file` (I64, shape [4], not all zero).
inline Generator::State generator_state(const std::string& where, const std::string& name, const AnyTensor& t) {
  const auto* words = std::get_if<Tensor<std::int64_t>>(&t);
  CONDENSE_CHECK(words && words->shape() == Shape{4}, "checkpoint", where, "tensor ", quote_name(name), " is ",
                 describe(t), ", expected int64 (4) (a generator state)");
  const auto v = words->to_vector();
  Generator::State state{};
  for (std::size_t i = 0; i < 4; ++i) state[i] = std::bit_cast<std::uint64_t>(v[i]);
  CONDENSE_CHECK(state[0] | state[1] | state[2] | state[3], "checkpoint", where, "tensor ", quote_name(name),
                 " is an all-zero generator state, which xoshiro256** cannot leave");
  return state;
}

/// Checks a named generator list: unique names, no null pointers.
inline void check_generators(const std::string& where, const NamedGenerators& generators) {
  std::unordered_set<std::string_view> names;
  for (const auto& [name, g] : generators) {
    CONDENSE_CHECK(g != nullptr, "checkpoint", where, "generator ", quote_name(name), " is a null pointer");
    CONDENSE_CHECK(names.insert(name).second, "checkpoint", where, "generator ", quote_name(name),
                   " is listed twice");
  }
}

/// Checks `generators` (see check_generators) and finds the saved state of each in `file`
/// ("rng.<name>"); with `strict`, a saved generator that matches none of them throws too.
/// Restores nothing; returns the states in the order of `generators`.
inline std::vector<Generator::State> plan_generators(const std::string& where, const TensorFile& file,
                                                     const NamedGenerators& generators, bool strict) {
  check_generators(where, generators);
  std::vector<Generator::State> states;
  std::unordered_set<std::string> wanted;
  std::vector<std::string> missing;
  for (const auto& [name, g] : generators) {
    const std::string full = "rng." + name;
    wanted.insert(full);
    const AnyTensor* t = find_tensor(file, full);
    if (!t) {
      missing.push_back(full);
      continue;
    }
    states.push_back(generator_state(where, full, *t));
  }
  CONDENSE_CHECK(missing.empty(), "checkpoint", where, missing.size(),
                 missing.size() == 1 ? " generator" : " generators", " missing from the file: ", name_list(missing));
  if (strict) {
    std::vector<std::string> unexpected;
    for (const auto& [name, t] : file.tensors)
      if (name.starts_with("rng.") && !wanted.count(name)) unexpected.push_back(name);
    CONDENSE_CHECK(unexpected.empty(), "checkpoint", where, unexpected.size(),
                   unexpected.size() == 1 ? " unexpected generator" : " unexpected generators",
                   " in the file: ", name_list(unexpected));
  }
  return states;
}

}  // namespace detail

/// Writes a checkpoint to `path` (atomically, see save_safetensors): `model` (e.g. a
/// module's named_parameters()) as "model.<name>", `optimizer_state` (e.g. an optimizer's
/// state()) as "optim.<name>", each generator's state as "rng.<name>", and metadata
/// {"format": "condense-checkpoint-1", "step": step} plus `extra_metadata` (which may not
/// set "format" or "step"). Throws condense::Error for a negative step, duplicate names or
/// null generators.
template <DifferentiableElement T, DifferentiableElement S = T>
void save_checkpoint(const std::string& path, const NamedTensors<T>& model, const NamedTensors<S>& optimizer_state,
                     std::int64_t step, const NamedGenerators& generators = {},
                     const std::map<std::string, std::string>& extra_metadata = {}) {
  const std::string where = detail::where_of(path);
  CONDENSE_CHECK(step >= 0, "checkpoint", where, "step must be >= 0, got ", step);
  detail::check_generators(where, generators);
  TensorFile file;
  file.tensors.reserve(model.size() + optimizer_state.size() + generators.size());
  for (const auto& [name, t] : model) file.tensors.emplace_back("model." + name, t.detach());
  for (const auto& [name, t] : optimizer_state) file.tensors.emplace_back("optim." + name, t.detach());
  for (const auto& [name, g] : generators) {
    Tensor<std::int64_t> words = Tensor<std::int64_t>::empty({4});
    for (std::size_t i = 0; i < 4; ++i) words.data()[i] = std::bit_cast<std::int64_t>(g->state()[i]);
    file.tensors.emplace_back("rng." + name, std::move(words));
  }
  for (const auto& [key, value] : extra_metadata)
    CONDENSE_CHECK(key != "format" && key != "step", "checkpoint", where, "extra metadata may not set \"", key,
                   "\"");
  file.metadata = extra_metadata;
  file.metadata["format"] = std::string(checkpoint_format);
  file.metadata["step"] = std::to_string(step);
  save_safetensors(path, file);
}

/// Restores a checkpoint written by save_checkpoint into existing tensors and generators,
/// in place: `model` and `optimizer_state` are overwritten through their storage (as
/// load_into does, converting floating dtypes), each generator gets its saved state, and
/// the saved step is returned. Everything is validated before anything is written: the
/// format, the step, every shape and dtype, and the names (a destination missing from the
/// file always throws; with `strict`, file entries under "model.", "optim." or "rng."
/// that match no destination throw too). For an optimizer whose state does not exist yet,
/// use read_checkpoint and the optimizer's load_state instead.
template <DifferentiableElement T, DifferentiableElement S = T>
std::int64_t load_checkpoint(const std::string& path, const NamedTensors<T>& model,
                             const NamedTensors<S>& optimizer_state, const NamedGenerators& generators = {},
                             bool strict = true) {
  const std::string where = detail::where_of(path);
  const TensorFile file = load_safetensors(path);
  detail::check_format(where, file.metadata);
  const std::int64_t step = detail::parse_step(where, file.metadata);
  const auto model_plan = detail::plan_load<T>("checkpoint", path, "model", model, file, "model.", strict);
  const auto optim_plan = detail::plan_load<S>("checkpoint", path, "optimizer", optimizer_state, file, "optim.", strict);
  const std::vector<Generator::State> states = detail::plan_generators(where, file, generators, strict);
  for (const auto& p : model_plan) detail::copy_into(p.dst, *p.src);
  for (const auto& p : optim_plan) detail::copy_into(p.dst, *p.src);
  for (std::size_t i = 0; i < generators.size(); ++i) generators[i].second->set_state(states[i]);
  return step;
}

/// Reads a checkpoint written by save_checkpoint without restoring anything: model and
/// optimizer tensors (prefix removed, file order, converted to T; shared, not copied, when
/// already T), the step, generator states and all metadata. Throws condense::Error for a
/// file that is not a valid checkpoint (format, step, generator tensors, entries outside
/// "model.", "optim." and "rng.").
template <DifferentiableElement T>
Checkpoint<T> read_checkpoint(const std::string& path) {
  const std::string where = detail::where_of(path);
  const TensorFile file = load_safetensors(path);
  detail::check_format(where, file.metadata);
  Checkpoint<T> out;
  out.step = detail::parse_step(where, file.metadata);
  out.metadata = file.metadata;
  for (const auto& [name, t] : file.tensors) {
    if (name.starts_with("model.")) {
      CONDENSE_CHECK(element_type(t) != DType::Int32 && element_type(t) != DType::Int64, "checkpoint", where,
                     "tensor ", detail::quote_name(name), " is ", describe(t), ", expected a floating tensor");
      out.model.emplace_back(name.substr(6), to_float_tensor<T>(t));
    } else if (name.starts_with("optim.")) {
      CONDENSE_CHECK(element_type(t) != DType::Int32 && element_type(t) != DType::Int64, "checkpoint", where,
                     "tensor ", detail::quote_name(name), " is ", describe(t), ", expected a floating tensor");
      out.optimizer.emplace_back(name.substr(6), to_float_tensor<T>(t));
    } else if (name.starts_with("rng.")) {
      out.generators.emplace_back(name.substr(4), detail::generator_state(where, name, t));
    } else {
      fail("checkpoint", where, "tensor ", detail::quote_name(name),
           " is not under \"model.\", \"optim.\" or \"rng.\"");
    }
  }
  return out;
}

namespace detail {

/// The element type T of a NamedTensors<T> list (the state() of an optimizer).
template <class L>
struct named_element;
template <DifferentiableElement T>
struct named_element<NamedTensors<T>> {
  using type = T;
};
template <class L>
using named_element_t = typename named_element<std::remove_cvref_t<L>>::type;

}  // namespace detail

/// Writes the training state of a run to `path` (save_checkpoint): the parameters of
/// `model` (any nn::Module: model.named_parameters()) as "model.<name>", the state of
/// `optimizer` (optim::AdamW or optim::SGD: optimizer.state()) as "optim.<name>", the step
/// optimizer.steps(), each generator's state (e.g. the one that draws the batches) and
/// `extra_metadata` (e.g. the model's options, to rebuild it before loading).
template <class Model, class Optimizer>
void save_training_checkpoint(const std::string& path, const Model& model, const Optimizer& optimizer,
                              const NamedGenerators& generators = {},
                              const std::map<std::string, std::string>& extra_metadata = {}) {
  save_checkpoint(path, model.named_parameters(), optimizer.state(), optimizer.steps(), generators, extra_metadata);
}

/// Restores a checkpoint written by save_training_checkpoint into an existing model,
/// optimizer and generators, so that training continues bit for bit as if it had not
/// stopped: the parameters are overwritten in place (every handle sees the new values,
/// dtypes converted as load_into does), the optimizer gets the saved state and step count
/// through optimizer.load_state(state, step) (so its buffers need not exist yet), and each
/// generator its saved state. Returns the step. The learning rate is not saved: set it from
/// the schedule at the returned step, as the training loop does before every step.
/// Strict: every parameter, optimizer entry and generator must be in the file and the file
/// may hold nothing else. Everything is checked before anything is changed; a failure
/// throws condense::Error ("[checkpoint] <path>: ...", with the optimizer's own message for
/// a state it rejects).
template <class Model, class Optimizer>
std::int64_t load_training_checkpoint(const std::string& path, const Model& model, Optimizer& optimizer,
                                      const NamedGenerators& generators = {}) {
  using S = detail::named_element_t<decltype(optimizer.state())>;
  const auto params = model.named_parameters();
  using T = detail::named_element_t<decltype(params)>;
  const std::string where = detail::where_of(path);
  const TensorFile file = load_safetensors(path);
  detail::check_format(where, file.metadata);
  const std::int64_t step = detail::parse_step(where, file.metadata);
  const auto model_plan = detail::plan_load<T>("checkpoint", path, "model", params, file, "model.", true);
  const auto states = detail::plan_generators(where, file, generators, true);
  NamedTensors<S> optimizer_state;
  for (const auto& [name, t] : file.tensors) {
    if (name.starts_with("optim.")) {
      CONDENSE_CHECK(element_type(t) != DType::Int32 && element_type(t) != DType::Int64, "checkpoint", where,
                     "tensor ", detail::quote_name(name), " is ", describe(t), ", expected a floating tensor");
      optimizer_state.emplace_back(name.substr(6), to_float_tensor<S>(t));
    } else {
      CONDENSE_CHECK(name.starts_with("model.") || name.starts_with("rng."), "checkpoint", where, "tensor ",
                     detail::quote_name(name), " is not under \"model.\", \"optim.\" or \"rng.\"");
    }
  }
  try {
    optimizer.load_state(optimizer_state, step);  // validates everything before changing anything
  } catch (const Error& e) {
    fail("checkpoint", where, e.what());
  }
  for (const auto& p : model_plan) detail::copy_into(p.dst, *p.src);
  for (std::size_t i = 0; i < generators.size(); ++i) generators[i].second->set_state(states[i]);
  return step;
}

}  // namespace condense::io

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
