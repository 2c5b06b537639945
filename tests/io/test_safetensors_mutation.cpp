// Deterministic mutation testing of the safetensors reader (a small, sanitizer-friendly
// stand-in for the fuzz target): valid files with bytes flipped, overwritten, inserted,
// deleted and truncated at every position, plus seeded random multi-byte edits. Each
// input must either parse, then survive a write/re-read round trip unchanged, or throw
// condense::Error; any other exception fails the test (under the asan preset, so does any
// out-of-bounds access).
#include <doctest/doctest.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/io/safetensors.hpp"
#include "fuzz/safetensors_seeds.hpp"
#include "io/io_test_util.hpp"

namespace test_safetensors_mutation {

using namespace condense;
using namespace condense::io;

namespace {

struct Outcome {
  std::size_t accepted = 0;
  std::size_t rejected = 0;
  std::size_t cases = 0;
};

/// Parses `bytes`; on success, writes the result and reads it back, which must give the
/// same file. Counts the outcome; fails the test on any exception but condense::Error.
void probe(const std::vector<std::uint8_t>& bytes, const std::string& label, Outcome& outcome) {
  ++outcome.cases;
  TensorFile parsed;
  try {
    parsed = parse_safetensors(bytes, "mutant");
  } catch (const Error& e) {
    ++outcome.rejected;
    const std::string message = e.what();
    if (message.rfind("[safetensors] mutant: ", 0) != 0) {
      INFO(label << ": " << message);
      FAIL_CHECK("message does not start with the op and label");
    }
    return;
  } catch (const std::exception& e) {
    INFO(label << ": " << e.what());
    FAIL_CHECK("parse threw something other than condense::Error");
    return;
  } catch (...) {
    INFO(label);
    FAIL_CHECK("parse threw a non-std exception");
    return;
  }
  ++outcome.accepted;
  try {
    const auto again = serialize_safetensors(parsed);
    const TensorFile back = parse_safetensors(again, "again");
    if (!testing::same_file(parsed, back)) {
      INFO(label);
      FAIL_CHECK("an accepted file does not survive a write/read round trip");
    }
  } catch (const std::exception& e) {
    INFO(label << ": " << e.what());
    FAIL_CHECK("writing or re-reading an accepted file threw");
  }
}

}  // namespace

TEST_CASE("safetensors mutation: single-byte edits, insertions, deletions and truncations at every position") {
  Outcome outcome;
  for (const auto& [seed_name, seed] : fuzz::safetensors_seeds()) {
    if (seed_name != "mixed" && seed_name != "python_layout" && seed_name != "zero_size") continue;
    probe(seed, seed_name + " unmodified", outcome);
    static constexpr std::uint8_t overwrite[] = {0x00, 0xff, '"', '9', '-', '[', '{', ',', '.', 'e'};
    for (std::size_t i = 0; i < seed.size(); ++i) {
      const std::string at = seed_name + " @" + std::to_string(i);
      for (std::uint8_t mask : {0x01, 0x02, 0x10, 0x80}) {
        auto b = seed;
        b[i] ^= mask;
        probe(b, at + " xor " + std::to_string(mask), outcome);
      }
      for (std::uint8_t v : overwrite) {
        if (seed[i] == v) continue;
        auto b = seed;
        b[i] = v;
        probe(b, at + " = " + std::to_string(v), outcome);
      }
      auto deleted = seed;
      deleted.erase(deleted.begin() + static_cast<std::ptrdiff_t>(i));
      probe(deleted, at + " deleted", outcome);
      auto inserted = seed;
      inserted.insert(inserted.begin() + static_cast<std::ptrdiff_t>(i), ' ');
      probe(inserted, at + " space inserted", outcome);
      probe(std::vector<std::uint8_t>(seed.begin(), seed.begin() + static_cast<std::ptrdiff_t>(i)),
            at + " truncated", outcome);
    }
  }
  INFO("cases " << outcome.cases << ", accepted " << outcome.accepted << ", rejected " << outcome.rejected);
  CHECK(outcome.cases > 5000);
  // Edits inside the data buffer keep the file valid; edits in the header mostly do not.
  CHECK(outcome.accepted > 100);
  CHECK(outcome.rejected > 1000);
}

TEST_CASE("safetensors mutation: seeded random multi-byte edits of every seed") {
  Outcome outcome;
  Generator gen(20261122);
  const auto seeds = fuzz::safetensors_seeds();
  for (int round = 0; round < 3000; ++round) {
    const auto& [seed_name, seed] = seeds[gen.below(seeds.size())];
    auto b = seed;
    const auto edits = 1 + gen.below(4);
    for (std::uint64_t e = 0; e < edits; ++e) {
      const auto kind = gen.below(5);
      const auto pos = b.empty() ? 0 : static_cast<std::size_t>(gen.below(b.size()));
      const auto value = static_cast<std::uint8_t>(gen.below(256));
      if (kind == 0 && !b.empty()) {
        b[pos] = value;
      } else if (kind == 1 && !b.empty()) {
        b[pos] ^= static_cast<std::uint8_t>(1u << gen.below(8));
      } else if (kind == 2) {
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pos), value);
      } else if (kind == 3 && !b.empty()) {
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(pos));
      } else if (!b.empty() && pos < 8) {
        b[pos] = static_cast<std::uint8_t>(b[pos] + 1);  // nudge the header length
      }
    }
    probe(b, seed_name + " round " + std::to_string(round), outcome);
  }
  INFO("cases " << outcome.cases << ", accepted " << outcome.accepted << ", rejected " << outcome.rejected);
  CHECK(outcome.cases == 3000);
  CHECK(outcome.accepted > 0);
  CHECK(outcome.rejected > 0);
}

}  // namespace test_safetensors_mutation
