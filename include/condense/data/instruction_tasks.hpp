// The primitive operations of the instruction benchmark and their reference implementations:
// Op (one primitive: reverse, sort, filter, map through a dictionary, ...), TaskParams (the
// parameters an instruction carries: k, a letter, a threshold, a separator, ...), the text
// format of inputs and outputs, template slots and their filling, and reference_output(),
// which computes an example's output from its input text and parameters. The generator
// (data/instructions.hpp) only draws inputs and parameters; every output comes from here.
//
// Text format: a list is its items separated by single spaces ("kite river salt"); two lists
// are separated by " | " ("kite river | salt moon"); an empty result is written "none".
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "condense/core/error.hpp"
#include "condense/data/instruction_vocab.hpp"

namespace condense::data {

/// A primitive operation. Families chain one to three of them (the output of one step is the
/// input of the next).
enum class Op : std::uint8_t {
  Copy,            ///< the list unchanged
  Reverse,         ///< the items in reverse order
  ReverseLetters,  ///< every word spelled backwards, word order kept
  SortAlpha,       ///< alphabetical (byte) order
  Dedupe,          ///< first occurrence of each item, in order
  CountItems,      ///< number of items
  CountLetter,     ///< occurrences of `letter` over all items
  Kth,             ///< the k-th item (1-based)
  First,           ///< the first item
  Last,            ///< the last item
  ColourToFruit,   ///< each colour -> the fruit of that colour (vocab::colour_fruit)
  AnimalToSound,   ///< each animal -> its sound (vocab::animal_sound)
  Opposite,        ///< each word -> its opposite (vocab::opposites, both directions)
  DigitsToWords,   ///< each digit -> its name ("3" -> "three")
  WordsToDigits,   ///< each digit name -> the digit ("three" -> "3")
  Upper,           ///< every letter upper case
  Lower,           ///< every letter lower case
  WordLengths,     ///< each word -> its number of letters
  FirstLetters,    ///< each word -> its first letter
  Join,            ///< one item: the items joined with `sep`
  Rotate,          ///< left rotation by `count` (the first `count` items move to the end)
  SwapEnds,        ///< first and last items exchanged
  Interleave,      ///< two lists alternated, first list first, leftovers appended
  Common,          ///< items of the first list also in the second, first-list order, once each
  FilterStart,     ///< items whose first letter is `letter`
  FilterLonger,    ///< items with more than `n` letters
  Longest,         ///< the longest item (the first one on ties)
  Shortest,        ///< the shortest item (the first one on ties)
  RemoveKth,       ///< the list without its k-th item
  AppendWord,      ///< the list followed by `word`
  Contains,        ///< "yes" when `word` is an item, else "no"
  EveryOther,      ///< the items at positions 1, 3, 5, ...
  SortNum,         ///< numbers ascending
  SortNumDesc,     ///< numbers descending
  Max,             ///< the largest number
  Min,             ///< the smallest number
  Sum,             ///< the sum of the numbers
  FilterEven,      ///< the even numbers
  FilterOdd,       ///< the odd numbers
  FilterGreater,   ///< the numbers greater than `n`
  AddEach,         ///< every number plus `digit`
  AddPair,         ///< two numbers -> their sum
  SubtractPair,    ///< two numbers -> the first minus the second
  MultiplyDigit,   ///< one number -> the number times `digit`
};

/// Number of Op values.
inline constexpr std::size_t num_ops = static_cast<std::size_t>(Op::MultiplyDigit) + 1;

/// The parameter an op reads from TaskParams, and the template slot that shows it.
enum class ParamKind : std::uint8_t {
  None,
  K,       ///< TaskParams::k, slot {k}: an ordinal word ("third")
  Count,   ///< TaskParams::count, slot {count}: "one place", "two places", ...
  Letter,  ///< TaskParams::letter, slot {letter}: the letter itself ("b")
  N,       ///< TaskParams::n, slot {n}: the number in digits
  Digit,   ///< TaskParams::digit, slot {digit}: the digit
  Sep,     ///< TaskParams::sep, slot {sep}: the separator's name ("a plus sign")
  Word,    ///< TaskParams::word, slot {word}: the word itself
};

/// Static facts about an op.
struct OpInfo {
  std::string_view name;  ///< snake_case name
  ParamKind param;        ///< the parameter it reads (None for most)
  /// Its output respells words (reversed letters, case changes, single letters): learnable with
  /// a byte-level tokenizer, not with a word-level one.
  bool spelling;
};

namespace detail {

inline constexpr std::array<OpInfo, num_ops> op_table = {{
    {"copy", ParamKind::None, false},
    {"reverse", ParamKind::None, false},
    {"reverse_letters", ParamKind::None, true},
    {"sort_alpha", ParamKind::None, false},
    {"dedupe", ParamKind::None, false},
    {"count_items", ParamKind::None, false},
    {"count_letter", ParamKind::Letter, false},
    {"kth", ParamKind::K, false},
    {"first", ParamKind::None, false},
    {"last", ParamKind::None, false},
    {"colour_to_fruit", ParamKind::None, false},
    {"animal_to_sound", ParamKind::None, false},
    {"opposite", ParamKind::None, false},
    {"digits_to_words", ParamKind::None, false},
    {"words_to_digits", ParamKind::None, false},
    {"upper", ParamKind::None, true},
    {"lower", ParamKind::None, true},
    {"word_lengths", ParamKind::None, false},
    {"first_letters", ParamKind::None, true},
    {"join", ParamKind::Sep, false},
    {"rotate", ParamKind::Count, false},
    {"swap_ends", ParamKind::None, false},
    {"interleave", ParamKind::None, false},
    {"common", ParamKind::None, false},
    {"filter_start", ParamKind::Letter, false},
    {"filter_longer", ParamKind::N, false},
    {"longest", ParamKind::None, false},
    {"shortest", ParamKind::None, false},
    {"remove_kth", ParamKind::K, false},
    {"append_word", ParamKind::Word, false},
    {"contains", ParamKind::Word, false},
    {"every_other", ParamKind::None, false},
    {"sort_num", ParamKind::None, false},
    {"sort_num_desc", ParamKind::None, false},
    {"max", ParamKind::None, false},
    {"min", ParamKind::None, false},
    {"sum", ParamKind::None, false},
    {"filter_even", ParamKind::None, false},
    {"filter_odd", ParamKind::None, false},
    {"filter_greater", ParamKind::N, false},
    {"add_each", ParamKind::Digit, false},
    {"add_pair", ParamKind::None, false},
    {"subtract_pair", ParamKind::None, false},
    {"multiply_digit", ParamKind::Digit, false},
}};

inline constexpr const char* task_op = "instructions";

}  // namespace detail

/// Static facts about `op`.
inline const OpInfo& op_info(Op op) { return detail::op_table[static_cast<std::size_t>(op)]; }

/// The parameters an instruction carries. Only the fields named by the family's ops are used;
/// the others stay at their defaults (0 / empty), so two examples with equal instructions and
/// inputs have equal params.
struct TaskParams {
  int k = 0;         ///< 1-based position (Kth, RemoveKth), 1..9
  int count = 0;     ///< rotation amount (Rotate), 1..9
  char letter = 0;   ///< a lowercase letter (CountLetter, FilterStart)
  int n = 0;         ///< threshold (FilterLonger: letters, FilterGreater: value), >= 0
  int digit = 0;     ///< 0..9 (AddEach, MultiplyDigit)
  std::string sep;   ///< separator text, one of vocab::separators (Join)
  std::string word;  ///< a word (AppendWord, Contains)

  bool operator==(const TaskParams&) const = default;
};

/// An input or intermediate value: one list of items, or two lists (`pair`).
struct TaskValue {
  std::vector<std::string> items;   ///< the (first) list
  std::vector<std::string> second;  ///< the second list when `pair`
  bool pair = false;                ///< two lists ("a b | c d")

  bool operator==(const TaskValue&) const = default;
};

namespace detail {

/// Items of `text` separated by runs of spaces.
inline std::vector<std::string> split_items(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ') ++j;
    if (j > i) out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

/// `items` joined with `sep`.
inline std::string join_items(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

/// Integer value of a decimal item (optional leading '-'); throws for anything else.
inline long long parse_number(std::string_view s, Op op) {
  const bool negative = !s.empty() && s[0] == '-';
  const std::string_view digits = negative ? s.substr(1) : s;
  CONDENSE_CHECK(!digits.empty() && digits.size() <= 15 &&
                     std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }),
                 task_op, op_info(op).name, ": '", s, "' is not a number");
  long long v = 0;
  for (const char c : digits) v = v * 10 + (c - '0');
  return negative ? -v : v;
}

/// The numbers of a list.
inline std::vector<long long> parse_numbers(const std::vector<std::string>& items, Op op) {
  std::vector<long long> out;
  out.reserve(items.size());
  for (const auto& s : items) out.push_back(parse_number(s, op));
  return out;
}

/// Numbers as decimal items.
inline std::vector<std::string> number_items(const std::vector<long long>& values) {
  std::vector<std::string> out;
  out.reserve(values.size());
  for (const long long v : values) out.push_back(std::to_string(v));
  return out;
}

/// A list of one item, or an empty list.
inline std::vector<std::string> single(std::string s) { return {std::move(s)}; }

/// Maps every item through `dict` (first -> second, and also second -> first when `both_ways`).
template <std::size_t N>
std::vector<std::string> map_items(const std::vector<std::string>& items,
                                   const std::array<std::pair<std::string_view, std::string_view>, N>& dict,
                                   bool both_ways, Op op) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    std::optional<std::string_view> to = vocab::lookup(dict, item);
    if (!to && both_ways) {
      for (const auto& [a, b] : dict)
        if (b == item) to = a;
    }
    CONDENSE_CHECK(to.has_value(), task_op, op_info(op).name, ": '", item, "' is not in the dictionary");
    out.emplace_back(*to);
  }
  return out;
}

inline std::string ascii_transform(std::string s, bool upper) {
  for (char& c : s)
    c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace detail

/// Parses input text: items separated by spaces, two lists separated by " | ".
inline TaskValue parse_input(std::string_view text) {
  TaskValue v;
  const std::size_t bar = text.find(" | ");
  if (bar == std::string_view::npos) {
    v.items = detail::split_items(text);
  } else {
    v.pair = true;
    v.items = detail::split_items(text.substr(0, bar));
    v.second = detail::split_items(text.substr(bar + 3));
  }
  return v;
}

/// The text of an input value (inverse of parse_input).
inline std::string format_input(const TaskValue& v) {
  std::string out = detail::join_items(v.items, " ");
  if (v.pair) out += " | " + detail::join_items(v.second, " ");
  return out;
}

/// The text of a result: its items separated by spaces, or "none" when it is empty.
inline std::string format_output(const TaskValue& v) {
  CONDENSE_CHECK(!v.pair, detail::task_op, "a result must be a single list");
  return v.items.empty() ? std::string("none") : detail::join_items(v.items, " ");
}

/// Applies one op (the reference semantics listed at Op) to `v` with parameters `p`.
/// Throws condense::Error when `v` does not fit the op (a pair where a list is needed or the
/// reverse, a non-number for a numeric op, a word outside a dictionary, a bad parameter).
inline TaskValue apply_op(Op op, const TaskValue& v, const TaskParams& p) {
  using detail::task_op;
  const std::string_view name = op_info(op).name;
  const bool wants_pair = op == Op::Interleave || op == Op::Common;
  CONDENSE_CHECK(v.pair == wants_pair, task_op, name,
                 wants_pair ? ": needs two lists separated by '|'" : ": needs a single list, got two");
  const auto& a = v.items;
  TaskValue r;
  auto& out = r.items;
  switch (op) {
    case Op::Copy:
      out = a;
      break;
    case Op::Reverse:
      out.assign(a.rbegin(), a.rend());
      break;
    case Op::ReverseLetters:
      for (const auto& w : a) out.emplace_back(w.rbegin(), w.rend());
      break;
    case Op::SortAlpha:
      out = a;
      std::sort(out.begin(), out.end());
      break;
    case Op::Dedupe:
      for (const auto& w : a)
        if (std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
      break;
    case Op::CountItems:
      out = detail::single(std::to_string(a.size()));
      break;
    case Op::CountLetter: {
      CONDENSE_CHECK(p.letter >= 'a' && p.letter <= 'z', task_op, name, ": letter must be a-z, got code ",
                     static_cast<int>(p.letter));
      long long c = 0;
      for (const auto& w : a)
        for (const char ch : w) c += std::tolower(static_cast<unsigned char>(ch)) == p.letter;
      out = detail::single(std::to_string(c));
      break;
    }
    case Op::Kth:
      CONDENSE_CHECK(p.k >= 1, task_op, name, ": k must be >= 1, got ", p.k);
      if (static_cast<std::size_t>(p.k) <= a.size()) out = detail::single(a[static_cast<std::size_t>(p.k - 1)]);
      break;
    case Op::First:
      if (!a.empty()) out = detail::single(a.front());
      break;
    case Op::Last:
      if (!a.empty()) out = detail::single(a.back());
      break;
    case Op::ColourToFruit:
      out = detail::map_items(a, vocab::colour_fruit, false, op);
      break;
    case Op::AnimalToSound:
      out = detail::map_items(a, vocab::animal_sound, false, op);
      break;
    case Op::Opposite:
      out = detail::map_items(a, vocab::opposites, true, op);
      break;
    case Op::DigitsToWords:
      for (const auto& w : a) {
        CONDENSE_CHECK(w.size() == 1 && w[0] >= '0' && w[0] <= '9', task_op, name, ": '", w, "' is not a digit");
        out.emplace_back(vocab::digit_words[static_cast<std::size_t>(w[0] - '0')]);
      }
      break;
    case Op::WordsToDigits:
      for (const auto& w : a) {
        const auto it = std::find(vocab::digit_words.begin(), vocab::digit_words.end(), w);
        CONDENSE_CHECK(it != vocab::digit_words.end(), task_op, name, ": '", w, "' is not the name of a digit");
        out.push_back(std::to_string(it - vocab::digit_words.begin()));
      }
      break;
    case Op::Upper:
    case Op::Lower:
      for (const auto& w : a) out.push_back(detail::ascii_transform(w, op == Op::Upper));
      break;
    case Op::WordLengths:
      for (const auto& w : a) out.push_back(std::to_string(w.size()));
      break;
    case Op::FirstLetters:
      for (const auto& w : a) out.push_back(w.substr(0, 1));
      break;
    case Op::Join:
      CONDENSE_CHECK(vocab::find_separator(p.sep).has_value(), task_op, name, ": unknown separator '", p.sep, "'");
      if (!a.empty()) out = detail::single(detail::join_items(a, p.sep));
      break;
    case Op::Rotate: {
      CONDENSE_CHECK(p.count >= 1, task_op, name, ": count must be >= 1, got ", p.count);
      out = a;
      if (!out.empty())
        std::rotate(out.begin(),
                    out.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(p.count) % out.size()),
                    out.end());
      break;
    }
    case Op::SwapEnds:
      out = a;
      if (!out.empty()) std::swap(out.front(), out.back());
      break;
    case Op::Interleave:
      for (std::size_t i = 0; i < std::max(a.size(), v.second.size()); ++i) {
        if (i < a.size()) out.push_back(a[i]);
        if (i < v.second.size()) out.push_back(v.second[i]);
      }
      break;
    case Op::Common:
      for (const auto& w : a)
        if (std::find(v.second.begin(), v.second.end(), w) != v.second.end() &&
            std::find(out.begin(), out.end(), w) == out.end())
          out.push_back(w);
      break;
    case Op::FilterStart:
      CONDENSE_CHECK(p.letter >= 'a' && p.letter <= 'z', task_op, name, ": letter must be a-z, got code ",
                     static_cast<int>(p.letter));
      for (const auto& w : a)
        if (!w.empty() && std::tolower(static_cast<unsigned char>(w[0])) == p.letter) out.push_back(w);
      break;
    case Op::FilterLonger:
      for (const auto& w : a)
        if (static_cast<long long>(w.size()) > p.n) out.push_back(w);
      break;
    case Op::Longest:
    case Op::Shortest: {
      const std::string* best = nullptr;
      for (const auto& w : a)
        if (!best || (op == Op::Longest ? w.size() > best->size() : w.size() < best->size())) best = &w;
      if (best) out = detail::single(*best);
      break;
    }
    case Op::RemoveKth:
      CONDENSE_CHECK(p.k >= 1, task_op, name, ": k must be >= 1, got ", p.k);
      for (std::size_t i = 0; i < a.size(); ++i)
        if (i + 1 != static_cast<std::size_t>(p.k)) out.push_back(a[i]);
      break;
    case Op::AppendWord:
      CONDENSE_CHECK(!p.word.empty(), task_op, name, ": the word is empty");
      out = a;
      out.push_back(p.word);
      break;
    case Op::Contains:
      CONDENSE_CHECK(!p.word.empty(), task_op, name, ": the word is empty");
      out = detail::single(std::find(a.begin(), a.end(), p.word) != a.end() ? "yes" : "no");
      break;
    case Op::EveryOther:
      for (std::size_t i = 0; i < a.size(); i += 2) out.push_back(a[i]);
      break;
    case Op::SortNum:
    case Op::SortNumDesc: {
      auto x = detail::parse_numbers(a, op);
      std::sort(x.begin(), x.end());
      if (op == Op::SortNumDesc) std::reverse(x.begin(), x.end());
      out = detail::number_items(x);
      break;
    }
    case Op::Max:
    case Op::Min: {
      const auto x = detail::parse_numbers(a, op);
      if (!x.empty())
        out = detail::single(std::to_string(op == Op::Max ? *std::max_element(x.begin(), x.end())
                                                          : *std::min_element(x.begin(), x.end())));
      break;
    }
    case Op::Sum: {
      long long s = 0;
      for (const long long x : detail::parse_numbers(a, op)) s += x;
      out = detail::single(std::to_string(s));
      break;
    }
    case Op::FilterEven:
    case Op::FilterOdd:
    case Op::FilterGreater: {
      const auto x = detail::parse_numbers(a, op);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const bool keep = op == Op::FilterEven ? x[i] % 2 == 0 : op == Op::FilterOdd ? x[i] % 2 != 0 : x[i] > p.n;
        if (keep) out.push_back(std::to_string(x[i]));
      }
      break;
    }
    case Op::AddEach: {
      auto x = detail::parse_numbers(a, op);
      for (auto& e : x) e += p.digit;
      out = detail::number_items(x);
      break;
    }
    case Op::AddPair:
    case Op::SubtractPair: {
      CONDENSE_CHECK(a.size() == 2, task_op, name, ": needs exactly two numbers, got ", a.size(), " items");
      const auto x = detail::parse_numbers(a, op);
      out = detail::single(std::to_string(op == Op::AddPair ? x[0] + x[1] : x[0] - x[1]));
      break;
    }
    case Op::MultiplyDigit: {
      CONDENSE_CHECK(a.size() == 1, task_op, name, ": needs exactly one number, got ", a.size(), " items");
      out = detail::single(std::to_string(detail::parse_number(a[0], op) * p.digit));
      break;
    }
  }
  return r;
}

/// Applies `steps` in order to the parsed `input`.
inline TaskValue run_steps(std::span<const Op> steps, const TaskParams& p, const TaskValue& input) {
  TaskValue v = input;
  for (const Op op : steps) v = apply_op(op, v, p);
  return v;
}

/// The reference output of the task `steps` with parameters `p` on the input text `input`:
/// parses the text, applies the ops, formats the result ("none" when empty).
inline std::string reference_output(std::span<const Op> steps, const TaskParams& p, std::string_view input) {
  return format_output(run_steps(steps, p, parse_input(input)));
}

// ---- template slots ------------------------------------------------------------------------

/// The slot name of a parameter kind ("k", "count", ...; "" for None).
inline std::string_view slot_name(ParamKind kind) {
  switch (kind) {
    case ParamKind::None:
      return "";
    case ParamKind::K:
      return "k";
    case ParamKind::Count:
      return "count";
    case ParamKind::Letter:
      return "letter";
    case ParamKind::N:
      return "n";
    case ParamKind::Digit:
      return "digit";
    case ParamKind::Sep:
      return "sep";
    case ParamKind::Word:
      return "word";
  }
  return "";
}

/// The parameter kind of a slot name; throws for an unknown name.
inline ParamKind slot_kind(std::string_view slot) {
  for (const ParamKind kind : {ParamKind::K, ParamKind::Count, ParamKind::Letter, ParamKind::N, ParamKind::Digit,
                               ParamKind::Sep, ParamKind::Word})
    if (slot_name(kind) == slot) return kind;
  fail(detail::task_op, "unknown template slot {", slot, "}");
}

/// The names of the {slots} in a template, in order of appearance (with repeats). Throws for
/// an unclosed brace.
inline std::vector<std::string> template_slots(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while ((i = text.find('{', i)) != std::string_view::npos) {
    const std::size_t j = text.find('}', i);
    CONDENSE_CHECK(j != std::string_view::npos, detail::task_op, "unclosed '{' in template \"", text, "\"");
    out.emplace_back(text.substr(i + 1, j - i - 1));
    i = j + 1;
  }
  return out;
}

/// How a parameter is written in an instruction: {k} "third", {count} "two places",
/// {letter} "b", {n} "4", {digit} "7", {sep} "a plus sign", {word} the word. Throws when
/// the parameter is unset or out of range.
inline std::string render_param(ParamKind kind, const TaskParams& p) {
  using detail::task_op;
  switch (kind) {
    case ParamKind::K:
      CONDENSE_CHECK(p.k >= 1 && p.k <= 9, task_op, "{k} must be in 1..9, got ", p.k);
      return std::string(vocab::ordinals[static_cast<std::size_t>(p.k)]);
    case ParamKind::Count:
      CONDENSE_CHECK(p.count >= 1 && p.count <= 9, task_op, "{count} must be in 1..9, got ", p.count);
      return std::string(vocab::digit_words[static_cast<std::size_t>(p.count)]) + (p.count == 1 ? " place" : " places");
    case ParamKind::Letter:
      CONDENSE_CHECK(p.letter >= 'a' && p.letter <= 'z', task_op, "{letter} must be a-z, got code ",
                     static_cast<int>(p.letter));
      return std::string(1, p.letter);
    case ParamKind::N:
      CONDENSE_CHECK(p.n >= 0, task_op, "{n} must be >= 0, got ", p.n);
      return std::to_string(p.n);
    case ParamKind::Digit:
      CONDENSE_CHECK(p.digit >= 0 && p.digit <= 9, task_op, "{digit} must be in 0..9, got ", p.digit);
      return std::to_string(p.digit);
    case ParamKind::Sep: {
      const auto s = vocab::find_separator(p.sep);
      CONDENSE_CHECK(s.has_value(), task_op, "{sep}: unknown separator '", p.sep, "'");
      return std::string(s->name);
    }
    case ParamKind::Word:
      CONDENSE_CHECK(!p.word.empty(), task_op, "{word} is empty");
      return p.word;
    case ParamKind::None:
      break;
  }
  fail(task_op, "no slot for parameter kind None");
}

/// `text` with every {slot} replaced by render_param of its kind.
inline std::string fill_template(std::string_view text, const TaskParams& p) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t open = text.find('{', i);
    if (open == std::string_view::npos) {
      out += text.substr(i);
      break;
    }
    const std::size_t close = text.find('}', open);
    CONDENSE_CHECK(close != std::string_view::npos, detail::task_op, "unclosed '{' in template \"", text, "\"");
    out += text.substr(i, open - i);
    out += render_param(slot_kind(text.substr(open + 1, close - open - 1)), p);
    i = close + 1;
  }
  return out;
}

}  // namespace condense::data
