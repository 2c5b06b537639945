// The task families of the instruction benchmark and their instruction templates:
//  - 44 single-op families ("seen"): each with 5 paraphrased templates; the first 4 are used
//    for training and the seen split, the last one is held out for the unseen split;
//  - 12 two-op compositions also "seen", with the same 4 + 1 template rule;
//  - 8 two-op compositions held out entirely ("held_out": only in the unseen split), each a new
//    combination of seen ops, with 4 templates;
//  - 9 three-op compositions for the hard split, whose multi-sentence instructions are built
//    from 4 frames and per-op clauses (4 templates each).
// Templates hold {slots} for the parameters (data/instruction_tasks.hpp: {k}, {count}, {letter},
// {n}, {digit}, {sep}, {word}); every template of a family names every parameter of its ops.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "condense/core/error.hpp"
#include "condense/data/instruction_tasks.hpp"

namespace condense::data {

/// What the generator draws as the input of a family.
enum class InputKind : std::uint8_t {
  Words,              ///< 3-6 distinct general words
  WordsWithRepeats,   ///< general words with one or two repeated
  MixedCase,          ///< distinct general words, some UPPER or Capitalised
  Colours,            ///< colour words (repeats allowed)
  Animals,            ///< animal words (repeats allowed)
  Opposites,          ///< words of the opposite pairs (repeats allowed)
  Digits,             ///< single digits (repeats allowed)
  DigitWords,         ///< names of digits (repeats allowed)
  Numbers,            ///< numbers 0..max_number (repeats allowed)
  WordPair,           ///< two lists of 2-4 distinct words, " | " between them
  WordPairOverlap,    ///< two lists of 3-4 words sharing one or two words
  NumberPair,         ///< two numbers 0..999
  OrderedNumberPair,  ///< two numbers 0..999, the first >= the second
  SingleNumber,       ///< one number 10..999
};

/// snake_case name of an input kind.
inline std::string_view input_kind_name(InputKind kind) {
  switch (kind) {
    case InputKind::Words: return "words";
    case InputKind::WordsWithRepeats: return "words_with_repeats";
    case InputKind::MixedCase: return "mixed_case";
    case InputKind::Colours: return "colours";
    case InputKind::Animals: return "animals";
    case InputKind::Opposites: return "opposites";
    case InputKind::Digits: return "digits";
    case InputKind::DigitWords: return "digit_words";
    case InputKind::Numbers: return "numbers";
    case InputKind::WordPair: return "word_pair";
    case InputKind::WordPairOverlap: return "word_pair_overlap";
    case InputKind::NumberPair: return "number_pair";
    case InputKind::OrderedNumberPair: return "ordered_number_pair";
    case InputKind::SingleNumber: return "single_number";
  }
  return "";
}

/// How the hard-split frames refer to an input ("a list of numbers").
inline std::string_view input_noun(InputKind kind) {
  switch (kind) {
    case InputKind::Colours: return "a list of colours";
    case InputKind::Animals: return "a list of animals";
    case InputKind::Numbers:
    case InputKind::Digits: return "a list of numbers";
    default: return "a list of words";
  }
}

/// The role of a family, which decides the splits it appears in.
enum class FamilyRole : std::uint8_t {
  Seen,     ///< train and seen (non-held-out templates), unseen (held-out templates)
  HeldOut,  ///< unseen only: a composition of seen ops never shown in training
  Hard,     ///< hard only: three-op compositions with long multi-sentence instructions
};

/// Name of a role: "seen", "held_out", "hard".
inline std::string_view role_name(FamilyRole role) {
  switch (role) {
    case FamilyRole::Seen: return "seen";
    case FamilyRole::HeldOut: return "held_out";
    case FamilyRole::Hard: return "hard";
  }
  return "";
}

/// One instruction template.
struct InstructionTemplate {
  std::string text;        ///< with {slots}
  bool held_out = false;   ///< used only by the unseen split (all templates of HeldOut families)
};

/// A task family: a chain of ops, the input it is drawn from, and its instruction templates.
struct TaskFamily {
  std::string name;                             ///< unique snake_case name
  InputKind input = InputKind::Words;           ///< what the generator draws
  std::vector<Op> steps;                        ///< 1 to 3 ops applied in order
  FamilyRole role = FamilyRole::Seen;           ///< which splits it belongs to
  std::vector<InstructionTemplate> templates;   ///< template id = index here

  /// Whether any step respells words (OpInfo::spelling).
  bool spelling() const {
    for (const Op op : steps)
      if (op_info(op).spelling) return true;
    return false;
  }
  /// The parameter kinds its steps read, in step order (no None, no repeats).
  std::vector<ParamKind> params() const {
    std::vector<ParamKind> out;
    for (const Op op : steps)
      if (op_info(op).param != ParamKind::None) out.push_back(op_info(op).param);
    return out;
  }
};

namespace detail {

/// A seen family: the last template is held out for the unseen split.
inline TaskFamily seen_family(std::string name, InputKind input, std::vector<Op> steps,
                              std::initializer_list<std::string_view> templates) {
  TaskFamily f{std::move(name), input, std::move(steps), FamilyRole::Seen, {}};
  for (const auto t : templates) f.templates.push_back({std::string(t), false});
  f.templates.back().held_out = true;
  return f;
}

/// A held-out composition: every template belongs to the unseen split.
inline TaskFamily held_out_family(std::string name, InputKind input, std::vector<Op> steps,
                                  std::initializer_list<std::string_view> templates) {
  TaskFamily f{std::move(name), input, std::move(steps), FamilyRole::HeldOut, {}};
  for (const auto t : templates) f.templates.push_back({std::string(t), true});
  return f;
}

/// Clause paraphrases of an op for the hard-split frames (lowercase, no final period).
inline std::vector<std::string_view> hard_clauses(Op op) {
  switch (op) {
    case Op::Dedupe:
      return {"remove every repeated item so that each one appears only once, keeping its first occurrence",
              "delete the duplicates, keeping the earliest copy of each item",
              "make sure no item appears twice by dropping the later repeats"};
    case Op::SortAlpha:
      return {"sort the items into alphabetical order", "arrange the items as they would appear in a dictionary",
              "put everything in order from A to Z"};
    case Op::Join:
      return {"join the items into one line with {sep} between neighbouring items",
              "write the items separated by {sep} instead of spaces", "connect the items using {sep} as the separator"};
    case Op::FilterStart:
      return {"keep only the items that begin with the letter {letter}",
              "throw away every item whose first letter is not {letter}",
              "discard the items that do not start with {letter}"};
    case Op::Reverse:
      return {"reverse the order of the list", "turn the list around so that the last item comes first",
              "write the list backwards"};
    case Op::Upper:
      return {"write every item in capital letters", "convert all of the letters to upper case",
              "change each item to uppercase"};
    case Op::FilterEven:
      return {"keep only the even numbers", "remove every odd number",
              "discard the numbers that are not divisible by two"};
    case Op::SortNumDesc:
      return {"sort the numbers from largest to smallest", "arrange the numbers in decreasing order",
              "order the values from highest to lowest"};
    case Op::SortNum:
      return {"sort the numbers from smallest to largest", "arrange the numbers in increasing order",
              "order the values from lowest to highest"};
    case Op::Kth:
      return {"pick out the {k} item of what remains", "keep only the item in the {k} position",
              "select the {k} entry, counting from the left"};
    case Op::ColourToFruit:
      return {"replace each colour with the fruit of that colour", "turn every colour into its matching fruit",
              "swap each colour for a fruit of the same colour"};
    case Op::CountItems:
      return {"count how many items are left and write that number", "give the number of remaining items",
              "answer with how many items there are"};
    case Op::FilterLonger:
      return {"keep only the words with more than {n} letters", "remove every word that has {n} letters or fewer",
              "discard the words that are no longer than {n} letters"};
    case Op::First:
      return {"write only the first item", "keep just the item at the front", "give the item that comes first"};
    case Op::Rotate:
      return {"rotate the list to the left by {count}, moving the front items to the back",
              "shift every item {count} toward the front, wrapping the leading items around to the end",
              "cycle the list leftwards by {count}"};
    case Op::FilterGreater:
      return {"keep only the numbers greater than {n}", "remove every number that is {n} or smaller",
              "discard the values that do not exceed {n}"};
    case Op::AddEach:
      return {"add {digit} to every number", "increase each value by {digit}", "raise all of the numbers by {digit}"};
    case Op::AnimalToSound:
      return {"replace each animal with the sound it makes", "turn every animal into its noise",
              "swap each animal name for the sound of that animal"};
    default:
      break;
  }
  fail(task_op, "no hard-split clauses for op ", op_info(op).name);
}

/// The frames of hard-split instructions: {input} is the input noun, {c1} {c2} {c3} the clauses.
inline constexpr std::array<std::string_view, 4> hard_frames = {
    "You will receive {input}. Work through the following steps in order. First, {c1}. Next, {c2}. Finally, {c3}. "
    "Reply with the final result only, without explaining any of the steps.",
    "Here is a small puzzle about {input}. Begin by taking the list and doing this: {c1}. After that, {c2}. "
    "To finish, {c3}. Give nothing but the answer.",
    "Read {input} and transform it in three stages. Stage one: {c1}. Stage two: {c2}. Stage three: {c3}. "
    "The answer should contain only what remains after the third stage.",
    "Please carry out three operations, one after another, on {input}. To start, {c1}; then {c2}; and lastly "
    "{c3}. Keep the operations in exactly this order and write only the outcome.",
};

/// `text` with every occurrence of `key` replaced by `value`.
inline std::string replace_all(std::string text, std::string_view key, std::string_view value) {
  std::size_t i = 0;
  while ((i = text.find(key, i)) != std::string::npos) {
    text.replace(i, key.size(), value);
    i += value.size();
  }
  return text;
}

/// A hard family: template f uses frame f and, for step s, clause (f + s) mod #clauses.
inline TaskFamily hard_family(std::string name, InputKind input, std::vector<Op> steps) {
  CONDENSE_CHECK(steps.size() == 3, task_op, "hard family ", name, " must have three steps");
  TaskFamily f{std::move(name), input, std::move(steps), FamilyRole::Hard, {}};
  for (std::size_t frame = 0; frame < hard_frames.size(); ++frame) {
    std::string text = replace_all(std::string(hard_frames[frame]), "{input}", input_noun(input));
    for (std::size_t s = 0; s < 3; ++s) {
      const auto clauses = hard_clauses(f.steps[s]);
      const std::string key = "{c" + std::to_string(s + 1) + "}";
      text = replace_all(std::move(text), key, clauses[(frame + s) % clauses.size()]);
    }
    f.templates.push_back({std::move(text), false});
  }
  return f;
}

inline std::vector<TaskFamily> make_builtin_families() {
  using I = InputKind;
  std::vector<TaskFamily> f;
  // ---- single ops -------------------------------------------------------------------------
  f.push_back(seen_family("copy", I::Words, {Op::Copy}, {
      "Repeat the list of words exactly as it is given, keeping every word in its original order.",
      "Write the same words back without changing anything: the same words, in the same order, with the same spelling.",
      "Your task is simply to copy the input. Output every word unchanged and in the order shown.",
      "Echo the given sequence of words word for word, adding nothing and leaving nothing out.",
      "Reproduce the input list faithfully, so that your answer is identical to what you were given.",
  }));
  f.push_back(seen_family("reverse_words", I::Words, {Op::Reverse}, {
      "Reverse the order of the words in the list, so the last word comes first and the first word comes last.",
      "Write the words backwards, starting with the final word and ending with the first one.",
      "Take the sequence of words and output it in reverse order, without changing the words themselves.",
      "Read the list from right to left and write down the words in that order.",
      "Flip the list around so that its words appear in the opposite order from the input.",
  }));
  f.push_back(seen_family("reverse_letters", I::Words, {Op::ReverseLetters}, {
      "Spell each word backwards, letter by letter, but keep the words in their original order.",
      "For every word in the list, reverse the order of its letters while leaving the word order alone.",
      "Write each word with its letters reversed; the positions of the words in the list should not change.",
      "Mirror the spelling of every word so it reads from its last letter to its first, keeping the list order.",
      "Turn each word around by writing its characters from the end to the beginning, one word at a time.",
  }));
  f.push_back(seen_family("sort_alpha", I::Words, {Op::SortAlpha}, {
      "Sort the words into alphabetical order, from the word closest to A to the one closest to Z.",
      "Arrange the given words as they would appear in a dictionary and write them in that order.",
      "Put the list of words in alphabetical order and output the sorted list.",
      "Order the words from A to Z, comparing them letter by letter as a dictionary does.",
      "Rearrange these words so that they follow alphabetical order, the earliest in the alphabet first.",
  }));
  f.push_back(seen_family("dedupe", I::WordsWithRepeats, {Op::Dedupe}, {
      "Remove the duplicate words from the list, keeping only the first time each word appears.",
      "Some words are repeated. Write each word only once, in the order in which it first shows up.",
      "Delete every repeated occurrence of a word so that no word appears more than once, keeping the original order.",
      "Keep the first copy of each word and drop any later copies, leaving the order otherwise unchanged.",
      "Write the list again without repetitions: every distinct word once, ordered by its first appearance.",
  }));
  f.push_back(seen_family("count_items", I::Words, {Op::CountItems}, {
      "Count how many words are in the list and answer with that number written in digits.",
      "How many items does the list contain? Reply with the count as a number.",
      "Tell me the number of words in the input, giving only the total as digits.",
      "Find the length of the list, that is, the total number of words it holds, and write it as a number.",
      "Work out how many separate words you were given and respond with that quantity in digits.",
  }));
  f.push_back(seen_family("count_letter", I::Words, {Op::CountLetter}, {
      "Count how many times the letter {letter} appears across all of the words, and answer with the number.",
      "Look at every word and add up the occurrences of the letter {letter}. Write the total in digits.",
      "How often does the letter {letter} occur in the list in total? Count every occurrence in every word.",
      "Give the total number of {letter} characters found in all of the words put together.",
      "Tally each appearance of the letter {letter} in the words below and report only the final count.",
  }));
  f.push_back(seen_family("kth_item", I::Words, {Op::Kth}, {
      "Write down only the {k} word in the list, counting from the left side of the list.",
      "Pick out the {k} item of the list, counting from the start, and output that single word.",
      "Which word is in the {k} position of the list? Answer with just that word.",
      "Counting from the beginning of the list, find the word at the {k} position and write it.",
      "Return the word that sits in the {k} place when the list is read from left to right.",
  }));
  f.push_back(seen_family("first_item", I::Words, {Op::First}, {
      "Write only the first word of the list and ignore all of the words after it.",
      "What is the very first item in the list? Answer with that single word.",
      "Output the word that appears at the start of the list, and nothing else.",
      "Take the opening word of the sequence and write it down on its own.",
      "Give back just the leading word of the input list, dropping everything that follows.",
  }));
  f.push_back(seen_family("last_item", I::Words, {Op::Last}, {
      "Write only the last word of the list and ignore all of the words before it.",
      "What is the final item in the list? Answer with that single word.",
      "Output the word that appears at the end of the list, and nothing else.",
      "Take the closing word of the sequence and write it down on its own.",
      "Give back just the word in the final position of the input list, dropping everything before it.",
  }));
  f.push_back(seen_family("colour_to_fruit", I::Colours, {Op::ColourToFruit}, {
      "Replace every colour in the list with the fruit of that colour, keeping the order of the list.",
      "Each word is a colour. Write the matching fruit for each colour, one fruit per colour, in the same order.",
      "Translate the colours into fruits: swap each colour for the fruit that has that colour.",
      "For every colour given, name the fruit associated with it, keeping the list in its original order.",
      "Turn this list of colours into a list of fruits by writing, for each colour, the fruit of the same colour.",
  }));
  f.push_back(seen_family("animal_to_sound", I::Animals, {Op::AnimalToSound}, {
      "Replace each animal in the list with the sound that animal makes, keeping the same order.",
      "Every word is an animal. Write the noise each animal makes, one sound per animal, in order.",
      "What sound does each of these animals make? List the sounds in the order of the animals.",
      "Swap every animal name for the sound it makes and write the resulting list of sounds.",
      "For each creature listed, give the noise it is known for, preserving the order of the list.",
  }));
  f.push_back(seen_family("opposite", I::Opposites, {Op::Opposite}, {
      "Replace every word in the list with its opposite, keeping the words in the same order.",
      "Write the antonym of each word, one antonym per word, in the order they are given.",
      "For each word, give the word with the opposite meaning, and keep the order of the list.",
      "Swap every word for its opposite and write the new list from left to right.",
      "Turn each of these words into the word that means the reverse, leaving the order unchanged.",
  }));
  f.push_back(seen_family("digits_to_words", I::Digits, {Op::DigitsToWords}, {
      "Spell out each digit in the list as an English word, keeping the digits in the same order.",
      "Replace every digit with its name written in letters, giving one word per digit.",
      "Write the English word for each of these digits, in the order in which they appear.",
      "Convert the digits into number words, so that each digit becomes the word for it.",
      "Say each digit aloud in your head and write down its name in words, preserving the order.",
  }));
  f.push_back(seen_family("words_to_digits", I::DigitWords, {Op::WordsToDigits}, {
      "Each word is the name of a digit. Write the digit for each word, keeping the order.",
      "Convert the number words into digits, writing one digit for every word in the list.",
      "Replace every spelled out number with the matching digit and keep the list in order.",
      "Turn the written names of the digits back into numerals, one numeral per word.",
      "Write the numeral that each of these number words stands for, going from left to right.",
  }));
  f.push_back(seen_family("uppercase", I::Words, {Op::Upper}, {
      "Rewrite every word in the list using only capital letters, keeping the word order the same.",
      "Convert all of the words to upper case and write them in their original order.",
      "Write the list again with each letter of each word turned into a capital letter.",
      "Change every word to uppercase letters, without reordering or dropping any words.",
      "Shout the list: output each word entirely in block capitals, in the order given.",
  }));
  f.push_back(seen_family("lowercase", I::MixedCase, {Op::Lower}, {
      "Rewrite every word in the list using only small letters, keeping the word order the same.",
      "Convert all of the words to lower case and write them in their original order.",
      "Some letters are capitals. Write the list again with every letter in lower case.",
      "Change every word to lowercase letters, without reordering or dropping any words.",
      "Remove all capitalisation from the words, so that each one is written entirely in small letters.",
  }));
  f.push_back(seen_family("word_lengths", I::Words, {Op::WordLengths}, {
      "For each word in the list, write the number of letters it has, keeping the order of the words.",
      "Replace every word by its length in letters, giving one number per word.",
      "Count the letters in each word separately and list those counts in the order of the words.",
      "How long is each word? Answer with the letter count of every word, from left to right.",
      "Measure each word by counting its characters and write the resulting numbers in list order.",
  }));
  f.push_back(seen_family("first_letters", I::Words, {Op::FirstLetters}, {
      "Write the first letter of each word in the list, separated by spaces, in the same order.",
      "Take the initial letter of every word and list those letters from left to right.",
      "For every word, keep only its opening letter, and write the letters in order.",
      "Output the starting letter of each word, one letter per word, preserving the order.",
      "Reduce every word to its first character and write the sequence of those characters.",
  }));
  f.push_back(seen_family("join", I::Words, {Op::Join}, {
      "Join all of the words into a single line, putting {sep} between each pair of neighbouring words.",
      "Connect the words in their order using {sep} as the separator between them.",
      "Write the words in their original order, separated by {sep} instead of plain spaces.",
      "Glue the list together with {sep} between consecutive words, keeping the order unchanged.",
      "Combine the words into one string in which {sep} stands between every two adjacent words.",
  }));
  f.push_back(seen_family("rotate", I::Words, {Op::Rotate}, {
      "Rotate the list to the left by {count}, moving words from the front to the back.",
      "Move the words at the front of the list to the end, shifting everything left by {count}.",
      "Shift every word {count} toward the front; the words that fall off the front go to the back in order.",
      "Take the list and rotate it leftwards by {count}, wrapping the leading words around to the end.",
      "Cycle the words to the left by {count}, so that the words that were first end up last.",
  }));
  f.push_back(seen_family("swap_ends", I::Words, {Op::SwapEnds}, {
      "Swap the first word and the last word of the list, leaving all the other words where they are.",
      "Exchange the positions of the opening word and the closing word, and keep the middle unchanged.",
      "Put the last word at the front and the first word at the back, without moving any other word.",
      "Trade places between the first and the final item of the list and write the result.",
      "Switch the word at the start with the word at the end; every word in between stays in place.",
  }));
  f.push_back(seen_family("interleave", I::WordPair, {Op::Interleave}, {
      "Two lists are separated by a bar. Interleave them, taking one word from the first list, then one from the "
      "second, and so on.",
      "Merge the two lists by alternating between them, starting with the first list; leftover words go at the end.",
      "Combine the lists on either side of the bar by weaving them together word by word, first list first.",
      "Alternate words from the left list and the right list to build a single list, beginning on the left.",
      "Zip the two word lists together: first word of the left list, first of the right, second of the left, and "
      "so on.",
  }));
  f.push_back(seen_family("common_items", I::WordPairOverlap, {Op::Common}, {
      "Two lists are separated by a bar. Write the words that appear in both lists, in the order of the first list.",
      "Find the words shared by the left list and the right list and list them as they occur in the left one.",
      "Which words occur on both sides of the bar? Output them in the order they have in the first list.",
      "Keep only the words of the first list that also appear somewhere in the second list.",
      "List every word common to the two lists, following the order of the list before the bar.",
  }));
  f.push_back(seen_family("filter_start", I::Words, {Op::FilterStart}, {
      "Keep only the words that start with the letter {letter}, in their original order, and remove the rest.",
      "Remove every word that does not begin with the letter {letter}, and write the words that remain.",
      "Which words begin with the letter {letter}? List them in the order in which they appear.",
      "Filter the list so that only the words whose first letter is {letter} are left.",
      "Write down the words starting with {letter}, skipping all other words and keeping the order.",
  }));
  f.push_back(seen_family("filter_longer", I::Words, {Op::FilterLonger}, {
      "Keep only the words that have more than {n} letters and write them in their original order.",
      "Remove every word that is {n} letters long or shorter, and output the remaining words.",
      "Which words are longer than {n} letters? List them in the order in which they appear.",
      "Filter the list down to the words whose length is greater than {n} letters.",
      "Write the words containing more than {n} characters, dropping all shorter words and keeping the order.",
  }));
  f.push_back(seen_family("longest_word", I::Words, {Op::Longest}, {
      "Find the longest word in the list and write it; if several are equally long, choose the first of them.",
      "Which word has the most letters? Answer with that word, picking the earliest one in case of a tie.",
      "Output the word with the greatest number of letters, taking the first such word when there is a tie.",
      "Look for the longest word in the list; when two words tie for length, give the one that comes first.",
      "Write the single word that is longer than all the others, or the first of the longest words if there is a "
      "tie.",
  }));
  f.push_back(seen_family("shortest_word", I::Words, {Op::Shortest}, {
      "Find the shortest word in the list and write it; if several are equally short, choose the first of them.",
      "Which word has the fewest letters? Answer with that word, picking the earliest one in case of a tie.",
      "Output the word made of the smallest number of letters, taking the first such word when there is a tie.",
      "Search the list for its briefest word; should two words be equally brief, give the earlier one.",
      "Write the single word that is shorter than all the others, or the first of the shortest words if there is a "
      "tie.",
  }));
  f.push_back(seen_family("remove_kth", I::Words, {Op::RemoveKth}, {
      "Delete the {k} word from the list and write the remaining words in their original order.",
      "Remove the item in the {k} position, counting from the left, and keep all of the other words.",
      "Write the list again, but leave out the {k} word and keep the rest in order.",
      "Drop the word found at the {k} place of the list and output whatever is left.",
      "Take out the {k} entry of the list, counting from the start, and write the rest unchanged.",
  }));
  f.push_back(seen_family("append_word", I::Words, {Op::AppendWord}, {
      "Add the word {word} to the end of the list and write out the whole list.",
      "Append {word} after the last word of the list, keeping every other word as it is.",
      "Write the list followed by one more word, {word}, placed at the very end.",
      "Extend the list by putting the word {word} after its final item, changing nothing else.",
      "Attach {word} to the back of the list and output the longer list in order.",
  }));
  f.push_back(seen_family("contains_word", I::Words, {Op::Contains}, {
      "Answer yes if the word {word} appears in the list, and answer no if it does not.",
      "Is {word} one of the words in the list? Reply with yes or with no.",
      "Check whether the list contains the word {word}. Write yes when it does and no otherwise.",
      "Look through the words for {word}; respond yes if you find it and no if it is missing.",
      "Tell me with a single yes or no whether {word} occurs anywhere in the given list.",
  }));
  f.push_back(seen_family("every_other", I::Words, {Op::EveryOther}, {
      "Keep every other word of the list, starting with the first word, and drop the words in between.",
      "Write the words in the first, third, fifth and later odd positions, skipping the rest.",
      "Take the first word, skip one, take the next, skip one, and so on to the end of the list.",
      "Output only the words at odd positions of the list, counting the first word as position one.",
      "Remove the second, fourth and every later even-positioned word, keeping the others in order.",
  }));
  f.push_back(seen_family("sort_numbers", I::Numbers, {Op::SortNum}, {
      "Sort the numbers in the list from smallest to largest and write them in that order.",
      "Arrange the given numbers in increasing order, beginning with the smallest one.",
      "Put these numbers in ascending order and output the sorted list of numbers.",
      "Order the numbers in the list from the lowest value to the highest value.",
      "Rearrange the numbers so that each one is no larger than the number after it.",
  }));
  f.push_back(seen_family("sort_numbers_desc", I::Numbers, {Op::SortNumDesc}, {
      "Sort the numbers in the list from largest to smallest and write them in that order.",
      "Arrange the given numbers in decreasing order, beginning with the largest one.",
      "Put these numbers in descending order and output the sorted list of numbers.",
      "Order the numbers in the list from the highest value down to the lowest value.",
      "Rearrange the numbers so that each one is at least as large as the number after it.",
  }));
  f.push_back(seen_family("max_number", I::Numbers, {Op::Max}, {
      "Find the largest number in the list and write only that number.",
      "Which of these numbers has the greatest value? Answer with that number.",
      "Output the maximum of the given numbers and nothing else at all.",
      "Look through the list of numbers and report the biggest one you see.",
      "Give the highest value that appears among the numbers in the list.",
  }));
  f.push_back(seen_family("min_number", I::Numbers, {Op::Min}, {
      "Find the smallest number in the list and write only that number.",
      "Which of these numbers has the lowest value? Answer with that number.",
      "Output the minimum of the given numbers and nothing else at all.",
      "Look through the list of numbers and report the tiniest one you see.",
      "Give the least value that appears among the numbers in the list.",
  }));
  f.push_back(seen_family("sum_numbers", I::Numbers, {Op::Sum}, {
      "Add up all of the numbers in the list and write the total.",
      "What is the sum of these numbers? Answer with a single number.",
      "Compute the total you get by adding every number in the list together.",
      "Find the sum of the given numbers and output only the result.",
      "Combine all of the numbers by addition and report the final total.",
  }));
  f.push_back(seen_family("filter_even", I::Numbers, {Op::FilterEven}, {
      "Keep only the even numbers in the list, in their original order, and remove the odd ones.",
      "Remove every odd number from the list and write the even numbers that remain.",
      "Which numbers in the list are even? List them in the order in which they appear.",
      "Filter the list so that only the numbers divisible by two are left.",
      "Write down the numbers that are multiples of two, skipping all of the odd numbers.",
  }));
  f.push_back(seen_family("filter_odd", I::Numbers, {Op::FilterOdd}, {
      "Keep only the odd numbers in the list, in their original order, and remove the even ones.",
      "Remove every even number from the list and write the odd numbers that remain.",
      "Which numbers in the list are odd? List them in the order in which they appear.",
      "Filter the list so that only the numbers not divisible by two are left.",
      "Write down the numbers that leave a remainder when divided by two, skipping the even ones.",
  }));
  f.push_back(seen_family("filter_greater", I::Numbers, {Op::FilterGreater}, {
      "Keep only the numbers that are greater than {n}, in their original order.",
      "Remove every number that is {n} or smaller and write the numbers that remain.",
      "Which numbers in the list are bigger than {n}? List them in the order in which they appear.",
      "Filter the list so that only the numbers above {n} are left, in the same order.",
      "Write down the numbers exceeding {n}, skipping all the others and keeping the order.",
  }));
  f.push_back(seen_family("add_to_each", I::Numbers, {Op::AddEach}, {
      "Add {digit} to every number in the list and write the new numbers in the same order.",
      "Increase each of the numbers by {digit}, keeping the list in its original order.",
      "Write the list again with {digit} added to each of the numbers in it.",
      "Raise every value in the list by exactly {digit} and output the results in order.",
      "For each number, write the number that is {digit} more than it, preserving the order.",
  }));
  f.push_back(seen_family("add_numbers", I::NumberPair, {Op::AddPair}, {
      "You are given two numbers. Add them together and write their sum.",
      "What do the two given numbers make when they are added? Answer with the total.",
      "Compute the sum of the two numbers in the input and output only the result.",
      "Find the total of the first number plus the second number and write it in digits.",
      "Combine the two numbers by addition and report the answer in digits.",
  }));
  f.push_back(seen_family("subtract_numbers", I::OrderedNumberPair, {Op::SubtractPair}, {
      "You are given two numbers. Subtract the second number from the first and write the difference.",
      "What is the first number minus the second number? Answer with the result.",
      "Compute the difference you get by taking the second number away from the first.",
      "Find how much larger the first number is than the second, and output that amount.",
      "Deduct the second value from the first value and report the answer in digits.",
  }));
  f.push_back(seen_family("multiply_by_digit", I::SingleNumber, {Op::MultiplyDigit}, {
      "Multiply the given number by {digit} and write the product in digits.",
      "What do you get when the number is multiplied by {digit}? Answer with the result.",
      "Compute {digit} times the number in the input and output only the answer.",
      "Find the product of the number in the input and the digit {digit}.",
      "Take the number, multiply it by {digit}, and report the result in digits.",
  }));
  // ---- seen compositions of two ops -------------------------------------------------------
  f.push_back(seen_family("reverse_then_uppercase", I::Words, {Op::Reverse, Op::Upper}, {
      "Reverse the order of the words, and then write every word in capital letters.",
      "First put the words in reverse order, then convert each of them to upper case.",
      "Write the list backwards, last word first, using only uppercase letters for every word.",
      "Flip the order of the list and capitalise every letter of every word.",
      "Turn the list around so that it ends with its first word, and make all of the letters capitals.",
  }));
  f.push_back(seen_family("sort_then_first", I::Words, {Op::SortAlpha, Op::First}, {
      "Sort the words alphabetically and then write only the first word of the sorted list.",
      "Which of these words would come first in a dictionary? Answer with that word alone.",
      "Put the words in alphabetical order, then keep just the word at the front.",
      "Find the word that is earliest in alphabetical order and output it on its own.",
      "Arrange the list from A to Z and report the word that ends up in first place.",
  }));
  f.push_back(seen_family("sort_then_reverse", I::Words, {Op::SortAlpha, Op::Reverse}, {
      "Sort the words alphabetically and then reverse the order of the sorted list.",
      "Arrange the words in reverse alphabetical order, going from Z back to A.",
      "Put the words in dictionary order, and then write that order backwards.",
      "Order the list so that the word latest in the alphabet comes first and the earliest comes last.",
      "Sort the words from A to Z and then flip the result around so it runs from Z to A.",
  }));
  f.push_back(seen_family("dedupe_then_count", I::WordsWithRepeats, {Op::Dedupe, Op::CountItems}, {
      "Count how many different words the list contains, counting repeated words only once.",
      "Remove the duplicate words and then tell me how many words are left.",
      "How many distinct words are there in the list? Answer with a number.",
      "Ignore repetitions and give the number of unique words in the input.",
      "After dropping every repeated copy of a word, count the words that remain and write the count.",
  }));
  f.push_back(seen_family("even_then_sum", I::Numbers, {Op::FilterEven, Op::Sum}, {
      "Add up only the even numbers in the list and write their total.",
      "Remove the odd numbers, then compute the sum of the numbers that remain.",
      "What is the sum of the even numbers in the list? Answer with a single number.",
      "Keep the numbers that are divisible by two and output their total.",
      "Find every even value in the list and report what they add up to.",
  }));
  f.push_back(seen_family("filter_start_then_count", I::Words, {Op::FilterStart, Op::CountItems}, {
      "Count how many words in the list start with the letter {letter}.",
      "How many of the words begin with the letter {letter}? Answer with a number.",
      "Keep the words whose first letter is {letter}, then write how many there are.",
      "Find the number of words starting with the letter {letter} and output it.",
      "Tell me the count of words in the input whose opening letter is {letter}.",
  }));
  f.push_back(seen_family("sort_numbers_then_kth", I::Numbers, {Op::SortNum, Op::Kth}, {
      "Sort the numbers from smallest to largest and then write the {k} number of the sorted list.",
      "Put the numbers in ascending order and give the one in the {k} position.",
      "Which number is in the {k} place once the list is sorted from low to high? Answer with that number.",
      "Arrange the numbers in increasing order, then pick out the {k} of them.",
      "After sorting the list from low to high, report the number that sits in the {k} place.",
  }));
  f.push_back(seen_family("fruit_then_reverse", I::Colours, {Op::ColourToFruit, Op::Reverse}, {
      "Replace each colour with the fruit of that colour, then reverse the order of the list.",
      "Turn every colour into its matching fruit and write the fruits backwards, last first.",
      "Write the fruit for each colour, starting from the last colour and ending with the first.",
      "Change the colours into fruits of the same colour and output the fruits in reverse order.",
      "Going through the colours from the end to the beginning, name the fruit that has each colour.",
  }));
  f.push_back(seen_family("filter_longer_then_uppercase", I::Words, {Op::FilterLonger, Op::Upper}, {
      "Keep only the words with more than {n} letters and write them in capital letters.",
      "Remove every word of {n} letters or fewer, then convert the remaining words to upper case.",
      "Write the words longer than {n} letters, in order, using only uppercase letters.",
      "Find the words whose length exceeds {n} letters and capitalise every letter of them.",
      "Drop the short words, those of at most {n} letters, and shout the others in block capitals.",
  }));
  f.push_back(seen_family("dedupe_then_sort", I::WordsWithRepeats, {Op::Dedupe, Op::SortAlpha}, {
      "Remove the duplicate words and then sort the remaining words alphabetically.",
      "Write each distinct word only once, and put them in alphabetical order.",
      "Drop the repeated words, then arrange what is left in dictionary order.",
      "List the unique words of the input, sorted from A to Z, without repeats.",
      "Put the words in alphabetical order, listing a word only once even if it is repeated.",
  }));
  f.push_back(seen_family("reverse_then_join", I::Words, {Op::Reverse, Op::Join}, {
      "Reverse the order of the words and join them into one line with {sep} between them.",
      "Write the words backwards, last word first, separated by {sep}.",
      "Turn the list around and connect the words using {sep} as the separator.",
      "Put the words in reverse order and glue them together with {sep} between neighbours.",
      "Starting from the last word and moving to the first, write the words with {sep} between each pair.",
  }));
  f.push_back(seen_family("greater_then_count", I::Numbers, {Op::FilterGreater, Op::CountItems}, {
      "Count how many numbers in the list are greater than {n}.",
      "How many of the numbers are bigger than {n}? Answer with a number.",
      "Keep the numbers above {n}, then write how many of them there are.",
      "Find the number of values exceeding {n} in the list and output it.",
      "Tell me the count of numbers in the input that are larger than {n}.",
  }));
  // ---- held-out compositions of seen ops (unseen split only) -------------------------------
  f.push_back(held_out_family("sort_then_join", I::Words, {Op::SortAlpha, Op::Join}, {
      "Sort the words alphabetically and join them into one line with {sep} between them.",
      "Write the words in dictionary order, separated by {sep}.",
      "Arrange the list from A to Z and connect the words using {sep} as the separator.",
      "Put the words in alphabetical order and glue them together with {sep} between neighbours.",
  }));
  f.push_back(held_out_family("dedupe_then_reverse", I::WordsWithRepeats, {Op::Dedupe, Op::Reverse}, {
      "Remove the duplicate words, keeping the first copy of each, and then reverse the order of the list.",
      "Write each distinct word once, in the order of its first appearance, but backwards.",
      "Drop the repeated words and write what remains from the last word to the first.",
      "Keep one copy of every word, then turn the resulting list around.",
  }));
  f.push_back(held_out_family("even_then_max", I::Numbers, {Op::FilterEven, Op::Max}, {
      "Find the largest even number in the list and write it.",
      "Remove the odd numbers, then report the biggest of the numbers that remain.",
      "Which even number in the list has the greatest value? Answer with that number.",
      "Keep only the numbers divisible by two and output the maximum among them.",
  }));
  f.push_back(held_out_family("reverse_then_kth", I::Words, {Op::Reverse, Op::Kth}, {
      "Reverse the order of the words and then write the {k} word of the reversed list.",
      "Counting from the right end of the list, which word is in the {k} position?",
      "Write the {k} word from the end of the list, counting backwards from the last word.",
      "Read the list from right to left and output the {k} word you come across.",
  }));
  f.push_back(held_out_family("fruit_then_sort", I::Colours, {Op::ColourToFruit, Op::SortAlpha}, {
      "Replace each colour with the fruit of that colour and then sort the fruits alphabetically.",
      "Write the fruit matching each colour, arranged in dictionary order.",
      "Turn the colours into fruits of the same colour and list those fruits from A to Z.",
      "Change every colour into its fruit and output the fruits in alphabetical order.",
  }));
  f.push_back(held_out_family("filter_start_then_uppercase", I::Words, {Op::FilterStart, Op::Upper}, {
      "Keep only the words that start with the letter {letter} and write them in capital letters.",
      "Remove every word not beginning with the letter {letter}, then convert the rest to upper case.",
      "Write the words whose first letter is {letter}, in order, using only uppercase letters.",
      "Find the words starting with the letter {letter} and capitalise every letter of them.",
  }));
  f.push_back(held_out_family("sort_desc_then_kth", I::Numbers, {Op::SortNumDesc, Op::Kth}, {
      "Sort the numbers from largest to smallest and then write the {k} number of the sorted list.",
      "Which number is in the {k} place once the list is sorted from high to low? Answer with that number.",
      "Put the numbers in descending order and give the one in the {k} position.",
      "Arrange the numbers from high to low, then pick out the {k} of them.",
  }));
  f.push_back(held_out_family("longer_then_count", I::Words, {Op::FilterLonger, Op::CountItems}, {
      "Count how many words in the list have more than {n} letters.",
      "How many of the words are longer than {n} letters? Answer with a number.",
      "Keep the words with more than {n} letters, then write how many of them there are.",
      "Find the number of words whose length exceeds {n} letters and output it.",
  }));
  // ---- hard: three ops, multi-sentence instructions ----------------------------------------
  f.push_back(hard_family("hard_dedupe_sort_join", I::WordsWithRepeats, {Op::Dedupe, Op::SortAlpha, Op::Join}));
  f.push_back(hard_family("hard_start_reverse_upper", I::Words, {Op::FilterStart, Op::Reverse, Op::Upper}));
  f.push_back(hard_family("hard_even_desc_kth", I::Numbers, {Op::FilterEven, Op::SortNumDesc, Op::Kth}));
  f.push_back(hard_family("hard_fruit_dedupe_count", I::Colours, {Op::ColourToFruit, Op::Dedupe, Op::CountItems}));
  f.push_back(hard_family("hard_longer_sort_first", I::Words, {Op::FilterLonger, Op::SortAlpha, Op::First}));
  f.push_back(hard_family("hard_rotate_reverse_join", I::Words, {Op::Rotate, Op::Reverse, Op::Join}));
  f.push_back(hard_family("hard_greater_sort_join", I::Numbers, {Op::FilterGreater, Op::SortNum, Op::Join}));
  f.push_back(hard_family("hard_add_even_count", I::Numbers, {Op::AddEach, Op::FilterEven, Op::CountItems}));
  f.push_back(hard_family("hard_sound_reverse_join", I::Animals, {Op::AnimalToSound, Op::Reverse, Op::Join}));
  return f;
}

}  // namespace detail

/// Every built-in family (spelling families included), validated: unique names, no two steps
/// reading the same parameter, every template names exactly the parameters of its steps.
inline const std::vector<TaskFamily>& builtin_families() {
  static const std::vector<TaskFamily> families = [] {
    auto f = detail::make_builtin_families();
    for (std::size_t i = 0; i < f.size(); ++i) {
      const auto& fam = f[i];
      for (std::size_t j = 0; j < i; ++j)
        CONDENSE_CHECK(f[j].name != fam.name, detail::task_op, "duplicate family name ", fam.name);
      CONDENSE_CHECK(!fam.steps.empty() && fam.steps.size() <= 3, detail::task_op, fam.name, ": 1 to 3 steps");
      const auto kinds = fam.params();
      for (std::size_t a = 0; a < kinds.size(); ++a)
        for (std::size_t b = 0; b < a; ++b)
          CONDENSE_CHECK(kinds[a] != kinds[b], detail::task_op, fam.name, ": two steps read the same parameter");
      for (const auto& t : fam.templates) {
        std::vector<ParamKind> seen;
        for (const auto& s : template_slots(t.text)) seen.push_back(slot_kind(s));
        for (const ParamKind k : kinds)
          CONDENSE_CHECK(std::find(seen.begin(), seen.end(), k) != seen.end(), detail::task_op, fam.name,
                         ": template lacks the slot {", slot_name(k), "}: \"", t.text, "\"");
        for (const ParamKind k : seen)
          CONDENSE_CHECK(std::find(kinds.begin(), kinds.end(), k) != kinds.end(), detail::task_op, fam.name,
                         ": template has the slot {", slot_name(k), "} that no step reads: \"", t.text, "\"");
      }
    }
    return f;
  }();
  return families;
}

}  // namespace condense::data
