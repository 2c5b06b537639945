// Type-erased tensors and named tensor collections: AnyTensor (a Tensor of any storable
// element type), TensorFile (named tensors in file order plus string metadata, what a
// safetensors file holds), conversion to float/double tensors, and load_into, which copies
// named tensors into existing ones (a module's parameters) in place, checking names and
// shapes first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "condense/autograd/node.hpp"
#include "condense/backend/cpu/parallel.hpp"
#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/tensor_type.hpp"

namespace condense::io {

/// A tensor of any element type a file can hold (bool tensors are not stored in files).
using AnyTensor = std::variant<Tensor<float>, Tensor<double>, Tensor<std::int32_t>, Tensor<std::int64_t>,
                               Tensor<bfloat16>, Tensor<float16>>;

/// A list of named tensors of one element type (a module's named_parameters(), an
/// optimizer's state()). Order matters: it is the order files are written in.
template <Element T>
using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

/// The contents of a tensor file: named tensors in file order and the string metadata
/// (the safetensors "__metadata__" entry).
struct TensorFile {
  std::vector<std::pair<std::string, AnyTensor>> tensors;  ///< file order kept
  std::map<std::string, std::string> metadata;              ///< "__metadata__"
};

/// Element type of the tensor held by `t`.
inline DType element_type(const AnyTensor& t) {
  return std::visit([](const auto& x) { return std::decay_t<decltype(x)>::dtype(); }, t);
}

/// Shape of the tensor held by `t` (throws when it is undefined).
inline Shape shape_of(const AnyTensor& t) {
  return std::visit([](const auto& x) { return x.shape(); }, t);
}

/// "float32 (2x3) cpu" for the tensor held by `t`.
inline std::string describe(const AnyTensor& t) {
  return std::visit([](const auto& x) { return x.describe(); }, t);
}

/// The tensor named `name` in `file`, or nullptr when there is none (first match).
inline const AnyTensor* find_tensor(const TensorFile& file, std::string_view name) {
  for (const auto& [n, t] : file.tensors)
    if (n == name) return &t;
  return nullptr;
}

/// The tensor named `name` in `file`, which must hold element type T exactly (no
/// conversion; shares storage). Throws condense::Error when it is missing or of another type.
template <Element T>
Tensor<T> get_tensor(const TensorFile& file, std::string_view name) {
  const AnyTensor* t = find_tensor(file, name);
  CONDENSE_CHECK(t != nullptr, "get_tensor", "no tensor named '", name, "' in the file");
  const Tensor<T>* typed = std::get_if<Tensor<T>>(t);
  CONDENSE_CHECK(typed != nullptr, "get_tensor", "tensor '", name, "' is ", describe(*t), ", expected ",
                 dtype_name(dtype_of<T>));
  return *typed;
}

/// Converts a floating tensor (float16, bfloat16, float32, float64) to element type T.
/// Returns a detached tensor that shares storage when it already holds T, otherwise a new
/// contiguous tensor. Integer tensors throw condense::Error.
// t: [...] -> [...]
template <DifferentiableElement T>
Tensor<T> to_float_tensor(const AnyTensor& t) {
  return std::visit(
      [](const auto& x) -> Tensor<T> {
        using U = typename std::decay_t<decltype(x)>::value_type;
        if constexpr (std::is_same_v<U, std::int32_t> || std::is_same_v<U, std::int64_t>) {
          fail("to_float_tensor", "expected a floating tensor (float16, bfloat16, float32, float64), got ", x.describe());
        } else if constexpr (std::is_same_v<U, T>) {
          return x.detach();
        } else {
          return x.detach().template cast<T>();
        }
      },
      t);
}

namespace detail {

/// One planned copy of load_into: destination, source and the source's name in the file.
template <DifferentiableElement T>
struct PlannedCopy {
  Tensor<T> dst;
  const AnyTensor* src;
  std::string name;
};

/// Quotes a tensor name for messages: at most 200 characters, control bytes as \xNN.
inline std::string quote_name(std::string_view name) {
  std::string out = "'";
  const std::size_t limit = 200;
  for (std::size_t i = 0; i < name.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (name.size() > limit) out += "...";
  return out + "'";
}

/// Joins up to `shown` quoted names with ", " and says how many more there were.
inline std::string name_list(const std::vector<std::string>& names, std::size_t shown = 8) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < shown; ++i) out += (i ? ", " : "") + quote_name(names[i]);
  if (names.size() > shown) out += " and " + std::to_string(names.size() - shown) + " more";
  return out;
}

/// Checks names, dtypes and shapes of a load of the `file` entries named `prefix + name`
/// into the tensors `dst` and returns the copies to make; copies nothing. `op` and `label`
/// (a file name, or "") start the messages; `side` names the destination ("model",
/// "optimizer"). File entries outside `prefix` are ignored; with `strict`, entries inside
/// it that match no destination throw. A destination name missing from the file throws.
template <DifferentiableElement T>
std::vector<PlannedCopy<T>> plan_load(std::string_view op, std::string_view label, std::string_view side,
                                      const NamedTensors<T>& dst, const TensorFile& file, std::string_view prefix,
                                      bool strict) {
  const std::string where = label.empty() ? std::string() : std::string(label) + ": ";
  std::unordered_map<std::string_view, const AnyTensor*> by_name;
  by_name.reserve(file.tensors.size());
  std::vector<std::string_view> in_prefix;  // file order
  for (const auto& [name, t] : file.tensors) {
    if (std::string_view(name).substr(0, prefix.size()) != prefix) continue;
    CONDENSE_CHECK(by_name.emplace(name, &t).second, op, where, "tensor ", quote_name(name),
                   " appears twice in the file");
    in_prefix.push_back(name);
  }
  std::unordered_map<std::string, bool> wanted;
  wanted.reserve(dst.size());
  std::vector<std::string> missing;
  std::vector<PlannedCopy<T>> plan;
  plan.reserve(dst.size());
  for (const auto& [name, t] : dst) {
    std::string full = std::string(prefix) + name;
    CONDENSE_CHECK(wanted.emplace(full, true).second, op, where, "destination tensor ", quote_name(full),
                   " is listed twice");
    CONDENSE_CHECK(t.defined(), op, where, "destination tensor ", quote_name(full), " is undefined");
    CONDENSE_CHECK(t.device().is_cpu() || t.is_contiguous(), op, where, "destination tensor ", quote_name(full),
                   " is a non-contiguous ", t.describe(), "; only CPU tensors may be strided");
    const auto it = by_name.find(full);
    if (it == by_name.end()) {
      missing.push_back(std::move(full));
      continue;
    }
    plan.push_back({t, it->second, std::move(full)});
  }
  std::vector<std::string> unexpected;
  if (strict)
    for (const auto name : in_prefix)
      if (!wanted.count(std::string(name))) unexpected.emplace_back(name);
  if (!missing.empty() || !unexpected.empty()) {
    std::string message;
    if (!missing.empty())
      message += std::to_string(missing.size()) + (missing.size() == 1 ? " tensor" : " tensors") + " of the " +
                 std::string(side) + " missing from the file: " + name_list(missing);
    if (!unexpected.empty())
      message += (message.empty() ? "" : "; ") + std::to_string(unexpected.size()) +
                 (unexpected.size() == 1 ? " unexpected tensor" : " unexpected tensors") + " in the file: " +
                 name_list(unexpected);
    fail(op, where, message);
  }
  for (const auto& p : plan) {
    const DType st = element_type(*p.src);
    CONDENSE_CHECK(st == DType::Float32 || st == DType::Float64 || st == DType::Float16 || st == DType::BFloat16, op,
                   where, "tensor ", quote_name(p.name), ": file has ", dtype_name(st), ", ", side, " has ",
                   dtype_name(dtype_of<T>), " (only floating tensors convert)");
    const Shape ss = shape_of(*p.src);
    CONDENSE_CHECK(ss == p.dst.shape(), op, where, "tensor ", quote_name(p.name), ": file has shape ", ss, ", ", side,
                   " has ", p.dst.shape());
  }
  return plan;
}

/// Writes `values` (contiguous, dst.numel() elements) into the strided CPU tensor `dst`.
template <Element T>
void write_strided(const Tensor<T>& dst, const T* values) {
  const Shape& shape = dst.shape();
  const Strides& strides = dst.strides();
  const std::size_t rank = shape.size();
  const std::int64_t n = dst.numel();
  std::vector<std::int64_t> index(rank, 0);
  T* base = dst.data();
  std::int64_t off = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    base[off] = values[i];
    for (std::size_t d = rank; d-- > 0;) {  // odometer step, innermost first
      if (++index[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= (shape[d] - 1) * strides[d];
      index[d] = 0;
    }
  }
}

/// Converts `n` contiguous elements from U to T.
template <Element T, Element U>
void convert_range(const U* in, T* out, std::int64_t n) {
  cpu::parallel_for(0, n, 65536, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) out[i] = convert_element<T>(in[i]);
  });
}

/// Copies `src` (converted to T) into `dst`'s storage in place. Shapes must match (see
/// plan_load); a non-CPU destination must be contiguous.
template <DifferentiableElement T>
void copy_into(const Tensor<T>& dst, const AnyTensor& src) {
  std::visit(
      [&](const auto& x) {
        using U = typename std::decay_t<decltype(x)>::value_type;
        const Tensor<U> host = x.detach().cpu().contiguous();
        const std::int64_t n = host.numel();
        if (n == 0) return;
        if (dst.device().is_cpu() && dst.is_contiguous()) {
          if constexpr (std::is_same_v<U, T>) {
            std::memmove(dst.data(), host.data(), static_cast<std::size_t>(n) * sizeof(T));  // may alias
          } else {
            convert_range(host.data(), dst.data(), n);
          }
          return;
        }
        Tensor<T> staged;
        if constexpr (std::is_same_v<U, T>) {
          staged = host;
        } else {
          staged = Tensor<T>::empty(host.shape());
          convert_range(host.data(), staged.data(), n);
        }
        if (dst.device().is_cpu()) {
          write_strided(dst, staged.data());
        } else {
          CONDENSE_CHECK(dst.is_contiguous(), "load", "cannot load into a non-contiguous ", dst.describe());
          cuda::copy(dst.data(), staged.data(), static_cast<std::size_t>(n) * sizeof(T), cuda::CopyKind::HostToDevice,
                     dst.device().index, "load");
        }
      },
      src);
}

}  // namespace detail

/// Copies the tensors of `file` into the existing tensors `dst` (e.g. a module's
/// named_parameters()) in place, converting float16/bfloat16/float32/float64 to T. The
/// destination storage is written through data(), so every handle sharing it (an
/// optimizer's copy of a parameter) sees the new values; autograd is not involved.
/// Everything is checked before anything is copied: a name of `dst` missing from the file,
/// with `strict` a file tensor that matches no name of `dst`, a shape mismatch, an integer
/// tensor, or a duplicate name throws condense::Error, e.g.
/// "[load] tensor 'layers.0.attn.q_proj.weight': file has shape (64x32), model has (64x64)".
template <DifferentiableElement T>
void load_into(const NamedTensors<T>& dst, const TensorFile& file, bool strict = true) {
  const auto plan = detail::plan_load<T>("load", "", "model", dst, file, "", strict);
  for (const auto& p : plan) detail::copy_into(p.dst, *p.src);
}

}  // namespace condense::io

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
