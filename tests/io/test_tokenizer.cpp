// Tokenizers: ByteTokenizer ids and exact round trips, WordTokenizer splitting, vocabulary
// building (frequency order, min_count, max_size), unknown words, decode spacing and round
// trips, special tokens (reserved ids, added tokens, parse_special, skip_special), and
// save/load with validation of malformed files.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "condense/io/tokenizer.hpp"
#include "condense/train/metrics.hpp"

namespace test_tokenizer {

using namespace condense;
using namespace condense::io;
using Ids = std::vector<std::int64_t>;

namespace {

std::string temp_file(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("condense_tok_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove(p);
  return p.string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("ByteTokenizer: ids, special tokens and exact round trips") {
  ByteTokenizer t;
  CHECK(t.kind() == "byte");
  CHECK(t.vocab_size() == 260);
  CHECK(t.pad_id() == 256);
  CHECK(t.bos_id() == 257);
  CHECK(t.eos_id() == 258);
  CHECK(t.unk_id() == 259);
  CHECK(t.id_of("<eos>") == 258);
  CHECK(t.id_of("A") == 65);
  CHECK(t.token(65) == "A");
  CHECK(t.token(257) == "<bos>");
  CHECK(t.is_special(256));
  CHECK(!t.is_special(255));

  CHECK(t.encode("Hi!") == Ids{72, 105, 33});
  CHECK(t.encode("Hi", {.add_bos = true, .add_eos = true}) == Ids{257, 72, 105, 258});
  CHECK(t.encode("\xc3\xa9") == Ids{0xc3, 0xa9});
  // Any bytes round-trip exactly, including NUL, invalid UTF-8 and text that looks special.
  const std::string nasty("a\0b\xff\xfe <eos> \n\t", 14);
  CHECK(t.decode(t.encode(nasty)) == nasty);
  CHECK(t.encode(nasty).size() == nasty.size());
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  CHECK(t.decode(t.encode(all)) == all);

  const auto gist = t.add_special_token("<gist>");
  CHECK(gist == 260);
  CHECK(t.vocab_size() == 261);
  CHECK(t.add_special_token("<gist>") == 260);  // already there: same id
  CHECK(t.add_special_token("<sep>") == 261);
  CHECK(t.encode("x<gist>y") == Ids{'x', '<', 'g', 'i', 's', 't', '>', 'y'});
  const auto parsed = t.encode("x<gist><gist>y<sep>", {.parse_special = true});
  CHECK(parsed == Ids{'x', 260, 260, 'y', 261});
  CHECK(t.decode(parsed) == "x<gist><gist>y<sep>");
  CHECK(t.decode(parsed, {.skip_special = true}) == "xy");
  CHECK(t.decode(Ids{'a', 259}, {.skip_special = true}) == "a<unk>");

  CHECK_THROWS_WITH_AS(t.decode(Ids{1, 262}), "[ByteTokenizer] decode: id 262 out of range (vocab size 262)", Error);
  CHECK_THROWS_WITH_AS(t.decode(Ids{-1}), "[ByteTokenizer] decode: id -1 out of range (vocab size 262)", Error);
  CHECK_THROWS_WITH_AS(t.token(999), "[ByteTokenizer] token: id 999 out of range (vocab size 262)", Error);
  CHECK_THROWS_WITH_AS(t.id_of("<nope>"), "[ByteTokenizer] no token '<nope>' in the vocabulary", Error);
  CHECK_THROWS_WITH_AS(t.add_special_token("a"), "[ByteTokenizer] add_special_token: 'a' is already a regular token",
                       Error);
  CHECK_THROWS_WITH_AS(t.add_special_token(""), "[ByteTokenizer] a special token name cannot be empty", Error);
  CHECK_THROWS_WITH_AS(t.add_special_token("<a b>"), "[ByteTokenizer] special token name '<a b>' contains whitespace",
                       Error);
}

TEST_CASE("parse_special prefers the longest name at a position") {
  ByteTokenizer t;
  const auto a = t.add_special_token("<g>");
  const auto b = t.add_special_token("<g>>");
  CHECK(t.encode("<g>><g>", {.parse_special = true}) == Ids{b, a});
  CHECK(t.encode("<<g>", {.parse_special = true}) == Ids{'<', a});
}

TEST_CASE("WordTokenizer splitting") {
  WordTokenizer t;
  using S = std::vector<std::string>;
  CHECK(t.split_words("Hello, world!") == S{"Hello", ",", "world", "!"});
  CHECK(t.split_words("  don't  stop\tthe well-known (test).") ==
        S{"don't", "stop", "the", "well-known", "(", "test", ")", "."});
  CHECK(t.split_words("pi is 3.14, or 1,000; not 3. 'quoted' -x- --") ==
        S{"pi", "is", "3.14", ",", "or", "1,000", ";", "not", "3", ".", "'", "quoted", "'", "-", "x", "-", "-", "-"});
  CHECK(t.split_words("caf\xc3\xa9 na\xc3\xafve") == S{"caf\xc3\xa9", "na\xc3\xafve"});
  CHECK(t.split_words("<gist>") == S{"<", "gist", ">"});
  CHECK(t.split_words(" \n ").empty());
}

TEST_CASE("WordTokenizer vocabulary: reserved ids, frequency order, min_count, max_size") {
  const std::vector<std::string> corpus{"the cat sat on the mat.", "The cat ran.", "a dog, the dog"};
  const auto t = WordTokenizer::build(corpus);
  CHECK(t.kind() == "word");
  CHECK(t.pad_id() == 0);
  CHECK(t.bos_id() == 1);
  CHECK(t.eos_id() == 2);
  CHECK(t.unk_id() == 3);
  CHECK(t.token(0) == "<pad>");
  CHECK(t.token(3) == "<unk>");
  // Counts: the 3, "." 2, cat 2, dog 2, then 1 each in byte order: "," The a mat on ran sat.
  const std::vector<std::string> expected{"the", ".", "cat", "dog", ",", "The", "a", "mat", "on", "ran", "sat"};
  REQUIRE(t.vocab_size() == 4 + static_cast<std::int64_t>(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(t.token(static_cast<std::int64_t>(4 + i)) == expected[i]);

  const auto frequent = WordTokenizer::build(corpus, {.min_count = 2});
  CHECK(frequent.vocab_size() == 8);
  CHECK(frequent.encode("the bird sat.") == Ids{4, 3, 3, 5});
  const auto small = WordTokenizer::build(corpus, {.max_size = 6});
  CHECK(small.vocab_size() == 6);
  CHECK(small.token(5) == ".");
  const auto lower = WordTokenizer::build(corpus, {.lowercase = true});
  CHECK(lower.id_of("the") == 4);
  CHECK(!lower.find("The").has_value());
  CHECK(lower.encode("THE Cat") == Ids{lower.id_of("the"), lower.id_of("cat")});

  CHECK_THROWS_WITH_AS(WordTokenizer::build(corpus, {.min_count = 0}), "[WordTokenizer] min_count must be >= 1, got 0",
                       Error);
  CHECK_THROWS_WITH_AS(WordTokenizer::build(corpus, {.max_size = 3}),
                       "[WordTokenizer] max_size must be 0 (no limit) or >= 4 (the reserved tokens), got 3", Error);
}

TEST_CASE("WordTokenizer encode/decode round trips") {
  const std::vector<std::string> corpus{"The quick (brown) fox: it's 3.14 or 50% faster, isn't it?",
                                        "Well-known [facts] {are} fine; yes! * & more"};
  auto t = WordTokenizer::build(corpus);
  for (const auto& text : corpus) {
    const auto ids = t.encode(text);
    CHECK(t.decode(ids) == train::normalize_whitespace(text));
    CHECK(t.encode(t.decode(ids)) == ids);
  }
  // Conventional spacing survives whitespace changes; other punctuation gets spaces.
  CHECK(t.decode(t.encode("  The   quick\n(brown)  fox?  ")) == "The quick (brown) fox?");
  CHECK(t.decode(t.encode("it's *The*")) == "it's * The *");
  // Unknown words.
  const auto ids = t.encode("The slow fox");
  CHECK(ids == Ids{t.id_of("The"), t.unk_id(), t.id_of("fox")});
  CHECK(t.decode(ids) == "The <unk> fox");
  CHECK(t.decode(ids, {.skip_special = true}) == "The <unk> fox");
  // Token-level round trip for arbitrary id sequences without <unk>.
  for (std::int64_t a = 4; a < t.vocab_size(); ++a)
    for (std::int64_t b = 4; b < t.vocab_size(); ++b) {
      const Ids pair{a, b, a};
      CHECK(t.encode(t.decode(pair)) == pair);
    }

  // Special tokens: appended at the end, recognised only with parse_special.
  const auto n = t.vocab_size();
  const auto gist = t.add_special_token("<gist>");
  CHECK(gist == n);
  CHECK(t.vocab_size() == n + 1);
  CHECK(t.token(gist) == "<gist>");
  CHECK(t.is_special(gist));
  const auto with = t.encode("The fox <gist><gist> it's", {.add_bos = true, .add_eos = true, .parse_special = true});
  CHECK(with == Ids{1, t.id_of("The"), t.id_of("fox"), gist, gist, t.id_of("it's"), 2});
  CHECK(t.decode(with) == "<bos> The fox <gist> <gist> it's <eos>");
  CHECK(t.decode(with, {.skip_special = true}) == "The fox it's");
  CHECK(t.encode(t.decode(with), {.parse_special = true}) == with);
  CHECK(t.encode("<gist>") == Ids{3, 3, 3});  // '<', 'gist', '>' are not in the vocabulary
  CHECK_THROWS_WITH_AS(t.add_special_token("fox"), "[WordTokenizer] add_special_token: 'fox' is already a regular token",
                       Error);
  const std::string out_of_range =
      "[WordTokenizer] decode: id " + std::to_string(n + 1) + " out of range (vocab size " + std::to_string(n + 1) + ")";
  CHECK_THROWS_WITH_AS(t.decode(Ids{n + 1}), out_of_range.c_str(), Error);
}

TEST_CASE("tokenizers save and load") {
  SUBCASE("byte") {
    ByteTokenizer t;
    t.add_special_token("<gist>");
    const auto path = temp_file("byte.json");
    t.save(path);
    const auto loaded = ByteTokenizer::load(path);
    CHECK(loaded.vocab_size() == 261);
    CHECK(loaded.id_of("<gist>") == 260);
    CHECK(loaded.to_json() == t.to_json());
    const auto any = load_tokenizer(path);
    CHECK(any->kind() == "byte");
    CHECK(any->encode("a<gist>", {.parse_special = true}) == Ids{'a', 260});
    std::filesystem::remove(path);
  }
  SUBCASE("word") {
    auto t = WordTokenizer::build({"one two two three three three", "Four, five."}, {.lowercase = true});
    t.add_special_token("<gist>");
    const auto path = temp_file("word.json");
    t.save(path);
    const auto loaded = WordTokenizer::load(path);
    CHECK(loaded.to_json() == t.to_json());
    CHECK(loaded.lowercase());
    CHECK(loaded.vocab_size() == t.vocab_size());
    for (std::int64_t id = 0; id < t.vocab_size(); ++id) CHECK(loaded.token(id) == t.token(id));
    const std::string text = "Three two <gist> four, six.";
    CHECK(loaded.encode(text, {.parse_special = true}) == t.encode(text, {.parse_special = true}));
    const auto any = load_tokenizer(path);
    CHECK(any->kind() == "word");
    CHECK(any->is_special(any->id_of("<gist>")));
    std::filesystem::remove(path);
  }
}

TEST_CASE("malformed tokenizer files are rejected with the reason") {
  const auto path = temp_file("bad.json");
  auto expect = [&](const std::string& text, const std::string& message) {
    write_file(path, text);
    CHECK_THROWS_WITH_AS(load_tokenizer(path), ("[tokenizer] " + path + ": " + message).c_str(), Error);
  };
  const std::string head = R"("format": "condense-tokenizer-1", )";
  const std::string reserved = R"("<pad>", "<bos>", "<eos>", "<unk>")";
  write_file(path, "{");
  CHECK_THROWS_WITH_AS(load_tokenizer(path), doctest::Contains(("[tokenizer] " + path + ": invalid JSON: ").c_str()), Error);
  expect("[]", "expected a JSON object with a string \"type\"");
  expect("{" + head + R"("type": "bpe"})", "unknown tokenizer type \"bpe\" (expected \"byte\" or \"word\")");
  expect(R"({"format": "v0", "type": "byte", "special_tokens": []})",
         "\"format\" must be \"condense-tokenizer-1\", got \"v0\"");
  expect("{" + head + R"("type": "byte"})", "missing key \"special_tokens\"");
  expect("{" + head + R"("type": "byte", "special_tokens": [], "extra": 1})", "unexpected key \"extra\"");
  expect("{" + head + R"("type": "byte", "special_tokens": ["<pad>", "<bos>"]})",
         "\"special_tokens\" must start with <pad>, <bos>, <eos>, <unk>");
  expect("{" + head + R"("type": "byte", "special_tokens": ["<pad>", "<eos>", "<bos>", "<unk>"]})",
         "\"special_tokens\"[1] must be <bos>, got '<eos>'");
  expect("{" + head + R"("type": "byte", "special_tokens": [)" + reserved + R"(, 7]})",
         "\"special_tokens\"[4] is not a string");
  expect("{" + head + R"("type": "byte", "special_tokens": [)" + reserved + R"(, "<g>", "<g>"]})",
         "special token '<g>' appears twice");
  expect("{" + head + R"("type": "byte", "special_tokens": [)" + reserved + R"(, "x"]})",
         "\"special_tokens\"[4]: [ByteTokenizer] add_special_token: 'x' is already a regular token");

  const std::string word = "{" + head + R"("type": "word", "lowercase": false, )";
  expect(word + R"("tokens": [)" + reserved + R"(, "a"], "special_ids": [0, 1, 2, 3], "x": 0})",
         "unexpected key \"x\"");
  expect(word + R"("tokens": [)" + reserved + R"(, "a", "a"], "special_ids": [0, 1, 2, 3]})",
         "token 'a' appears twice");
  expect(word + R"("tokens": [)" + reserved + R"(, "a b"], "special_ids": [0, 1, 2, 3]})",
         "\"tokens\"[4] = 'a b' is not a single word or punctuation mark");
  expect(word + R"("tokens": [)" + reserved + R"(, "a."], "special_ids": [0, 1, 2, 3]})",
         "\"tokens\"[4] = 'a.' is not a single word or punctuation mark");
  expect(word + R"("tokens": [)" + reserved + R"(, ""], "special_ids": [0, 1, 2, 3]})",
         "\"tokens\"[4] = '' is not a single word or punctuation mark");
  expect(word + R"("tokens": [)" + reserved + R"(, "a"], "special_ids": [0, 1, 2]})",
         "\"special_ids\" must start with 0, 1, 2, 3");
  expect(word + R"("tokens": [)" + reserved + R"(, "a"], "special_ids": [0, 1, 2, 3, 9]})",
         "\"special_ids\"[4] = 9 is out of range (5 tokens)");
  expect(word + R"("tokens": [)" + reserved + R"(, "<a>", "<b>"], "special_ids": [0, 1, 2, 3, 5, 4]})",
         "\"special_ids\" must be increasing");
  expect(word + R"("tokens": [)" + reserved + R"(, "a", "<g h>"], "special_ids": [0, 1, 2, 3, 5]})",
         "\"tokens\"[5]: [WordTokenizer] special token name '<g h>' contains whitespace");
  expect(word + R"("tokens": [)" + reserved + R"(, "<g>", "<g>"], "special_ids": [0, 1, 2, 3, 4, 5]})",
         "token '<g>' appears twice");
  expect("{" + head + R"("type": "word", "lowercase": true, "tokens": [)" + reserved +
             R"(, "Up"], "special_ids": [0, 1, 2, 3]})",
         "\"tokens\"[4] = 'Up' is not a single word or punctuation mark in lower case");
  expect("{" + head + R"("type": "word", "lowercase": 1, "tokens": [], "special_ids": []})",
         "\"lowercase\" must be true or false");

  // A valid hand-written file with an added special token.
  write_file(path, word + R"("tokens": [)" + reserved + R"(, "a", "<g>", "b"], "special_ids": [0, 1, 2, 3, 5]})");
  const auto t = WordTokenizer::load(path);
  CHECK(t.encode("a <g> b", {.parse_special = true}) == Ids{4, 5, 6});
  CHECK(t.is_special(5));
  CHECK(!t.is_special(6));
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(load_tokenizer(path), ("[tokenizer] cannot open '" + path + "'").c_str(), Error);
}

}  // namespace test_tokenizer
