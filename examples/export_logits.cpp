// Loads a checkpoint written by train_tiny_lm — rebuilding the model from the options and
// the tokenizer stored in its metadata — tokenizes a text, and writes the model's logits
// [1, T, V] (float32) and the input ids [1, T] (int64) to a safetensors file, e.g. to
// compare with another implementation (bench/check_export_logits.py recomputes them from
// the checkpoint in plain Python).
//
//   export_logits [--ckpt train_tiny_lm.safetensors] [--text "This License "]
//                 [--out export_logits.safetensors] [--threads 2]
#include <condense/condense.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

using namespace condense;

namespace {

/// Command-line settings.
struct Settings {
  std::string ckpt = "train_tiny_lm.safetensors";
  std::string text = "This License ";
  std::string out = "export_logits.safetensors";
  int threads = 2;
};

Settings parse_args(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--ckpt") s.ckpt = value;
    else if (arg == "--text") s.text = value;
    else if (arg == "--out") s.out = value;
    else if (arg == "--threads") s.threads = std::stoi(value);
    else throw std::runtime_error("unknown option " + arg + " (options: --ckpt PATH --text TEXT --out PATH --threads N)");
  }
  if (s.text.empty()) throw std::runtime_error("--text must not be empty");
  return s;
}

/// The metadata value under `key`, or an error naming the checkpoint.
const std::string& metadata_value(const io::Checkpoint<float>& ckpt, const std::string& path, const std::string& key) {
  const auto it = ckpt.metadata.find(key);
  if (it == ckpt.metadata.end())
    throw std::runtime_error(path + ": no \"" + key + "\" in the metadata (not a checkpoint of train_tiny_lm)");
  return it->second;
}

}  // namespace

int main(int argc, char** argv) try {
  const Settings s = parse_args(argc, argv);
  set_num_threads(s.threads);

  // The model options and the tokenizer from the metadata, checked against each other.
  const auto ckpt = io::read_checkpoint<float>(s.ckpt);
  const std::string& options_json = metadata_value(ckpt, s.ckpt, std::string(io::decoder_lm_options_key));
  const nn::DecoderLMOptions options = io::decoder_lm_options_from_string(options_json, s.ckpt);
  const auto tok_json = nlohmann::json::parse(metadata_value(ckpt, s.ckpt, "tokenizer"), nullptr, false);
  if (tok_json.is_discarded() || !tok_json.is_object() || tok_json.value("type", "") != "byte")
    throw std::runtime_error(s.ckpt + ": the \"tokenizer\" metadata is not a byte tokenizer");
  const io::ByteTokenizer tok = io::ByteTokenizer::from_json(tok_json, s.ckpt + " tokenizer");
  if (tok.vocab_size() != options.vocab_size)
    throw std::runtime_error(s.ckpt + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                             " tokens, model options say " + std::to_string(options.vocab_size));

  // The model, then its weights: every parameter must be in the file (load_checkpoint
  // throws otherwise) and the file may hold no other model tensor.
  Generator unused(0);
  nn::DecoderLM<float> model(options, unused);
  const auto params = model.named_parameters();
  if (ckpt.model.size() != params.size())
    throw std::runtime_error(s.ckpt + ": " + std::to_string(ckpt.model.size()) + " model tensors, the model has " +
                             std::to_string(params.size()) + " parameters");
  io::load_checkpoint(s.ckpt, params, io::NamedTensors<float>{}, {}, /*strict=*/false);
  model.eval();

  const std::vector<std::int64_t> ids = tok.encode(s.text);
  const auto T = static_cast<std::int64_t>(ids.size());
  if (options.positions == nn::PositionKind::Learned && T > options.max_len)
    throw std::runtime_error("the text has " + std::to_string(T) + " tokens, the model at most " +
                             std::to_string(options.max_len));
  NoGradGuard no_grad;
  const auto input = from_vector<std::int64_t>(ids, {1, T});
  const Tensor<float> logits = model.forward(input);  // [1, T, V]

  io::TensorFile file;
  file.tensors.emplace_back("logits", logits.contiguous());
  file.tensors.emplace_back("input_ids", input);
  file.metadata = {{"checkpoint", s.ckpt}, {"step", std::to_string(ckpt.step)}, {"text", s.text}};
  io::save_safetensors(s.out, file);

  // The most likely next bytes after the text.
  const auto last = logits.select(1, T - 1).select(0, 0).to_vector();
  std::vector<std::int64_t> order(last.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int64_t>(i);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](std::int64_t a, std::int64_t b) { return last[static_cast<std::size_t>(a)] > last[static_cast<std::size_t>(b)]; });
  std::printf("checkpoint %s (step %lld): vocab %lld, d_model %lld, %lld layers\n", s.ckpt.c_str(),
              static_cast<long long>(ckpt.step), static_cast<long long>(options.vocab_size),
              static_cast<long long>(options.d_model), static_cast<long long>(options.n_layers));
  std::printf("wrote %s: logits [1, %lld, %lld] float32, input_ids [1, %lld] int64\n", s.out.c_str(),
              static_cast<long long>(T), static_cast<long long>(options.vocab_size), static_cast<long long>(T));
  std::printf("most likely bytes after \"%s\":", s.text.c_str());
  for (int i = 0; i < 5; ++i) {
    const std::string t = tok.token(order[static_cast<std::size_t>(i)]);
    std::printf(" '%s' (%.2f)", t == "\n" ? "\\n" : t.c_str(), last[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])]);
  }
  std::printf("\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "export_logits: %s\n", e.what());
  return 1;
}
