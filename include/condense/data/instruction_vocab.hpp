// The fixed vocabulary of the instruction benchmark (data/instructions.hpp): the general words
// that fill word lists, the small dictionaries of the mapping tasks (colour -> fruit, animal ->
// sound, word <-> opposite, digit <-> number word), the ordinal and cardinal words that
// instruction templates use for parameters, and the separators of the join task.
#pragma once

#include <array>
#include <optional>
#include <string_view>
#include <utility>

namespace condense::data::vocab {

/// General words for word lists: common lowercase English nouns of 3 to 8 letters. None of them
/// is a dictionary word below, a meta word of the instructions ("word", "letter", ...) or one
/// of the answers "yes", "no", "none".
inline constexpr std::array<std::string_view, 150> words = {
    "anchor", "arrow",  "autumn",  "bag",     "basket", "bell",    "blanket", "boat",    "book",   "bottle",
    "box",    "bread",  "bridge",  "brush",   "bucket", "button",  "cabin",   "camera",  "candle", "castle",
    "chain",  "chair",  "chalk",   "cloud",   "coat",   "coffee",  "coin",    "corn",    "crown",  "cup",
    "desk",   "diamond", "dinner", "door",    "dragon", "dream",   "drum",    "dust",    "engine", "eraser",
    "fabric", "feather", "fence",  "field",   "flag",   "flame",   "flute",   "fog",     "forest", "fork",
    "frame",  "garden", "gate",    "gem",     "ghost",  "glass",   "glove",   "gold",    "guitar", "hammer",
    "harbor", "hat",    "helmet",  "hill",    "honey",  "house",   "ink",     "iron",    "island", "jacket",
    "jar",    "jelly",  "jewel",   "jungle",  "kettle", "key",     "king",    "kite",    "knife",  "ladder",
    "lake",   "lamp",   "lantern", "leaf",    "lock",   "magnet",  "marble",  "market",  "meadow", "milk",
    "mirror", "moon",   "motor",   "mountain", "mug",   "nail",    "needle",  "nest",    "noodle", "ocean",
    "oven",   "paddle", "paint",   "palace",  "paper",  "pebble",  "pencil",  "pepper",  "piano",  "pillow",
    "planet", "plate",  "pocket",  "pond",    "puzzle", "queen",   "quilt",   "radio",   "ribbon", "river",
    "robot",  "rocket", "roof",    "rope",    "saddle", "sail",    "salt",    "sand",    "scarf",  "shell",
    "silver", "sky",    "snow",    "soap",    "spoon",  "star",    "stone",   "storm",   "sugar",  "table",
    "tent",   "ticket", "tower",   "train",   "tunnel", "valley",  "violin",  "wagon",   "window", "yarn",
};

/// colour -> fruit of that colour (the colour_to_fruit task).
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 8> colour_fruit = {{
    {"red", "cherry"},
    {"yellow", "lemon"},
    {"green", "lime"},
    {"purple", "grape"},
    {"orange", "mango"},
    {"brown", "kiwi"},
    {"pink", "peach"},
    {"blue", "blueberry"},
}};

/// animal -> the sound it makes (the animal_to_sound task).
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 12> animal_sound = {{
    {"dog", "woof"},
    {"cat", "meow"},
    {"cow", "moo"},
    {"duck", "quack"},
    {"sheep", "baa"},
    {"owl", "hoot"},
    {"lion", "roar"},
    {"bee", "buzz"},
    {"snake", "hiss"},
    {"horse", "neigh"},
    {"pig", "oink"},
    {"crow", "caw"},
}};

/// Pairs of opposites; the opposite task maps either side to the other.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 12> opposites = {{
    {"hot", "cold"},
    {"big", "small"},
    {"up", "down"},
    {"left", "right"},
    {"fast", "slow"},
    {"happy", "sad"},
    {"open", "shut"},
    {"full", "empty"},
    {"early", "late"},
    {"high", "low"},
    {"wet", "dry"},
    {"hard", "soft"},
}};

/// Names of the digits 0..9.
inline constexpr std::array<std::string_view, 10> digit_words = {"zero", "one", "two",   "three", "four",
                                                                 "five", "six", "seven", "eight", "nine"};

/// Ordinal words for positions 1..9 (index 0 is unused).
inline constexpr std::array<std::string_view, 10> ordinals = {"",      "first",   "second", "third",   "fourth",
                                                              "fifth", "sixth",   "seventh", "eighth", "ninth"};

/// A join separator: the exact text put between items, and the phrase instructions use for it.
struct Separator {
  std::string_view text;  ///< e.g. " + "
  std::string_view name;  ///< e.g. "a plus sign"
};

/// The join separators. Comma and semicolon are followed by one space, the symbols stand between
/// spaces, so that a word-level tokenizer splits the joined text into the items and the symbol
/// and decodes it back to the same text.
inline constexpr std::array<Separator, 6> separators = {{
    {", ", "a comma"},
    {"; ", "a semicolon"},
    {" + ", "a plus sign"},
    {" / ", "a slash"},
    {" - ", "a dash"},
    {" and ", "the word and"},
}};

/// The separator whose text is `text`, if any.
inline std::optional<Separator> find_separator(std::string_view text) {
  for (const auto& s : separators)
    if (s.text == text) return s;
  return std::nullopt;
}

/// The value of `key` in a dictionary of pairs (first -> second), if present.
template <std::size_t N>
std::optional<std::string_view> lookup(const std::array<std::pair<std::string_view, std::string_view>, N>& dict,
                                       std::string_view key) {
  for (const auto& [from, to] : dict)
    if (from == key) return to;
  return std::nullopt;
}

}  // namespace condense::data::vocab
