// Writes the safetensors seed corpus (tests/fuzz/safetensors_seeds.hpp) into a directory:
//   make_safetensors_seeds <dir>
// One file per seed, named after it.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz/safetensors_seeds.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  int written = 0;
  for (const auto& [name, bytes] : condense::fuzz::safetensors_seeds()) {
    std::ofstream out(dir / (name + ".safetensors"), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
    ++written;
  }
  std::printf("wrote %d seeds to %s\n", written, dir.c_str());
  return 0;
}
