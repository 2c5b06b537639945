// Evaluation metrics on text and losses: perplexity from a mean token loss, a running
// token-weighted loss average, whitespace normalisation, exact match and ROUGE-L (LCS over
// whitespace tokens, as the rouge-score package computes it without stemming), and corpus
// averages of both.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "condense/core/error.hpp"

namespace condense::train {

/// exp(mean_loss): the perplexity of a mean per-token negative log-likelihood in nats.
/// Infinite when the loss overflows exp; NaN for a NaN loss.
inline double perplexity(double mean_loss) { return std::exp(mean_loss); }

/// Token-weighted running average of a loss, for evaluation over batches of different sizes:
/// add(sum of per-token losses, token count) per batch, then mean() and perplexity().
class LossMeter {
 public:
  /// Adds a batch: the sum of its per-token losses and its number of tokens (>= 0).
  void add(double loss_sum, std::int64_t tokens) {
    CONDENSE_CHECK(tokens >= 0, "LossMeter", "token count must be >= 0, got ", tokens);
    sum_ += loss_sum;
    tokens_ += tokens;
  }
  /// Adds a batch given by its mean loss over `tokens` tokens.
  void add_mean(double mean_loss, std::int64_t tokens) { add(mean_loss * static_cast<double>(tokens), tokens); }
  /// Total tokens seen.
  std::int64_t tokens() const { return tokens_; }
  /// Mean loss per token (throws when no token was added).
  double mean() const {
    CONDENSE_CHECK(tokens_ > 0, "LossMeter", "no tokens added yet");
    return sum_ / static_cast<double>(tokens_);
  }
  /// exp(mean()).
  double perplexity() const { return train::perplexity(mean()); }
  /// Forgets everything added.
  void reset() {
    sum_ = 0.0;
    tokens_ = 0;
  }

 private:
  double sum_ = 0.0;
  std::int64_t tokens_ = 0;
};

namespace detail {

/// The whitespace bytes of the "C" locale: space, \t, \n, \v, \f, \r.
inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

}  // namespace detail

/// Splits on runs of ASCII whitespace (space, \t, \n, \v, \f, \r); no empty tokens.
inline std::vector<std::string> whitespace_tokens(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && detail::is_space(text[i])) ++i;
    const std::size_t start = i;
    while (i < text.size() && !detail::is_space(text[i])) ++i;
    if (i > start) out.emplace_back(text.substr(start, i - start));
  }
  return out;
}

/// The text with leading and trailing whitespace removed and every inner run of whitespace
/// replaced by one space. Case, punctuation and non-ASCII bytes are kept as they are.
inline std::string normalize_whitespace(std::string_view text) {
  std::string out;
  for (const auto& token : whitespace_tokens(text)) {
    if (!out.empty()) out += ' ';
    out += token;
  }
  return out;
}

/// 1.0 when prediction and reference are equal after normalize_whitespace (case-sensitive),
/// else 0.0.
inline double exact_match(std::string_view prediction, std::string_view reference) {
  return normalize_whitespace(prediction) == normalize_whitespace(reference) ? 1.0 : 0.0;
}

/// Length of the longest common subsequence of two token sequences (O(|a|*|b|) time,
/// O(min(|a|, |b|)) memory).
inline std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  const auto& outer = a.size() >= b.size() ? a : b;
  const auto& inner = a.size() >= b.size() ? b : a;
  std::vector<std::size_t> row(inner.size() + 1, 0);
  for (const auto& x : outer) {
    std::size_t diag = 0;  // row[j-1] of the previous outer token
    for (std::size_t j = 1; j <= inner.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = x == inner[j - 1] ? diag + 1 : std::max(row[j], row[j - 1]);
      diag = up;
    }
  }
  return row[inner.size()];
}

/// ROUGE-L precision, recall and F-measure.
struct RougeScore {
  double precision = 0.0;  ///< LCS / prediction tokens
  double recall = 0.0;     ///< LCS / reference tokens
  double fmeasure = 0.0;   ///< 2PR / (P + R), 0 when P + R == 0
};

/// ROUGE-L of a prediction against a reference on whitespace tokens, with no stemming and no
/// case folding: P = LCS / len(prediction), R = LCS / len(reference), F = 2PR / (P + R).
/// Both empty (no tokens): 1, 1, 1 (identical texts); exactly one empty: 0, 0, 0. The
/// rouge-score package gives 0 when both are empty; it also lower-cases and drops
/// punctuation in its default tokenizer, which this function does not.
inline RougeScore rouge_l(std::string_view prediction, std::string_view reference) {
  const auto pred = whitespace_tokens(prediction);
  const auto ref = whitespace_tokens(reference);
  if (pred.empty() && ref.empty()) return {1.0, 1.0, 1.0};
  if (pred.empty() || ref.empty()) return {};
  const double lcs = static_cast<double>(lcs_length(pred, ref));
  RougeScore s;
  s.precision = lcs / static_cast<double>(pred.size());
  s.recall = lcs / static_cast<double>(ref.size());
  s.fmeasure = s.precision + s.recall > 0.0 ? 2.0 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
  return s;
}

/// Corpus averages of the per-pair metrics (each pair weighs the same).
struct CorpusScores {
  double exact_match = 0.0;  ///< mean of exact_match
  double rouge_l = 0.0;      ///< mean of rouge_l(...).fmeasure
  std::size_t count = 0;     ///< number of pairs
};

/// Averages exact match and ROUGE-L F over aligned predictions and references. Throws when the
/// sizes differ or the corpus is empty.
inline CorpusScores corpus_scores(const std::vector<std::string>& predictions, const std::vector<std::string>& references) {
  CONDENSE_CHECK(predictions.size() == references.size(), "corpus_scores", predictions.size(), " predictions but ",
                 references.size(), " references");
  CONDENSE_CHECK(!predictions.empty(), "corpus_scores", "empty corpus");
  CorpusScores out;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    out.exact_match += exact_match(predictions[i], references[i]);
    out.rouge_l += rouge_l(predictions[i], references[i]).fmeasure;
  }
  out.count = predictions.size();
  out.exact_match /= static_cast<double>(out.count);
  out.rouge_l /= static_cast<double>(out.count);
  return out;
}

}  // namespace condense::train
