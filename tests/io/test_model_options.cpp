// DecoderLMOptions as JSON: round trips of both presets with changed fields (the rebuilt
// model has the same parameter names and shapes), the text stored in checkpoint metadata,
// and every validation error (not an object, format, missing / unknown key, wrong type,
// negative size, unknown enum name, invalid JSON).
#include <doctest/doctest.h>

#include <string>

#include "condense/core/factories.hpp"
#include "condense/io/model_options.hpp"

namespace test_model_options {

using namespace condense;
using nlohmann::json;

TEST_CASE("DecoderLMOptions JSON round trip") {
  auto gpt = nn::DecoderLMOptions::gpt2_style(260, 32, 3, 4, 64);
  gpt.gelu = GeluApproximation::Erf;
  gpt.norm_eps = 1e-3;
  auto llama = nn::DecoderLMOptions::llama_style(100, 48, 2, 6, 2, 128);
  llama.rope_theta = 500000.0;
  llama.tie_embeddings = true;
  llama.head_dim = 16;
  for (const auto& o : {gpt, llama}) {
    const json j = io::decoder_lm_options_to_json(o);
    CHECK(j.at("format") == "condense-decoder-lm-options-1");
    const auto back = io::decoder_lm_options_from_string(j.dump(), "meta");
    CHECK(io::decoder_lm_options_to_json(back) == j);
    CHECK(back.vocab_size == o.vocab_size);
    CHECK(back.n_kv_heads == o.n_kv_heads);
    CHECK(back.head_dim == o.head_dim);
    CHECK(back.norm == o.norm);
    CHECK(back.positions == o.positions);
    CHECK(back.mlp == o.mlp);
    CHECK(back.gelu == o.gelu);
    CHECK(back.norm_eps == o.norm_eps);
    CHECK(back.rope_theta == o.rope_theta);
    CHECK(back.tie_embeddings == o.tie_embeddings);
    CHECK(back.scale_residual_init == o.scale_residual_init);
    // The rebuilt model has the same parameters.
    Generator g1(1), g2(2);
    nn::DecoderLM<float> a(o, g1), b(back, g2);
    const auto pa = a.named_parameters(), pb = b.named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(pa[i].first == pb[i].first);
      CHECK(pa[i].second.shape() == pb[i].second.shape());
    }
  }
  CHECK(io::decoder_lm_options_to_json(gpt).at("norm") == "layer_norm");
  CHECK(io::decoder_lm_options_to_json(gpt).at("gelu") == "erf");
  CHECK(io::decoder_lm_options_to_json(llama).at("positions") == "rope");
  CHECK(io::decoder_lm_options_to_json(llama).at("mlp") == "swiglu");
}

TEST_CASE("DecoderLMOptions JSON errors") {
  const json good = io::decoder_lm_options_to_json(nn::DecoderLMOptions::gpt2_style(10, 8, 1, 2, 16));
  const auto read = [](const json& j) { return io::decoder_lm_options_from_json(j, "ckpt"); };
  CHECK_THROWS_WITH_AS(read(json::array()), "[DecoderLMOptions] ckpt: expected a JSON object, got array", Error);
  json j = good;
  j["format"] = "other";
  CHECK_THROWS_WITH_AS(read(j),
                       "[DecoderLMOptions] ckpt: \"format\" is \"other\", expected \"condense-decoder-lm-options-1\"",
                       Error);
  j = good;
  j.erase("d_ff");
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: missing key \"d_ff\"", Error);
  j = good;
  j["dropout"] = 0.1;
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: unknown key \"dropout\"", Error);
  j = good;
  j["d_model"] = 8.5;
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: \"d_model\" is 8.5, expected an integer >= 0", Error);
  j = good;
  j["n_layers"] = -1;
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: \"n_layers\" is -1, expected an integer >= 0", Error);
  j = good;
  j["bias"] = 1;
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: \"bias\" is 1, expected true or false", Error);
  j = good;
  j["norm_eps"] = "small";
  CHECK_THROWS_WITH_AS(read(j), "[DecoderLMOptions] ckpt: \"norm_eps\" is \"small\", expected a finite number", Error);
  j = good;
  j["norm"] = "batch_norm";
  CHECK_THROWS_WITH_AS(read(j),
                       "[DecoderLMOptions] ckpt: \"norm\" is \"batch_norm\", expected one of \"layer_norm\", "
                       "\"rms_norm\"",
                       Error);
  j = good;
  j["positions"] = 1;
  CHECK_THROWS_WITH_AS(read(j),
                       "[DecoderLMOptions] ckpt: \"positions\" is 1, expected one of \"learned\", \"rope\", \"none\"",
                       Error);
  CHECK_THROWS_WITH_AS(io::decoder_lm_options_from_string("{\"format\": ", "ckpt"),
                       "[DecoderLMOptions] ckpt: invalid JSON", Error);
  CHECK(read(good).vocab_size == 10);
}

}  // namespace test_model_options
