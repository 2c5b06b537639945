// libFuzzer target for the safetensors reader. Every input must either parse or throw
// condense::Error; an accepted file must also survive a write and re-read unchanged. Any
// other exception, crash, sanitizer report or round-trip difference is a finding.
// Build (Clang): clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fopenmp
//   -Iinclude -Itests -I/usr/include/eigen3 tests/fuzz/fuzz_safetensors.cpp -o fuzz_safetensors
// Run: ./fuzz_safetensors -dict=tests/fuzz/safetensors.dict corpus/ (seeds: make_safetensors_seeds corpus/)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "condense/io/safetensors.hpp"

namespace {

/// True when both files hold the same names, dtypes, shapes, bytes and metadata.
bool same(const condense::io::TensorFile& a, const condense::io::TensorFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].first != b.tensors[i].first) return false;
    const condense::io::TensorFile one_a{{a.tensors[i]}, {}};
    const condense::io::TensorFile one_b{{b.tensors[i]}, {}};
    if (condense::io::serialize_safetensors(one_a) != condense::io::serialize_safetensors(one_b)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  condense::io::TensorFile file;
  try {
    file = condense::io::parse_safetensors(std::span<const std::uint8_t>(data, size), "fuzz");
  } catch (const condense::Error&) {
    return 0;  // rejected with a proper message: fine
  }
  // Accepted: writing it back and reading that again must give the same file.
  const auto bytes = condense::io::serialize_safetensors(file);
  const auto again = condense::io::parse_safetensors(bytes, "fuzz round trip");
  if (!same(file, again)) std::abort();
  for (const auto& [name, t] : file.tensors) (void)condense::io::shape_of(t);
  return 0;
}
