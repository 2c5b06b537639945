// DecoderLMOptions as JSON, to store a model's shape in checkpoint metadata and rebuild the
// model from the file alone: every field by name, enums as strings ("layer_norm",
// "rms_norm"; "learned", "rope", "none"; "gelu", "swiglu"; "erf", "tanh"). Reading checks
// the format tag, that every field is present with the right JSON type and a valid value,
// and that no unknown key is there.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "condense/core/error.hpp"
#include "condense/nn/decoder_lm.hpp"
#include "condense/nn/mlp.hpp"
#include "condense/nn/norms.hpp"
#include "condense/nn/positions.hpp"
#include "condense/ops/activations.hpp"

namespace condense::io {

/// The "format" value of the JSON written by decoder_lm_options_to_json.
inline constexpr std::string_view decoder_lm_options_format = "condense-decoder-lm-options-1";
/// The checkpoint metadata key under which the examples store the JSON text of a
/// DecoderLM's options (extra_metadata of save_checkpoint / save_training_checkpoint).
inline constexpr std::string_view decoder_lm_options_key = "decoder_lm_options";

namespace detail {

/// (enum value, JSON name) pairs of the option enums.
inline constexpr std::array<std::pair<nn::NormKind, std::string_view>, 2> norm_names{
    {{nn::NormKind::LayerNorm, "layer_norm"}, {nn::NormKind::RMSNorm, "rms_norm"}}};
inline constexpr std::array<std::pair<nn::PositionKind, std::string_view>, 3> position_names{
    {{nn::PositionKind::Learned, "learned"}, {nn::PositionKind::Rope, "rope"}, {nn::PositionKind::None, "none"}}};
inline constexpr std::array<std::pair<nn::MlpKind, std::string_view>, 2> mlp_names{
    {{nn::MlpKind::Gelu, "gelu"}, {nn::MlpKind::SwiGLU, "swiglu"}}};
inline constexpr std::array<std::pair<GeluApproximation, std::string_view>, 2> gelu_names{
    {{GeluApproximation::Erf, "erf"}, {GeluApproximation::Tanh, "tanh"}}};

/// The JSON name of an enum value.
template <class E, std::size_t N>
std::string enum_name(const std::array<std::pair<E, std::string_view>, N>& names, E value) {
  for (const auto& [v, name] : names)
    if (v == value) return std::string(name);
  fail("DecoderLMOptions", "enum value ", static_cast<int>(value), " has no name");
}

/// Reads the fields of a JSON object one by one, naming the source and the key in errors.
class OptionReader {
 public:
  OptionReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  /// The value of `key` (which must be present).
  const nlohmann::json& at(std::string_view key) const {
    const auto it = j_.find(std::string(key));
    CONDENSE_CHECK(it != j_.end(), "DecoderLMOptions", where_, "missing key \"", key, "\"");
    return *it;
  }
  /// An integer field >= 0.
  std::int64_t count(std::string_view key) const {
    const auto& v = at(key);
    CONDENSE_CHECK(v.is_number_integer() && v.get<std::int64_t>() >= 0, "DecoderLMOptions", where_, "\"", key,
                   "\" is ", v.dump(), ", expected an integer >= 0");
    return v.get<std::int64_t>();
  }
  /// A finite number field.
  double number(std::string_view key) const {
    const auto& v = at(key);
    CONDENSE_CHECK(v.is_number() && std::isfinite(v.get<double>()), "DecoderLMOptions", where_, "\"", key, "\" is ",
                   v.dump(), ", expected a finite number");
    return v.get<double>();
  }
  /// A boolean field.
  bool flag(std::string_view key) const {
    const auto& v = at(key);
    CONDENSE_CHECK(v.is_boolean(), "DecoderLMOptions", where_, "\"", key, "\" is ", v.dump(),
                   ", expected true or false");
    return v.get<bool>();
  }
  /// An enum field, by name.
  template <class E, std::size_t N>
  E choice(std::string_view key, const std::array<std::pair<E, std::string_view>, N>& names) const {
    const auto& v = at(key);
    std::string allowed;
    for (const auto& [e, name] : names) {
      if (v.is_string() && v.get<std::string>() == name) return e;
      allowed += (allowed.empty() ? "\"" : ", \"") + std::string(name) + "\"";
    }
    fail("DecoderLMOptions", where_, "\"", key, "\" is ", v.dump(), ", expected one of ", allowed);
  }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace detail

/// Every field of `o` as a JSON object, with "format": "condense-decoder-lm-options-1".
inline nlohmann::json decoder_lm_options_to_json(const nn::DecoderLMOptions& o) {
  return nlohmann::json{{"format", decoder_lm_options_format},
                        {"vocab_size", o.vocab_size},
                        {"d_model", o.d_model},
                        {"n_layers", o.n_layers},
                        {"n_heads", o.n_heads},
                        {"n_kv_heads", o.n_kv_heads},
                        {"head_dim", o.head_dim},
                        {"d_ff", o.d_ff},
                        {"max_len", o.max_len},
                        {"norm", detail::enum_name(detail::norm_names, o.norm)},
                        {"norm_eps", o.norm_eps},
                        {"positions", detail::enum_name(detail::position_names, o.positions)},
                        {"rope_theta", o.rope_theta},
                        {"mlp", detail::enum_name(detail::mlp_names, o.mlp)},
                        {"gelu", detail::enum_name(detail::gelu_names, o.gelu)},
                        {"bias", o.bias},
                        {"tie_embeddings", o.tie_embeddings},
                        {"init_std", o.init_std},
                        {"scale_residual_init", o.scale_residual_init}};
}

/// Rebuilds options from decoder_lm_options_to_json output. Throws condense::Error
/// ("[DecoderLMOptions] <what>: ...") for a value that is not an object, a wrong "format",
/// a missing or unknown key, a value of the wrong JSON type, a negative size or an unknown
/// enum name. Whether the sizes make a valid model is checked by the DecoderLM constructor.
inline nn::DecoderLMOptions decoder_lm_options_from_json(const nlohmann::json& j, const std::string& what = "") {
  const std::string where = what.empty() ? std::string() : what + ": ";
  CONDENSE_CHECK(j.is_object(), "DecoderLMOptions", where, "expected a JSON object, got ", j.type_name());
  const detail::OptionReader r(j, where);
  const auto& format = r.at("format");
  CONDENSE_CHECK(format.is_string() && format.get<std::string>() == decoder_lm_options_format, "DecoderLMOptions",
                 where, "\"format\" is ", format.dump(), ", expected \"", decoder_lm_options_format, "\"");
  nn::DecoderLMOptions o;
  o.vocab_size = r.count("vocab_size");
  o.d_model = r.count("d_model");
  o.n_layers = r.count("n_layers");
  o.n_heads = r.count("n_heads");
  o.n_kv_heads = r.count("n_kv_heads");
  o.head_dim = r.count("head_dim");
  o.d_ff = r.count("d_ff");
  o.max_len = r.count("max_len");
  o.norm = r.choice("norm", detail::norm_names);
  o.norm_eps = r.number("norm_eps");
  o.positions = r.choice("positions", detail::position_names);
  o.rope_theta = r.number("rope_theta");
  o.mlp = r.choice("mlp", detail::mlp_names);
  o.gelu = r.choice("gelu", detail::gelu_names);
  o.bias = r.flag("bias");
  o.tie_embeddings = r.flag("tie_embeddings");
  o.init_std = r.number("init_std");
  o.scale_residual_init = r.flag("scale_residual_init");
  const nlohmann::json known = decoder_lm_options_to_json(o);
  for (const auto& [key, value] : j.items())
    CONDENSE_CHECK(known.contains(key), "DecoderLMOptions", where, "unknown key \"", key, "\"");
  return o;
}

/// Parses JSON text (e.g. the checkpoint metadata value under decoder_lm_options_key) and
/// reads the options from it; invalid JSON throws condense::Error too.
inline nn::DecoderLMOptions decoder_lm_options_from_string(const std::string& text, const std::string& what = "") {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  CONDENSE_CHECK(!j.is_discarded(), "DecoderLMOptions", what.empty() ? std::string() : what + ": ",
                 "invalid JSON");
  return decoder_lm_options_from_json(j, what);
}

}  // namespace condense::io
