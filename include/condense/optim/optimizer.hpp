// Shared machinery of the optimizers (optim/sgd.hpp, optim/adamw.hpp): the named parameter
// list type, checks on the parameters handed to an optimizer (all on one device, CPU or
// CUDA), the split of a CPU update into chunks run in parallel, the validation of a saved
// optimizer state before it is loaded, and the state buffers on the parameters' device
// (saved to the CPU, loaded from any device).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "condense/autograd/grad_mode.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/backend/cuda/tensor_launch.hpp"
#include "condense/core/error.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense::optim {

/// Named tensors, as returned by nn::Module::named_parameters() and by an optimizer's state().
template <DifferentiableElement T>
using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

namespace detail {

/// Elements per unit of parallel work in an optimizer update (64 KiB of floats).
inline constexpr std::int64_t update_chunk = 16384;
/// Elements per inner block of a multi-pass update (kept in L1).
inline constexpr std::int64_t update_block = 1024;
/// Below this many elements in total an update runs on the calling thread.
inline constexpr std::int64_t parallel_update_threshold = 65536;

/// Throws unless `x` is finite and >= 0 (`what` names the option in the message).
inline void check_nonnegative(std::string_view opt, std::string_view what, double x) {
  CONDENSE_CHECK(std::isfinite(x) && x >= 0.0, opt, "invalid ", what, ": ", x, " (must be finite and >= 0)");
}

/// Checks the parameter list given to an optimizer: non-empty, every tensor defined,
/// contiguous and on the first parameter's device (the CPU or one CUDA device), names
/// unique, no two parameters sharing memory (an update would be applied twice).
template <DifferentiableElement T>
void check_parameters(std::string_view opt, const NamedTensors<T>& params) {
  CONDENSE_CHECK(!params.empty(), opt, "got an empty parameter list");
  std::map<std::string, std::size_t> seen;
  struct Range {
    const char* begin;
    const char* end;
    std::size_t index;
  };
  std::vector<Range> ranges;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    CONDENSE_CHECK(p.defined(), opt, "parameter '", name, "' is an undefined tensor");
    CONDENSE_CHECK(p.device() == params.front().second.device(), opt, "parameter '", name, "' is ", p.describe(),
                   " but parameter '", params.front().first, "' is ", params.front().second.describe(),
                   "; all parameters of one optimizer must be on one device");
    CONDENSE_CHECK(p.is_contiguous(), opt, "parameter '", name, "' ", p.describe(),
                   " is not contiguous; optimizers update parameters in place and need contiguous storage");
    const auto [it, inserted] = seen.emplace(name, i);
    CONDENSE_CHECK(inserted, opt, "parameter name '", name, "' appears twice");
    if (p.numel() > 0) {
      const char* b = reinterpret_cast<const char*>(p.data());
      ranges.push_back({b, b + p.numel() * static_cast<std::int64_t>(sizeof(T)), i});
    }
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    CONDENSE_CHECK(ranges[i].begin >= ranges[i - 1].end, opt, "parameters '", params[ranges[i - 1].index].first,
                   "' and '", params[ranges[i].index].first,
                   "' share memory (tied weights must be passed once)");
  }
}

/// The gradient of parameter `name` as a contiguous tensor of the parameter's shape on the
/// parameter's device, or an undefined tensor when the parameter has no gradient (it is then
/// skipped by the update). A gradient on another device throws.
template <DifferentiableElement T>
Tensor<T> usable_grad(std::string_view opt, const std::string& name, const Tensor<T>& p) {
  Tensor<T> g = p.grad();
  if (!g.defined()) return g;
  CONDENSE_CHECK(g.shape() == p.shape(), opt, "gradient of parameter '", name, "' has shape ", g.shape(),
                 " but the parameter has shape ", p.shape());
  CONDENSE_CHECK(g.device() == p.device(), opt, "gradient of parameter '", name, "' is ", g.describe(),
                 " but the parameter is ", p.describe(), "; the gradient must be on the parameter's device");
  return g.is_contiguous() ? g : g.contiguous();
}

/// One unit of update work: elements [begin, end) of active parameter `slot`.
struct UpdateChunk {
  std::size_t slot;
  std::int64_t begin;
  std::int64_t end;
};

/// Runs fn(slot, begin, end) over all elements of the given sizes, split into chunks of at
/// most `update_chunk` elements spread across threads when there is enough work. Chunks are
/// disjoint, so an elementwise update may run them concurrently.
template <class Fn>
void parallel_update(const std::vector<std::int64_t>& sizes, Fn&& fn) {
  std::vector<UpdateChunk> chunks;
  std::int64_t total = 0;
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    total += sizes[s];
    for (std::int64_t b = 0; b < sizes[s]; b += update_chunk) chunks.push_back({s, b, std::min(sizes[s], b + update_chunk)});
  }
  if (total < parallel_update_threshold) {
    for (const auto& c : chunks) fn(c.slot, c.begin, c.end);
    return;
  }
  cpu::parallel_for(0, static_cast<std::int64_t>(chunks.size()), 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) fn(chunks[c].slot, chunks[c].begin, chunks[c].end);
  });
}

/// One expected entry of a saved optimizer state.
struct StateSlot {
  std::size_t param;  ///< index of the parameter
  int kind;           ///< optimizer-specific kind (which buffer)
  bool required;      ///< must be present in a loaded state
  bool scalar;        ///< a one-element tensor (a step count) rather than a parameter-shaped buffer
};

/// Checks a state handed to load_state() against the expected entries: no duplicates, no
/// unexpected names, every required entry present, parameter-shaped buffers with the
/// parameter's shape, scalar entries with one element (on any device). Returns, for each
/// expected entry name, the tensor to load (entries absent from `state` are left out).
template <FloatingElement T>
std::map<std::string, Tensor<T>> match_state(std::string_view opt, const NamedTensors<T>& params,
                                             const std::map<std::string, StateSlot>& expected,
                                             const NamedTensors<T>& state, std::int64_t steps) {
  CONDENSE_CHECK(steps >= 0, opt, "load_state: step count ", steps, " is negative");
  std::map<std::string, Tensor<T>> found;
  for (const auto& [name, t] : state) {
    const auto it = expected.find(name);
    CONDENSE_CHECK(it != expected.end(), opt, "load_state: unexpected state entry '", name,
                   "' (no such parameter or buffer in this optimizer)");
    CONDENSE_CHECK(found.emplace(name, t).second, opt, "load_state: state entry '", name, "' appears twice");
    CONDENSE_CHECK(t.defined(), opt, "load_state: state entry '", name, "' is an undefined tensor");
    const auto& slot = it->second;
    const auto& [pname, p] = params[slot.param];
    if (slot.scalar) {
      CONDENSE_CHECK(t.numel() == 1, opt, "load_state: state entry '", name, "' has shape ", t.shape(),
                     " but a step count has one element");
      const double v = static_cast<double>(t.item());
      CONDENSE_CHECK(std::isfinite(v) && v >= 0.0 && v <= static_cast<double>(steps) && v == std::floor(v), opt,
                     "load_state: state entry '", name, "' = ", v, " is not an integer step count in [0, ", steps, "]");
    } else {
      CONDENSE_CHECK(t.shape() == p.shape(), opt, "load_state: state entry '", name, "' has shape ", t.shape(),
                     " but parameter '", pname, "' has shape ", p.shape());
    }
  }
  for (const auto& [name, slot] : expected)
    CONDENSE_CHECK(!slot.required || found.count(name), opt, "load_state: missing state entry '", name, "'");
  return found;
}

/// Copies the values of `src` (any layout, any device) into the contiguous tensor `dst` of
/// equal numel (on its own device).
template <DifferentiableElement T>
void copy_values(const Tensor<T>& dst, const Tensor<T>& src) {
  if (src.numel() == 0) return;
  const Tensor<T> moved = src.device() == dst.device() ? src.detach() : src.detach().to(dst.device());
  if (dst.device().is_cuda()) {
    condense::detail::cuda_copy_into("load_state", dst, moved.reshape(dst.shape()));
    return;
  }
  const Tensor<T> c = moved.is_contiguous() ? moved : moved.contiguous();
  std::copy(c.data(), c.data() + c.numel(), dst.data());
}

/// A 0-dim CPU tensor holding a step count.
template <FloatingElement T>
Tensor<T> step_tensor(std::int64_t step) {
  Tensor<T> t = Tensor<T>::empty(Shape{});
  t.data()[0] = static_cast<T>(step);
  return t;
}

/// A deep copy of `t` (on any device) as a new contiguous CPU tensor that shares nothing with `t`.
template <DifferentiableElement T>
Tensor<T> copy_of(const Tensor<T>& t) {
  Tensor<T> out = Tensor<T>::empty(t.shape());
  copy_values(out, t);
  return out;
}

/// A contiguous zero tensor of `shape` on `device`.
template <FloatingElement T>
Tensor<T> zero_buffer(const Shape& shape, Device device = Device::cpu(), std::string_view opt = "optimizer") {
  Tensor<T> out = Tensor<T>::empty(shape, device);
  if (device.is_cuda()) {
    if (out.numel() > 0)
      cuda::memset_zero(out.data(), static_cast<std::size_t>(out.numel()) * sizeof(T), device.index, opt);
    return out;
  }
  std::fill(out.data(), out.data() + out.numel(), T(0));
  return out;
}

}  // namespace detail
}  // namespace condense::optim

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
