// Metrics: perplexity and LossMeter, whitespace normalisation and exact match, LCS and
// ROUGE-L against hand-computed values and against the rouge-score package, corpus averages.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "condense/train/metrics.hpp"

namespace test_metrics {

using namespace condense;
using namespace condense::train;

TEST_CASE("perplexity and LossMeter") {
  CHECK(perplexity(0.0) == 1.0);
  CHECK(perplexity(std::log(50.0)) == doctest::Approx(50.0).epsilon(1e-14));
  CHECK(perplexity(1000.0) == INFINITY);
  LossMeter meter;
  CHECK_THROWS_WITH_AS(meter.mean(), "[LossMeter] no tokens added yet", Error);
  meter.add(6.0, 3);         // 3 tokens of loss 2
  meter.add_mean(1.0, 1);    // 1 token of loss 1
  CHECK(meter.tokens() == 4);
  CHECK(meter.mean() == 1.75);
  CHECK(meter.perplexity() == std::exp(1.75));
  CHECK_THROWS_WITH_AS(meter.add(1.0, -1), "[LossMeter] token count must be >= 0, got -1", Error);
  meter.reset();
  CHECK(meter.tokens() == 0);
}

TEST_CASE("whitespace normalisation and exact match") {
  CHECK(whitespace_tokens("  a\tb \n\nc  ") == std::vector<std::string>{"a", "b", "c"});
  CHECK(whitespace_tokens(" \t\r\n").empty());
  CHECK(normalize_whitespace("  The  cat\n sat.\t") == "The cat sat.");
  CHECK(normalize_whitespace("") == "");
  CHECK(exact_match("The cat  sat.", " The cat\tsat.\n") == 1.0);
  CHECK(exact_match("The cat sat.", "the cat sat.") == 0.0);  // case-sensitive
  CHECK(exact_match("The cat sat.", "The cat sat") == 0.0);   // punctuation kept
  CHECK(exact_match("", "   ") == 1.0);
  CHECK(exact_match("caf\xc3\xa9", "caf\xc3\xa9 ") == 1.0);
}

TEST_CASE("lcs_length by hand") {
  using V = std::vector<std::string>;
  CHECK(lcs_length(V{"a", "b", "c", "b", "d", "a", "b"}, V{"b", "d", "c", "a", "b", "a"}) == 4);  // "b c b a"
  CHECK(lcs_length(V{"b", "d", "c", "a", "b", "a"}, V{"a", "b", "c", "b", "d", "a", "b"}) == 4);
  CHECK(lcs_length(V{}, V{"a"}) == 0);
  CHECK(lcs_length(V{"x"}, V{"y"}) == 0);
  CHECK(lcs_length(V{"a", "a"}, V{"a", "a", "a"}) == 2);
}

TEST_CASE("ROUGE-L by hand") {
  // prediction 4 tokens, reference 7, LCS "the gunman" = 2: P = 1/2, R = 2/7, F = 2PR/(P+R) = 4/11.
  const auto s = rouge_l("police killed the gunman", "the gunman was shot dead by police");
  CHECK(s.precision == 0.5);
  CHECK(s.recall == 2.0 / 7.0);
  CHECK(s.fmeasure == doctest::Approx(4.0 / 11.0).epsilon(1e-15));
  CHECK(rouge_l("x y z", " x  y z ").fmeasure == 1.0);
  CHECK(rouge_l("one two", "three four").fmeasure == 0.0);
  // The documented empty cases.
  CHECK(rouge_l("", "").fmeasure == 1.0);
  CHECK(rouge_l("  ", "\n").recall == 1.0);
  CHECK(rouge_l("", "something").fmeasure == 0.0);
  CHECK(rouge_l("something", "").precision == 0.0);
}

// Values produced on 2026-11-22 with rouge-score 0.1.2 (pip), python3:
//   class WS: tokenize = lambda self, text: text.split()
//   s = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=False, tokenizer=WS()).score(reference, prediction)['rougeL']
// (a whitespace tokenizer, so that the package tokenizes as condense does).
TEST_CASE("ROUGE-L matches the rouge-score package") {
  struct Case {
    const char* prediction;
    const char* reference;
    double p, r, f;
  };
  const std::vector<Case> cases{
      {"the cat sat on the mat", "the cat is on the mat", 0.8333333333333334, 0.8333333333333334, 0.8333333333333334},
      {"a b c d e f", "f e d c b a", 0.16666666666666666, 0.16666666666666666, 0.16666666666666666},
      {"police killed the gunman", "the gunman was shot dead by police", 0.5, 0.2857142857142857, 0.36363636363636365},
      {"Hello, World!  again", "hello, World! again and again", 0.6666666666666666, 0.4, 0.5},
      {"x y z", "x y z", 1.0, 1.0, 1.0},
      {"one two", "three four five", 0.0, 0.0, 0.0},
      {"a a a b", "a b a b a", 0.75, 0.6, 0.6666666666666665},
      {"", "nonempty", 0.0, 0.0, 0.0},
  };
  for (const auto& c : cases) {
    INFO(c.prediction << " | " << c.reference);
    const auto s = rouge_l(c.prediction, c.reference);
    CHECK(std::abs(s.precision - c.p) < 1e-15);
    CHECK(std::abs(s.recall - c.r) < 1e-15);
    CHECK(std::abs(s.fmeasure - c.f) < 1e-15);
  }
  // Where condense differs on purpose: the package scores two empty texts 0, condense 1.
  CHECK(rouge_l("", "").fmeasure == 1.0);
}

TEST_CASE("corpus averages") {
  const std::vector<std::string> preds{"the cat sat", "a b", "police killed the gunman"};
  const std::vector<std::string> refs{"the  cat sat", "b a", "the gunman was shot dead by police"};
  const auto s = corpus_scores(preds, refs);
  CHECK(s.count == 3);
  CHECK(s.exact_match == doctest::Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(s.rouge_l == doctest::Approx((1.0 + 0.5 + 4.0 / 11.0) / 3.0).epsilon(1e-15));
  CHECK_THROWS_WITH_AS(corpus_scores(preds, {"x"}), "[corpus_scores] 3 predictions but 1 references", Error);
  CHECK_THROWS_WITH_AS(corpus_scores({}, {}), "[corpus_scores] empty corpus", Error);
}

}  // namespace test_metrics
