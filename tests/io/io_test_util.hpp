// Helpers shared by the io tests: unique temporary paths, hand-built safetensors bytes,
// and byte-level comparison of type-erased tensors.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "condense/io/safetensors.hpp"

namespace condense::testing {

/// A path in the temporary directory unique to this process and `name` (removed first).
inline std::string temp_path(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("condense_io_" + std::to_string(::getpid()) + "_" + name);
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
  return p.string();
}

/// Little-endian bytes of a 64-bit header length.
inline std::vector<std::uint8_t> le64(std::uint64_t n) {
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  return out;
}

/// A safetensors file: length prefix, `header` verbatim, then `data_bytes` bytes 0, 1, 2, ...
inline std::vector<std::uint8_t> st_bytes(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> out = le64(header.size());
  out.insert(out.end(), header.begin(), header.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::uint8_t>(i));
  return out;
}

/// The row-major bytes of an AnyTensor (CPU).
inline std::vector<std::uint8_t> raw_bytes(const io::AnyTensor& t) {
  std::vector<std::uint8_t> out;
  io::detail::write_tensor_bytes(t, [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  });
  return out;
}

/// True when both files hold the same names, dtypes, shapes and bytes in the same order,
/// and the same metadata.
inline bool same_file(const io::TensorFile& a, const io::TensorFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [na, ta] = a.tensors[i];
    const auto& [nb, tb] = b.tensors[i];
    if (na != nb || io::element_type(ta) != io::element_type(tb) || io::shape_of(ta) != io::shape_of(tb) ||
        raw_bytes(ta) != raw_bytes(tb))
      return false;
  }
  return true;
}

/// The whole content of a file.
inline std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Writes `bytes` to `path`.
inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace condense::testing
