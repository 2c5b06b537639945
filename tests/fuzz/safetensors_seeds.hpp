// Seed inputs for the safetensors fuzz target and the mutation test: small valid files
// covering every dtype, scalars, zero-size tensors, metadata, a header laid out the way the
// Python/Rust implementation writes it, whitespace and out-of-order offsets, plus a few
// near-valid files that fail one check each.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/safetensors.hpp"

namespace condense::fuzz {

/// A safetensors file from a header string (used verbatim) and `data_bytes` bytes 0, 1, ...
inline std::vector<std::uint8_t> raw_safetensors(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> out(8);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::uint8_t>(i * 37 + 11));
  return out;
}

/// The valid file the mutation test starts from: every dtype, a scalar, zero-size
/// tensors and metadata, written by serialize_safetensors.
inline std::vector<std::uint8_t> mixed_safetensors() {
  io::TensorFile f;
  f.tensors.emplace_back("w", tensor<float>({1.5f, -2.0f, 0.25f, 8.0f, -0.0f, 3.0f}, {2, 3}));
  f.tensors.emplace_back("d", tensor<double>({3.25, -1e300}));
  f.tensors.emplace_back("h", Tensor<float16>(tensor<float>({1.0f, -0.5f, 2.0f}).cast<float16>()));
  f.tensors.emplace_back("b", Tensor<bfloat16>(tensor<float>({4.0f, -8.0f}).cast<bfloat16>()));
  f.tensors.emplace_back("i", tensor<std::int32_t>({-1, 7, 1 << 20}, {3, 1}));
  f.tensors.emplace_back("l", tensor<std::int64_t>({std::numeric_limits<std::int64_t>::min(), 5}));
  f.tensors.emplace_back("s", scalar_tensor<float>(0.5f));
  f.tensors.emplace_back("e", zeros<std::int64_t>({2, 0}));
  f.metadata = {{"format", "pt"}, {"step", "12"}};
  return io::serialize_safetensors(f);
}

/// All seeds, named (file names for a corpus directory).
inline std::vector<std::pair<std::string, std::vector<std::uint8_t>>> safetensors_seeds() {
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> seeds;
  seeds.emplace_back("mixed", mixed_safetensors());
  seeds.emplace_back("empty", io::serialize_safetensors(io::TensorFile{}));
  {
    io::TensorFile f;
    f.metadata = {{"only", "metadata"}};
    seeds.emplace_back("metadata_only", io::serialize_safetensors(f));
  }
  seeds.emplace_back(
      "python_layout",
      raw_safetensors(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},)"
                      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[24,40]},)"
                      R"("c":{"dtype":"BF16","shape":[2],"data_offsets":[40,44]},)"
                      R"("d":{"dtype":"F16","shape":[],"data_offsets":[44,46]}}  )",
                      46));
  seeds.emplace_back("whitespace_out_of_order",
                     raw_safetensors("{\n \"y\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [4, 8]},\n"
                                     " \"x\": {\"data_offsets\": [0, 4], \"shape\": [1], \"dtype\": \"I32\"},\n"
                                     " \"__metadata__\": null\n}",
                                     8));
  seeds.emplace_back("zero_size",
                     raw_safetensors(R"({"e0":{"dtype":"F64","shape":[0,5],"data_offsets":[0,0]},)"
                                     R"("w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                                     R"("e1":{"dtype":"BF16","shape":[0],"data_offsets":[4,4]}})",
                                     4));
  // Near misses: each fails exactly one check.
  seeds.emplace_back("gap", raw_safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8));
  seeds.emplace_back("overlap",
                     raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                     8));
  seeds.emplace_back("bool_dtype", raw_safetensors(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2));
  seeds.emplace_back("bad_metadata", raw_safetensors(R"({"__metadata__":{"k":1}})", 0));
  seeds.emplace_back("big_shape",
                     raw_safetensors(R"({"a":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8));
  return seeds;
}

}  // namespace condense::fuzz
