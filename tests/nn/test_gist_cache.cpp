// Gist caching: for DecoderLM (GPT-2 and LLaMA presets) and EncoderDecoder, a batch of
// three prompts with different instruction and input lengths gives, from the cache, the
// same logits as the full forward under the gist masks (and not those of a causal /
// unmasked forward); a one-row cache serves a batch; extending a cache in chunks equals one
// call; save + load gives identical logits; garbled or mismatched cache files are rejected;
// bytes() counts the stored tensors; greedy generation from the cache equals greedy
// decoding of the full prompt under the gist mask.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/safetensors.hpp"
#include "condense/mask/policies.hpp"
#include "condense/nn/gist_cache.hpp"
#include "test_util.hpp"

namespace test_gist_cache {

using namespace condense;
using namespace condense::nn;
using condense::testing::max_abs_diff;

namespace {

using Rows = std::vector<std::vector<std::int64_t>>;

constexpr std::int64_t kVocab = 50;
constexpr std::int64_t kBos = 1;
constexpr std::int64_t kGist = 49;  // the gist token id
constexpr std::int64_t kNumGist = 3;
constexpr double kTol = 1e-5;

/// Three prompts: instructions of 2, 4 and 3 tokens after [bos], then kNumGist gist
/// tokens (the prefixes); inputs of 3, 1 and 4 tokens followed by outputs of 2, 3 and 1.
struct Prompts {
  Rows prefixes, inputs, conts;  // conts: input + output
};

Prompts make_prompts(Generator& gen) {
  Prompts p;
  const std::vector<std::int64_t> instr{2, 4, 3}, in{3, 1, 4}, out{2, 3, 1};
  auto tokens = [&](std::int64_t n) {
    std::vector<std::int64_t> t;
    const auto r = randint<std::int64_t>({n}, 2, kGist, gen).to_vector();
    t.assign(r.begin(), r.end());
    return t;
  };
  for (std::size_t b = 0; b < 3; ++b) {
    std::vector<std::int64_t> prefix{kBos};
    for (auto t : tokens(instr[b])) prefix.push_back(t);
    for (std::int64_t g = 0; g < kNumGist; ++g) prefix.push_back(kGist);
    p.prefixes.push_back(prefix);
    const auto input = tokens(in[b]);
    p.inputs.push_back(input);
    auto cont = input;
    for (auto t : tokens(out[b])) cont.push_back(t);
    p.conts.push_back(cont);
  }
  return p;
}

/// Rows right-padded with 0 to [B, max length].
Tensor<std::int64_t> pad_right(const Rows& rows) {
  std::size_t n = 0;
  for (const auto& r : rows) n = std::max(n, r.size());
  std::vector<std::int64_t> flat(rows.size() * n, 0);
  for (std::size_t b = 0; b < rows.size(); ++b) std::copy(rows[b].begin(), rows[b].end(), flat.begin() + static_cast<std::ptrdiff_t>(b * n));
  return from_vector<std::int64_t>(flat, {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(n)});
}

/// Gist spans (g0, g1) of prefixes that end with kNumGist gist tokens.
std::vector<std::int32_t> spans_of(const Rows& prefixes) {
  std::vector<std::int32_t> s;
  for (const auto& p : prefixes) {
    s.push_back(static_cast<std::int32_t>(p.size() - kNumGist));
    s.push_back(static_cast<std::int32_t>(p.size()));
  }
  return s;
}

/// prefixes[b] followed by tails[b].
Rows join(const Rows& prefixes, const Rows& tails) {
  Rows out;
  for (std::size_t b = 0; b < prefixes.size(); ++b) {
    auto r = prefixes[b];
    r.insert(r.end(), tails[b].begin(), tails[b].end());
    out.push_back(r);
  }
  return out;
}

/// Largest |cached[b, j] - full[b, g1_b + j]| over the valid tokens j < conts[b].size().
double max_diff_at_conts(const Tensor<float>& cached, const Tensor<float>& full, const Rows& prefixes, const Rows& conts) {
  double worst = 0.0;
  for (std::size_t b = 0; b < conts.size(); ++b) {
    const auto B = static_cast<std::int64_t>(b), n = static_cast<std::int64_t>(conts[b].size());
    const auto g1 = static_cast<std::int64_t>(prefixes[b].size());
    worst = std::max(worst, max_abs_diff(cached.narrow(0, B, 1).narrow(1, 0, n), full.narrow(0, B, 1).narrow(1, g1, n)));
  }
  return worst;
}

/// Smallest over rows of the largest |cached[b, j] - full[b, g1_b + j]|.
double min_row_diff_at_conts(const Tensor<float>& cached, const Tensor<float>& full, const Rows& prefixes, const Rows& conts) {
  double least = 1e30;
  for (std::size_t b = 0; b < conts.size(); ++b) {
    least = std::min(least, max_diff_at_conts(cached.narrow(0, static_cast<std::int64_t>(b), 1),
                                              full.narrow(0, static_cast<std::int64_t>(b), 1), {prefixes[b]}, {conts[b]}));
  }
  return least;
}

std::vector<DecoderLMOptions> presets() {
  return {DecoderLMOptions::gpt2_style(kVocab, 32, 2, 4, 32), DecoderLMOptions::llama_style(kVocab, 32, 2, 4, 2, 32)};
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("condense_test_gist_" + name + ".safetensors")).string();
}

/// Saves `file` to a temporary path and returns the path.
std::string write_file(const io::TensorFile& file, const std::string& name) {
  const std::string p = temp_path(name);
  io::save_safetensors(p, file);
  return p;
}

/// io::TensorFile with the tensor `name` replaced by f(tensor) (f returns an AnyTensor), or removed.
template <class F>
io::TensorFile edit(io::TensorFile file, const std::string& name, F&& f) {
  for (auto& [n, t] : file.tensors)
    if (n == name) t = f(t);
  return file;
}
io::TensorFile drop(io::TensorFile file, const std::string& name) {
  std::erase_if(file.tensors, [&](const auto& e) { return e.first == name; });
  return file;
}
io::AnyTensor narrow_any(const io::AnyTensor& t, std::int64_t dim, std::int64_t n) {
  return io::AnyTensor(std::get<Tensor<float>>(t).narrow(dim, 0, n).contiguous());
}

/// Greedy tokens of the full prompt prefix + input under the Gist mask, recomputed from
/// scratch at every step (the reference of generate_from_gist).
std::vector<std::int64_t> greedy_full(const DecoderLM<float>& m, std::vector<std::int64_t> seq, int g0, int g1,
                                      std::int64_t n, std::int64_t stop) {
  std::vector<std::int64_t> out;
  for (std::int64_t s = 0; s < n; ++s) {
    const auto L = static_cast<std::int64_t>(seq.size());
    const auto logits = m.forward(from_vector<std::int64_t>(seq, {1, L}), mask::Gist(g0, g1)).select(1, L - 1).squeeze(0);
    const auto v = logits.to_vector();
    const auto t = static_cast<std::int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
    out.push_back(t);
    seq.push_back(t);
    if (t == stop) break;
  }
  return out;
}

}  // namespace

TEST_CASE("DecoderLM: logits from a gist cache equal the full forward under the Gist mask") {
  Generator gen(11);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    CAPTURE(opt.n_kv_heads);
    DecoderLM<float> m(opt, gen);
    const Prompts p = make_prompts(gen);
    const auto spans = spans_of(p.prefixes);
    const Rows full_rows = join(p.prefixes, p.conts);
    const auto full_ids = pad_right(full_rows);
    const auto full = m.forward(full_ids, mask::Gist(spans.data(), 3));
    const auto causal = m.forward(full_ids, mask::Causal{});

    const GistCache<float> cache = compress_instructions(m, pad_right(p.prefixes), spans);
    CHECK(cache.batch() == 3);
    CHECK(cache.num_gist == kNumGist);
    CHECK(cache.num_layers() == 2);
    CHECK(cache.next_position == std::vector<std::int64_t>{6, 8, 7});
    const std::int64_t hkv = m.layers[0]->attn.options().n_kv_heads, dh = m.layers[0]->attn.options().head_dim;
    CHECK(cache.kv.layer(1).keys().shape() == Shape{3, hkv, kNumGist, dh});
    CHECK(cache.bytes() == static_cast<std::size_t>(2 * 2 * 3 * hkv * kNumGist * dh) * sizeof(float));

    const auto cont_ids = pad_right(p.conts);
    const auto got = forward_from_gist(m, cache, cont_ids);
    CHECK(got.shape() == Shape{3, cont_ids.size(1), kVocab});
    CHECK(max_diff_at_conts(got, full, p.prefixes, p.conts) < kTol);
    // The instruction matters: under a plain causal mask every row's logits differ.
    CHECK(min_row_diff_at_conts(got, causal, p.prefixes, p.conts) > 1e-3);
    // The cache is not modified: a second call gives the same logits.
    CHECK(cache.kv.length() == kNumGist);
    CHECK(max_abs_diff(forward_from_gist(m, cache, cont_ids), got) == 0.0);

    // A cache extended in two chunks equals one call.
    KVCache<float> ext;
    const auto a = forward_from_gist(m, cache, cont_ids.narrow(1, 0, 2), &ext);
    CHECK(ext.length() == kNumGist + 2);
    const auto b = forward_from_gist(m, cache, cont_ids.narrow(1, 2, cont_ids.size(1) - 2), &ext);
    CHECK(max_abs_diff(cat({a, b}, 1), got) < kTol);

    // A one-row cache answers every input from row 1's instruction.
    const GistCache<float> one = cache.select_rows({1});
    CHECK(one.batch() == 1);
    const Rows shared{p.prefixes[1], p.prefixes[1], p.prefixes[1]};
    const std::vector<std::int32_t> shared_spans{5, 8, 5, 8, 5, 8};
    const auto full_shared = m.forward(pad_right(join(shared, p.conts)), mask::Gist(shared_spans.data(), 3));
    CHECK(max_diff_at_conts(forward_from_gist(m, one, cont_ids), full_shared, shared, p.conts) < kTol);
  }
}

TEST_CASE("DecoderLM: a saved gist cache loads back to identical logits; bad files are rejected") {
  Generator gen(12);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    DecoderLM<float> m(opt, gen);
    const Prompts p = make_prompts(gen);
    const auto spans = spans_of(p.prefixes);
    const GistCache<float> cache = compress_instructions(m, pad_right(p.prefixes), spans);
    const auto cont_ids = pad_right(p.conts);
    const auto got = forward_from_gist(m, cache, cont_ids);

    const std::string path = temp_path("dec");
    save_gist_cache(cache, path);
    const GistCache<float> loaded = load_gist_cache(path, m);
    CHECK(loaded.next_position == cache.next_position);
    CHECK(loaded.num_gist == kNumGist);
    CHECK(loaded.bytes() == cache.bytes());
    CHECK(max_abs_diff(forward_from_gist(m, loaded, cont_ids), got) == 0.0);
    const GistCache<float> copy = loaded.clone();
    CHECK(max_abs_diff(forward_from_gist(m, copy, cont_ids), got) == 0.0);

    // A model with another layer count or other K/V heads.
    auto deeper = opt;
    deeper.n_layers = 3;
    DecoderLM<float> m3(deeper, gen);
    CHECK_THROWS_WITH_AS(load_gist_cache(path, m3), "[gist_cache] the cache holds 2 layers but the model has 3", Error);
    CHECK_THROWS_WITH_AS(forward_from_gist(m3, cache, cont_ids), "[gist_cache] the cache holds 2 layers but the model has 3",
                         Error);
    auto wider = opt;
    wider.n_kv_heads = 4;
    DecoderLM<float> m4(wider, gen);
    if (m4.layers[0]->attn.options().n_kv_heads != m.layers[0]->attn.options().n_kv_heads)
      CHECK_THROWS_WITH_AS(load_gist_cache(path, m4), doctest::Contains("but the model needs [B, Hkv, k, Dh]"), Error);
    // A batch that the cache does not cover.
    CHECK_THROWS_WITH_AS(forward_from_gist(m, cache, cont_ids.narrow(0, 0, 2)),
                         doctest::Contains("the cache holds 3 rows but the batch has 2"), Error);

    // Garbled files.
    const io::TensorFile good = io::load_safetensors(path);
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(write_file(drop(drop(good, "layers.1.k"), "layers.1.v"), "g1")),
                         doctest::Contains("holds 1 layers, metadata says 2"), Error);
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(write_file(drop(good, "layers.1.v"), "g2")),
                         doctest::Contains("layers.1.k and layers.1.v must come together"), Error);
    const auto short_k = [](const io::AnyTensor& t) { return narrow_any(t, 2, kNumGist - 1); };
    CHECK_THROWS_WITH_AS(
        load_gist_cache<float>(write_file(edit(edit(good, "layers.1.k", short_k), "layers.1.v", short_k), "g3")),
        doctest::Contains("in batch size or length"), Error);
    const auto one_head = [](const io::AnyTensor& t) { return narrow_any(t, 1, 1); };
    CHECK_THROWS_WITH_AS(
        load_gist_cache<float>(write_file(edit(edit(good, "layers.0.k", one_head), "layers.0.v", one_head), "g4")),
        doctest::Contains("every layer must hold self-attention K/V of one shape"), Error);
    const auto two_rows = [](const io::AnyTensor& t) {
      return io::AnyTensor(std::get<Tensor<std::int64_t>>(t).narrow(0, 0, 2).contiguous());
    };
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(write_file(edit(good, "next_position", two_rows), "g5")),
                         doctest::Contains("'next_position' has 2 rows, the K/V have 3"), Error);
    io::TensorFile bad_meta = good;
    bad_meta.metadata["num_gist"] = "4";
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(write_file(bad_meta, "g6")),
                         doctest::Contains("hold a gist length different from num_gist = 4"), Error);
    io::TensorFile no_format = good;
    no_format.metadata.clear();
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(write_file(no_format, "g7")),
                         doctest::Contains("not a gist cache file (no 'format' metadata)"), Error);
    CHECK_THROWS_WITH_AS(load_gist_encoder_cache<float>(path),
                         doctest::Contains("holds format 'condense.gist_cache', expected 'condense.gist_encoder_cache'"),
                         Error);
    CHECK_THROWS_WITH_AS(load_gist_cache<double>(path), doctest::Contains("expected float64"), Error);
    for (const char* n : {"dec", "g1", "g2", "g3", "g4", "g5", "g6", "g7"}) std::filesystem::remove(temp_path(n));
  }
}

TEST_CASE("bfloat16 DecoderLM: a gist cache gives the full forward's logits and saves as BF16") {
  Generator gen(13);
  NoGradGuard ng;
  DecoderLM<bfloat16> m(DecoderLMOptions::llama_style(kVocab, 32, 2, 4, 2, 32), gen);
  const Prompts p = make_prompts(gen);
  const auto spans = spans_of(p.prefixes);
  const auto full = m.forward(pad_right(join(p.prefixes, p.conts)), mask::Gist(spans.data(), 3)).cast<float>();
  const GistCache<bfloat16> cache = compress_instructions(m, pad_right(p.prefixes), spans);
  const auto cont_ids = pad_right(p.conts);
  const auto got = forward_from_gist(m, cache, cont_ids).cast<float>();
  // The cached keys/values are the full forward's bfloat16 ones; only the order of the float
  // sums inside attention differs, which can move a rounding by one ulp (2^-8 relative).
  double scale = 0.0;
  for (const float x : full.to_vector()) scale = std::max(scale, static_cast<double>(std::abs(x)));
  CHECK(max_diff_at_conts(got, full, p.prefixes, p.conts) < 16 * 0x1p-8 * scale);
  CHECK(cache.bytes() == static_cast<std::size_t>(2 * 2 * 3 * 2 * kNumGist * 8) * sizeof(bfloat16));

  const std::string path = temp_path("bf16");
  save_gist_cache(cache, path);
  const io::TensorFile file = io::load_safetensors(path);
  CHECK(io::element_type(file.tensors.front().second) == DType::BFloat16);
  const GistCache<bfloat16> loaded = load_gist_cache(path, m);
  CHECK(max_abs_diff(forward_from_gist(m, loaded, cont_ids).cast<float>(), got) == 0.0);
  // A float model does not take a bfloat16 cache silently.
  DecoderLM<float> wide(DecoderLMOptions::llama_style(kVocab, 32, 2, 4, 2, 32), gen);
  CHECK_THROWS_AS(load_gist_cache(path, wide), Error);
  std::filesystem::remove(path);
}

TEST_CASE("DecoderLM: greedy generation from a gist cache equals greedy decoding of the full prompt") {
  Generator gen(13);
  NoGradGuard ng;
  for (const auto& opt : presets()) {
    DecoderLM<float> m(opt, gen);
    const Prompts p = make_prompts(gen);
    const auto spans = spans_of(p.prefixes);
    const GistCache<float> cache = compress_instructions(m, pad_right(p.prefixes), spans);
    const Rows got = generate_from_gist(m, cache, p.inputs, 5);
    REQUIRE(got.size() == 3);
    for (std::size_t b = 0; b < 3; ++b) {
      auto seq = p.prefixes[b];
      seq.insert(seq.end(), p.inputs[b].begin(), p.inputs[b].end());
      CHECK(got[b] == greedy_full(m, seq, spans[2 * b], spans[2 * b + 1], 5, -1));
    }
    // A stop token (row 0's second token) ends row 0 by its second token, kept in the output.
    const std::int64_t stop = got[0][1];
    const Rows stopped = generate_from_gist(m, cache, p.inputs, 5, stop);
    for (std::size_t b = 0; b < 3; ++b) {
      auto seq = p.prefixes[b];
      seq.insert(seq.end(), p.inputs[b].begin(), p.inputs[b].end());
      CHECK(stopped[b] == greedy_full(m, seq, spans[2 * b], spans[2 * b + 1], 5, stop));
    }
    CHECK(stopped[0].size() <= 2);
    // One compressed instruction answers several inputs.
    const Rows shared = generate_from_gist(m, cache.select_rows({2}), p.inputs, 3);
    for (std::size_t b = 0; b < 3; ++b) {
      auto seq = p.prefixes[2];
      seq.insert(seq.end(), p.inputs[b].begin(), p.inputs[b].end());
      CHECK(shared[b] == greedy_full(m, seq, spans[4], spans[5], 3, -1));
    }
    CHECK_THROWS_WITH_AS(generate_from_gist(m, cache, Rows{{2}, {}, {3}}, 2), "[gist_cache] input 1 is empty (the first new token is predicted from the input's last token)", Error);
  }
}

TEST_CASE("EncoderDecoder: decoding from a gist encoder cache equals the full model under the gist masks") {
  Generator gen(14);
  NoGradGuard ng;
  auto rope = EncoderDecoderOptions::t5_style(kVocab, 32, 2, 4, 32);
  rope.n_kv_heads = 2;
  auto learned = EncoderDecoderOptions::t5_style(kVocab, 32, 2, 4, 32);
  learned.positions = PositionKind::Learned;
  for (const auto& opt : {rope, learned}) {
    CAPTURE(opt.n_kv_heads);
    EncoderDecoder<float> m(opt, gen);
    const Prompts p = make_prompts(gen);
    const auto spans = spans_of(p.prefixes);
    const Rows sources = join(p.prefixes, p.inputs);
    std::vector<std::int32_t> src_len;
    std::vector<std::int64_t> in_len;
    for (std::size_t b = 0; b < 3; ++b) {
      src_len.push_back(static_cast<std::int32_t>(sources[b].size()));
      in_len.push_back(static_cast<std::int64_t>(p.inputs[b].size()));
    }
    const mask::KeyPadding padding(src_len.data(), 3);
    const auto src = pad_right(sources);
    const auto states = m.encode(src, mask::GistBidirectional(spans.data(), 3) & padding);
    const Rows targets{{3, 7, 9, 4}, {5, 2}, {8, 8, 6}};
    const auto tgt = pad_right(targets);
    const auto full = m.decode(tgt, states, mask::GistCross(spans.data(), 3) & padding);
    // Control: the same model without gist masks (the decoder then reads the instruction).
    const auto unmasked = m.decode(tgt, m.encode(src, padding), padding);

    const GistEncoderCache<float> cache = compress_instructions(m, pad_right(p.prefixes), spans);
    const std::int64_t hkv = m.encoder.layers[0]->attn.options().n_kv_heads;
    const std::int64_t dh = m.encoder.layers[0]->attn.options().head_dim;
    CHECK(cache.states.shape() == Shape{3, kNumGist, 32});
    CHECK(cache.bytes() == static_cast<std::size_t>(2 * 2 * 3 * hkv * kNumGist * dh + 3 * kNumGist * 32) * sizeof(float));
    const GistEncoding<float> enc = encode_from_gist(m, cache, pad_right(p.inputs), in_len);
    CHECK(enc.key_lengths == std::vector<std::int32_t>{6, 4, 7});
    // Encoder states of [gist ; input] equal the full encoder's states at g0_b.. and g1_b..
    for (std::size_t b = 0; b < 3; ++b) {
      const auto B = static_cast<std::int64_t>(b), n = in_len[b];
      CHECK(max_abs_diff(enc.states.narrow(0, B, 1).narrow(1, 0, kNumGist + n),
                         states.narrow(0, B, 1).narrow(1, spans[2 * b], kNumGist + n)) < kTol);
    }
    const auto got = decode_from_gist(m, enc, tgt);
    CHECK(max_abs_diff(got, full) < kTol);
    for (std::int64_t b = 0; b < 3; ++b)
      CHECK(max_abs_diff(got.narrow(0, b, 1), unmasked.narrow(0, b, 1)) > 1e-3);

    // Save / load.
    const std::string path = temp_path("encdec");
    save_gist_cache(cache, path);
    const GistEncoderCache<float> loaded = load_gist_encoder_cache(path, m);
    CHECK(loaded.bytes() == cache.bytes());
    CHECK(max_abs_diff(decode_from_gist(m, encode_from_gist(m, loaded, pad_right(p.inputs), in_len), tgt), got) == 0.0);
    // One compressed instruction, several inputs.
    const GistEncoderCache<float> one = cache.select_rows({0});
    const Rows shared_src = join({p.prefixes[0], p.prefixes[0], p.prefixes[0]}, p.inputs);
    std::vector<std::int32_t> shared_len, shared_spans;
    for (const auto& s : shared_src) {
      shared_len.push_back(static_cast<std::int32_t>(s.size()));
      shared_spans.insert(shared_spans.end(), {spans[0], spans[1]});
    }
    const mask::KeyPadding shared_pad(shared_len.data(), 3);
    const auto shared_states = m.encode(pad_right(shared_src), mask::GistBidirectional(shared_spans.data(), 3) & shared_pad);
    const auto shared_full = m.decode(tgt, shared_states, mask::GistCross(shared_spans.data(), 3) & shared_pad);
    CHECK(max_abs_diff(decode_from_gist(m, encode_from_gist(m, one, pad_right(p.inputs), in_len), tgt), shared_full) < kTol);

    // Mismatches.
    auto deeper = opt;
    deeper.n_encoder_layers = 3;
    EncoderDecoder<float> m3(deeper, gen);
    CHECK_THROWS_WITH_AS(load_gist_encoder_cache(path, m3),
                         "[gist_cache] the cache holds 2 layers but the model's encoder has 3", Error);
    const io::TensorFile good = io::load_safetensors(path);
    CHECK_THROWS_WITH_AS(load_gist_encoder_cache<float>(write_file(drop(good, "states"), "e1")),
                         doctest::Contains("tensor 'states' is missing"), Error);
    CHECK_THROWS_WITH_AS(
        load_gist_encoder_cache<float>(write_file(edit(good, "states", [](const io::AnyTensor& t) { return narrow_any(t, 1, 2); }), "e2")),
        doctest::Contains("'states' must be [B, k, d]"), Error);
    CHECK_THROWS_WITH_AS(load_gist_cache<float>(path),
                         doctest::Contains("holds format 'condense.gist_encoder_cache', expected 'condense.gist_cache'"),
                         Error);
    for (const char* n : {"encdec", "e1", "e2"}) std::filesystem::remove(temp_path(n));

    // Greedy generation from the cache equals greedy decoding with the full source.
    GenerateOptions go;
    go.max_new_tokens = 4;
    const Rows gen_out = generate_from_gist(m, cache, p.inputs, 0, go, gen);
    for (std::size_t b = 0; b < 3; ++b) {
      const auto row_src = from_vector<std::int64_t>(sources[b], {1, static_cast<std::int64_t>(sources[b].size())});
      const auto row_states = m.encode(row_src, mask::GistBidirectional(spans[2 * b], spans[2 * b + 1]));
      std::vector<std::int64_t> dec{0};
      for (int s = 0; s < 4; ++s) {
        const auto L = static_cast<std::int64_t>(dec.size());
        const auto v = m.decode(from_vector<std::int64_t>(dec, {1, L}), row_states,
                                mask::GistCross(spans[2 * b], spans[2 * b + 1]))
                           .select(1, L - 1)
                           .squeeze(0)
                           .to_vector();
        dec.push_back(static_cast<std::int64_t>(std::max_element(v.begin(), v.end()) - v.begin()));
      }
      CHECK(gen_out[b] == std::vector<std::int64_t>(dec.begin() + 1, dec.end()));
    }
  }
}

TEST_CASE("compress_instructions rejects bad gist spans") {
  Generator gen(15);
  DecoderLM<float> m(DecoderLMOptions::gpt2_style(kVocab, 32, 2, 4, 32), gen);
  const auto ids = randint<std::int64_t>({2, 6}, 0, kVocab, gen);
  CHECK_THROWS_WITH_AS(compress_instructions(m, ids, {1, 3}), doctest::Contains("gist_spans must hold 2 * B = 4 entries"),
                       Error);
  CHECK_THROWS_WITH_AS(compress_instructions(m, ids, {1, 3, 2, 5}),
                       "[gist_cache] every row needs the same number of gist tokens: row 0 has 2, row 1 has 3", Error);
  CHECK_THROWS_WITH_AS(compress_instructions(m, ids, {1, 3, 5, 7}), doctest::Contains("row 1 has gist span [5, 7)"), Error);
}

}  // namespace test_gist_cache
