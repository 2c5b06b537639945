// Trains a small GPT-2-style decoder language model on the bytes of a text file: byte
// tokenizer, AdamW with warmup and cosine decay, gradient clipping, one progress line every
// few steps, a held-out validation loss and perplexity, a training checkpoint (weights,
// optimizer moments, step, data generator, and the model options and tokenizer as
// metadata, so export_logits can rebuild the model from the file alone), then samples
// text from a prompt with temperature and top-k.
//
//   train_tiny_lm [--steps 500] [--text /usr/share/common-licenses/GPL-3]
//                 [--out train_tiny_lm.safetensors] [--seed 1] [--threads 2] [--resume CKPT]
//                 [--stop-at N] [--dtype float|bf16]
//
// --dtype bf16 trains the model on bfloat16 parameters and activations with AdamW's float
// master weights (each op computes in float and rounds once); the checkpoint then holds
// bfloat16 weights, which export_logits loads into its float model.
//
// --stop-at N stops after step N (of --steps) and saves the checkpoint, as if the run had
// been interrupted; --resume CKPT continues it up to --steps (same --steps, --text and
// --seed), and the weights and optimizer state then come out bit for bit as those of an
// uninterrupted run.
#include <condense/condense.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace condense;

namespace {

/// Command-line settings.
struct Settings {
  std::int64_t steps = 500;
  std::string text = "/usr/share/common-licenses/GPL-3";
  std::string out = "train_tiny_lm.safetensors";
  std::uint64_t seed = 1;
  int threads = 2;
  std::string resume;
  std::int64_t stop_at = 0;  // 0: run to --steps
  bool bf16 = false;          // --dtype bf16
};

constexpr std::int64_t seq = 128;        // tokens per training window
constexpr std::int64_t batch = 8;        // windows per step
constexpr double base_lr = 3e-3;         // peak learning rate
constexpr double min_lr = 3e-4;          // end of the cosine decay
constexpr double max_grad_norm = 1.0;    // clipping threshold
constexpr std::int64_t eval_windows = 24;  // held-out windows for the validation loss

Settings parse_args(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--steps") s.steps = std::stoll(value());
    else if (arg == "--text") s.text = value();
    else if (arg == "--out") s.out = value();
    else if (arg == "--seed") s.seed = std::stoull(value());
    else if (arg == "--threads") s.threads = std::stoi(value());
    else if (arg == "--resume") s.resume = value();
    else if (arg == "--stop-at") s.stop_at = std::stoll(value());
    else if (arg == "--dtype") {
      const std::string dtype = value();
      if (dtype != "float" && dtype != "bf16") throw std::runtime_error("--dtype must be float or bf16, got " + dtype);
      s.bf16 = dtype == "bf16";
    } else throw std::runtime_error("unknown option " + arg +
                                    " (options: --steps N --text PATH --out PATH --seed N --threads N --resume CKPT"
                                    " --stop-at N --dtype float|bf16)");
  }
  if (s.steps < 1) throw std::runtime_error("--steps must be >= 1");
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The model: byte vocabulary (plus the tokenizer's special tokens), 4 layers, d 128.
nn::DecoderLMOptions model_options(std::int64_t vocab) {
  return nn::DecoderLMOptions::gpt2_style(vocab, /*d_model=*/128, /*n_layers=*/4, /*n_heads=*/4, /*max_len=*/seq);
}

/// `rows` windows of seq + 1 tokens starting at `starts` in `tokens`: inputs [rows, seq]
/// and next-token targets [rows * seq].
std::pair<Tensor<std::int64_t>, Tensor<std::int64_t>> make_batch(const std::vector<std::int64_t>& tokens,
                                                                 const std::vector<std::size_t>& starts) {
  std::vector<std::int64_t> in, target;
  for (const std::size_t at : starts) {
    in.insert(in.end(), tokens.begin() + static_cast<std::ptrdiff_t>(at),
              tokens.begin() + static_cast<std::ptrdiff_t>(at + seq));
    target.insert(target.end(), tokens.begin() + static_cast<std::ptrdiff_t>(at + 1),
                  tokens.begin() + static_cast<std::ptrdiff_t>(at + seq + 1));
  }
  const auto rows = static_cast<std::int64_t>(starts.size());
  return {from_vector<std::int64_t>(in, {rows, seq}), from_vector<std::int64_t>(target, {rows * seq})};
}

/// A loss value as a double.
template <DifferentiableElement T>
double value_of(const Tensor<T>& loss) {
  return convert_element<double>(loss.item());
}

/// Mean next-token loss over non-overlapping windows of the held-out tokens.
template <DifferentiableElement T>
double validation_loss(nn::DecoderLM<T>& model, const std::vector<std::int64_t>& val) {
  NoGradGuard no_grad;
  model.eval();
  train::LossMeter meter;
  std::vector<std::size_t> starts;
  for (std::size_t at = 0; at + seq + 1 <= val.size() && static_cast<std::int64_t>(starts.size()) < eval_windows;
       at += seq)
    starts.push_back(at);
  for (std::size_t b = 0; b < starts.size(); b += batch) {
    const std::vector<std::size_t> chunk(starts.begin() + static_cast<std::ptrdiff_t>(b),
                                         starts.begin() + static_cast<std::ptrdiff_t>(std::min(starts.size(), b + batch)));
    const auto [in, target] = make_batch(val, chunk);
    const auto logits = model.forward(in);
    const auto loss = cross_entropy(logits.reshape({target.numel(), model.vocab_size()}), target);
    meter.add_mean(value_of(loss), target.numel());
  }
  model.train();
  return meter.mean();
}

/// Trains, evaluates, saves and samples a DecoderLM<T> as the settings say.
template <DifferentiableElement T>
int train_and_sample(const Settings& s) {
  io::ByteTokenizer tok;
  const std::string text = read_file(s.text);
  const std::vector<std::int64_t> tokens = tok.encode(text);
  const std::size_t split = tokens.size() * 9 / 10;  // last 10% held out
  const std::vector<std::int64_t> train_tokens(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(split));
  const std::vector<std::int64_t> val_tokens(tokens.begin() + static_cast<std::ptrdiff_t>(split), tokens.end());
  if (train_tokens.size() < static_cast<std::size_t>(4 * seq) || val_tokens.size() < static_cast<std::size_t>(seq + 1))
    throw std::runtime_error(s.text + " is too short (" + std::to_string(text.size()) + " bytes)");
  std::printf("text %s: %zu bytes, %zu for training, %zu held out\n", s.text.c_str(), text.size(), train_tokens.size(),
              val_tokens.size());

  const nn::DecoderLMOptions options = model_options(tok.vocab_size());
  Generator init(s.seed);
  nn::DecoderLM<T> model(options, init);
  optim::AdamW<T> opt(model.named_parameters(), {.lr = base_lr, .weight_decay = 0.1});
  Generator data(s.seed + 1);  // draws the training windows
  const std::map<std::string, std::string> metadata{
      {std::string(io::decoder_lm_options_key), io::decoder_lm_options_to_json(options).dump()},
      {"tokenizer", tok.to_json().dump()}};

  if (!s.resume.empty()) {
    const auto saved = io::read_checkpoint<float>(s.resume).metadata;
    const auto it = saved.find(std::string(io::decoder_lm_options_key));
    if (it == saved.end()) throw std::runtime_error(s.resume + " holds no model options: not written by train_tiny_lm");
    const auto saved_options = io::decoder_lm_options_from_string(it->second, s.resume);
    if (io::decoder_lm_options_to_json(saved_options) != io::decoder_lm_options_to_json(options))
      throw std::runtime_error(s.resume + " holds another model: " + it->second);
    const std::int64_t step = io::load_training_checkpoint(s.resume, model, opt, {{"data", &data}});
    std::printf("resumed from %s at step %lld\n", s.resume.c_str(), static_cast<long long>(step));
  }
  std::printf("model: GPT-2 style, vocab %lld, d_model %lld, %lld layers, %lld heads, %lld %s parameters; "
              "batch %lld x %lld tokens, %d threads\n",
              static_cast<long long>(options.vocab_size), static_cast<long long>(options.d_model),
              static_cast<long long>(options.n_layers), static_cast<long long>(options.n_heads),
              static_cast<long long>(model.num_parameters()), dtype_name(dtype_of<T>).data(), static_cast<long long>(batch),
              static_cast<long long>(seq), s.threads);

  const double start_val = validation_loss(model, val_tokens);
  std::printf("validation loss at step %lld: %.4f (perplexity %.2f)\n", static_cast<long long>(opt.steps()), start_val,
              train::perplexity(start_val));

  const std::int64_t warmup = std::max<std::int64_t>(1, s.steps / 15);
  train::ProgressLog log(std::cout, s.steps, std::max<std::int64_t>(1, s.steps / 15), 0.9, train::steady_seconds,
                         std::min(opt.steps(), s.steps));
  train::StepHooks hooks(s.steps);
  hooks.every(std::max<std::int64_t>(1, s.steps / 3), "eval", [&](std::int64_t step) {
    if (step == s.steps) return;  // reported below
    const double v = validation_loss(model, val_tokens);
    log.message("validation loss " + std::to_string(v) + ", perplexity " + std::to_string(train::perplexity(v)));
  }, /*also_at_end=*/false);

  double first_loss = -1.0, last_loss = 0.0;
  const std::int64_t stop = s.stop_at > 0 ? std::min(s.stop_at, s.steps) : s.steps;
  while (opt.steps() < stop) {
    std::vector<std::size_t> starts;
    for (std::int64_t b = 0; b < batch; ++b)
      starts.push_back(static_cast<std::size_t>(data.below(train_tokens.size() - seq - 1)));
    const auto [in, target] = make_batch(train_tokens, starts);
    const auto logits = model.forward(in);
    auto loss = cross_entropy(logits.reshape({batch * seq, model.vocab_size()}), target);
    loss.backward();
    const double norm = optim::clip_grad_norm(opt.parameters(), max_grad_norm);
    opt.set_lr(optim::warmup_cosine(opt.steps(), base_lr, warmup, s.steps, min_lr));
    const double lr = opt.lr();
    opt.step();
    opt.zero_grad();
    last_loss = value_of(loss);
    if (first_loss < 0) first_loss = last_loss;
    log.log({.step = opt.steps(), .loss = last_loss, .lr = lr, .grad_norm = norm, .tokens = batch * seq});
    hooks.run(opt.steps());
  }

  if (stop < s.steps) {
    io::save_training_checkpoint(s.out, model, opt, {{"data", &data}}, metadata);
    std::printf("stopped at step %lld of %lld; checkpoint: %s (continue with --resume %s)\n",
                static_cast<long long>(opt.steps()), static_cast<long long>(s.steps), s.out.c_str(), s.out.c_str());
    return 0;
  }
  const double val = validation_loss(model, val_tokens);
  if (first_loss >= 0)
    std::printf("training loss: first step %.4f, last step %.4f (smoothed %.4f)\n", first_loss, last_loss,
                log.smoothed_loss());
  std::printf("validation loss %.4f (perplexity %.2f), at the start of this run %.4f (perplexity %.2f)\n", val,
              train::perplexity(val), start_val, train::perplexity(start_val));

  io::save_training_checkpoint(s.out, model, opt, {{"data", &data}}, metadata);
  std::printf("checkpoint: %s (step %lld)\n", s.out.c_str(), static_cast<long long>(opt.steps()));

  // Sampling: temperature 0.8, the 20 most likely bytes at each step. The model has seen
  // positions < seq only, so the text is generated in pieces: each piece continues the
  // last seq / 2 tokens (from position 0) up to seq tokens.
  const std::string prompt = "This License ";
  nn::GenerateOptions gen_options;
  gen_options.do_sample = true;
  gen_options.temperature = 0.8;
  gen_options.top_k = 20;
  Generator sampler(s.seed + 2);
  model.eval();
  std::vector<std::int64_t> sample = tok.encode(prompt);
  const std::size_t want = sample.size() + 200;
  while (sample.size() < want) {
    const std::size_t keep = std::min<std::size_t>(sample.size(), seq / 2);
    const std::vector<std::int64_t> context(sample.end() - static_cast<std::ptrdiff_t>(keep), sample.end());
    const std::size_t room = static_cast<std::size_t>(seq) - keep;
    gen_options.max_new_tokens = static_cast<std::int64_t>(std::min(want - sample.size(), room));
    const auto piece = nn::generate(model, {context}, gen_options, sampler);
    sample.insert(sample.end(), piece[0].begin(), piece[0].end());
  }
  std::printf("\nsample (temperature 0.8, top-k 20):\n%s\n", tok.decode(sample, {.skip_special = true}).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const Settings s = parse_args(argc, argv);
  set_num_threads(s.threads);
  return s.bf16 ? train_and_sample<bfloat16>(s) : train_and_sample<float>(s);
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_tiny_lm: %s\n", e.what());
  return 1;
}
