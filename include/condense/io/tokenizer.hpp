// Tokenizers: ByteTokenizer (ids 0..255 are the bytes, special tokens after them) and
// WordTokenizer (a frequency-ordered vocabulary of words and punctuation built from a
// corpus, special tokens at fixed low ids), both behind the Tokenizer interface, with
// user-added special tokens (e.g. "<gist>"), encode/decode, and save/load of the vocabulary
// as a validated JSON file.
//
// Special tokens and their ids:
//   ByteTokenizer:  <pad> 256, <bos> 257, <eos> 258, <unk> 259, added tokens 260, 261, ...
//   WordTokenizer:  <pad> 0, <bos> 1, <eos> 2, <unk> 3, words 4 .. n-1, added tokens n, n+1, ...
// Added tokens always take the next free id (the vocabulary size before adding), so a model's
// embedding grows by one row per added token.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "condense/core/error.hpp"

namespace condense::io {

/// Name of the padding token.
inline constexpr std::string_view pad_token = "<pad>";
/// Name of the beginning-of-sequence token.
inline constexpr std::string_view bos_token = "<bos>";
/// Name of the end-of-sequence token.
inline constexpr std::string_view eos_token = "<eos>";
/// Name of the unknown-word token (never produced by ByteTokenizer::encode).
inline constexpr std::string_view unk_token = "<unk>";
/// The "format" value of tokenizer files written by this version.
inline constexpr std::string_view tokenizer_format = "condense-tokenizer-1";

/// Options of Tokenizer::encode.
struct EncodeOptions {
  bool add_bos = false;        ///< prepend <bos>
  bool add_eos = false;        ///< append <eos>
  /// Recognise special-token names in the text ("a <gist> b" gives the <gist> id); off by
  /// default, so that user text cannot inject control tokens.
  bool parse_special = false;
};

/// Options of Tokenizer::decode.
struct DecodeOptions {
  /// Drop special tokens instead of writing their names (<unk> is kept: it stands for text).
  bool skip_special = false;
};

namespace detail {

/// Hash for heterogeneous lookup of std::string keys by std::string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

/// An unordered map from strings, searchable by std::string_view.
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

/// ASCII whitespace: space, \t, \n, \v, \f, \r.
inline bool tok_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
/// ASCII punctuation: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
inline bool tok_punct(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}
/// ASCII digit.
inline bool tok_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/// A byte that belongs to words: not whitespace, not ASCII punctuation (UTF-8 bytes included).
inline bool tok_word(unsigned char c) { return !tok_space(c) && !tok_punct(c); }

/// A valid special-token name: non-empty, no whitespace.
inline void check_special_name(std::string_view op, std::string_view name) {
  CONDENSE_CHECK(!name.empty(), op, "a special token name cannot be empty");
  for (const char c : name)
    CONDENSE_CHECK(!tok_space(static_cast<unsigned char>(c)), op, "special token name '", name,
                   "' contains whitespace");
}

/// Splits `text` at occurrences of the special-token names in `specials` (longest match at
/// the earliest position); calls on_text(segment) for the text between them and
/// on_special(id) for each match.
template <class OnText, class OnSpecial>
void split_specials(std::string_view text, const StringMap<std::int64_t>& specials, OnText&& on_text,
                    OnSpecial&& on_special) {
  std::array<bool, 256> first{};
  for (const auto& [name, id] : specials) first[static_cast<unsigned char>(name[0])] = true;
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    if (first[static_cast<unsigned char>(text[i])]) {
      std::size_t best_len = 0;
      std::int64_t best_id = -1;
      for (const auto& [name, id] : specials) {
        if (name.size() > best_len && text.substr(i, name.size()) == name) {
          best_len = name.size();
          best_id = id;
        }
      }
      if (best_len > 0) {
        if (i > start) on_text(text.substr(start, i - start));
        on_special(best_id);
        i += best_len;
        start = i;
        continue;
      }
    }
    ++i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

/// Reads a whole file (throws naming it when it cannot be opened).
inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CONDENSE_CHECK(in.good(), "tokenizer", "cannot open '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Parses JSON text, turning parse errors into condense::Error naming `what`.
inline nlohmann::json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer", what, ": invalid JSON: ", e.what());
  }
}

/// Checks that `j` is an object with exactly the given keys (all required).
inline void check_keys(const nlohmann::json& j, const std::string& what, const std::vector<std::string>& keys) {
  CONDENSE_CHECK(j.is_object(), "tokenizer", what, ": expected a JSON object at the top level");
  for (const auto& k : keys) CONDENSE_CHECK(j.contains(k), "tokenizer", what, ": missing key \"", k, "\"");
  for (const auto& [k, v] : j.items())
    CONDENSE_CHECK(std::find(keys.begin(), keys.end(), k) != keys.end(), "tokenizer", what, ": unexpected key \"", k,
                   "\"");
}

/// A list of strings from JSON array `j[key]`.
inline std::vector<std::string> string_list(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const auto& a = j.at(key);
  CONDENSE_CHECK(a.is_array(), "tokenizer", what, ": \"", key, "\" must be an array of strings");
  std::vector<std::string> out;
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CONDENSE_CHECK(a[i].is_string(), "tokenizer", what, ": \"", key, "\"[", i, "] is not a string");
    out.push_back(a[i].get<std::string>());
  }
  return out;
}

}  // namespace detail

/// A tokenizer: text <-> token ids. Implementations: ByteTokenizer, WordTokenizer.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// "byte" or "word" (the "type" field of the saved file).
  virtual std::string kind() const = 0;
  /// Number of ids (regular and special tokens); ids are 0 .. vocab_size() - 1.
  virtual std::int64_t vocab_size() const = 0;
  /// Id of <pad>.
  virtual std::int64_t pad_id() const = 0;
  /// Id of <bos>.
  virtual std::int64_t bos_id() const = 0;
  /// Id of <eos>.
  virtual std::int64_t eos_id() const = 0;
  /// Id of <unk>.
  virtual std::int64_t unk_id() const = 0;

  /// Token ids of `text` (see EncodeOptions).
  std::vector<std::int64_t> encode(std::string_view text, const EncodeOptions& options = {}) const {
    std::vector<std::int64_t> ids;
    if (options.add_bos) ids.push_back(bos_id());
    if (options.parse_special) {
      detail::split_specials(
          text, specials_, [&](std::string_view part) { encode_text(part, ids); },
          [&](std::int64_t id) { ids.push_back(id); });
    } else {
      encode_text(text, ids);
    }
    if (options.add_eos) ids.push_back(eos_id());
    return ids;
  }

  /// Text of `ids`; special tokens are written as their names unless skipped. Throws for an
  /// id outside [0, vocab_size()).
  std::string decode(std::span<const std::int64_t> ids, const DecodeOptions& options = {}) const {
    for (const auto id : ids)
      CONDENSE_CHECK(id >= 0 && id < vocab_size(), kind_name(), "decode: id ", id, " out of range (vocab size ",
                     vocab_size(), ")");
    return decode_checked(ids, options);
  }

  /// The text of one token: its bytes, word or special name. Throws for an id out of range.
  std::string token(std::int64_t id) const {
    CONDENSE_CHECK(id >= 0 && id < vocab_size(), kind_name(), "token: id ", id, " out of range (vocab size ",
                   vocab_size(), ")");
    return token_checked(id);
  }

  /// The id of a token given by its text (a special name, a word, or for ByteTokenizer a
  /// single byte), if there is one.
  virtual std::optional<std::int64_t> find(std::string_view token) const = 0;

  /// The id of a token given by its text; throws when there is none.
  std::int64_t id_of(std::string_view token) const {
    const auto id = find(token);
    CONDENSE_CHECK(id.has_value(), kind_name(), "no token '", token, "' in the vocabulary");
    return *id;
  }

  /// True for special tokens (reserved and added).
  bool is_special(std::int64_t id) const { return special_ids_.count(id) > 0; }

  /// The special tokens as (name, id), by increasing id.
  std::vector<std::pair<std::string, std::int64_t>> special_tokens() const {
    std::vector<std::pair<std::string, std::int64_t>> out;
    for (const auto& [id, name] : special_ids_) out.emplace_back(name, id);
    return out;
  }

  /// Adds a special token (e.g. "<gist>") with the next free id, vocab_size() before the
  /// call, and returns that id; a name that is already special returns its existing id. The
  /// name must be non-empty, contain no whitespace and not be a regular token.
  std::int64_t add_special_token(const std::string& name) {
    detail::check_special_name(kind_name(), name);
    if (const auto it = specials_.find(name); it != specials_.end()) return it->second;
    CONDENSE_CHECK(!find(name).has_value(), kind_name(), "add_special_token: '", name,
                   "' is already a regular token");
    const std::int64_t id = vocab_size();
    append_special(name);
    register_special(name, id);
    return id;
  }

  /// The vocabulary as JSON (the content of save()).
  virtual nlohmann::json to_json() const = 0;

  /// Writes the vocabulary as a JSON file (load with load_tokenizer or the class's load()).
  void save(const std::string& path) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    CONDENSE_CHECK(out.good(), kind_name(), "cannot write '", path, "'");
    out << to_json().dump(1) << '\n';
    out.flush();
    CONDENSE_CHECK(out.good(), kind_name(), "error while writing '", path, "'");
  }

 protected:
  Tokenizer() = default;
  Tokenizer(const Tokenizer&) = default;
  Tokenizer& operator=(const Tokenizer&) = default;

  /// Appends the ids of plain text (no special-token parsing) to `ids`.
  virtual void encode_text(std::string_view text, std::vector<std::int64_t>& ids) const = 0;
  /// decode() with ids already range-checked.
  virtual std::string decode_checked(std::span<const std::int64_t> ids, const DecodeOptions& options) const = 0;
  /// token() with the id already range-checked.
  virtual std::string token_checked(std::int64_t id) const = 0;
  /// Makes room for a new special token at id vocab_size().
  virtual void append_special(const std::string& name) = 0;
  /// The class name used in error messages.
  virtual const char* kind_name() const = 0;

  /// Records a special token (name <-> id).
  void register_special(const std::string& name, std::int64_t id) {
    specials_.emplace(name, id);
    special_ids_.emplace(id, name);
  }
  /// The id of a special token, if `name` is one.
  std::optional<std::int64_t> find_special(std::string_view name) const {
    const auto it = specials_.find(name);
    if (it == specials_.end()) return std::nullopt;
    return it->second;
  }
  /// The name of special token `id` (which must be special).
  const std::string& special_name(std::int64_t id) const { return special_ids_.at(id); }

 private:
  detail::StringMap<std::int64_t> specials_;
  std::map<std::int64_t, std::string> special_ids_;
};

/// Bytes as tokens: ids 0..255 are the byte values, then <pad> 256, <bos> 257, <eos> 258,
/// <unk> 259 and added special tokens 260, 261, ... Every string encodes (no <unk>), and
/// decode(encode(text)) == text exactly, for any bytes (also with parse_special, since
/// special tokens decode to their names).
class ByteTokenizer final : public Tokenizer {
 public:
  /// Number of byte ids.
  static constexpr std::int64_t byte_count = 256;

  /// The 256 bytes and the four reserved special tokens.
  ByteTokenizer() {
    for (const auto name : {pad_token, bos_token, eos_token, unk_token}) add_special_token(std::string(name));
  }

  std::string kind() const override { return "byte"; }
  std::int64_t vocab_size() const override { return byte_count + static_cast<std::int64_t>(names_.size()); }
  std::int64_t pad_id() const override { return 256; }
  std::int64_t bos_id() const override { return 257; }
  std::int64_t eos_id() const override { return 258; }
  std::int64_t unk_id() const override { return 259; }

  std::optional<std::int64_t> find(std::string_view token) const override {
    if (token.size() == 1) return static_cast<std::int64_t>(static_cast<unsigned char>(token[0]));
    return find_special(token);
  }

  nlohmann::json to_json() const override {
    nlohmann::json j;
    j["format"] = tokenizer_format;
    j["type"] = "byte";
    j["special_tokens"] = names_;
    return j;
  }

  /// Rebuilds a ByteTokenizer from to_json() output; `what` names the source in errors.
  /// Checks the format and type, that the first four special tokens are <pad>, <bos>, <eos>,
  /// <unk>, and that every name is valid and unique.
  static ByteTokenizer from_json(const nlohmann::json& j, const std::string& what) {
    detail::check_keys(j, what, {"format", "type", "special_tokens"});
    check_header(j, what, "byte");
    const auto names = detail::string_list(j, "special_tokens", what);
    check_reserved(names, what, "special_tokens");
    ByteTokenizer t;
    for (std::size_t i = 4; i < names.size(); ++i) {
      CONDENSE_CHECK(!t.find_special(names[i]).has_value(), "tokenizer", what, ": special token '", names[i],
                     "' appears twice");
      try {
        t.add_special_token(names[i]);
      } catch (const Error& e) {
        fail("tokenizer", what, ": \"special_tokens\"[", i, "]: ", e.what());
      }
    }
    return t;
  }

  /// Loads a file written by save().
  static ByteTokenizer load(const std::string& path) {
    return from_json(detail::parse_json(detail::read_text_file(path), path), path);
  }

  /// Checks "format" and "type" of a tokenizer file.
  static void check_header(const nlohmann::json& j, const std::string& what, std::string_view type) {
    CONDENSE_CHECK(j.at("format").is_string() && j.at("format").get<std::string>() == tokenizer_format, "tokenizer",
                   what, ": \"format\" must be \"", tokenizer_format, "\", got ", j.at("format").dump());
    CONDENSE_CHECK(j.at("type").is_string() && j.at("type").get<std::string>() == type, "tokenizer", what,
                   ": \"type\" must be \"", type, "\", got ", j.at("type").dump());
  }

  /// Checks that a saved list starts with the four reserved special tokens in order.
  static void check_reserved(const std::vector<std::string>& names, const std::string& what, std::string_view key) {
    const std::array<std::string_view, 4> reserved{pad_token, bos_token, eos_token, unk_token};
    CONDENSE_CHECK(names.size() >= 4, "tokenizer", what, ": \"", key, "\" must start with <pad>, <bos>, <eos>, <unk>");
    for (std::size_t i = 0; i < 4; ++i)
      CONDENSE_CHECK(names[i] == reserved[i], "tokenizer", what, ": \"", key, "\"[", i, "] must be ", reserved[i],
                     ", got '", names[i], "'");
  }

 protected:
  void encode_text(std::string_view text, std::vector<std::int64_t>& ids) const override {
    ids.reserve(ids.size() + text.size());
    for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
  }
  std::string decode_checked(std::span<const std::int64_t> ids, const DecodeOptions& options) const override {
    std::string out;
    out.reserve(ids.size());
    for (const auto id : ids) {
      if (id < byte_count) {
        out += static_cast<char>(static_cast<unsigned char>(id));
      } else if (!options.skip_special || id == unk_id()) {
        out += names_[static_cast<std::size_t>(id - byte_count)];
      }
    }
    return out;
  }
  std::string token_checked(std::int64_t id) const override {
    if (id < byte_count) return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
    return names_[static_cast<std::size_t>(id - byte_count)];
  }
  void append_special(const std::string& name) override { names_.push_back(name); }
  const char* kind_name() const override { return "ByteTokenizer"; }

 private:
  std::vector<std::string> names_;  // special tokens, id = 256 + index
};

/// Options of WordTokenizer::build.
struct WordTokenizerOptions {
  std::int64_t min_count = 1;  ///< words seen fewer times are left out (>= 1)
  /// Largest vocabulary size including the four reserved special tokens (0: no limit, else >= 4);
  /// the most frequent words are kept.
  std::int64_t max_size = 0;
  bool lowercase = false;  ///< fold ASCII letters to lower case before counting and encoding
};

/// Words and punctuation as tokens, with a vocabulary built from a corpus.
///
/// Splitting: runs of ASCII whitespace separate pieces; inside a piece every ASCII punctuation
/// character is a token of its own, except an apostrophe or hyphen between two word bytes
/// ("don't", "well-known") and a period or comma between two digits ("3.14", "1,000"), which
/// stay inside the word. Bytes >= 128 (UTF-8) are word bytes. Words not in the vocabulary
/// encode as <unk>.
///
/// Ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, then the words by decreasing count (ties in byte
/// order), then added special tokens.
///
/// Decoding joins tokens with one space, except none before . , ! ? ; : ) ] } % and none after
/// ( [ {. Hence encode(decode(ids)) == ids for ids without <unk> (with parse_special when they
/// hold special tokens), and decode(encode(text)) == normalize_whitespace(text) for text whose
/// words are all in the vocabulary and whose punctuation follows that spacing (with
/// `lowercase`, up to case).
class WordTokenizer final : public Tokenizer {
 public:
  /// A tokenizer with only the four reserved special tokens.
  WordTokenizer() : WordTokenizer(false) {}

  /// Builds the vocabulary from `corpus` (each string a document or line).
  static WordTokenizer build(const std::vector<std::string>& corpus, const WordTokenizerOptions& options = {}) {
    CONDENSE_CHECK(options.min_count >= 1, "WordTokenizer", "min_count must be >= 1, got ", options.min_count);
    CONDENSE_CHECK(options.max_size == 0 || options.max_size >= 4, "WordTokenizer",
                   "max_size must be 0 (no limit) or >= 4 (the reserved tokens), got ", options.max_size);
    WordTokenizer t(options.lowercase);
    detail::StringMap<std::int64_t> counts;
    for (const auto& text : corpus) {
      t.split(text, [&](std::string_view w) {
        auto it = counts.find(w);
        if (it == counts.end()) {
          counts.emplace(std::string(w), 1);
        } else {
          ++it->second;
        }
      });
    }
    std::vector<std::pair<std::string, std::int64_t>> words;
    for (auto& [w, c] : counts)
      if (c >= options.min_count) words.emplace_back(w, c);
    std::sort(words.begin(), words.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    if (options.max_size > 0 && static_cast<std::int64_t>(words.size()) > options.max_size - 4)
      words.resize(static_cast<std::size_t>(options.max_size - 4));
    for (auto& [w, c] : words) t.add_word(std::move(w));
    return t;
  }

  std::string kind() const override { return "word"; }
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(tokens_.size()); }
  std::int64_t pad_id() const override { return 0; }
  std::int64_t bos_id() const override { return 1; }
  std::int64_t eos_id() const override { return 2; }
  std::int64_t unk_id() const override { return 3; }
  /// Whether ASCII letters are folded to lower case.
  bool lowercase() const { return lowercase_; }

  std::optional<std::int64_t> find(std::string_view token) const override {
    if (const auto it = words_.find(token); it != words_.end()) return it->second;
    return find_special(token);
  }

  /// The pieces `text` splits into (before vocabulary lookup), as documented on the class.
  std::vector<std::string> split_words(std::string_view text) const {
    std::vector<std::string> out;
    split(text, [&](std::string_view w) { out.emplace_back(w); });
    return out;
  }

  nlohmann::json to_json() const override {
    nlohmann::json j;
    j["format"] = tokenizer_format;
    j["type"] = "word";
    j["lowercase"] = lowercase_;
    j["tokens"] = tokens_;
    std::vector<std::int64_t> ids;
    for (const auto& [name, id] : special_tokens()) ids.push_back(id);
    j["special_ids"] = ids;
    return j;
  }

  /// Rebuilds a WordTokenizer from to_json() output; `what` names the source in errors.
  /// Checks the format and type, the reserved tokens at ids 0..3, that "special_ids" are
  /// increasing ids in range including 0..3, that every token is unique, that special names
  /// are valid, and that every regular token is a single piece under the splitting rules
  /// (and lower case when "lowercase" is true).
  static WordTokenizer from_json(const nlohmann::json& j, const std::string& what) {
    detail::check_keys(j, what, {"format", "type", "lowercase", "tokens", "special_ids"});
    ByteTokenizer::check_header(j, what, "word");
    CONDENSE_CHECK(j.at("lowercase").is_boolean(), "tokenizer", what, ": \"lowercase\" must be true or false");
    const auto tokens = detail::string_list(j, "tokens", what);
    ByteTokenizer::check_reserved(tokens, what, "tokens");
    const auto& sj = j.at("special_ids");
    CONDENSE_CHECK(sj.is_array(), "tokenizer", what, ": \"special_ids\" must be an array of integers");
    std::vector<std::int64_t> special;
    for (std::size_t i = 0; i < sj.size(); ++i) {
      CONDENSE_CHECK(sj[i].is_number_integer(), "tokenizer", what, ": \"special_ids\"[", i, "] is not an integer");
      const auto id = sj[i].get<std::int64_t>();
      CONDENSE_CHECK(id >= 0 && id < static_cast<std::int64_t>(tokens.size()), "tokenizer", what, ": \"special_ids\"[",
                     i, "] = ", id, " is out of range (", tokens.size(), " tokens)");
      CONDENSE_CHECK(special.empty() || id > special.back(), "tokenizer", what, ": \"special_ids\" must be increasing");
      CONDENSE_CHECK(i >= 4 || id == static_cast<std::int64_t>(i), "tokenizer", what,
                     ": \"special_ids\" must start with 0, 1, 2, 3");
      special.push_back(id);
    }
    CONDENSE_CHECK(special.size() >= 4, "tokenizer", what, ": \"special_ids\" must start with 0, 1, 2, 3");
    WordTokenizer t(j.at("lowercase").get<bool>());
    std::size_t next_special = 4;
    for (std::size_t id = 4; id < tokens.size(); ++id) {
      const std::string& tok = tokens[id];
      CONDENSE_CHECK(!t.find(tok).has_value(), "tokenizer", what, ": token '", tok, "' appears twice");
      if (next_special < special.size() && special[next_special] == static_cast<std::int64_t>(id)) {
        ++next_special;
        try {
          detail::check_special_name("WordTokenizer", tok);
        } catch (const Error& e) {
          fail("tokenizer", what, ": \"tokens\"[", id, "]: ", e.what());
        }
        t.tokens_.push_back(tok);
        t.register_special(tok, static_cast<std::int64_t>(id));
        continue;
      }
      const auto pieces = t.split_words(tok);
      CONDENSE_CHECK(pieces.size() == 1 && pieces[0] == tok, "tokenizer", what, ": \"tokens\"[", id, "] = '", tok,
                     "' is not a single word or punctuation mark",
                     t.lowercase_ ? " in lower case" : "");
      t.add_word(tok);
    }
    return t;
  }

  /// Loads a file written by save().
  static WordTokenizer load(const std::string& path) {
    return from_json(detail::parse_json(detail::read_text_file(path), path), path);
  }

 protected:
  void encode_text(std::string_view text, std::vector<std::int64_t>& ids) const override {
    split(text, [&](std::string_view w) {
      const auto it = words_.find(w);
      ids.push_back(it == words_.end() ? unk_id() : it->second);
    });
  }
  std::string decode_checked(std::span<const std::int64_t> ids, const DecodeOptions& options) const override {
    std::string out;
    bool glue_next = true;  // no space before the first token
    for (const auto id : ids) {
      if (options.skip_special && is_special(id) && id != unk_id()) continue;
      const std::string& tok = tokens_[static_cast<std::size_t>(id)];
      const bool closing = tok.size() == 1 && std::string_view(".,!?;:)]}%").find(tok[0]) != std::string_view::npos &&
                           !is_special(id);
      if (!glue_next && !closing) out += ' ';
      out += tok;
      glue_next = tok.size() == 1 && std::string_view("([{").find(tok[0]) != std::string_view::npos && !is_special(id);
    }
    return out;
  }
  std::string token_checked(std::int64_t id) const override { return tokens_[static_cast<std::size_t>(id)]; }
  void append_special(const std::string& name) override { tokens_.push_back(name); }
  const char* kind_name() const override { return "WordTokenizer"; }

 private:
  explicit WordTokenizer(bool lowercase) : lowercase_(lowercase) {
    for (const auto name : {pad_token, bos_token, eos_token, unk_token}) {
      tokens_.emplace_back(name);
      register_special(std::string(name), static_cast<std::int64_t>(tokens_.size()) - 1);
    }
  }

  void add_word(std::string w) {
    const auto id = static_cast<std::int64_t>(tokens_.size());
    words_.emplace(w, id);
    tokens_.push_back(std::move(w));
  }

  /// Calls fn(piece) for each piece of `text` (see the class comment).
  template <class Fn>
  void split(std::string_view text, Fn&& fn) const {
    std::string folded;
    if (lowercase_) {
      folded.assign(text);
      for (char& c : folded)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      text = folded;
    }
    const auto at = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    std::size_t i = 0;
    const std::size_t n = text.size();
    while (i < n) {
      if (detail::tok_space(at(i))) {
        ++i;
        continue;
      }
      if (detail::tok_punct(at(i))) {
        fn(text.substr(i, 1));
        ++i;
        continue;
      }
      const std::size_t start = i;
      while (i < n) {
        const unsigned char c = at(i);
        if (detail::tok_word(c)) {
          ++i;
          continue;
        }
        // Joiners inside a word: ' and - between word bytes, . and , between digits.
        const bool between = i > start && i + 1 < n;
        if (between && (c == '\'' || c == '-') && detail::tok_word(at(i - 1)) && detail::tok_word(at(i + 1))) {
          ++i;
          continue;
        }
        if (between && (c == '.' || c == ',') && detail::tok_digit(at(i - 1)) && detail::tok_digit(at(i + 1))) {
          ++i;
          continue;
        }
        break;
      }
      fn(text.substr(start, i - start));
    }
  }

  bool lowercase_ = false;
  std::vector<std::string> tokens_;           // id -> text
  detail::StringMap<std::int64_t> words_;     // regular tokens -> id
};

/// Builds the tokenizer described by JSON written by a tokenizer's to_json(), choosing the
/// class from its "type"; `what` names the source in errors.
inline std::unique_ptr<Tokenizer> tokenizer_from_json(const nlohmann::json& j, const std::string& what) {
  CONDENSE_CHECK(j.is_object() && j.contains("type") && j.at("type").is_string(), "tokenizer", what,
                 ": expected a JSON object with a string \"type\"");
  const auto type = j.at("type").get<std::string>();
  if (type == "byte") return std::make_unique<ByteTokenizer>(ByteTokenizer::from_json(j, what));
  if (type == "word") return std::make_unique<WordTokenizer>(WordTokenizer::from_json(j, what));
  fail("tokenizer", what, ": unknown tokenizer type \"", type, "\" (expected \"byte\" or \"word\")");
}

/// Loads a tokenizer file written by save(), whatever its type.
inline std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  return tokenizer_from_json(detail::parse_json(detail::read_text_file(path), path), path);
}

}  // namespace condense::io
