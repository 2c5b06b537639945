// The gisting benchmark (Mu, Li & Goodman 2023, "Learning to Compress Prompts with Gist Tokens")
// on the library's own instruction benchmark: trains small decoder-only models (pos, gist-1,
// gist-2, gist-5, neg) and encoder-decoder models (ed-pos, ed-gist-1) one after another on
// `instruction, k gist tokens, input -> output`, evaluates them by greedy decoding on the seen,
// unseen and hard splits (exact match, ROUGE-L), measures for the gist decoders the prompt
// compression, the prefill FLOPs and wall time of answering N inputs of one instruction with and
// without the gist cache, and the KV bytes kept per instruction, and prints the table (also
// written as markdown to <out-dir>/gist_benchmark.md). docs/gisting.md describes it all.
//
//   gist_benchmark [--quick | --full] [--steps N] [--threads N] [--seed N]
//                  [--only pos,gist-1,...] [--out-dir DIR] [--eval N]
#include <condense/condense.hpp>
#include <condense/nn/gist_cache.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace condense;
using data::Split;

namespace {

// ---- configuration ---------------------------------------------------------------------------

/// Which attention rule a variant trains and decodes with.
enum class MaskKind {
  Pos,   ///< gist tokens present, plain causal (decoder) / unmasked (encoder-decoder) attention
  Gist,  ///< Gist (decoder) or GistBidirectional + GistCross (encoder-decoder)
  Neg,   ///< GistNegativeControl: tokens after the gist see neither instruction nor gist
};

/// One row of the table.
struct Variant {
  std::string name;
  bool encoder_decoder = false;
  MaskKind mask = MaskKind::Gist;
  std::int64_t k = 1;  ///< number of gist tokens
};

const std::vector<Variant> all_variants = {
    {"pos", false, MaskKind::Pos, 1},      {"gist-1", false, MaskKind::Gist, 1}, {"gist-2", false, MaskKind::Gist, 2},
    {"gist-5", false, MaskKind::Gist, 5},  {"neg", false, MaskKind::Neg, 1},     {"ed-pos", true, MaskKind::Pos, 1},
    {"ed-gist-1", true, MaskKind::Gist, 1},
};

/// Command-line settings. --quick (the default) and --full set the sizes; the other flags
/// override single values.
struct Config {
  bool full = false;
  std::int64_t base_steps = 0;  ///< pretraining steps of the shared base models
  std::int64_t copy_steps = 0;  ///< the first base steps train on the copy family only
  std::int64_t steps = 0;       ///< finetuning steps per variant
  std::int64_t batch = 0;      ///< examples per step
  int threads = 2;
  std::uint64_t seed = 0;
  std::set<std::string> only;  ///< variants to run (empty: all)
  std::string out_dir = ".";
  bool per_family = false;     ///< print exact match per family
  std::size_t eval_n = 0;      ///< examples per evaluation split
  std::int64_t d_model = 0, layers = 0, heads = 0;
  bool gpt2 = false;           ///< GPT-2-style decoder instead of LLaMA-style
  double base_lr = 0.0;  ///< pretraining learning rate (constant after the warmup)
  double lr = 0.0;       ///< finetuning learning rate
  /// Seen families trained on (empty: every family of the benchmark). The quick default is a
  /// subset; see quick_families.
  std::vector<std::string> families;
  std::size_t measure_instructions = 0;  ///< distinct instructions in the cache measurement
  std::size_t measure_inputs = 0;        ///< inputs per instruction (N)
  int measure_repeats = 0;               ///< timing repeats (the median is reported)
};

/// The seen families of the quick run: twelve list operations, dictionary look-ups and
/// counting over words, colours, animals and digits (no sorting and no arithmetic, which a
/// small model does not learn in minutes). The held-out compositions and hard families whose
/// operations all occur here are evaluated with them.
const std::vector<std::string> quick_families = {
    "copy",         "reverse_words", "first_item",      "last_item",       "kth_item",  "count_items",
    "contains_word", "dedupe",       "colour_to_fruit", "animal_to_sound", "opposite",  "digits_to_words",
};

[[noreturn]] void usage(const char* argv0, const std::string& error = "") {
  if (!error.empty()) std::cerr << "error: " << error << "\n";
  std::cerr << "usage: " << argv0
            << " [--quick | --full] [--steps N] [--threads N] [--seed N] [--only LIST] [--out-dir DIR] [--eval N]\n"
               "       [--base-steps N] [--copy-steps N] [--batch N] [--base-lr X] [--lr X] [--d-model N] [--layers N]\n"
               "       [--heads N] [--gpt2] [--families all|LIST] [--per-family]\n"
               "  variants for --only (comma-separated): pos gist-1 gist-2 gist-5 neg ed-pos ed-gist-1\n"
               "  --families: the seen families to train on (default: a subset of 21 with --quick, all with --full)\n";
  std::exit(error.empty() ? 0 : 2);
}

Config parse_args(int argc, char** argv) {
  Config c;
  std::int64_t base_steps = -1, copy_steps = -1, steps = -1, eval = -1, batch = -1, d_model = -1, layers = -1, heads = -1;
  double lr = -1.0, base_lr = -1.0;
  bool families_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0], a + " needs a value");
      return argv[++i];
    };
    const auto number = [&]() -> std::int64_t {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0) usage(argv[0], a + " needs a non-negative integer, got '" + v + "'");
      return n;
    };
    if (a == "--quick") {
      c.full = false;
    } else if (a == "--full") {
      c.full = true;
    } else if (a == "--steps") {
      steps = number();
    } else if (a == "--base-steps") {
      base_steps = number();
    } else if (a == "--copy-steps") {
      copy_steps = number();
    } else if (a == "--threads") {
      c.threads = static_cast<int>(std::max<std::int64_t>(1, number()));
    } else if (a == "--seed") {
      c.seed = static_cast<std::uint64_t>(number());
    } else if (a == "--eval") {
      eval = number();
    } else if (a == "--out-dir") {
      c.out_dir = value();
    } else if (a == "--only") {
      std::stringstream ss(value());
      for (std::string name; std::getline(ss, name, ',');) {
        if (name.empty()) continue;
        const bool known = std::any_of(all_variants.begin(), all_variants.end(), [&](const Variant& v) { return v.name == name; });
        if (!known) usage(argv[0], "unknown variant '" + name + "'");
        c.only.insert(name);
      }
    } else if (a == "--batch") {
      batch = number();
    } else if (a == "--d-model") {
      d_model = number();
    } else if (a == "--layers") {
      layers = number();
    } else if (a == "--heads") {
      heads = number();
    } else if (a == "--per-family") {
      c.per_family = true;
    } else if (a == "--gpt2") {
      c.gpt2 = true;
    } else if (a == "--base-lr" || a == "--lr") {
      const std::string v = value();
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(x > 0)) usage(argv[0], a + " needs a positive number, got '" + v + "'");
      (a == "--lr" ? lr : base_lr) = x;
    } else if (a == "--families") {
      families_given = true;
      c.families.clear();
      const std::string list = value();
      if (list != "all") {
        std::stringstream ss(list);
        for (std::string name; std::getline(ss, name, ',');)
          if (!name.empty()) c.families.push_back(name);
      }
    } else if (a == "--help" || a == "-h") {
      usage(argv[0]);
    } else {
      usage(argv[0], "unknown option '" + a + "'");
    }
  }
  // Sizes. quick: twelve families, about ten minutes in all on 2 cores; full: every family and
  // three times the training (its sizes are not tuned yet).
  c.d_model = 128;
  c.layers = 2;
  c.heads = 4;
  c.base_lr = 1e-3;
  c.lr = 1e-3;
  c.batch = 32;
  c.base_steps = c.full ? 5000 : 1500;
  c.steps = c.full ? 1500 : 300;
  c.eval_n = c.full ? 1000 : 300;
  c.measure_instructions = c.full ? 16 : 8;
  c.measure_inputs = 32;
  c.measure_repeats = c.full ? 9 : 5;
  if (!families_given && !c.full) c.families = quick_families;
  if (steps > 0) c.steps = steps;
  if (base_steps >= 0) c.base_steps = base_steps;
  c.copy_steps = copy_steps >= 0 ? copy_steps : std::min<std::int64_t>(400, c.base_steps / 2);
  if (c.copy_steps > c.base_steps) usage(argv[0], "--copy-steps cannot exceed --base-steps");
  if (eval > 0) c.eval_n = static_cast<std::size_t>(eval);
  if (batch > 0) c.batch = batch;
  if (d_model > 0) c.d_model = d_model;
  if (layers > 0) c.layers = layers;
  if (heads > 0) c.heads = heads;
  if (lr > 0) c.lr = lr;
  if (base_lr > 0) c.base_lr = base_lr;
  if (c.d_model % c.heads != 0) usage(argv[0], "--d-model must be a multiple of --heads");
  return c;
}

// ---- data ------------------------------------------------------------------------------------

/// The families each split draws from when training on a subset of the seen families.
struct FamilyPlan {
  std::vector<std::string> seen;          ///< train, seen, and (held-out templates) unseen
  std::vector<std::string> compositions;  ///< held-out compositions of the subset's ops (unseen)
  std::vector<std::string> hard;          ///< hard families of the subset's ops (all if none)
};

FamilyPlan plan_families(const data::InstructionBenchmark& bench, const std::vector<std::string>& seen) {
  FamilyPlan plan;
  plan.seen = seen;
  std::set<data::Op> ops;
  for (const auto& name : seen) {
    const auto& f = bench.family(name);  // throws for an unknown name
    CONDENSE_CHECK(f.role == data::FamilyRole::Seen, "gist_benchmark", "family '", name,
                   "' is not a seen (training) family");
    ops.insert(f.steps.begin(), f.steps.end());
  }
  const auto covered = [&](const data::TaskFamily& f) {
    return std::all_of(f.steps.begin(), f.steps.end(), [&](data::Op op) { return ops.count(op) > 0; });
  };
  std::vector<std::string> all_hard;
  for (const auto& f : bench.families()) {
    if (f.role == data::FamilyRole::HeldOut && covered(f)) plan.compositions.push_back(f.name);
    if (f.role == data::FamilyRole::Hard) {
      all_hard.push_back(f.name);
      if (covered(f)) plan.hard.push_back(f.name);
    }
  }
  if (plan.hard.empty()) plan.hard = all_hard;
  return plan;
}

/// `n` examples of `split`: bench.sample() over every family when `plan` is empty, else the
/// same scheme over the plan's families (a family uniformly, in the unseen split a held-out
/// composition with probability unseen_composition_share; then one example of it).
std::vector<data::InstructionExample> sample_split(const data::InstructionBenchmark& bench, const FamilyPlan& plan,
                                                   Split split, std::size_t n, std::uint64_t seed) {
  if (plan.seen.empty()) return bench.sample(split, n, seed);
  Generator gen(seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(split) + 1);
  std::vector<data::InstructionExample> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::vector<std::string>* pool = &plan.seen;
    if (split == Split::Hard) pool = &plan.hard;
    if (split == Split::Unseen && !plan.compositions.empty() &&
        gen.uniform01() < bench.options().unseen_composition_share)
      pool = &plan.compositions;
    const std::string& name = (*pool)[gen.below(pool->size())];
    out.push_back(bench.sample_family(name, split, 1, gen.next_u64()).front());
  }
  return out;
}

/// The special ids and the tokenizer shared by every model.
struct Vocab {
  io::WordTokenizer tok;
  std::int64_t gist = 0;
  std::int64_t pad = 0, bos = 0, eos = 0;
};

/// An example encoded for one variant (k gist tokens).
struct Encoded {
  data::EncodedExample e;
  std::string reference;  ///< the reference output text
  std::string family;     ///< the example's family
};

/// One example encoded with k gist tokens.
Encoded encode_one(const Vocab& v, const data::InstructionExample& ex, std::int64_t k) {
  return {data::encode_example(v.tok, data::format_example(ex), static_cast<std::size_t>(k), v.gist), ex.output, ex.family};
}

std::vector<Encoded> encode_all(const Vocab& v, const std::vector<data::InstructionExample>& examples, std::int64_t k) {
  std::vector<Encoded> out;
  out.reserve(examples.size());
  for (const auto& ex : examples) out.push_back(encode_one(v, ex, k));
  return out;
}

// ---- masks -----------------------------------------------------------------------------------

/// Calls fn(policy) with the training mask of a decoder variant over a right-padded batch.
/// spans: [B, 2] (g0, g1) per row.
template <class Fn>
auto with_train_mask(MaskKind kind, const std::vector<std::int32_t>& spans, int rows, Fn&& fn) {
  switch (kind) {
    case MaskKind::Pos:
      return fn(mask::Causal{});
    case MaskKind::Gist:
      return fn(mask::Gist(spans.data(), rows));
    case MaskKind::Neg:
      break;
  }
  return fn(mask::GistNegativeControl(spans.data(), rows));
}

/// Calls fn(policy) with the decoding mask of a decoder variant over a left-padded buffer of
/// `keys` positions per row: the variant's rule intersected with mask::Pruned, whose keep bitmap
/// drops each row's pad keys (Pruned is causal itself).
template <class Fn>
auto with_decode_mask(MaskKind kind, const std::vector<std::int32_t>& spans, const bool* keep, int rows, int keys, Fn&& fn) {
  const mask::Pruned padding(keep, rows, keys);
  switch (kind) {
    case MaskKind::Pos:
      return fn(padding);
    case MaskKind::Gist:
      return fn(mask::Intersect(mask::Gist(spans.data(), rows), padding));
    case MaskKind::Neg:
      break;
  }
  return fn(mask::Intersect(mask::GistNegativeControl(spans.data(), rows), padding));
}

/// Calls fn(encoder_policy, cross_policy) for an encoder-decoder variant over right-padded
/// sources of `lengths` tokens: Pos masks only the padding; Gist adds GistBidirectional in the
/// encoder and GistCross in cross-attention.
template <class Fn>
auto with_seq2seq_masks(MaskKind kind, const std::vector<std::int32_t>& spans, const std::vector<std::int32_t>& lengths,
                        int rows, Fn&& fn) {
  const mask::KeyPadding padding(lengths.data(), rows);
  if (kind == MaskKind::Pos) return fn(padding, padding);
  return fn(mask::Intersect(mask::GistBidirectional(spans.data(), rows), padding),
            mask::Intersect(mask::GistCross(spans.data(), rows), padding));
}

// ---- batches ---------------------------------------------------------------------------------

/// A right-padded decoder training batch: ids [B, T], the gist spans, and the flattened
/// positions (b * T + t) whose next token is an output token, with those targets.
struct DecoderBatch {
  Tensor<std::int64_t> ids;
  std::vector<std::int32_t> spans;
  Tensor<std::int64_t> rows_with_loss;  ///< [N] indices into the [B * T] positions
  Tensor<std::int64_t> targets;         ///< [N]
  std::int64_t tokens = 0;              ///< non-pad tokens
};

DecoderBatch decoder_batch(const std::vector<Encoded>& data, std::size_t first, std::size_t count, std::int64_t pad) {
  std::size_t T = 0;
  for (std::size_t i = 0; i < count; ++i) T = std::max(T, data[(first + i) % data.size()].e.ids.size());
  const auto B = static_cast<std::int64_t>(count);
  std::vector<std::int64_t> ids(count * T, pad), sel, tgt;
  DecoderBatch batch;
  batch.spans.resize(2 * count);
  for (std::size_t b = 0; b < count; ++b) {
    const auto& e = data[(first + b) % data.size()].e;
    std::copy(e.ids.begin(), e.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(b * T));
    batch.spans[2 * b] = static_cast<std::int32_t>(e.gist_begin);
    batch.spans[2 * b + 1] = static_cast<std::int32_t>(e.gist_end);
    const auto t = e.targets();
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i] < 0) continue;
      sel.push_back(static_cast<std::int64_t>(b * T + i));
      tgt.push_back(t[i]);
    }
    batch.tokens += static_cast<std::int64_t>(e.ids.size());
  }
  batch.ids = from_vector<std::int64_t>(ids, {B, static_cast<std::int64_t>(T)});
  batch.rows_with_loss = from_vector<std::int64_t>(sel, {static_cast<std::int64_t>(sel.size())});
  batch.targets = from_vector<std::int64_t>(tgt, {static_cast<std::int64_t>(tgt.size())});
  return batch;
}

/// A right-padded encoder-decoder batch: sources [B, S] = [bos instruction gist input] with
/// their lengths and spans, decoder inputs [B, U] = [bos output] and the positions with loss.
struct Seq2SeqBatch {
  Tensor<std::int64_t> source, target_in;
  std::vector<std::int32_t> spans, lengths;
  Tensor<std::int64_t> rows_with_loss, targets;
  std::int64_t tokens = 0;
};

Seq2SeqBatch seq2seq_batch(const std::vector<Encoded>& data, std::size_t first, std::size_t count, const Vocab& v) {
  std::size_t S = 0, U = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& e = data[(first + i) % data.size()].e;
    S = std::max(S, e.output_begin);
    U = std::max(U, e.ids.size() - e.output_begin);  // output tokens + eos = decoder length
  }
  const auto B = static_cast<std::int64_t>(count);
  std::vector<std::int64_t> src(count * S, v.pad), tin(count * U, v.pad), sel, tgt;
  Seq2SeqBatch batch;
  batch.spans.resize(2 * count);
  batch.lengths.resize(count);
  for (std::size_t b = 0; b < count; ++b) {
    const auto& e = data[(first + b) % data.size()].e;
    std::copy(e.ids.begin(), e.ids.begin() + static_cast<std::ptrdiff_t>(e.output_begin),
              src.begin() + static_cast<std::ptrdiff_t>(b * S));
    batch.lengths[b] = static_cast<std::int32_t>(e.output_begin);
    batch.spans[2 * b] = static_cast<std::int32_t>(e.gist_begin);
    batch.spans[2 * b + 1] = static_cast<std::int32_t>(e.gist_end);
    const std::size_t n = e.ids.size() - e.output_begin;  // output + eos
    for (std::size_t i = 0; i < n; ++i) {
      tin[b * U + i] = i == 0 ? v.bos : e.ids[e.output_begin + i - 1];
      sel.push_back(static_cast<std::int64_t>(b * U + i));
      tgt.push_back(e.ids[e.output_begin + i]);
    }
    batch.tokens += static_cast<std::int64_t>(e.output_begin + n);
  }
  batch.source = from_vector<std::int64_t>(src, {B, static_cast<std::int64_t>(S)});
  batch.target_in = from_vector<std::int64_t>(tin, {B, static_cast<std::int64_t>(U)});
  batch.rows_with_loss = from_vector<std::int64_t>(sel, {static_cast<std::int64_t>(sel.size())});
  batch.targets = from_vector<std::int64_t>(tgt, {static_cast<std::int64_t>(tgt.size())});
  return batch;
}

// ---- models ----------------------------------------------------------------------------------

using Decoder = nn::DecoderLM<float>;
using Seq2Seq = nn::EncoderDecoder<float>;

nn::DecoderLMOptions decoder_options(const Config& c, std::int64_t vocab) {
  if (c.gpt2) return nn::DecoderLMOptions::gpt2_style(vocab, c.d_model, c.layers, c.heads, 256);
  // Tied input and output embeddings: a head that moves a word's embedding to the answer
  // position then already scores that word, so copying is learned in hundreds of steps
  // rather than thousands (untied, the small models here stay at the unigram loss).
  nn::DecoderLMOptions o = nn::DecoderLMOptions::llama_style(vocab, c.d_model, c.layers, c.heads, c.heads, 256);
  o.tie_embeddings = true;
  return o;
}

nn::EncoderDecoderOptions seq2seq_options(const Config& c, std::int64_t vocab) {
  return nn::EncoderDecoderOptions::t5_style(vocab, c.d_model, c.layers, c.heads, 256);
}

/// Cross-entropy over the selected positions of hidden states [B, T, d] (logits only where
/// there is a target, which spares the lm_head matmul on the prompt).
template <class Model>
Tensor<float> selected_loss(const Model& model, const Tensor<float>& hidden, const Tensor<std::int64_t>& rows,
                            const Tensor<std::int64_t>& targets) {
  const std::int64_t d = hidden.size(2);
  const Tensor<float> flat = hidden.reshape({hidden.size(0) * hidden.size(1), d});
  return cross_entropy(model.logits(index_select(flat, 0, rows)), targets);
}

/// How one training run goes: `steps` AdamW updates (linear warmup over 5%, then a constant
/// rate or a cosine decay to lr / 10; gradient clipping at 1.0) on batches of `batch`
/// examples taken in order from example `first` of the training pool.
struct TrainPlan {
  std::int64_t steps = 0;
  double lr = 0.0;
  std::int64_t batch = 0;
  std::size_t first = 0;
  bool constant = false;  ///< constant rate after the warmup (else cosine decay)
};

/// Runs a TrainPlan with batch = make_batch(first example), loss = loss_of(batch), and a
/// progress line every steps / 10. Returns the training seconds. The batch stays alive until
/// after backward(): the mask policies point into its span and length arrays, and the
/// attention backward reads them again.
template <class Module, class MakeBatch, class LossOf>
double train_model(const Module& model, const TrainPlan& plan, MakeBatch&& make_batch, LossOf&& loss_of) {
  optim::AdamWOptions ao;
  ao.lr = plan.lr;
  ao.weight_decay = 0.01;
  optim::AdamW<float> opt(model.named_parameters(), ao);
  const std::int64_t warmup = std::max<std::int64_t>(1, plan.steps / 20);
  train::ProgressLog log(std::cout, plan.steps, std::max<std::int64_t>(1, plan.steps / 10));
  for (std::int64_t s = 0; s < plan.steps; ++s) {
    const auto batch = make_batch(plan.first + static_cast<std::size_t>(s * plan.batch));
    const Tensor<float> loss = loss_of(batch);
    loss.backward();
    const double norm = optim::clip_grad_norm(opt.parameters(), 1.0);
    if (!std::isfinite(norm)) {  // skip the update, say so
      std::string which;
      try {
        optim::clip_grad_norm(opt.parameters(), 1.0, /*error_if_nonfinite=*/true);
      } catch (const Error& e) {
        which = e.what();
      }
      log.message("update skipped (loss " + std::to_string(loss.item()) + "): " + which);
      opt.zero_grad();
      continue;
    }
    opt.set_lr(plan.constant ? optim::constant_lr(opt.steps(), plan.lr, warmup)
                             : optim::warmup_cosine(opt.steps(), plan.lr, warmup, plan.steps, plan.lr * 0.1));
    opt.step();
    opt.zero_grad();
    log.log({.step = opt.steps(), .loss = loss.item(), .lr = opt.lr(), .grad_norm = norm, .tokens = batch.tokens});
  }
  return log.elapsed();
}

/// Copies every parameter of `from` into `to` (two modules built with the same options).
template <class Module>
void copy_parameters(const Module& from, const Module& to) {
  const auto src = from.named_parameters(), dst = to.named_parameters();
  CONDENSE_CHECK(src.size() == dst.size(), "gist_benchmark", "modules differ: ", src.size(), " vs ", dst.size(),
                 " parameters");
  for (std::size_t i = 0; i < src.size(); ++i) {
    const Tensor<float>& a = src[i].second;
    const Tensor<float>& b = dst[i].second;
    CONDENSE_CHECK(a.shape() == b.shape(), "gist_benchmark", "parameter ", src[i].first, " differs in shape");
    std::copy(a.data(), a.data() + a.numel(), b.data());
  }
}

// ---- greedy decoding -------------------------------------------------------------------------

/// Index of the largest entry of each row of logits [B, V].
std::vector<std::int64_t> argmax_rows(const Tensor<float>& logits) {
  const Tensor<float> l = logits.contiguous();
  const std::int64_t B = l.size(0), V = l.size(1);
  std::vector<std::int64_t> out(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const float* row = l.data() + b * V;
    out[static_cast<std::size_t>(b)] = std::max_element(row, row + V) - row;
  }
  return out;
}

/// Shared greedy loop: first logits [B, V], then step(ids [B, 1], positions [B, 1]) -> [B, V].
/// Each row stops at eos (not included in its output).
template <class Step>
std::vector<std::vector<std::int64_t>> greedy_loop(Tensor<float> logits, std::vector<std::int64_t> next_pos,
                                                   std::int64_t max_new, const Vocab& v, Step&& step) {
  const auto B = static_cast<std::size_t>(logits.size(0));
  std::vector<std::vector<std::int64_t>> out(B);
  std::vector<bool> done(B, false);
  for (std::int64_t s = 0; s < max_new; ++s) {
    const auto next = argmax_rows(logits);
    std::vector<std::int64_t> feed(B, v.pad);
    bool all_done = true;
    for (std::size_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      if (next[b] == v.eos) {
        done[b] = true;
      } else {
        out[b].push_back(next[b]);
        feed[b] = next[b];
      }
      all_done = all_done && done[b];
    }
    if (all_done || s + 1 == max_new) break;
    const auto Bi = static_cast<std::int64_t>(B);
    logits = step(from_vector<std::int64_t>(feed, {Bi, 1}), from_vector<std::int64_t>(next_pos, {Bi, 1}));
    for (auto& p : next_pos) ++p;
  }
  return out;
}

/// Greedy answers of a decoder variant for prompts = ids[0, output_begin) of each example.
/// The prompts are left-padded: row b with p_b pads has positions t - p_b and gist span shifted
/// by p_b, and mask::Pruned drops its pad keys; the variant's rule applies on top.
std::vector<std::vector<std::int64_t>> decode_decoder(const Decoder& model, MaskKind kind,
                                                      const std::vector<const Encoded*>& rows, std::int64_t max_new,
                                                      const Vocab& v) {
  const auto B = static_cast<std::int64_t>(rows.size());
  std::int64_t P = 0;
  for (const auto* r : rows) P = std::max<std::int64_t>(P, static_cast<std::int64_t>(r->e.output_begin));
  const std::int64_t total = P + max_new;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * P), v.pad), pos(static_cast<std::size_t>(B * P), 0),
      next_pos(static_cast<std::size_t>(B));
  std::vector<std::int32_t> spans(static_cast<std::size_t>(2 * B));
  std::unique_ptr<bool[]> keep(new bool[static_cast<std::size_t>(B * total)]());
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& e = rows[static_cast<std::size_t>(b)]->e;
    const auto n = static_cast<std::int64_t>(e.output_begin), padding = P - n;
    for (std::int64_t t = 0; t < n; ++t) {
      ids[static_cast<std::size_t>(b * P + padding + t)] = e.ids[static_cast<std::size_t>(t)];
      pos[static_cast<std::size_t>(b * P + padding + t)] = t;
    }
    for (std::int64_t k = padding; k < total; ++k) keep[static_cast<std::size_t>(b * total + k)] = true;
    spans[static_cast<std::size_t>(2 * b)] = static_cast<std::int32_t>(static_cast<std::int64_t>(e.gist_begin) + padding);
    spans[static_cast<std::size_t>(2 * b + 1)] = static_cast<std::int32_t>(static_cast<std::int64_t>(e.gist_end) + padding);
    next_pos[static_cast<std::size_t>(b)] = n;
  }
  NoGradGuard no_grad;
  nn::KVCache<float> cache(model.num_layers());
  cache.reserve(total);
  const auto last = [&](const Tensor<float>& h) { return model.logits(h.narrow(1, h.size(1) - 1, 1)).squeeze(1); };
  return with_decode_mask(kind, spans, keep.get(), static_cast<int>(B), static_cast<int>(total), [&](const auto& policy) {
    nn::ForwardOptions<float> prefill;
    prefill.cache = &cache;
    prefill.positions = from_vector<std::int64_t>(pos, {B, P});
    const Tensor<float> first = last(model.hidden_states(from_vector<std::int64_t>(ids, {B, P}), policy, prefill));
    return greedy_loop(first, next_pos, max_new, v, [&](const Tensor<std::int64_t>& step_ids, const Tensor<std::int64_t>& step_pos) {
      nn::ForwardOptions<float> o;
      o.cache = &cache;
      o.positions = step_pos;
      return last(model.hidden_states(step_ids, policy, o));
    });
  });
}

/// Greedy answers of an encoder-decoder variant: the right-padded sources are encoded once
/// under the variant's encoder mask; the decoder starts from bos and reads the states under the
/// variant's cross mask (its cross K/V are cached by the first step).
std::vector<std::vector<std::int64_t>> decode_seq2seq(const Seq2Seq& model, MaskKind kind,
                                                      const std::vector<const Encoded*>& rows, std::int64_t max_new,
                                                      const Vocab& v) {
  const auto B = static_cast<std::int64_t>(rows.size());
  std::int64_t S = 0;
  for (const auto* r : rows) S = std::max<std::int64_t>(S, static_cast<std::int64_t>(r->e.output_begin));
  std::vector<std::int64_t> src(static_cast<std::size_t>(B * S), v.pad);
  std::vector<std::int32_t> spans(static_cast<std::size_t>(2 * B)), lengths(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& e = rows[static_cast<std::size_t>(b)]->e;
    std::copy(e.ids.begin(), e.ids.begin() + static_cast<std::ptrdiff_t>(e.output_begin), src.begin() + b * S);
    lengths[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(e.output_begin);
    spans[static_cast<std::size_t>(2 * b)] = static_cast<std::int32_t>(e.gist_begin);
    spans[static_cast<std::size_t>(2 * b + 1)] = static_cast<std::int32_t>(e.gist_end);
  }
  NoGradGuard no_grad;
  return with_seq2seq_masks(kind, spans, lengths, static_cast<int>(B), [&](const auto& enc_mask, const auto& cross_mask) {
    const Tensor<float> states = model.encode(from_vector<std::int64_t>(src, {B, S}), enc_mask);
    nn::KVCache<float> cache(model.num_layers());
    cache.reserve(max_new);
    const auto step = [&](const Tensor<std::int64_t>& ids, const Tensor<std::int64_t>& pos) {
      nn::ForwardOptions<float> o;
      o.cache = &cache;
      o.positions = pos;
      return model.logits(model.decode_hidden(ids, states, mask::Causal{}, cross_mask, o)).squeeze(1);
    };
    const Tensor<float> first = step(full<std::int64_t>({B, 1}, v.bos), zeros<std::int64_t>({B, 1}));
    return greedy_loop(first, std::vector<std::int64_t>(static_cast<std::size_t>(B), 1), max_new, v, step);
  });
}

// ---- evaluation ------------------------------------------------------------------------------

struct SplitScore {
  double em = 0.0, rouge = 0.0;
};

/// Exact match and ROUGE-L (train/metrics.hpp) of greedy answers, decoded in batches of 64.
/// `answers`, when given, receives the answer tokens of every example.
template <class DecodeFn>
SplitScore evaluate(const std::vector<Encoded>& examples, const Vocab& v, DecodeFn&& decode, std::string* sample_line,
                    std::vector<std::vector<std::int64_t>>* answers = nullptr, std::string* per_family = nullptr) {
  std::vector<std::string> preds, refs;
  for (std::size_t first = 0; first < examples.size(); first += 64) {
    std::vector<const Encoded*> rows;
    std::int64_t longest = 0;
    for (std::size_t i = first; i < std::min(examples.size(), first + 64); ++i) {
      rows.push_back(&examples[i]);
      longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(examples[i].e.ids.size() - examples[i].e.output_begin));
    }
    // Room for the longest reference (+ eos) and a few more: answers are never cut short of
    // the reference length, and runaway answers stop soon after it.
    const auto out = decode(rows, longest + 4);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      preds.push_back(v.tok.decode(out[i], {.skip_special = true}));
      refs.push_back(rows[i]->reference);
      if (answers) answers->push_back(out[i]);
    }
  }
  if (sample_line) *sample_line = "\"" + preds.front() + "\" (reference \"" + refs.front() + "\")";
  if (per_family) {  // "family EM% (n)" by family name
    std::map<std::string, std::pair<double, int>> by;
    for (std::size_t i = 0; i < preds.size(); ++i) {
      auto& [hits, n] = by[examples[i].family];
      hits += train::exact_match(preds[i], refs[i]);
      ++n;
    }
    for (const auto& [name, hn] : by)
      *per_family += " " + name + " " + std::to_string(static_cast<int>(std::lround(100.0 * hn.first / hn.second))) +
                     "% (" + std::to_string(hn.second) + ")";
  }
  const auto s = train::corpus_scores(preds, refs);
  return {s.exact_match, s.rouge_l};
}

/// Answers of a gist decoder decoded from the gist cache: each batch's prefixes
/// [bos instruction gist] (right-padded) are compressed by nn::compress_instructions, then
/// nn::generate_from_gist decodes the inputs against the cached gist K/V only. Returns the
/// share of examples whose answer equals `reference_answers` (the full forward under the
/// Gist mask), which must be 1 up to float ties.
double cache_agreement(const Decoder& model, const std::vector<Encoded>& examples,
                       const std::vector<std::vector<std::int64_t>>& reference_answers, const Vocab& v) {
  std::size_t same = 0;
  for (std::size_t first = 0; first < examples.size(); first += 64) {
    const std::size_t n = std::min(examples.size(), first + 64) - first;
    std::int64_t P = 0, longest = 0;
    for (std::size_t i = first; i < first + n; ++i) {
      P = std::max<std::int64_t>(P, static_cast<std::int64_t>(examples[i].e.gist_end));
      longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(examples[i].e.ids.size() - examples[i].e.output_begin));
    }
    std::vector<std::int64_t> prefix(n * static_cast<std::size_t>(P), v.pad);
    std::vector<std::int32_t> spans(2 * n);
    std::vector<std::vector<std::int64_t>> inputs;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& e = examples[first + i].e;
      std::copy(e.ids.begin(), e.ids.begin() + static_cast<std::ptrdiff_t>(e.gist_end),
                prefix.begin() + static_cast<std::ptrdiff_t>(i * static_cast<std::size_t>(P)));
      spans[2 * i] = static_cast<std::int32_t>(e.gist_begin);
      spans[2 * i + 1] = static_cast<std::int32_t>(e.gist_end);
      inputs.emplace_back(e.ids.begin() + static_cast<std::ptrdiff_t>(e.gist_end),
                          e.ids.begin() + static_cast<std::ptrdiff_t>(e.output_begin));
    }
    const auto cache =
        nn::compress_instructions(model, from_vector<std::int64_t>(prefix, {static_cast<std::int64_t>(n), P}), spans);
    auto out = nn::generate_from_gist(model, cache, inputs, longest + 4, v.eos);
    for (std::size_t i = 0; i < n; ++i) {
      if (!out[i].empty() && out[i].back() == v.eos) out[i].pop_back();
      same += out[i] == reference_answers[first + i] ? 1 : 0;
    }
  }
  return static_cast<double>(same) / static_cast<double>(examples.size());
}

// ---- FLOPs -----------------------------------------------------------------------------------

/// Analytic forward matmul FLOPs of a decoder (2 per multiply-add), counted per token and per
/// allowed attention pair:
///   per token and layer: q, k, v, o projections 2 d (H Dh) + 2 * 2 d (Hkv Dh) + 2 (H Dh) d,
///                        MLP 2 m d d_ff (m = 3 matrices for SwiGLU, 2 for GELU);
///   per allowed (query, key) pair and layer: 4 H Dh (Q K^T and P V);
///   per token whose logits are computed: lm_head 2 d V.
/// Norms, softmax, rope, embeddings and the residual adds are not matmuls and not counted.
struct FlopModel {
  double per_token = 0.0, per_pair = 0.0, per_logit_row = 0.0;

  explicit FlopModel(const nn::DecoderLMOptions& o) {
    const double d = static_cast<double>(o.d_model), H = static_cast<double>(o.n_heads);
    const double Hkv = static_cast<double>(o.n_kv_heads > 0 ? o.n_kv_heads : o.n_heads);
    const double Dh = static_cast<double>(o.head_dim > 0 ? o.head_dim : o.d_model / o.n_heads);
    const double mats = o.mlp == nn::MlpKind::SwiGLU ? 3.0 : 2.0;
    const double L = static_cast<double>(o.n_layers);
    per_token = L * (2 * d * H * Dh + 4 * d * Hkv * Dh + 2 * H * Dh * d + 2 * mats * d * static_cast<double>(o.d_ff));
    per_pair = L * 4 * H * Dh;
    per_logit_row = 2 * d * static_cast<double>(o.vocab_size);
  }
  double operator()(double tokens, double pairs, double logit_rows) const {
    return tokens * per_token + pairs * per_pair + logit_rows * per_logit_row;
  }
};

// ---- gist cache measurement ------------------------------------------------------------------

/// What the cache measurement reports for one decoder variant.
struct CacheStats {
  double compression = 0.0;           ///< mean instruction tokens (bos + instruction) / k
  double flops_without = 0.0;         ///< per instruction: N full prompts
  double flops_with = 0.0;            ///< per instruction: compression once + N inputs
  double ms_without = 0.0, ms_with = 0.0;  ///< per instruction, median over repeats
  double kv_full = 0.0, kv_gist = 0.0;     ///< bytes per instruction
  double max_logit_diff = 0.0;        ///< |last-token logits with cache - full forward|
};

/// One instruction with N inputs, tokenized: prefix = [bos instruction gist x k], inputs = the
/// input pieces ("\nInput: ... \nOutput:").
struct MeasureGroup {
  std::vector<std::int64_t> prefix;
  std::int64_t g0 = 0, g1 = 0;
  std::vector<std::vector<std::int64_t>> inputs;
};

/// The examples of the cache measurement: c.measure_instructions groups of up to
/// c.measure_inputs seen-split examples that share one instruction (families without
/// parameters, so every input fits the one instruction).
std::vector<std::vector<data::InstructionExample>> measure_examples(const data::InstructionBenchmark& bench,
                                                                    const Config& c) {
  const std::vector<std::string> families = {"reverse_words", "sort_alpha", "copy",        "swap_ends",
                                             "every_other",   "first_item", "sort_numbers", "max_number",
                                             "dedupe",        "last_item",  "count_items",  "opposite",
                                             "min_number",    "sum_numbers", "filter_even", "animal_to_sound"};
  std::vector<std::vector<data::InstructionExample>> out;
  for (std::size_t i = 0; i < c.measure_instructions; ++i) {
    const auto examples = bench.sample_family(families[i % families.size()], Split::Seen, 8 * c.measure_inputs, c.seed + 100 + i);
    std::vector<data::InstructionExample> group;
    for (const auto& ex : examples) {
      if (ex.instruction != examples.front().instruction) continue;
      group.push_back(ex);
      if (group.size() == c.measure_inputs) break;
    }
    out.push_back(std::move(group));
  }
  return out;
}

/// The measurement groups encoded with k gist tokens.
std::vector<MeasureGroup> measure_groups(const std::vector<std::vector<data::InstructionExample>>& examples,
                                         const Vocab& v, std::int64_t k) {
  std::vector<MeasureGroup> out;
  for (const auto& group : examples) {
    MeasureGroup g;
    for (const auto& ex : group) {
      const auto e = data::encode_example(v.tok, data::format_example(ex), static_cast<std::size_t>(k), v.gist);
      if (g.prefix.empty()) {
        g.prefix.assign(e.ids.begin(), e.ids.begin() + static_cast<std::ptrdiff_t>(e.gist_end));
        g.g0 = static_cast<std::int64_t>(e.gist_begin);
        g.g1 = static_cast<std::int64_t>(e.gist_end);
      }
      g.inputs.emplace_back(e.ids.begin() + static_cast<std::ptrdiff_t>(e.gist_end),
                            e.ids.begin() + static_cast<std::ptrdiff_t>(e.output_begin));
    }
    out.push_back(std::move(g));
  }
  return out;
}

double seconds_now() { return train::steady_seconds(); }

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

/// Prefill cost of answering N inputs of each instruction, without cache (each prompt
/// [bos instruction gist input] prefilled in full under the Gist mask, one batch per
/// instruction) and with the gist cache (the prefix compressed once, then only the inputs
/// prefilled against the k cached gist keys/values). Also the KV bytes per instruction and the
/// largest logit difference between the two paths.
CacheStats measure_cache(const Decoder& model, const Variant& var, const std::vector<MeasureGroup>& groups,
                         double mean_instruction_tokens, const Vocab& v, const Config& c) {
  NoGradGuard no_grad;
  const FlopModel flops(model.options());
  CacheStats st;
  st.compression = mean_instruction_tokens / static_cast<double>(var.k);
  std::vector<double> t_without, t_with;
  double kv_full = 0, kv_gist = 0;
  for (int rep = 0; rep < c.measure_repeats; ++rep) {
    double without = 0, with = 0;
    for (const auto& g : groups) {
      const auto N = static_cast<std::int64_t>(g.inputs.size());
      const auto P = static_cast<std::int64_t>(g.prefix.size());
      std::int64_t Tmax = 0;
      for (const auto& in : g.inputs) Tmax = std::max<std::int64_t>(Tmax, static_cast<std::int64_t>(in.size()));
      // Without cache: [N, P + Tmax] right-padded full prompts under the Gist mask.
      std::vector<std::int64_t> full_ids(static_cast<std::size_t>(N * (P + Tmax)), v.pad);
      std::vector<std::int64_t> cont(static_cast<std::size_t>(N * Tmax), v.pad);
      for (std::int64_t b = 0; b < N; ++b) {
        const auto& in = g.inputs[static_cast<std::size_t>(b)];
        std::copy(g.prefix.begin(), g.prefix.end(), full_ids.begin() + b * (P + Tmax));
        std::copy(in.begin(), in.end(), full_ids.begin() + b * (P + Tmax) + P);
        std::copy(in.begin(), in.end(), cont.begin() + b * Tmax);
      }
      const auto full_t = from_vector<std::int64_t>(full_ids, {N, P + Tmax});
      const auto cont_t = from_vector<std::int64_t>(cont, {N, Tmax});
      double t0 = seconds_now();
      const Tensor<float> h_full = model.hidden_states(full_t, mask::Gist(static_cast<int>(g.g0), static_cast<int>(g.g1)));
      // logits of each row's last real token
      std::vector<std::int64_t> last_rows;
      for (std::int64_t b = 0; b < N; ++b)
        last_rows.push_back(b * (P + Tmax) + P + static_cast<std::int64_t>(g.inputs[static_cast<std::size_t>(b)].size()) - 1);
      const auto last_t = from_vector<std::int64_t>(last_rows, {N});
      const Tensor<float> logits_full =
          model.logits(index_select(h_full.reshape({N * (P + Tmax), h_full.size(2)}), 0, last_t));
      without += seconds_now() - t0;

      // With cache: compress the prefix once ([1, P]), then prefill the N inputs against the
      // k cached gist keys/values at their true positions g1, g1 + 1, ... (the one-row cache
      // copied to N rows), logits of the last token of each row only, as above.
      t0 = seconds_now();
      const std::vector<std::int32_t> span = {static_cast<std::int32_t>(g.g0), static_cast<std::int32_t>(g.g1)};
      const nn::GistCache<float> cache = nn::compress_instructions(model, from_vector<std::int64_t>(g.prefix, {1, P}), span);
      nn::KVCache<float> work = cache.kv.select_rows(std::vector<std::int64_t>(static_cast<std::size_t>(N), 0));
      nn::ForwardOptions<float> o;
      o.cache = &work;
      o.positions = arange<std::int64_t>(cache.next_position[0], cache.next_position[0] + Tmax);
      const Tensor<float> h_cont = model.hidden_states(cont_t, mask::Causal{}, o);
      std::vector<std::int64_t> last_cont;
      for (std::int64_t b = 0; b < N; ++b)
        last_cont.push_back(b * Tmax + static_cast<std::int64_t>(g.inputs[static_cast<std::size_t>(b)].size()) - 1);
      const Tensor<float> logits_cont = model.logits(
          index_select(h_cont.reshape({N * Tmax, h_cont.size(2)}), 0, from_vector<std::int64_t>(last_cont, {N})));
      with += seconds_now() - t0;
      if (rep == 0) {
        // Both paths must give the same logits; forward_from_gist (the library's one-call
        // continuation, logits of every input token) must agree with them too.
        const Tensor<float> from_gist = nn::forward_from_gist(model, cache, cont_t);  // [N, Tmax, V]
        const auto a = logits_full.to_vector(), w = logits_cont.to_vector();
        for (std::size_t j = 0; j < a.size(); ++j)
          st.max_logit_diff = std::max(st.max_logit_diff, static_cast<double>(std::abs(a[j] - w[j])));
        for (std::int64_t b = 0; b < N; ++b) {
          const auto T = static_cast<std::int64_t>(g.inputs[static_cast<std::size_t>(b)].size());
          const auto f = from_gist.select(0, b).select(0, T - 1).contiguous().to_vector();
          const auto r = logits_full.select(0, b).contiguous().to_vector();
          for (std::size_t j = 0; j < f.size(); ++j)
            st.max_logit_diff = std::max(st.max_logit_diff, static_cast<double>(std::abs(f[j] - r[j])));
        }
        // FLOPs: without = N prompts of P + T tokens (Gist-mask pairs, lm_head on the last
        // token); with = the prefix once (causal pairs, no logits) + N inputs of T tokens that
        // see the k gist keys and each other causally (lm_head on the last token).
        const mask::Gist gm(static_cast<int>(g.g0), static_cast<int>(g.g1));
        const double k = static_cast<double>(g.g1 - g.g0);
        st.flops_with += flops(static_cast<double>(P), static_cast<double>(P * (P + 1) / 2), 0.0);
        for (const auto& in : g.inputs) {
          const auto T = static_cast<double>(in.size());
          const auto n = static_cast<std::int64_t>(P) + static_cast<std::int64_t>(T);
          st.flops_without += flops(static_cast<double>(n), static_cast<double>(count_allowed(gm, 0, n, n)), 1.0);
          st.flops_with += flops(T, T * k + T * (T + 1) / 2, 1.0);
        }
        kv_gist += static_cast<double>(cache.bytes());
        // Full instruction KV, what one would cache without gisting: every layer's K and V
        // of [bos instruction], measured from a prefill of that prefix.
        nn::KVCache<float> instr_kv(model.num_layers());
        nn::ForwardOptions<float> io;
        io.cache = &instr_kv;
        model.hidden_states(from_vector<std::int64_t>(g.prefix, {1, P}).narrow(1, 0, g.g0), mask::Causal{}, io);
        for (std::int64_t l = 0; l < instr_kv.num_layers(); ++l)
          kv_full += 2.0 * static_cast<double>(instr_kv.layer(l).keys().numel()) * sizeof(float);
      }
    }
    t_without.push_back(without);
    t_with.push_back(with);
  }
  const double n_groups = static_cast<double>(groups.size());
  st.flops_without /= n_groups;
  st.flops_with /= n_groups;
  st.ms_without = 1e3 * median(t_without) / n_groups;
  st.ms_with = 1e3 * median(t_with) / n_groups;
  st.kv_full = kv_full / n_groups;
  st.kv_gist = kv_gist / n_groups;
  return st;
}

// ---- the table -------------------------------------------------------------------------------

struct Row {
  Variant var;
  SplitScore seen, unseen, hard;
  bool has_cache = false;
  CacheStats cache;
  double train_s = 0.0, eval_s = 0.0;
  double cache_agreement = -1.0;  ///< share of seen answers identical when decoded from the gist cache
};

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

std::string bytes_text(double b) {
  if (b >= 1024.0 * 1024.0) return fmt("%.2f MiB", b / (1024.0 * 1024.0));
  if (b >= 1024.0) return fmt("%.1f KiB", b / 1024.0);
  return fmt("%.0f B", b);
}

std::string markdown_table(const std::vector<Row>& rows, const Config& c, std::size_t N) {
  std::ostringstream os;
  os << "| model | seen EM | seen ROUGE-L | unseen EM | unseen ROUGE-L | hard EM | hard ROUGE-L | compression"
        " | prefill MFLOPs w/o cache | with gist cache | prefill ms w/o cache | with gist cache"
        " | KV per instruction: full | gist |\n";
  os << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    os << "| " << r.var.name << " | " << fmt("%.1f", 100 * r.seen.em) << " | " << fmt("%.1f", 100 * r.seen.rouge)
       << " | " << fmt("%.1f", 100 * r.unseen.em) << " | " << fmt("%.1f", 100 * r.unseen.rouge) << " | "
       << fmt("%.1f", 100 * r.hard.em) << " | " << fmt("%.1f", 100 * r.hard.rouge) << " | ";
    if (r.has_cache) {
      const auto& s = r.cache;
      os << fmt("%.1fx", s.compression) << " | " << fmt("%.2f", s.flops_without / 1e6) << " | "
         << fmt("%.2f", s.flops_with / 1e6) << fmt(" (%.0f%%)", 100 * s.flops_with / s.flops_without) << " | "
         << fmt("%.2f", s.ms_without) << " | " << fmt("%.2f", s.ms_with) << fmt(" (%.0f%%)", 100 * s.ms_with / s.ms_without)
         << " | " << bytes_text(s.kv_full) << " | " << bytes_text(s.kv_gist) << " |\n";
    } else {
      os << "- | - | - | - | - | - | - |\n";
    }
  }
  os << "\nEM and ROUGE-L in %, greedy decoding, " << c.eval_n << " examples per split. Prefill columns: answering N = " << N
     << " inputs of one instruction (mean over " << c.measure_instructions
     << " seen instructions); without cache every prompt [bos instruction gist input] is prefilled in full, with the gist"
        " cache the instruction is compressed once and only the inputs are prefilled; time is the median of "
     << c.measure_repeats << " repeats. KV per instruction: float K and V of every layer for [bos instruction] (full) and for"
        " the k gist tokens (gist).\n";
  return os.str();
}

}  // namespace

int main(int argc, char** argv) try {
  const Config cfg = parse_args(argc, argv);
  set_num_threads(cfg.threads);
  const double t_start = seconds_now();

  const data::InstructionBenchmark bench({.seed = cfg.seed, .spelling = false});
  const FamilyPlan plan = cfg.families.empty() ? FamilyPlan{} : plan_families(bench, cfg.families);
  // Training pool: copy-family examples for the first copy_steps of the base, then examples of
  // the chosen families for the rest of the base and for the finetuning.
  auto train_ex = bench.sample_family("copy", Split::Train, static_cast<std::size_t>(cfg.copy_steps * cfg.batch), cfg.seed + 5);
  for (auto& ex : sample_split(bench, plan, Split::Train,
                               static_cast<std::size_t>((cfg.base_steps - cfg.copy_steps + cfg.steps) * cfg.batch), cfg.seed + 1))
    train_ex.push_back(std::move(ex));
  const auto seen_ex = sample_split(bench, plan, Split::Seen, cfg.eval_n, cfg.seed + 2);
  const auto unseen_ex = sample_split(bench, plan, Split::Unseen, cfg.eval_n, cfg.seed + 3);
  const auto hard_ex = sample_split(bench, plan, Split::Hard, cfg.eval_n, cfg.seed + 4);
  const auto measure_ex = measure_examples(bench, cfg);

  // The vocabulary: the words of this run's examples (every split, so no <unk>), not the whole
  // benchmark's (numbers up to 10^4 and more): a smaller output layer trains faster and leaves
  // fewer never-seen rows, which AdamW keeps pushing away from the hidden states.
  std::vector<std::string> corpus;
  const auto add_texts = [&](const std::vector<data::InstructionExample>& examples) {
    for (const auto& ex : examples) {
      const auto p = data::format_example(ex);
      corpus.push_back(p.instruction + " " + p.input + " " + p.output);
    }
  };
  add_texts(train_ex);
  add_texts(seen_ex);
  add_texts(unseen_ex);
  add_texts(hard_ex);
  for (const auto& group : measure_ex) add_texts(group);
  Vocab v{io::WordTokenizer::build(corpus)};
  v.gist = v.tok.add_special_token("<GIST>");
  v.pad = v.tok.pad_id();
  v.bos = v.tok.bos_id();
  v.eos = v.tok.eos_id();

  std::cout << "gist benchmark (" << (cfg.full ? "full" : "quick") << "): ";
  if (plan.seen.empty()) {
    std::cout << "all " << bench.families_in(Split::Train).size() << " seen families";
  } else {
    std::cout << plan.seen.size() << " seen families, " << plan.compositions.size() << " held-out compositions, "
              << plan.hard.size() << " hard families";
  }
  std::cout << ", vocabulary " << v.tok.vocab_size() << " words, " << train_ex.size() << " training examples ("
            << cfg.base_steps << " base (" << cfg.copy_steps << " of them on copy) + " << cfg.steps << " finetuning steps x " << cfg.batch << "), " << cfg.eval_n << " per eval split, " << cfg.threads
            << " threads\n";

  // Mean instruction length in tokens ([bos] + "Instruction: ..."), for the compression ratio.
  double instr_tokens = 0;
  for (const auto& ex : seen_ex)
    instr_tokens += static_cast<double>(v.tok.encode(data::format_example(ex).instruction, {.add_bos = true}).size());
  instr_tokens /= static_cast<double>(seen_ex.size());

  // Base models, trained once on the training examples with full attention (causal in the
  // decoder; loss on the output, as in finetuning). Every variant starts from a copy
  // of its base and is finetuned with its own mask and gist tokens, as the paper finetunes
  // one pretrained model: the slow part of learning from scratch (finding and copying input
  // words) is paid once, and the finetuning teaches the variant's way of reading the
  // instruction.
  const bool any_decoder = std::any_of(all_variants.begin(), all_variants.end(), [&](const Variant& x) {
    return !x.encoder_decoder && (cfg.only.empty() || cfg.only.count(x.name));
  });
  const bool any_seq2seq = std::any_of(all_variants.begin(), all_variants.end(), [&](const Variant& x) {
    return x.encoder_decoder && (cfg.only.empty() || cfg.only.count(x.name));
  });
  // The base sees gist tokens (k cycling through 1, 2, 5) with full attention, as a plain
  // separator: the token is then no stranger to any variant. (Started from an untrained row, the
  // new token alone raised the base's loss on the copy task from 1.8 to 3.3.)
  std::vector<Encoded> base_data;
  base_data.reserve(train_ex.size());
  for (std::size_t i = 0; i < train_ex.size(); ++i)
    base_data.push_back(encode_one(v, train_ex[i], std::array<std::int64_t, 3>{1, 2, 5}[i % 3]));
  // The base keeps a constant rate: the copy mechanism appears suddenly after some hundreds
  // of steps, later (or not at all in a short run) when the rate is already decaying.
  const TrainPlan base_plan{cfg.base_steps, cfg.base_lr, cfg.batch, 0, true};
  const TrainPlan finetune_plan{cfg.steps, cfg.lr, cfg.batch, static_cast<std::size_t>(cfg.base_steps * cfg.batch)};
  Generator gen(cfg.seed * 1000 + 17);
  std::unique_ptr<Decoder> base_decoder;
  std::unique_ptr<Seq2Seq> base_seq2seq;
  double base_decoder_s = 0, base_seq2seq_s = 0;
  if (any_decoder) {
    base_decoder = std::make_unique<Decoder>(decoder_options(cfg, v.tok.vocab_size()), gen);
    if (cfg.base_steps > 0) {
      std::cout << "\n== base decoder (causal attention, gist tokens as plain separators) ==\n";
      const Decoder& m = *base_decoder;
      base_decoder_s = train_model(
          m, base_plan,
          [&](std::size_t first) { return decoder_batch(base_data, first, static_cast<std::size_t>(cfg.batch), v.pad); },
          [&](const DecoderBatch& b) {
            return selected_loss(m, m.hidden_states(b.ids, mask::Causal{}), b.rows_with_loss, b.targets);
          });
    }
  }
  if (any_seq2seq) {
    base_seq2seq = std::make_unique<Seq2Seq>(seq2seq_options(cfg, v.tok.vocab_size()), gen);
    if (cfg.base_steps > 0) {
      std::cout << "\n== base encoder-decoder (unmasked, gist tokens as plain separators) ==\n";
      const Seq2Seq& m = *base_seq2seq;
      base_seq2seq_s = train_model(
          m, base_plan, [&](std::size_t first) { return seq2seq_batch(base_data, first, static_cast<std::size_t>(cfg.batch), v); },
          [&](const Seq2SeqBatch& b) {
            const mask::KeyPadding padding(b.lengths.data(), static_cast<int>(b.lengths.size()));
            const Tensor<float> states = m.encode(b.source, padding);
            return selected_loss(m, m.decode_hidden(b.target_in, states, mask::Causal{}, padding), b.rows_with_loss,
                                 b.targets);
          });
    }
  }

  std::vector<Row> rows;
  std::size_t measured_n = cfg.measure_inputs;
  for (const auto& var : all_variants) {
    if (!cfg.only.empty() && !cfg.only.count(var.name)) continue;
    std::cout << "\n== " << var.name << " (" << (var.encoder_decoder ? "encoder-decoder" : "decoder") << ", k = " << var.k
              << ") ==\n";
    const auto train_data = encode_all(v, train_ex, var.k);
    const auto seen = encode_all(v, seen_ex, var.k), unseen = encode_all(v, unseen_ex, var.k),
               hard = encode_all(v, hard_ex, var.k);
    Row row;
    row.var = var;
    std::string sample, families_seen, families_unseen;
    if (!var.encoder_decoder) {
      Decoder model(decoder_options(cfg, v.tok.vocab_size()), gen);
      copy_parameters(*base_decoder, model);
      row.train_s = train_model(
          model, finetune_plan,
          [&](std::size_t first) { return decoder_batch(train_data, first, static_cast<std::size_t>(cfg.batch), v.pad); },
          [&](const DecoderBatch& b) {
            const Tensor<float> h = with_train_mask(var.mask, b.spans, static_cast<int>(b.spans.size() / 2),
                                                    [&](const auto& policy) { return model.hidden_states(b.ids, policy); });
            return selected_loss(model, h, b.rows_with_loss, b.targets);
          });
      const double t0 = seconds_now();
      const auto decode = [&](const std::vector<const Encoded*>& r, std::int64_t max_new) {
        return decode_decoder(model, var.mask, r, max_new, v);
      };
      std::vector<std::vector<std::int64_t>> seen_answers;
      row.seen = evaluate(seen, v, decode, &sample, &seen_answers, cfg.per_family ? &families_seen : nullptr);
      row.unseen = evaluate(unseen, v, decode, nullptr, nullptr, cfg.per_family ? &families_unseen : nullptr);
      row.hard = evaluate(hard, v, decode, nullptr);
      row.eval_s = seconds_now() - t0;
      if (var.mask == MaskKind::Gist) {
        row.cache_agreement = cache_agreement(model, seen, seen_answers, v);
        const auto groups = measure_groups(measure_ex, v, var.k);
        measured_n = groups.front().inputs.size();
        row.cache = measure_cache(model, var, groups, instr_tokens, v, cfg);
        row.has_cache = true;
        // The two prefill paths compute the same logits up to float rounding (about 1e-5 at
        // the quick size); anything near 1e-3 is a caching bug, and the demo fails on it.
        CONDENSE_CHECK(row.cache.max_logit_diff < 1e-3, "gist_benchmark", var.name,
                       ": the gist cache's logits differ from the full forward's by ", row.cache.max_logit_diff);
      }
    } else {
      Seq2Seq model(seq2seq_options(cfg, v.tok.vocab_size()), gen);
      copy_parameters(*base_seq2seq, model);
      row.train_s = train_model(
          model, finetune_plan,
          [&](std::size_t first) { return seq2seq_batch(train_data, first, static_cast<std::size_t>(cfg.batch), v); },
          [&](const Seq2SeqBatch& b) {
            const int B = static_cast<int>(b.lengths.size());
            const Tensor<float> h = with_seq2seq_masks(var.mask, b.spans, b.lengths, B, [&](const auto& enc, const auto& cross) {
              const Tensor<float> states = model.encode(b.source, enc);
              return model.decode_hidden(b.target_in, states, mask::Causal{}, cross);
            });
            return selected_loss(model, h, b.rows_with_loss, b.targets);
          });
      const double t0 = seconds_now();
      const auto decode = [&](const std::vector<const Encoded*>& r, std::int64_t max_new) {
        return decode_seq2seq(model, var.mask, r, max_new, v);
      };
      row.seen = evaluate(seen, v, decode, &sample, nullptr, cfg.per_family ? &families_seen : nullptr);
      row.unseen = evaluate(unseen, v, decode, nullptr, nullptr, cfg.per_family ? &families_unseen : nullptr);
      row.hard = evaluate(hard, v, decode, nullptr);
      row.eval_s = seconds_now() - t0;
    }
    std::cout << var.name << ": finetuned in " << fmt("%.1f", row.train_s) << " s, evaluated in " << fmt("%.1f", row.eval_s)
              << " s | EM seen " << fmt("%.1f", 100 * row.seen.em) << " unseen " << fmt("%.1f", 100 * row.unseen.em)
              << " hard " << fmt("%.1f", 100 * row.hard.em) << " | first seen answer " << sample << "\n";
    if (cfg.per_family)
      std::cout << var.name << ": seen EM by family:" << families_seen << "\n"
                << var.name << ": unseen EM by family:" << families_unseen << "\n";
    if (row.has_cache)
      std::cout << var.name << ": gist cache vs full forward: largest last-token logit difference "
                << fmt("%.2e", row.cache.max_logit_diff) << ", seen answers decoded from the cache identical "
                << fmt("%.1f%%", 100 * row.cache_agreement) << "\n";
    rows.push_back(row);
  }
  if (any_decoder) std::cout << "\nbase decoder pretraining: " << fmt("%.1f", base_decoder_s) << " s\n";
  if (any_seq2seq) std::cout << "base encoder-decoder pretraining: " << fmt("%.1f", base_seq2seq_s) << " s\n";

  const std::string table = markdown_table(rows, cfg, measured_n);
  std::cout << "\n" << table;
  std::filesystem::create_directories(cfg.out_dir);
  const std::string path = (std::filesystem::path(cfg.out_dir) / "gist_benchmark.md").string();
  std::ofstream out(path);
  out << "# Gist benchmark (" << (cfg.full ? "full" : "quick") << ")\n\n" << table;
  std::cout << "\nwritten to " << path << "; total " << fmt("%.0f", seconds_now() - t_start) << " s\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
