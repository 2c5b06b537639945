// The instruction benchmark (data/instructions.hpp): family and template counts, hand-written
// cases for every family, an independent re-implementation of every family checked against the
// generated outputs, determinism from seeds, split disjointness (templates, families and
// (instruction, input) pairs), instruction lengths per split, parameters visible in the
// instruction text, input properties, option checks and errors, the model-text format and its
// encoding with byte and word tokenizers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "condense/data/instructions.hpp"
#include "condense/io/tokenizer.hpp"
#include "test_util.hpp"

namespace test_instructions {

using namespace condense;
using namespace condense::data;

namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::size_t word_count(const std::string& text) { return words_of(text).size(); }

// ---- an independent re-implementation of every family, keyed by family name -------------------

struct Lists {
  std::vector<std::string> a, b;
};

Lists parse_lists(const std::string& input) {
  const auto bar = input.find('|');
  if (bar == std::string::npos) return {words_of(input), {}};
  return {words_of(input.substr(0, bar)), words_of(input.substr(bar + 1))};
}

std::vector<long long> nums(const std::vector<std::string>& a) {
  std::vector<long long> out;
  for (const auto& s : a) out.push_back(std::stoll(s));
  return out;
}

std::vector<std::string> strs(const std::vector<long long>& x) {
  std::vector<std::string> out;
  for (auto v : x) out.push_back(std::to_string(v));
  return out;
}

const std::map<std::string, std::string> test_colour = {{"red", "cherry"},   {"yellow", "lemon"},  {"green", "lime"},
                                                        {"purple", "grape"}, {"orange", "mango"},  {"brown", "kiwi"},
                                                        {"pink", "peach"},   {"blue", "blueberry"}};
const std::map<std::string, std::string> test_sound = {
    {"dog", "woof"},  {"cat", "meow"}, {"cow", "moo"},    {"duck", "quack"},  {"sheep", "baa"}, {"owl", "hoot"},
    {"lion", "roar"}, {"bee", "buzz"}, {"snake", "hiss"}, {"horse", "neigh"}, {"pig", "oink"},  {"crow", "caw"}};
const std::map<std::string, std::string> test_opposite = {
    {"hot", "cold"},   {"cold", "hot"},   {"big", "small"},  {"small", "big"},  {"up", "down"},    {"down", "up"},
    {"left", "right"}, {"right", "left"}, {"fast", "slow"},  {"slow", "fast"},  {"happy", "sad"},  {"sad", "happy"},
    {"open", "shut"},  {"shut", "open"},  {"full", "empty"}, {"empty", "full"}, {"early", "late"}, {"late", "early"},
    {"high", "low"},   {"low", "high"},   {"wet", "dry"},    {"dry", "wet"},    {"hard", "soft"},  {"soft", "hard"}};
const std::vector<std::string> test_digit_names = {"zero", "one", "two",   "three", "four",
                                                   "five", "six", "seven", "eight", "nine"};

// One step of the re-implementation (names are this test's own, not the library's Op names).
Lists step(const std::string& s, Lists v, const TaskParams& p) {
  auto& a = v.a;
  std::vector<std::string> r;
  if (s == "copy") {
    r = a;
  } else if (s == "rev") {
    for (std::size_t i = a.size(); i-- > 0;) r.push_back(a[i]);
  } else if (s == "revletters") {
    for (auto w : a) {
      std::string x;
      for (std::size_t i = w.size(); i-- > 0;) x += w[i];
      r.push_back(x);
    }
  } else if (s == "sort") {
    std::multiset<std::string> m(a.begin(), a.end());
    r.assign(m.begin(), m.end());
  } else if (s == "dedupe") {
    std::set<std::string> seen;
    for (const auto& w : a)
      if (seen.insert(w).second) r.push_back(w);
  } else if (s == "count") {
    r = {std::to_string(a.size())};
  } else if (s == "countletter") {
    std::size_t c = 0;
    for (const auto& w : a) c += static_cast<std::size_t>(std::count(w.begin(), w.end(), p.letter));
    r = {std::to_string(c)};
  } else if (s == "kth") {
    if (p.k >= 1 && p.k <= static_cast<int>(a.size())) r = {a[p.k - 1]};
  } else if (s == "first") {
    if (!a.empty()) r = {a[0]};
  } else if (s == "last") {
    if (!a.empty()) r = {a[a.size() - 1]};
  } else if (s == "fruit" || s == "sound" || s == "opposite") {
    const auto& m = s == "fruit" ? test_colour : s == "sound" ? test_sound : test_opposite;
    for (const auto& w : a) r.push_back(m.at(w));
  } else if (s == "digitnames") {
    for (const auto& w : a) r.push_back(test_digit_names.at(std::stoul(w)));
  } else if (s == "namedigits") {
    for (const auto& w : a)
      r.push_back(
          std::to_string(std::find(test_digit_names.begin(), test_digit_names.end(), w) - test_digit_names.begin()));
  } else if (s == "upper" || s == "lower") {
    for (auto w : a) {
      for (auto& c : w) c = static_cast<char>(s == "upper" ? std::toupper(c) : std::tolower(c));
      r.push_back(w);
    }
  } else if (s == "lengths") {
    for (const auto& w : a) r.push_back(std::to_string(w.length()));
  } else if (s == "initials") {
    for (const auto& w : a) r.push_back(std::string(1, w.front()));
  } else if (s == "join") {
    std::string j;
    for (std::size_t i = 0; i < a.size(); ++i) j += (i ? p.sep : std::string()) + a[i];
    if (!a.empty()) r = {j};
  } else if (s == "rotate") {
    for (std::size_t i = 0; i < a.size(); ++i) r.push_back(a[(i + static_cast<std::size_t>(p.count)) % a.size()]);
  } else if (s == "swapends") {
    r = a;
    if (r.size() >= 2) {
      const auto t = r[0];
      r[0] = r[r.size() - 1];
      r[r.size() - 1] = t;
    }
  } else if (s == "interleave") {
    std::size_t i = 0, j = 0;
    while (i < a.size() || j < v.b.size()) {
      if (i < a.size()) r.push_back(a[i++]);
      if (j < v.b.size()) r.push_back(v.b[j++]);
    }
  } else if (s == "common") {
    const std::set<std::string> other(v.b.begin(), v.b.end());
    std::set<std::string> used;
    for (const auto& w : a)
      if (other.count(w) && used.insert(w).second) r.push_back(w);
  } else if (s == "startswith") {
    for (const auto& w : a)
      if (w.rfind(std::string(1, p.letter), 0) == 0) r.push_back(w);
  } else if (s == "longerthan") {
    for (const auto& w : a)
      if (w.length() > static_cast<std::size_t>(p.n)) r.push_back(w);
  } else if (s == "longest" || s == "shortest") {
    if (!a.empty()) {
      std::size_t best = 0;
      for (std::size_t i = 1; i < a.size(); ++i)
        if (s == "longest" ? a[i].length() > a[best].length() : a[i].length() < a[best].length()) best = i;
      r = {a[best]};
    }
  } else if (s == "removekth") {
    r = a;
    if (p.k >= 1 && p.k <= static_cast<int>(r.size())) r.erase(r.begin() + (p.k - 1));
  } else if (s == "append") {
    r = a;
    r.push_back(p.word);
  } else if (s == "contains") {
    r = {std::count(a.begin(), a.end(), p.word) > 0 ? "yes" : "no"};
  } else if (s == "odds") {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (i % 2 == 0) r.push_back(a[i]);
  } else if (s == "nsort" || s == "nsortdesc") {
    auto x = nums(a);
    std::stable_sort(x.begin(), x.end(), [&](long long l, long long rr) { return s == "nsort" ? l < rr : l > rr; });
    r = strs(x);
  } else if (s == "max" || s == "min") {
    auto x = nums(a);
    if (!x.empty()) {
      long long m = x[0];
      for (auto e : x) m = s == "max" ? std::max(m, e) : std::min(m, e);
      r = {std::to_string(m)};
    }
  } else if (s == "sum") {
    long long t = 0;
    for (auto e : nums(a)) t += e;
    r = {std::to_string(t)};
  } else if (s == "even" || s == "odd") {
    for (auto e : nums(a))
      if ((e % 2 == 0) == (s == "even")) r.push_back(std::to_string(e));
  } else if (s == "greater") {
    for (auto e : nums(a))
      if (e > p.n) r.push_back(std::to_string(e));
  } else if (s == "addeach") {
    for (auto e : nums(a)) r.push_back(std::to_string(e + p.digit));
  } else if (s == "plus") {
    r = {std::to_string(std::stoll(a.at(0)) + std::stoll(a.at(1)))};
  } else if (s == "minus") {
    r = {std::to_string(std::stoll(a.at(0)) - std::stoll(a.at(1)))};
  } else if (s == "times") {
    r = {std::to_string(std::stoll(a.at(0)) * p.digit)};
  } else {
    FAIL("unknown test step " << s);
  }
  return {r, {}};
}

// The steps of every family, written independently of the library's family table.
const std::map<std::string, std::vector<std::string>> test_family_steps = {
    {"copy", {"copy"}},
    {"reverse_words", {"rev"}},
    {"reverse_letters", {"revletters"}},
    {"sort_alpha", {"sort"}},
    {"dedupe", {"dedupe"}},
    {"count_items", {"count"}},
    {"count_letter", {"countletter"}},
    {"kth_item", {"kth"}},
    {"first_item", {"first"}},
    {"last_item", {"last"}},
    {"colour_to_fruit", {"fruit"}},
    {"animal_to_sound", {"sound"}},
    {"opposite", {"opposite"}},
    {"digits_to_words", {"digitnames"}},
    {"words_to_digits", {"namedigits"}},
    {"uppercase", {"upper"}},
    {"lowercase", {"lower"}},
    {"word_lengths", {"lengths"}},
    {"first_letters", {"initials"}},
    {"join", {"join"}},
    {"rotate", {"rotate"}},
    {"swap_ends", {"swapends"}},
    {"interleave", {"interleave"}},
    {"common_items", {"common"}},
    {"filter_start", {"startswith"}},
    {"filter_longer", {"longerthan"}},
    {"longest_word", {"longest"}},
    {"shortest_word", {"shortest"}},
    {"remove_kth", {"removekth"}},
    {"append_word", {"append"}},
    {"contains_word", {"contains"}},
    {"every_other", {"odds"}},
    {"sort_numbers", {"nsort"}},
    {"sort_numbers_desc", {"nsortdesc"}},
    {"max_number", {"max"}},
    {"min_number", {"min"}},
    {"sum_numbers", {"sum"}},
    {"filter_even", {"even"}},
    {"filter_odd", {"odd"}},
    {"filter_greater", {"greater"}},
    {"add_to_each", {"addeach"}},
    {"add_numbers", {"plus"}},
    {"subtract_numbers", {"minus"}},
    {"multiply_by_digit", {"times"}},
    {"reverse_then_uppercase", {"rev", "upper"}},
    {"sort_then_first", {"sort", "first"}},
    {"sort_then_reverse", {"sort", "rev"}},
    {"dedupe_then_count", {"dedupe", "count"}},
    {"even_then_sum", {"even", "sum"}},
    {"filter_start_then_count", {"startswith", "count"}},
    {"sort_numbers_then_kth", {"nsort", "kth"}},
    {"fruit_then_reverse", {"fruit", "rev"}},
    {"filter_longer_then_uppercase", {"longerthan", "upper"}},
    {"dedupe_then_sort", {"dedupe", "sort"}},
    {"reverse_then_join", {"rev", "join"}},
    {"greater_then_count", {"greater", "count"}},
    {"sort_then_join", {"sort", "join"}},
    {"dedupe_then_reverse", {"dedupe", "rev"}},
    {"even_then_max", {"even", "max"}},
    {"reverse_then_kth", {"rev", "kth"}},
    {"fruit_then_sort", {"fruit", "sort"}},
    {"filter_start_then_uppercase", {"startswith", "upper"}},
    {"sort_desc_then_kth", {"nsortdesc", "kth"}},
    {"longer_then_count", {"longerthan", "count"}},
    {"hard_dedupe_sort_join", {"dedupe", "sort", "join"}},
    {"hard_start_reverse_upper", {"startswith", "rev", "upper"}},
    {"hard_even_desc_kth", {"even", "nsortdesc", "kth"}},
    {"hard_fruit_dedupe_count", {"fruit", "dedupe", "count"}},
    {"hard_longer_sort_first", {"longerthan", "sort", "first"}},
    {"hard_rotate_reverse_join", {"rotate", "rev", "join"}},
    {"hard_greater_sort_join", {"greater", "nsort", "join"}},
    {"hard_add_even_count", {"addeach", "even", "count"}},
    {"hard_sound_reverse_join", {"sound", "rev", "join"}},
};

std::string independent_output(const std::string& family, const TaskParams& p, const std::string& input) {
  Lists v = parse_lists(input);
  for (const auto& s : test_family_steps.at(family)) v = step(s, v, p);
  if (v.a.empty()) return "none";
  std::string out;
  for (std::size_t i = 0; i < v.a.size(); ++i) out += (i ? " " : "") + v.a[i];
  return out;
}

// ---- hand-written cases ---------------------------------------------------------------------

struct Case {
  std::string family;
  TaskParams params;
  std::string input;
  std::string expected;
};

const std::vector<Case> hand_cases = {
    {"copy", {}, "kite river salt", "kite river salt"},
    {"copy", {}, "moon", "moon"},
    {"reverse_words", {}, "kite river salt", "salt river kite"},
    {"reverse_words", {}, "a b", "b a"},
    {"reverse_letters", {}, "kite river", "etik revir"},
    {"reverse_letters", {}, "moon sun", "noom nus"},
    {"sort_alpha", {}, "pear apple fig", "apple fig pear"},
    {"sort_alpha", {}, "bell ball bat", "ball bat bell"},
    {"dedupe", {}, "a b a c b", "a b c"},
    {"dedupe", {}, "moon moon", "moon"},
    {"count_items", {}, "a b c", "3"},
    {"count_items", {}, "kite river salt moon sun", "5"},
    {"count_letter", {.letter = 'e'}, "tree bell", "3"},
    {"count_letter", {.letter = 'z'}, "kite", "0"},
    {"kth_item", {.k = 2}, "a b c", "b"},
    {"kth_item", {.k = 4}, "a b c", "none"},
    {"first_item", {}, "kite river", "kite"},
    {"first_item", {}, "salt", "salt"},
    {"last_item", {}, "kite river", "river"},
    {"last_item", {}, "salt", "salt"},
    {"colour_to_fruit", {}, "red green blue", "cherry lime blueberry"},
    {"colour_to_fruit", {}, "yellow yellow purple", "lemon lemon grape"},
    {"animal_to_sound", {}, "dog cat cow", "woof meow moo"},
    {"animal_to_sound", {}, "crow", "caw"},
    {"opposite", {}, "hot up wet", "cold down dry"},
    {"opposite", {}, "cold small", "hot big"},
    {"digits_to_words", {}, "3 0 9", "three zero nine"},
    {"digits_to_words", {}, "7", "seven"},
    {"words_to_digits", {}, "three zero nine", "3 0 9"},
    {"words_to_digits", {}, "eight eight", "8 8"},
    {"uppercase", {}, "kite river", "KITE RIVER"},
    {"uppercase", {}, "Moon", "MOON"},
    {"lowercase", {}, "KITE River salt", "kite river salt"},
    {"lowercase", {}, "MoOn", "moon"},
    {"word_lengths", {}, "kite river fog", "4 5 3"},
    {"word_lengths", {}, "mountain", "8"},
    {"first_letters", {}, "kite river fog", "k r f"},
    {"first_letters", {}, "ab", "a"},
    {"join", {.sep = " + "}, "a b c", "a + b + c"},
    {"join", {.sep = ", "}, "kite river", "kite, river"},
    {"join", {.sep = " and "}, "x", "x"},
    {"rotate", {.count = 1}, "a b c d", "b c d a"},
    {"rotate", {.count = 3}, "a b c d", "d a b c"},
    {"swap_ends", {}, "a b c d", "d b c a"},
    {"swap_ends", {}, "a b", "b a"},
    {"interleave", {}, "a b c | x y", "a x b y c"},
    {"interleave", {}, "a | x y z", "a x y z"},
    {"common_items", {}, "a b c d | d x b", "b d"},
    {"common_items", {}, "a b | c d", "none"},
    {"filter_start", {.letter = 'b'}, "bell kite bat", "bell bat"},
    {"filter_start", {.letter = 'q'}, "kite", "none"},
    {"filter_longer", {.n = 4}, "kite river fog mountain", "river mountain"},
    {"filter_longer", {.n = 8}, "mountain", "none"},
    {"longest_word", {}, "kite river fog castle", "castle"},
    {"longest_word", {}, "kite moon fog", "kite"},
    {"shortest_word", {}, "kite river fog sky", "fog"},
    {"shortest_word", {}, "castle river", "river"},
    {"remove_kth", {.k = 2}, "a b c", "a c"},
    {"remove_kth", {.k = 1}, "a b", "b"},
    {"append_word", {.word = "moon"}, "a b", "a b moon"},
    {"append_word", {.word = "moon"}, "kite", "kite moon"},
    {"contains_word", {.word = "moon"}, "kite moon", "yes"},
    {"contains_word", {.word = "moon"}, "kite sun", "no"},
    {"every_other", {}, "a b c d e", "a c e"},
    {"every_other", {}, "a b", "a"},
    {"sort_numbers", {}, "10 9 100 5", "5 9 10 100"},
    {"sort_numbers", {}, "3 3 1", "1 3 3"},
    {"sort_numbers_desc", {}, "10 9 100 5", "100 10 9 5"},
    {"sort_numbers_desc", {}, "0 7", "7 0"},
    {"max_number", {}, "10 9 100 5", "100"},
    {"max_number", {}, "7", "7"},
    {"min_number", {}, "10 9 100 5", "5"},
    {"min_number", {}, "0 3", "0"},
    {"sum_numbers", {}, "10 9 100 5", "124"},
    {"sum_numbers", {}, "0", "0"},
    {"filter_even", {}, "1 2 3 4 10", "2 4 10"},
    {"filter_even", {}, "1 3", "none"},
    {"filter_even", {}, "0 5", "0"},
    {"filter_odd", {}, "1 2 3 4 10", "1 3"},
    {"filter_odd", {}, "2 4", "none"},
    {"filter_greater", {.n = 9}, "10 9 100 5", "10 100"},
    {"filter_greater", {.n = 0}, "0 1", "1"},
    {"add_to_each", {.digit = 3}, "10 9 97", "13 12 100"},
    {"add_to_each", {.digit = 9}, "0", "9"},
    {"add_numbers", {}, "47 35", "82"},
    {"add_numbers", {}, "999 999", "1998"},
    {"add_numbers", {}, "0 0", "0"},
    {"subtract_numbers", {}, "47 35", "12"},
    {"subtract_numbers", {}, "35 47", "-12"},
    {"subtract_numbers", {}, "500 500", "0"},
    {"multiply_by_digit", {.digit = 6}, "347", "2082"},
    {"multiply_by_digit", {.digit = 9}, "999", "8991"},
    {"reverse_then_uppercase", {}, "kite river salt", "SALT RIVER KITE"},
    {"reverse_then_uppercase", {}, "a", "A"},
    {"sort_then_first", {}, "pear apple fig", "apple"},
    {"sort_then_first", {}, "moon", "moon"},
    {"sort_then_reverse", {}, "pear apple fig", "pear fig apple"},
    {"sort_then_reverse", {}, "b a", "b a"},
    {"dedupe_then_count", {}, "a b a c b", "3"},
    {"dedupe_then_count", {}, "x x x", "1"},
    {"even_then_sum", {}, "1 2 3 4 10", "16"},
    {"even_then_sum", {}, "1 3", "0"},
    {"filter_start_then_count", {.letter = 'b'}, "bell kite bat", "2"},
    {"filter_start_then_count", {.letter = 'z'}, "bell", "0"},
    {"sort_numbers_then_kth", {.k = 2}, "10 9 100 5", "9"},
    {"sort_numbers_then_kth", {.k = 5}, "10 9 100 5", "none"},
    {"fruit_then_reverse", {}, "red green blue", "blueberry lime cherry"},
    {"fruit_then_reverse", {}, "pink", "peach"},
    {"filter_longer_then_uppercase", {.n = 4}, "kite river fog mountain", "RIVER MOUNTAIN"},
    {"filter_longer_then_uppercase", {.n = 6}, "kite", "none"},
    {"dedupe_then_sort", {}, "pear apple pear fig", "apple fig pear"},
    {"dedupe_then_sort", {}, "b b a", "a b"},
    {"reverse_then_join", {.sep = " / "}, "a b c", "c / b / a"},
    {"reverse_then_join", {.sep = "; "}, "a b", "b; a"},
    {"greater_then_count", {.n = 9}, "10 9 100 5", "2"},
    {"greater_then_count", {.n = 100}, "10 9 100 5", "0"},
    {"sort_then_join", {.sep = "; "}, "pear apple fig", "apple; fig; pear"},
    {"sort_then_join", {.sep = " - "}, "b a", "a - b"},
    {"dedupe_then_reverse", {}, "a b a c b", "c b a"},
    {"dedupe_then_reverse", {}, "x x", "x"},
    {"even_then_max", {}, "1 2 3 4 10", "10"},
    {"even_then_max", {}, "1 3", "none"},
    {"reverse_then_kth", {.k = 2}, "a b c d", "c"},
    {"reverse_then_kth", {.k = 1}, "a b", "b"},
    {"fruit_then_sort", {}, "red green blue", "blueberry cherry lime"},
    {"fruit_then_sort", {}, "orange brown", "kiwi mango"},
    {"filter_start_then_uppercase", {.letter = 'b'}, "bell kite bat", "BELL BAT"},
    {"filter_start_then_uppercase", {.letter = 'k'}, "bell kite bat", "KITE"},
    {"sort_desc_then_kth", {.k = 2}, "10 9 100 5", "10"},
    {"sort_desc_then_kth", {.k = 4}, "10 9 100 5", "5"},
    {"longer_then_count", {.n = 4}, "kite river fog mountain", "2"},
    {"longer_then_count", {.n = 2}, "kite river fog mountain", "4"},
    {"hard_dedupe_sort_join", {.sep = " - "}, "pear apple pear fig", "apple - fig - pear"},
    {"hard_dedupe_sort_join", {.sep = " and "}, "b a b", "a and b"},
    {"hard_start_reverse_upper", {.letter = 'b'}, "bell kite bat", "BAT BELL"},
    {"hard_start_reverse_upper", {.letter = 'x'}, "bell kite bat", "none"},
    {"hard_even_desc_kth", {.k = 2}, "1 2 3 4 10", "4"},
    {"hard_even_desc_kth", {.k = 1}, "7 8", "8"},
    {"hard_fruit_dedupe_count", {}, "red green red blue", "3"},
    {"hard_fruit_dedupe_count", {}, "pink pink", "1"},
    {"hard_longer_sort_first", {.n = 3}, "kite river fog mountain", "kite"},
    {"hard_longer_sort_first", {.n = 4}, "kite river fog mountain", "mountain"},
    {"hard_rotate_reverse_join", {.count = 1, .sep = ", "}, "a b c d", "a, d, c, b"},
    {"hard_rotate_reverse_join", {.count = 2, .sep = " + "}, "a b c", "b + a + c"},
    {"hard_greater_sort_join", {.n = 9, .sep = " + "}, "10 9 100 5", "10 + 100"},
    {"hard_greater_sort_join", {.n = 0, .sep = ", "}, "3 1 2", "1, 2, 3"},
    {"hard_add_even_count", {.digit = 1}, "1 2 3 4 10", "2"},
    {"hard_add_even_count", {.digit = 2}, "1 3", "0"},
    {"hard_sound_reverse_join", {.sep = " and "}, "dog cat cow", "moo and meow and woof"},
    {"hard_sound_reverse_join", {.sep = "; "}, "owl", "hoot"},
};

const InstructionBenchmark& bench() {
  static const InstructionBenchmark b;
  return b;
}

// Samples of every split with one seed, shared by several test cases.
const std::map<Split, std::vector<InstructionExample>>& samples() {
  static const auto s = [] {
    std::map<Split, std::vector<InstructionExample>> m;
    m[Split::Train] = bench().sample(Split::Train, 6000, 11);
    m[Split::Seen] = bench().sample(Split::Seen, 3000, 12);
    m[Split::Unseen] = bench().sample(Split::Unseen, 3000, 13);
    m[Split::Hard] = bench().sample(Split::Hard, 1000, 14);
    return m;
  }();
  return s;
}

double mean_words(const std::vector<InstructionExample>& ex) {
  double t = 0;
  for (const auto& e : ex) t += static_cast<double>(word_count(e.instruction));
  return t / static_cast<double>(ex.size());
}

}  // namespace

TEST_CASE("instructions: at least 30 families, each with at least 4 distinct templates") {
  const auto& fams = bench().families();
  CHECK(fams.size() >= 30);
  std::size_t singles = 0, seen_compositions = 0, held_out = 0, hard = 0;
  std::set<std::string> names, texts;
  std::size_t total_templates = 0;
  for (const auto& f : fams) {
    CAPTURE(f.name);
    CHECK(names.insert(f.name).second);
    CHECK(f.templates.size() >= 4);
    for (const auto& t : f.templates) texts.insert(t.text);
    total_templates += f.templates.size();
    if (f.role == FamilyRole::Seen) (f.steps.size() == 1 ? singles : seen_compositions)++;
    if (f.role == FamilyRole::HeldOut) {
      ++held_out;
      CHECK(f.steps.size() == 2);
    }
    if (f.role == FamilyRole::Hard) {
      ++hard;
      CHECK(f.steps.size() == 3);
    }
    // Seen families: exactly one held-out template, the last one.
    if (f.role == FamilyRole::Seen) {
      CHECK(template_ids(f, Split::Unseen) == std::vector<std::size_t>{f.templates.size() - 1});
      CHECK(template_ids(f, Split::Train).size() >= 4);
      CHECK(template_ids(f, Split::Train) == template_ids(f, Split::Seen));
      CHECK(template_ids(f, Split::Hard).empty());
    }
  }
  CHECK(texts.size() == total_templates);  // no template text is shared
  CHECK(singles == 44);
  CHECK(seen_compositions == 12);
  CHECK(held_out == 8);
  CHECK(hard == 9);
  CHECK(fams.size() == 73);
}

TEST_CASE("instructions: held-out compositions combine only ops of seen single-op families") {
  std::set<Op> seen_ops;
  std::set<std::vector<Op>> seen_chains;
  for (const auto& f : bench().families())
    if (f.role == FamilyRole::Seen) {
      seen_chains.insert(f.steps);
      if (f.steps.size() == 1) seen_ops.insert(f.steps[0]);
    }
  for (const auto& f : bench().families()) {
    if (f.role == FamilyRole::Seen) continue;
    CAPTURE(f.name);
    CHECK(seen_chains.count(f.steps) == 0);  // a new combination
    for (const Op op : f.steps) CHECK(seen_ops.count(op) == 1);
  }
}

TEST_CASE("instructions: every family is checked on hand-written cases") {
  std::map<std::string, int> per_family;
  for (const auto& c : hand_cases) {
    CAPTURE(c.family);
    CAPTURE(c.input);
    const TaskFamily& f = bench().family(c.family);
    CHECK(reference_output(f.steps, c.params, c.input) == c.expected);
    CHECK(independent_output(c.family, c.params, c.input) == c.expected);
    ++per_family[c.family];
  }
  for (const auto& f : bench().families()) {
    CAPTURE(f.name);
    CHECK(per_family[f.name] >= 2);
    CHECK(test_family_steps.count(f.name) == 1);
  }
}

TEST_CASE("instructions: generated outputs match the independent re-implementation and solve()") {
  std::set<std::string> covered;
  for (const auto& [split, examples] : samples()) {
    for (const auto& e : examples) {
      CAPTURE(e.family);
      CAPTURE(e.instruction);
      CAPTURE(e.input);
      REQUIRE(e.split == split);
      CHECK(e.output == independent_output(e.family, e.params, e.input));
      CHECK(e.output == bench().solve(e));
      CHECK(e.output != "none");  // the generator avoids empty results
      covered.insert(e.family);
    }
  }
  CHECK(covered.size() == bench().families().size());  // every family was drawn
  // Per family as well, so that rare families get many checks.
  for (const auto& f : bench().families()) {
    const Split split = f.role == FamilyRole::Seen      ? Split::Train
                        : f.role == FamilyRole::HeldOut ? Split::Unseen
                                                        : Split::Hard;
    for (const auto& e : bench().sample_family(f.name, split, 200, 3)) {
      CAPTURE(e.instruction);
      CAPTURE(e.input);
      CHECK(e.family == f.name);
      CHECK(e.output == independent_output(f.name, e.params, e.input));
    }
  }
}

TEST_CASE("instructions: the output is a function of (instruction, input)") {
  std::map<std::pair<std::string, std::string>, std::string> seen;
  for (const auto& [split, examples] : samples())
    for (const auto& e : examples) {
      const auto [it, inserted] = seen.emplace(std::make_pair(e.instruction, e.input), e.output);
      if (!inserted) CHECK(it->second == e.output);
    }
}

TEST_CASE("instructions: the instruction names every parameter") {
  for (const auto& [split, examples] : samples()) {
    for (const auto& e : examples) {
      CAPTURE(e.instruction);
      const auto& f = bench().family(e.family);
      // Words of the instruction with punctuation stripped from their ends.
      std::set<std::string> ws;
      for (auto w : words_of(e.instruction)) {
        while (!w.empty() && std::ispunct(static_cast<unsigned char>(w.back()))) w.pop_back();
        ws.insert(w);
      }
      for (const ParamKind k : f.params()) {
        switch (k) {
          case ParamKind::K:
            CHECK(ws.count(std::string(vocab::ordinals.at(static_cast<std::size_t>(e.params.k)))));
            break;
          case ParamKind::Count:
            CHECK(e.instruction.find(std::string(vocab::digit_words.at(static_cast<std::size_t>(e.params.count))) +
                                     (e.params.count == 1 ? " place" : " places")) != std::string::npos);
            break;
          case ParamKind::Letter:
            CHECK(ws.count(std::string(1, e.params.letter)));
            break;
          case ParamKind::N:
            CHECK(ws.count(std::to_string(e.params.n)));
            break;
          case ParamKind::Digit:
            CHECK(ws.count(std::to_string(e.params.digit)));
            break;
          case ParamKind::Sep:
            CHECK(e.instruction.find(std::string(vocab::find_separator(e.params.sep)->name)) != std::string::npos);
            break;
          case ParamKind::Word:
            CHECK(ws.count(e.params.word));
            break;
          case ParamKind::None:
            break;
        }
      }
      // Unused parameters stay at their defaults.
      const auto uses = [&](ParamKind k) {
        const auto p = f.params();
        return std::find(p.begin(), p.end(), k) != p.end();
      };
      if (!uses(ParamKind::K)) CHECK(e.params.k == 0);
      if (!uses(ParamKind::Count)) CHECK(e.params.count == 0);
      if (!uses(ParamKind::Letter)) CHECK(e.params.letter == 0);
      if (!uses(ParamKind::N)) CHECK(e.params.n == 0);
      if (!uses(ParamKind::Digit)) CHECK(e.params.digit == 0);
      if (!uses(ParamKind::Sep)) CHECK(e.params.sep.empty());
      if (!uses(ParamKind::Word)) CHECK(e.params.word.empty());
    }
  }
}

TEST_CASE("instructions: sampling is deterministic in the seed") {
  const InstructionBenchmark other;  // a second instance with the same options
  for (const Split s : all_splits) {
    CAPTURE(split_name(s));
    const auto a = bench().sample(s, 200, 99);
    CHECK(a == other.sample(s, 200, 99));
    CHECK(a != bench().sample(s, 200, 100));
    // A prefix of a longer sample is the shorter sample.
    const auto longer = bench().sample(s, 300, 99);
    CHECK(std::equal(a.begin(), a.end(), longer.begin()));
  }
  const auto f1 = bench().sample_family("sort_numbers", Split::Seen, 50, 5);
  CHECK(f1 == bench().sample_family("sort_numbers", Split::Seen, 50, 5));
  CHECK(f1 != bench().sample_family("sort_numbers", Split::Seen, 50, 6));
  // Train and seen with the same sampling seed are different draws.
  CHECK(bench().sample(Split::Train, 50, 7) != bench().sample(Split::Seen, 50, 7));
}

TEST_CASE("instructions: the benchmark seed changes the train/seen partition") {
  const InstructionBenchmark b1({.seed = 1}), b2({.seed = 2});
  int differ = 0;
  for (const auto& e : b1.sample(Split::Train, 500, 3)) {
    CHECK_FALSE(b1.in_eval_partition(e.instruction, e.input));
    differ += b2.in_eval_partition(e.instruction, e.input);
  }
  CHECK(differ > 0);
  // About eval_fraction of all pairs lie in the eval partition.
  int in_eval = 0;
  const auto train = bench().sample(Split::Train, 1, 1);
  for (int i = 0; i < 10000; ++i) in_eval += bench().in_eval_partition(train[0].instruction, std::to_string(i));
  CHECK(in_eval > 1700);
  CHECK(in_eval < 2300);
}

TEST_CASE("instructions: splits are disjoint as specified") {
  const auto& s = samples();
  // Templates: the text of every template used by train/seen differs from every unseen and hard one.
  std::set<std::string> train_templates, unseen_templates, hard_templates;
  for (const auto& f : bench().families())
    for (std::size_t i = 0; i < f.templates.size(); ++i) {
      if (template_in_split(f, f.templates[i], Split::Train)) train_templates.insert(f.templates[i].text);
      if (template_in_split(f, f.templates[i], Split::Unseen)) unseen_templates.insert(f.templates[i].text);
      if (template_in_split(f, f.templates[i], Split::Hard)) hard_templates.insert(f.templates[i].text);
    }
  for (const auto& t : unseen_templates) CHECK(train_templates.count(t) == 0);
  for (const auto& t : hard_templates) CHECK((train_templates.count(t) + unseen_templates.count(t)) == 0);

  std::set<std::string> train_instr, seen_instr;
  std::set<std::pair<std::string, std::string>> train_pairs;
  for (const auto& e : s.at(Split::Train)) {
    const auto& f = bench().family(e.family);
    CHECK(f.role == FamilyRole::Seen);
    CHECK_FALSE(f.templates[e.template_id].held_out);
    CHECK_FALSE(bench().in_eval_partition(e.instruction, e.input));
    CHECK(fill_template(f.templates[e.template_id].text, e.params) == e.instruction);
    train_instr.insert(e.instruction);
    train_pairs.emplace(e.instruction, e.input);
  }
  std::size_t shared_instructions = 0;
  for (const auto& e : s.at(Split::Seen)) {
    const auto& f = bench().family(e.family);
    CHECK(f.role == FamilyRole::Seen);
    CHECK_FALSE(f.templates[e.template_id].held_out);
    CHECK(bench().in_eval_partition(e.instruction, e.input));
    CHECK(train_pairs.count({e.instruction, e.input}) == 0);  // no train pair in seen eval
    shared_instructions += train_instr.count(e.instruction);
    seen_instr.insert(e.instruction);
  }
  CHECK(shared_instructions > 0);  // seen reuses training instructions (with new inputs)

  std::size_t compositions = 0, paraphrases = 0;
  for (const auto& e : s.at(Split::Unseen)) {
    CAPTURE(e.instruction);
    const auto& f = bench().family(e.family);
    CHECK(f.role != FamilyRole::Hard);
    CHECK(f.templates[e.template_id].held_out);
    CHECK(train_instr.count(e.instruction) == 0);
    CHECK(seen_instr.count(e.instruction) == 0);
    (f.role == FamilyRole::HeldOut ? compositions : paraphrases)++;
  }
  // unseen_composition_share = 0.5.
  CHECK(compositions > 1300);
  CHECK(paraphrases > 1300);
  for (const auto& e : s.at(Split::Hard)) {
    CHECK(bench().family(e.family).role == FamilyRole::Hard);
    CHECK(train_instr.count(e.instruction) == 0);
  }
}

TEST_CASE("instructions: lengths are bounded and hard instructions are longer") {
  const auto& s = samples();
  for (const auto& [split, examples] : s) {
    for (const auto& e : examples) {
      CAPTURE(e.instruction);
      const std::size_t n = word_count(e.instruction);
      if (split == Split::Hard) {
        CHECK(n >= 25);
        CHECK(n <= 80);
        CHECK(std::count(e.instruction.begin(), e.instruction.end(), '.') >= 2);  // several sentences
      } else {
        CHECK(n >= 9);
        CHECK(n <= 30);
      }
      CHECK(word_count(e.input) <= 10);  // at most 9 items (or 8 and the bar)
      CHECK(word_count(e.output) <= 20);
      CHECK(e.output.size() <= 100);
    }
  }
  const double train = mean_words(s.at(Split::Train)), seen = mean_words(s.at(Split::Seen));
  const double unseen = mean_words(s.at(Split::Unseen)), hard = mean_words(s.at(Split::Hard));
  MESSAGE("mean instruction words: train " << train << ", seen " << seen << ", unseen " << unseen << ", hard " << hard);
  CHECK(train >= 12);
  CHECK(hard > 2.5 * seen);
  CHECK(hard > 2.5 * unseen);
  // The instruction is usually longer than the input.
  std::size_t longer = 0;
  for (const auto& e : s.at(Split::Train)) longer += word_count(e.instruction) > word_count(e.input);
  CHECK(longer == s.at(Split::Train).size());
}

TEST_CASE("instructions: generated inputs have the properties of their kind") {
  const auto& b = bench();
  for (const auto& e : b.sample_family("dedupe", Split::Train, 100, 1)) {
    const auto w = words_of(e.input);
    CHECK(std::set<std::string>(w.begin(), w.end()).size() < w.size());  // has a repeat
  }
  for (const auto& e : b.sample_family("lowercase", Split::Train, 100, 1)) CHECK(e.output != e.input);
  for (const auto& e : b.sample_family("subtract_numbers", Split::Train, 100, 1)) {
    const auto w = words_of(e.input);
    REQUIRE(w.size() == 2);
    CHECK(std::stoi(w[0]) >= std::stoi(w[1]));
  }
  for (const auto& e : b.sample_family("common_items", Split::Train, 100, 1))
    CHECK(e.input.find(" | ") != std::string::npos);
  for (const auto& e : b.sample_family("copy", Split::Train, 100, 1)) {
    const auto w = words_of(e.input);
    CHECK(w.size() >= 3);
    CHECK(w.size() <= 6);
    for (const auto& x : w) CHECK(std::find(vocab::words.begin(), vocab::words.end(), x) != vocab::words.end());
  }
  int yes = 0;
  for (const auto& e : b.sample_family("contains_word", Split::Train, 200, 1)) yes += e.output == "yes";
  CHECK(yes > 50);
  CHECK(yes < 150);
  // Options: list lengths and number range.
  const InstructionBenchmark small({.min_items = 3, .max_items = 3, .max_number = 9});
  for (const auto& e : small.sample_family("sort_numbers", Split::Train, 100, 1)) {
    const auto w = words_of(e.input);
    CHECK(w.size() == 3);
    for (const auto& x : w) CHECK(std::stoi(x) <= 9);
  }
}

TEST_CASE("instructions: vocabulary is small, lowercase and disjoint from the dictionaries") {
  std::set<std::string_view> all(vocab::words.begin(), vocab::words.end());
  CHECK(all.size() == vocab::words.size());
  for (const auto w : vocab::words) {
    CAPTURE(w);
    CHECK(w.size() >= 3);
    CHECK(w.size() <= 8);
    CHECK(std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; }));
  }
  std::size_t dict_words = 0;
  const auto check_dict = [&](const auto& d) {
    for (const auto& [a, b] : d) {
      CHECK(all.count(a) == 0);
      CHECK(all.count(b) == 0);
      dict_words += 2;
    }
  };
  check_dict(vocab::colour_fruit);
  check_dict(vocab::animal_sound);
  check_dict(vocab::opposites);
  CHECK(vocab::words.size() + dict_words + vocab::digit_words.size() <= 250);
}

TEST_CASE("instructions: spelling families can be left out") {
  const InstructionBenchmark no_spelling({.spelling = false});
  CHECK(no_spelling.families().size() < bench().families().size());
  CHECK(no_spelling.families().size() >= 30);
  for (const auto& f : no_spelling.families()) CHECK_FALSE(f.spelling());
  CHECK_THROWS_WITH_AS(no_spelling.family("reverse_letters"),
                       "[InstructionBenchmark] no family named 'reverse_letters'", Error);
  for (const Split s : all_splits)
    for (const auto& e : no_spelling.sample(s, 300, 1)) {
      CHECK_FALSE(no_spelling.family(e.family).spelling());
      // Outputs use only lowercase words, digits and separators.
      CHECK(std::none_of(e.output.begin(), e.output.end(), [](char c) { return c >= 'A' && c <= 'Z'; }));
    }
}

TEST_CASE("instructions: options and misuse are checked") {
  CHECK_THROWS_WITH_AS(InstructionBenchmark({.eval_fraction = 0.0}),
                       "[InstructionBenchmark] eval_fraction must be in (0, 1), got 0", Error);
  CHECK_THROWS_WITH_AS(InstructionBenchmark({.min_items = 2}),
                       "[InstructionBenchmark] need 3 <= min_items <= max_items <= 9, got 2 and 6", Error);
  CHECK_THROWS_WITH_AS(InstructionBenchmark({.min_items = 5, .max_items = 4}),
                       "[InstructionBenchmark] need 3 <= min_items <= max_items <= 9, got 5 and 4", Error);
  CHECK_THROWS_WITH_AS(InstructionBenchmark({.max_number = 1000}),
                       "[InstructionBenchmark] max_number must be in 9..999, got 1000", Error);
  CHECK_THROWS_WITH_AS(InstructionBenchmark({.unseen_composition_share = 1.5}),
                       "[InstructionBenchmark] unseen_composition_share must be in [0, 1], got 1.5", Error);
  CHECK_THROWS_WITH_AS(bench().sample_family("sort_then_join", Split::Train, 1, 1),
                       "[InstructionBenchmark] family sort_then_join (held_out) is not in the train split", Error);
  CHECK_THROWS_WITH_AS(bench().sample_family("copy", Split::Hard, 1, 1),
                       "[InstructionBenchmark] family copy (seen) is not in the hard split", Error);
  CHECK_THROWS_WITH_AS(parse_split("test"),
                       "[instructions] unknown split 'test' (expected train, seen, unseen or hard)", Error);
  for (const Split s : all_splits) CHECK(parse_split(split_name(s)) == s);
  CHECK(bench().sample(Split::Seen, 0, 1).empty());

  // The reference ops reject inputs that do not fit them.
  const TaskParams none;
  CHECK_THROWS_WITH_AS(apply_op(Op::Sum, parse_input("a b"), none), "[instructions] sum: 'a' is not a number", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::ColourToFruit, parse_input("red kite"), none),
                       "[instructions] colour_to_fruit: 'kite' is not in the dictionary", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::Reverse, parse_input("a | b"), none),
                       "[instructions] reverse: needs a single list, got two", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::Interleave, parse_input("a b"), none),
                       "[instructions] interleave: needs two lists separated by '|'", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::AddPair, parse_input("1 2 3"), none),
                       "[instructions] add_pair: needs exactly two numbers, got 3 items", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::Join, parse_input("a b"), TaskParams{.sep = "#"}),
                       "[instructions] join: unknown separator '#'", Error);
  CHECK_THROWS_WITH_AS(apply_op(Op::Kth, parse_input("a b"), none), "[instructions] kth: k must be >= 1, got 0", Error);
  CHECK_THROWS_WITH_AS(fill_template("Take the {k} word.", none), "[instructions] {k} must be in 1..9, got 0", Error);
  CHECK_THROWS_WITH_AS(fill_template("Take the {q} word.", none), "[instructions] unknown template slot {q}", Error);
  CHECK_THROWS_WITH_AS(fill_template("Take the {k word.", none),
                       "[instructions] unclosed '{' in template \"Take the {k word.\"", Error);
}

TEST_CASE("instructions: templates and slots") {
  CHECK(fill_template("Join with {sep}, the {k} one, {count}, letter {letter}, over {n}, plus {digit}, add {word}.",
                      {.k = 3, .count = 2, .letter = 'b', .n = 4, .digit = 7, .sep = " + ", .word = "moon"}) ==
        "Join with a plus sign, the third one, two places, letter b, over 4, plus 7, add moon.");
  CHECK(render_param(ParamKind::Count, {.count = 1}) == "one place");
  CHECK(template_slots("a {k} b {sep} {k}") == std::vector<std::string>{"k", "sep", "k"});
  CHECK(parse_input("a b | c") == TaskValue{{"a", "b"}, {"c"}, true});
  CHECK(format_input(parse_input("kite  river | salt")) == "kite river | salt");
  CHECK(format_output(TaskValue{}) == "none");
}

TEST_CASE("instructions: model text pieces and encoding") {
  InstructionExample e;
  e.instruction = "Reverse the order of the words.";
  e.input = "kite river salt";
  e.output = "salt river kite";
  const GistPrompt p = format_example(e);
  CHECK(p.instruction == "Instruction: Reverse the order of the words.");
  CHECK(p.input == "\nInput: kite river salt\nOutput:");
  CHECK(p.output == " salt river kite");
  CHECK(p.text(2) ==
        "Instruction: Reverse the order of the words.<GIST><GIST>\nInput: kite river salt\nOutput: salt river kite");
  CHECK(p.text(0, "<g>") ==
        "Instruction: Reverse the order of the words.\nInput: kite river salt\nOutput: salt river kite");
  const GistPrompt q = format_example(e, {.instruction_prefix = "I: ", .input_prefix = " X: ", .output_prefix = " Y:"});
  CHECK(q.text(1, "<g>") == "I: Reverse the order of the words.<g> X: kite river salt Y: salt river kite");

  io::ByteTokenizer bt;
  const std::int64_t gist = bt.add_special_token("<GIST>");
  const EncodedExample enc = encode_example(bt, p, 3, gist);
  const std::size_t n_instr = p.instruction.size(), n_input = p.input.size(), n_output = p.output.size();
  CHECK(enc.ids.size() == 1 + n_instr + 3 + n_input + n_output + 1);
  CHECK(enc.ids.front() == bt.bos_id());
  CHECK(enc.ids.back() == bt.eos_id());
  CHECK(enc.gist_begin == 1 + n_instr);
  CHECK(enc.gist_end == enc.gist_begin + 3);
  for (std::size_t i = enc.gist_begin; i < enc.gist_end; ++i) CHECK(enc.ids[i] == gist);
  CHECK(enc.output_begin == enc.gist_end + n_input);
  CHECK(bt.decode(std::vector<std::int64_t>(enc.ids.begin() + static_cast<std::ptrdiff_t>(enc.output_begin),
                                            enc.ids.end() - 1)) == p.output);
  const auto t = enc.targets();
  REQUIRE(t.size() == enc.ids.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    CAPTURE(i);
    if (i + 1 >= enc.output_begin && i + 1 < enc.ids.size()) {
      CHECK(t[i] == enc.ids[i + 1]);
    } else {
      CHECK(t[i] == -100);
    }
  }
  const auto plain = encode_example(bt, p, 0, gist, false, false);
  CHECK(plain.gist_begin == plain.gist_end);
  CHECK(plain.ids.size() == n_instr + n_input + n_output);
  CHECK_THROWS_WITH_AS(encode_example(bt, p, 1, bt.vocab_size()),
                       "[encode_example] gist id 261 is outside the vocabulary of size 261", Error);
}

TEST_CASE("instructions: a word tokenizer built from vocabulary_corpus() knows every token of every split") {
  auto tok = io::WordTokenizer::build(bench().vocabulary_corpus());
  const std::int64_t gist = tok.add_special_token("<GIST>");
  for (const auto& [split, examples] : samples()) {
    for (std::size_t i = 0; i < examples.size(); i += 3) {
      const auto& e = examples[i];
      CAPTURE(e.instruction);
      CAPTURE(e.output);
      const auto enc = encode_example(tok, format_example(e), 2, gist);
      CHECK(std::count(enc.ids.begin(), enc.ids.end(), tok.unk_id()) == 0);
      // The output decodes back to the reference text (separators keep word-tokenizer spacing).
      const std::vector<std::int64_t> out(enc.ids.begin() + static_cast<std::ptrdiff_t>(enc.output_begin),
                                          enc.ids.end() - 1);
      CHECK(tok.decode(out) == e.output);
    }
  }
}

}  // namespace test_instructions
