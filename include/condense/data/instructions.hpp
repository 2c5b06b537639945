// An instruction-following benchmark that ships with the library, in the style of the gisting
// paper (Mu, Li & Goodman 2023): short synthetic tasks (reverse, sort, filter, count, map
// through a small dictionary, short arithmetic, and compositions of these) described by
// paraphrased natural-language instructions, generated deterministically from a seed with no
// downloads. Splits: train, seen (same instructions as train, held-apart (instruction, input)
// pairs), unseen (held-out paraphrases of seen families and held-out compositions of seen ops),
// hard (three-op compositions with long multi-sentence instructions). Also the model-text
// format "Instruction: ...<gist tokens>\nInput: ...\nOutput: ..." in separate pieces, and its
// encoding with a tokenizer into ids, the gist span and the output (loss) span.
//
// The families and templates are in data/instruction_families.hpp, the reference semantics of
// every op in data/instruction_tasks.hpp; docs/instruction_benchmark.md describes the whole.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "condense/core/error.hpp"
#include "condense/core/random.hpp"
#include "condense/data/instruction_families.hpp"
#include "condense/data/instruction_tasks.hpp"
#include "condense/data/instruction_vocab.hpp"
#include "condense/io/tokenizer.hpp"

namespace condense::data {

/// A split of the benchmark.
enum class Split : std::uint8_t {
  Train,   ///< seen families, non-held-out templates, pairs outside the eval partition
  Seen,    ///< the same families and templates, pairs inside the eval partition
  Unseen,  ///< held-out templates of seen families, and held-out compositions
  Hard,    ///< three-op compositions with multi-sentence instructions
};

/// The four splits in order.
inline constexpr std::array<Split, 4> all_splits = {Split::Train, Split::Seen, Split::Unseen, Split::Hard};

/// "train", "seen", "unseen" or "hard".
inline std::string_view split_name(Split split) {
  switch (split) {
    case Split::Train:
      return "train";
    case Split::Seen:
      return "seen";
    case Split::Unseen:
      return "unseen";
    case Split::Hard:
      return "hard";
  }
  return "";
}

/// The split named `name` (as split_name writes it); throws for any other name.
inline Split parse_split(std::string_view name) {
  for (const Split s : all_splits)
    if (split_name(s) == name) return s;
  fail("instructions", "unknown split '", name, "' (expected train, seen, unseen or hard)");
}

/// Whether template `t` of family `f` is used by `split`.
inline bool template_in_split(const TaskFamily& f, const InstructionTemplate& t, Split split) {
  switch (f.role) {
    case FamilyRole::Seen:
      return split == Split::Unseen ? t.held_out : (split == Split::Train || split == Split::Seen) && !t.held_out;
    case FamilyRole::HeldOut:
      return split == Split::Unseen;
    case FamilyRole::Hard:
      return split == Split::Hard;
  }
  return false;
}

/// The ids (indices into f.templates) of the templates of `f` used by `split` (empty when the
/// family is not part of the split).
inline std::vector<std::size_t> template_ids(const TaskFamily& f, Split split) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < f.templates.size(); ++i)
    if (template_in_split(f, f.templates[i], split)) out.push_back(i);
  return out;
}

/// One example.
struct InstructionExample {
  std::string instruction;      ///< the filled template: the task and its parameters in words
  std::string input;            ///< e.g. "kite river salt", "kite river | salt moon", "47 35"
  std::string output;           ///< the reference output for input and params ("none" if empty)
  std::string family;           ///< TaskFamily::name
  std::size_t template_id = 0;  ///< index into the family's templates
  Split split = Split::Train;   ///< the split it was drawn for
  TaskParams params;            ///< the parameters the instruction names (unused fields at default)

  bool operator==(const InstructionExample&) const = default;
};

/// Options of InstructionBenchmark.
struct InstructionBenchmarkOptions {
  /// Salt of the hash that assigns each (instruction, input) pair of the seen families to the
  /// train or to the seen-evaluation partition. Benchmarks with different seeds partition
  /// differently; sampling seeds are separate (sample()'s argument).
  std::uint64_t seed = 0;
  /// Share of (instruction, input) pairs that belong to the seen-evaluation partition, in (0, 1).
  double eval_fraction = 0.2;
  /// Include the families whose outputs respell words (reversed letters, case changes, single
  /// letters; OpInfo::spelling). Turn off for word-level tokenizers.
  bool spelling = true;
  /// Smallest and largest number of items in a generated list (3 <= min <= max <= 9).
  int min_items = 3;
  int max_items = 6;
  /// Largest number in number lists (9..999).
  int max_number = 99;
  /// In the unseen split, the probability of drawing a held-out composition rather than a
  /// held-out template of a seen family, in [0, 1].
  double unseen_composition_share = 0.5;
};

namespace detail {

/// splitmix64 finaliser.
inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// FNV-1a over the bytes of `s`, continuing from `h`.
inline std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// Uniform integer in [lo, hi].
inline int uniform_int(Generator& g, int lo, int hi) {
  return lo + static_cast<int>(g.below(static_cast<std::uint64_t>(hi - lo + 1)));
}

/// `k` distinct indices of [0, n) in random order.
inline std::vector<std::size_t> distinct_indices(Generator& g, std::size_t n, std::size_t k) {
  std::vector<std::size_t> idx(n);
  for (std::size_t i = 0; i < n; ++i) idx[i] = i;
  for (std::size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + g.below(n - i)]);
  idx.resize(k);
  return idx;
}

/// `k` distinct general words.
inline std::vector<std::string> distinct_words(Generator& g, std::size_t k) {
  std::vector<std::string> out;
  for (const std::size_t i : distinct_indices(g, vocab::words.size(), k)) out.emplace_back(vocab::words[i]);
  return out;
}

/// `k` draws (with replacement) of the keys (or both sides when `both`) of a dictionary.
template <std::size_t N>
std::vector<std::string> dict_draws(Generator& g, const std::array<std::pair<std::string_view, std::string_view>, N>& d,
                                    int k, bool both) {
  std::vector<std::string> out;
  for (int i = 0; i < k; ++i) {
    const std::size_t j = g.below(both ? 2 * N : N);
    out.emplace_back(j < N ? d[j].first : d[j - N].second);
  }
  return out;
}

/// A general word that is not in `items`.
inline std::string word_not_in(Generator& g, const std::vector<std::string>& items) {
  while (true) {
    std::string w(vocab::words[g.below(vocab::words.size())]);
    if (std::find(items.begin(), items.end(), w) == items.end()) return w;
  }
}

inline constexpr std::uint64_t split_salt[4] = {0x7261696eULL, 0x7365656eULL, 0x756e7365656eULL, 0x68617264ULL};

}  // namespace detail

/// The benchmark: the families (filtered by the options), split membership, and seeded
/// sampling of examples. Immutable after construction; sample() is const and thread-safe.
class InstructionBenchmark {
 public:
  /// Builds the benchmark; throws condense::Error for options out of range.
  explicit InstructionBenchmark(InstructionBenchmarkOptions options = {}) : options_(options) {
    const char* op = "InstructionBenchmark";
    CONDENSE_CHECK(options_.eval_fraction > 0.0 && options_.eval_fraction < 1.0, op,
                   "eval_fraction must be in (0, 1), got ", options_.eval_fraction);
    CONDENSE_CHECK(options_.min_items >= 3 && options_.min_items <= options_.max_items && options_.max_items <= 9, op,
                   "need 3 <= min_items <= max_items <= 9, got ", options_.min_items, " and ", options_.max_items);
    CONDENSE_CHECK(options_.max_number >= 9 && options_.max_number <= 999, op, "max_number must be in 9..999, got ",
                   options_.max_number);
    CONDENSE_CHECK(options_.unseen_composition_share >= 0.0 && options_.unseen_composition_share <= 1.0, op,
                   "unseen_composition_share must be in [0, 1], got ", options_.unseen_composition_share);
    for (const auto& f : builtin_families())
      if (options_.spelling || !f.spelling()) families_.push_back(f);
  }

  /// The options it was built with.
  const InstructionBenchmarkOptions& options() const { return options_; }

  /// The families of this benchmark (all built-in ones, less the spelling families when
  /// options.spelling is off).
  const std::vector<TaskFamily>& families() const { return families_; }

  /// The family named `name`; throws when there is none.
  const TaskFamily& family(std::string_view name) const {
    for (const auto& f : families_)
      if (f.name == name) return f;
    fail("InstructionBenchmark", "no family named '", name, "'");
  }

  /// Indices into families() of the families that appear in `split`.
  std::vector<std::size_t> families_in(Split split) const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < families_.size(); ++i)
      if (!template_ids(families_[i], split).empty()) out.push_back(i);
    return out;
  }

  /// Whether the pair (instruction, input) lies in the seen-evaluation partition (else in the
  /// train partition): a salted 64-bit hash of the two texts compared with eval_fraction.
  bool in_eval_partition(std::string_view instruction, std::string_view input) const {
    std::uint64_t h = detail::fnv1a(0xcbf29ce484222325ULL ^ detail::mix64(options_.seed), instruction);
    h = detail::fnv1a(h, std::string_view("\x1f", 1));
    h = detail::mix64(detail::fnv1a(h, input));
    return static_cast<double>(h >> 11) * 0x1.0p-53 < options_.eval_fraction;
  }

  /// `n` examples of `split`, a deterministic function of (options, split, n, seed). Each draw
  /// picks a family uniformly among the split's families (in the unseen split: a held-out
  /// composition with probability unseen_composition_share, else a seen family with a held-out
  /// template), then a template uniformly among the family's templates in the split, then an
  /// input and parameters; in train and seen, inputs are redrawn until the (instruction, input)
  /// pair falls in the split's partition. Examples may repeat within one call.
  std::vector<InstructionExample> sample(Split split, std::size_t n, std::uint64_t seed) const {
    const auto all = families_in(split);
    CONDENSE_CHECK(!all.empty(), "InstructionBenchmark", "split ", split_name(split), " has no families");
    std::vector<std::size_t> compositions, others;
    for (const std::size_t i : all) (families_[i].role == FamilyRole::HeldOut ? compositions : others).push_back(i);
    Generator gen(detail::mix64(seed ^ detail::split_salt[static_cast<int>(split)]));
    std::vector<InstructionExample> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t fi;
      if (split == Split::Unseen && !compositions.empty() && !others.empty()) {
        const bool comp = gen.uniform01() < options_.unseen_composition_share;
        const auto& pool = comp ? compositions : others;
        fi = pool[gen.below(pool.size())];
      } else {
        fi = all[gen.below(all.size())];
      }
      out.push_back(draw(families_[fi], split, gen));
    }
    return out;
  }

  /// `n` examples of one family in `split` (templates drawn uniformly among the family's
  /// templates in the split); deterministic like sample(). Throws when the family is not in
  /// the split.
  std::vector<InstructionExample> sample_family(std::string_view name, Split split, std::size_t n,
                                                std::uint64_t seed) const {
    const TaskFamily& f = family(name);
    CONDENSE_CHECK(!template_ids(f, split).empty(), "InstructionBenchmark", "family ", name, " (", role_name(f.role),
                   ") is not in the ", split_name(split), " split");
    Generator gen(detail::mix64(detail::fnv1a(seed ^ detail::split_salt[static_cast<int>(split)], name)));
    std::vector<InstructionExample> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(draw(f, split, gen));
    return out;
  }

  /// The reference output of `example` recomputed from its family, params and input text.
  std::string solve(const InstructionExample& example) const {
    return reference_output(family(example.family).steps, example.params, example.input);
  }

  /// Texts that cover every token the benchmark can produce (template words, slot fillers, list
  /// words in every spelling the tasks use, numbers up to the largest possible output,
  /// separators, answers and the format prefixes): build a WordTokenizer from them to get a
  /// vocabulary without <unk> on any split.
  std::vector<std::string> vocabulary_corpus() const {
    std::vector<std::string> out = {"Instruction:", "Input:", "Output:", "|", "yes", "no", "none"};
    for (const auto& f : families_) {
      for (const auto& t : f.templates) {
        std::string text = t.text;
        for (const auto& s : template_slots(t.text)) text = detail::replace_all(std::move(text), "{" + s + "}", " ");
        out.push_back(std::move(text));
      }
    }
    for (int k = 1; k <= 9; ++k) {
      TaskParams p;
      p.k = p.count = k;
      out.push_back(render_param(ParamKind::K, p) + " " + render_param(ParamKind::Count, p));
    }
    for (const auto& s : vocab::separators) out.push_back(std::string(s.name) + " " + std::string(s.text));
    for (char c = 'a'; c <= 'z'; ++c) out.emplace_back(1, c);
    for (const auto w : vocab::words) {
      std::string word(w), upper = detail::ascii_transform(word, true), cap = word;
      cap[0] = upper[0];
      out.push_back(word + " " + upper + " " + cap + " " + std::string(word.rbegin(), word.rend()));
    }
    const auto add_dict = [&](const auto& d) {
      for (const auto& [a, b] : d) out.push_back(std::string(a) + " " + std::string(b));
    };
    add_dict(vocab::colour_fruit);
    add_dict(vocab::animal_sound);
    add_dict(vocab::opposites);
    for (const auto w : vocab::digit_words) out.emplace_back(w);
    const long long largest = std::max<long long>(
        {999LL * 9, 999LL + 999, static_cast<long long>(options_.max_items) * (options_.max_number + 9)});
    for (long long v = 0; v <= largest; ++v) out.push_back(std::to_string(v));
    return out;
  }

 private:
  /// Draws the input of `kind`.
  TaskValue draw_input(InputKind kind, Generator& g) const {
    TaskValue v;
    const int n = detail::uniform_int(g, options_.min_items, options_.max_items);
    auto& a = v.items;
    switch (kind) {
      case InputKind::Words:
        a = detail::distinct_words(g, static_cast<std::size_t>(n));
        break;
      case InputKind::WordsWithRepeats: {
        const int repeats = detail::uniform_int(g, 1, 2);
        a = detail::distinct_words(g, static_cast<std::size_t>(std::max(2, n - repeats)));
        for (int r = 0; r < repeats; ++r) {
          const std::string w = a[g.below(a.size())];
          a.insert(a.begin() + static_cast<std::ptrdiff_t>(g.below(a.size() + 1)), w);
        }
        break;
      }
      case InputKind::MixedCase: {
        a = detail::distinct_words(g, static_cast<std::size_t>(n));
        bool changed = false;
        for (auto& w : a) {
          const auto style = g.below(3);
          if (style == 1) w = detail::ascii_transform(w, true);
          if (style == 2) w[0] = static_cast<char>(w[0] - 'a' + 'A');
          changed = changed || style != 0;
        }
        if (!changed) {
          auto& w = a[g.below(a.size())];
          w = detail::ascii_transform(w, true);
        }
        break;
      }
      case InputKind::Colours:
        a = detail::dict_draws(g, vocab::colour_fruit, n, false);
        break;
      case InputKind::Animals:
        a = detail::dict_draws(g, vocab::animal_sound, n, false);
        break;
      case InputKind::Opposites:
        a = detail::dict_draws(g, vocab::opposites, n, true);
        break;
      case InputKind::Digits:
        for (int i = 0; i < n; ++i) a.push_back(std::to_string(g.below(10)));
        break;
      case InputKind::DigitWords:
        for (int i = 0; i < n; ++i) a.emplace_back(vocab::digit_words[g.below(10)]);
        break;
      case InputKind::Numbers:
        for (int i = 0; i < n; ++i) a.push_back(std::to_string(detail::uniform_int(g, 0, options_.max_number)));
        break;
      case InputKind::WordPair: {
        const int n1 = detail::uniform_int(g, 2, 4);
        const int n2 = std::clamp(n1 + detail::uniform_int(g, -1, 1), 2, 4);
        auto w = detail::distinct_words(g, static_cast<std::size_t>(n1 + n2));
        v.pair = true;
        a.assign(w.begin(), w.begin() + n1);
        v.second.assign(w.begin() + n1, w.end());
        break;
      }
      case InputKind::WordPairOverlap: {
        const int n1 = detail::uniform_int(g, 3, 4), n2 = detail::uniform_int(g, 3, 4),
                  shared = detail::uniform_int(g, 1, 2);
        auto w = detail::distinct_words(g, static_cast<std::size_t>(n1 + n2 - shared));
        v.pair = true;
        a.assign(w.begin(), w.begin() + n1);  // shared words are w[0..shared)
        v.second.assign(w.begin(), w.begin() + shared);
        v.second.insert(v.second.end(), w.begin() + n1, w.end());
        for (std::size_t i = v.second.size(); i > 1; --i) std::swap(v.second[i - 1], v.second[g.below(i)]);
        for (std::size_t i = a.size(); i > 1; --i) std::swap(a[i - 1], a[g.below(i)]);
        break;
      }
      case InputKind::NumberPair:
      case InputKind::OrderedNumberPair: {
        int x = detail::uniform_int(g, 0, 999), y = detail::uniform_int(g, 0, 999);
        if (kind == InputKind::OrderedNumberPair && x < y) std::swap(x, y);
        a = {std::to_string(x), std::to_string(y)};
        break;
      }
      case InputKind::SingleNumber:
        a = {std::to_string(detail::uniform_int(g, 10, 999))};
        break;
    }
    return v;
  }

  /// Draws the parameter `op` reads, fitted to the value `cur` it will be applied to so that
  /// the result is not trivially empty; false when `cur` does not allow one.
  static bool draw_param(Op op, const TaskValue& cur, Generator& g, TaskParams& p) {
    const auto& a = cur.items;
    const std::size_t len = a.size();
    switch (op) {
      case Op::Kth:
        p.k = static_cast<int>(1 + g.below(std::min<std::size_t>(len, 9)));
        return true;
      case Op::RemoveKth:
        if (len < 2) return false;
        p.k = static_cast<int>(1 + g.below(std::min<std::size_t>(len, 9)));
        return true;
      case Op::Rotate:
        if (len < 2) return false;
        p.count = static_cast<int>(1 + g.below(std::min<std::size_t>(len - 1, 3)));
        return true;
      case Op::CountLetter: {
        const std::string& w = a[g.below(len)];
        p.letter = static_cast<char>(std::tolower(static_cast<unsigned char>(w[g.below(w.size())])));
        return p.letter >= 'a' && p.letter <= 'z';
      }
      case Op::FilterStart:
        p.letter = static_cast<char>(std::tolower(static_cast<unsigned char>(a[g.below(len)][0])));
        return p.letter >= 'a' && p.letter <= 'z';
      case Op::FilterLonger: {
        const int wl = static_cast<int>(a[g.below(len)].size());
        p.n = std::max(2, wl - 1 - static_cast<int>(g.below(2)));
        return p.n < wl;
      }
      case Op::FilterGreater: {
        long long mx = 0;
        for (const auto& s : a) mx = std::max(mx, detail::parse_number(s, op));
        if (mx <= 0) return false;
        p.n = static_cast<int>(g.below(static_cast<std::uint64_t>(mx)));
        return true;
      }
      case Op::AddEach:
        p.digit = static_cast<int>(1 + g.below(9));
        return true;
      case Op::MultiplyDigit:
        p.digit = static_cast<int>(2 + g.below(8));
        return true;
      case Op::Join:
        p.sep = std::string(vocab::separators[g.below(vocab::separators.size())].text);
        return true;
      case Op::AppendWord:
        p.word = detail::word_not_in(g, a);
        return true;
      case Op::Contains:
        p.word = g.below(2) == 0 ? a[g.below(len)] : detail::word_not_in(g, a);
        return true;
      default:
        return len >= (op == Op::SwapEnds ? 2u : 1u);
    }
  }

  /// One example of family `f` in `split`.
  InstructionExample draw(const TaskFamily& f, Split split, Generator& gen) const {
    const auto ids = template_ids(f, split);
    const std::size_t tid = ids[gen.below(ids.size())];
    for (int attempt = 0; attempt < 100000; ++attempt) {
      const TaskValue input = draw_input(f.input, gen);
      TaskParams params;
      TaskValue cur = input;
      bool ok = true;
      for (const Op op : f.steps) {
        if (cur.items.empty() || !draw_param(op, cur, gen, params)) {
          ok = false;
          break;
        }
        cur = apply_op(op, cur, params);
      }
      if (!ok || cur.items.empty()) continue;
      InstructionExample ex;
      ex.instruction = fill_template(f.templates[tid].text, params);
      ex.input = format_input(input);
      if ((split == Split::Train || split == Split::Seen) &&
          in_eval_partition(ex.instruction, ex.input) != (split == Split::Seen))
        continue;
      ex.output = reference_output(f.steps, params, ex.input);
      ex.family = f.name;
      ex.template_id = tid;
      ex.split = split;
      ex.params = std::move(params);
      return ex;
    }
    fail("InstructionBenchmark", "could not draw an example of family ", f.name, " for the ", split_name(split),
         " split");
  }

  InstructionBenchmarkOptions options_;
  std::vector<TaskFamily> families_;
};

// ---- model text ----------------------------------------------------------------------------

/// The fixed strings of the model-text format.
struct PromptFormat {
  std::string instruction_prefix = "Instruction: ";  ///< before the instruction text
  std::string input_prefix = "\nInput: ";            ///< after the gist tokens, before the input
  std::string output_prefix = "\nOutput:";           ///< after the input
  std::string output_lead = " ";                     ///< starts the output piece
};

/// An example as model text, in three pieces; the gist tokens go between `instruction` and
/// `input`, and the loss covers `output` only:
///   instruction = "Instruction: Reverse the order of the words."
///   input       = "\nInput: kite river salt\nOutput:"
///   output      = " salt river kite"
struct GistPrompt {
  std::string instruction;  ///< format prefix + instruction text
  std::string input;        ///< input prefix + input text + output prefix
  std::string output;       ///< output lead + output text

  /// The whole text with `num_gist` copies of `gist_token` after the instruction.
  std::string text(std::size_t num_gist = 1, std::string_view gist_token = "<GIST>") const {
    std::string out = instruction;
    for (std::size_t i = 0; i < num_gist; ++i) out += gist_token;
    return out + input + output;
  }
};

/// The model-text pieces of `example`.
inline GistPrompt format_example(const InstructionExample& example, const PromptFormat& format = {}) {
  return {format.instruction_prefix + example.instruction, format.input_prefix + example.input + format.output_prefix,
          format.output_lead + example.output};
}

/// A tokenized example: ids = [bos] instruction, num_gist x gist_id, input, output [eos].
struct EncodedExample {
  std::vector<std::int64_t> ids;  ///< the token ids
  std::size_t gist_begin = 0;     ///< first gist position
  std::size_t gist_end = 0;       ///< one past the last gist position (== input start)
  std::size_t output_begin = 0;   ///< first output position; ids[output_begin..] are the answer (+ eos)

  /// Next-token targets aligned with `ids`: targets[t] = ids[t + 1] where position t + 1 is in
  /// the output, `ignore_index` elsewhere (the prompt, the gist tokens and the last position).
  std::vector<std::int64_t> targets(std::int64_t ignore_index = -100) const {
    std::vector<std::int64_t> t(ids.size(), ignore_index);
    for (std::size_t i = output_begin; i < ids.size(); ++i)
      if (i >= 1) t[i - 1] = ids[i];
    return t;
  }
};

/// Encodes `prompt` with `tokenizer`, inserting `num_gist` copies of `gist_id` after the
/// instruction. The pieces are encoded separately, so no token straddles a boundary. Throws
/// when gist_id is outside the tokenizer's ids.
inline EncodedExample encode_example(const io::Tokenizer& tokenizer, const GistPrompt& prompt, std::size_t num_gist,
                                     std::int64_t gist_id, bool add_bos = true, bool add_eos = true) {
  CONDENSE_CHECK(gist_id >= 0 && gist_id < tokenizer.vocab_size(), "encode_example", "gist id ", gist_id,
                 " is outside the vocabulary of size ", tokenizer.vocab_size());
  EncodedExample e;
  e.ids = tokenizer.encode(prompt.instruction, {.add_bos = add_bos});
  e.gist_begin = e.ids.size();
  e.ids.insert(e.ids.end(), num_gist, gist_id);
  e.gist_end = e.ids.size();
  const auto input = tokenizer.encode(prompt.input);
  e.ids.insert(e.ids.end(), input.begin(), input.end());
  e.output_begin = e.ids.size();
  const auto output = tokenizer.encode(prompt.output, {.add_eos = add_eos});
  e.ids.insert(e.ids.end(), output.begin(), output.end());
  return e;
}

}  // namespace condense::data
