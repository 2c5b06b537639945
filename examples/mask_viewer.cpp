// mask_viewer: prints a mask policy as text, one character per (query, key) pair with the
// tile classification shown, and writes it as a PGM picture.
//
//   mask_viewer <policy> [name=value ...] [and|or <policy> [name=value ...]] ...
//               [--size Tq[xTk]] [--tile N[xM]] [--out file.pgm|none] [--scale S] [--no-text]
//
//   mask_viewer causal --size 16 --tile 4
//   mask_viewer chunked chunk=12 mem=4 n_chunks=3 history=1 --size 64 --tile 16 --out chunked.pgm
//   mask_viewer sliding left=8 and padding len=40 --size 48
//
// Text legend: '#' allowed in a Full tile, 'x' allowed in a Partial tile, '.' masked in a
// Partial tile, ' ' (blank) an Empty tile (skipped by the kernels). Picture: the same four
// cases as greys from black to white, with the tile grid drawn in mid grey.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/mask/materialize.hpp"
#include "condense/mask/policies.hpp"

using namespace condense;

namespace {

const char* const usage = R"(usage: mask_viewer <policy> [name=value ...] [and|or <policy> [name=value ...]] ...
                   [--size Tq[xTk]] [--tile N[xM]] [--out file.pgm|none] [--scale S] [--no-text]

policies and parameters (defaults in brackets; Tq x Tk is the mask size):
  none
  causal      offset [0]
  sliding     left [8] right [0] offset [0]           (left/right may be 'inf')
  padding     len [3*Tk/4]
  gist        g0 [Tk/4] g1 [Tk/4+4] offset [0]         decoder gist mask
  gist_neg    g0 [Tk/4] g1 [Tk/4+4] offset [0]         negative control (gist removed)
  gist_bidir  g0 [Tk/4] g1 [Tk/4+4]                    encoder
  gist_cross  g0 [Tk/4] g1 [Tk/4+4]                    decoder -> encoder cross-attention
  chunked     chunk [12] mem [4] n_chunks [-1] history [0]
  digest      context [48] n [16] groups [1]           default size n x (context + n)
  pruned      keep [0.5] seed [1] offset [0]           random keep bitmap, causal
policies joined by 'and' are intersected, by 'or' united (left to right).
options: --size 32 (or 32x48), --tile 8 (or 8x16), --out mask.pgm ('none': no picture),
         --scale (pixels per element; default: picture at least 256 pixels), --no-text
)";

[[noreturn]] void die(const std::string& message) {
  std::cerr << "mask_viewer: " << message << "\n\n" << usage;
  std::exit(2);
}

/// A host-only, type-erased policy, so that the command line can combine policies at run time.
struct AnyMask {
  std::function<bool(int, int, int)> allowed_fn;
  std::function<TileKind(int, int, int, int, int)> classify_fn;
  std::function<void(const char*, int, int, int)> validate_fn;

  bool allowed(int b, int q, int k) const { return allowed_fn(b, q, k); }
  TileKind classify(int b, int q0, int q1, int k0, int k1) const { return classify_fn(b, q0, q1, k0, k1); }
  void validate(const char* op, int batch, int tq, int tk) const { validate_fn(op, batch, tq, tk); }
};

template <class M>
AnyMask erase(const M& m) {
  return {[m](int b, int q, int k) { return m.allowed(b, q, k); },
          [m](int b, int q0, int q1, int k0, int k1) { return m.classify(b, q0, q1, k0, k1); },
          [m](const char* op, int batch, int tq, int tk) { validate_mask(m, op, batch, tq, tk); }};
}

/// One policy on the command line: its name and name=value parameters.
struct Spec {
  std::string name;
  std::map<std::string, std::string> params;
  std::string joiner;  // "and" / "or" joining it to the previous spec ("" for the first)
};

struct Sizes {
  int tq = 32, tk = 32;
};

long long parse_int(const std::string& key, const std::string& value) {
  if (value == "inf") return mask::unbounded;
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0') die("parameter " + key + " needs an integer, got '" + value + "'");
  return v;
}

/// Reads the parameters of `spec` (checking that no unknown one is given).
class Params {
 public:
  explicit Params(const Spec& spec) : spec_(spec) {}
  long long integer(const std::string& key, long long fallback) {
    used_.push_back(key);
    const auto it = spec_.params.find(key);
    return it == spec_.params.end() ? fallback : parse_int(key, it->second);
  }
  double real(const std::string& key, double fallback) {
    used_.push_back(key);
    const auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return fallback;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0') die("parameter " + key + " needs a number, got '" + it->second + "'");
    return v;
  }
  void finish() const {
    for (const auto& [key, value] : spec_.params) {
      bool known = false;
      for (const auto& u : used_) known = known || u == key;
      if (!known) die("policy " + spec_.name + " has no parameter '" + key + "'");
    }
  }

 private:
  const Spec& spec_;
  std::vector<std::string> used_;
};

/// Builds one policy; per-row arrays (the pruned keep bitmap) go to `storage`.
AnyMask build(const Spec& spec, const Sizes& size, std::vector<std::unique_ptr<bool[]>>& storage) {
  Params p(spec);
  const auto i32 = [&](const char* key, long long fallback) { return static_cast<int>(p.integer(key, fallback)); };
  AnyMask m;
  const std::string& n = spec.name;
  if (n == "none") {
    m = erase(mask::None{});
  } else if (n == "causal") {
    m = erase(mask::Causal{i32("offset", 0)});
  } else if (n == "sliding") {
    m = erase(mask::SlidingWindow(p.integer("left", 8), p.integer("right", 0), i32("offset", 0)));
  } else if (n == "padding") {
    m = erase(mask::KeyPadding(i32("len", 3 * size.tk / 4)));
  } else if (n == "gist" || n == "gist_neg" || n == "gist_bidir" || n == "gist_cross") {
    const int g0 = i32("g0", size.tk / 4), g1 = i32("g1", size.tk / 4 + 4);
    if (n == "gist") m = erase(mask::Gist(g0, g1, i32("offset", 0)));
    if (n == "gist_neg") m = erase(mask::GistNegativeControl(g0, g1, i32("offset", 0)));
    if (n == "gist_bidir") m = erase(mask::GistBidirectional(g0, g1));
    if (n == "gist_cross") m = erase(mask::GistCross(g0, g1));
  } else if (n == "chunked") {
    m = erase(mask::ChunkedLocal(i32("chunk", 12), i32("mem", 4),
                                 {.n_chunks = i32("n_chunks", -1), .memory_sees_earlier_memory = p.integer("history", 0) != 0}));
  } else if (n == "digest") {
    m = erase(mask::DigestCross(i32("context", 48), i32("n", 16), {.groups = i32("groups", 1)}));
  } else if (n == "pruned") {
    const double keep_fraction = p.real("keep", 0.5);
    Generator gen(static_cast<std::uint64_t>(p.integer("seed", 1)));
    storage.emplace_back(new bool[static_cast<std::size_t>(size.tk)]);
    for (int k = 0; k < size.tk; ++k) storage.back()[static_cast<std::size_t>(k)] = gen.uniform01() < keep_fraction;
    m = erase(mask::Pruned(storage.back().get(), 1, size.tk, i32("offset", 0)));
  } else {
    die("unknown policy '" + n + "'");
  }
  p.finish();
  return m;
}

std::pair<int, int> parse_pair(const std::string& option, const std::string& value) {
  const auto x = value.find('x');
  const long long a = parse_int(option, value.substr(0, x));
  const long long b = x == std::string::npos ? a : parse_int(option, value.substr(x + 1));
  if (a <= 0 || b <= 0 || a > 1 << 16 || b > 1 << 16) die(option + " needs positive sizes up to 65536, got " + value);
  return {static_cast<int>(a), static_cast<int>(b)};
}

/// Writes the picture: 4 greys by (allowed, tile kind), the tile grid in mid grey.
void write_pgm(const std::string& path, const std::vector<char>& cells, int tq, int tk, int tile_q, int tile_k, int scale) {
  const int w = tk * scale, h = tq * scale;
  std::vector<unsigned char> pixels(static_cast<std::size_t>(w) * static_cast<std::size_t>(h));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int q = y / scale, k = x / scale;
      const char c = cells[static_cast<std::size_t>(q) * static_cast<std::size_t>(tk) + static_cast<std::size_t>(k)];
      unsigned char g = c == '#' ? 20 : c == 'x' ? 95 : c == '.' ? 200 : 255;
      const bool grid = scale >= 3 && ((y % (tile_q * scale) == 0 && y > 0) || (x % (tile_k * scale) == 0 && x > 0));
      if (grid) g = 150;
      pixels[static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)] = g;
    }
  }
  std::ofstream out(path, std::ios::binary);
  if (!out) die("cannot write " + path);
  out << "P5\n" << w << " " << h << "\n255\n";
  out.write(reinterpret_cast<const char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Spec> specs;
  std::string out_path = "mask.pgm";
  bool text = true, size_given = false;
  Sizes size;
  int tile_q = 8, tile_k = 8, scale = 0;
  std::string joiner;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg == "--size") {
      std::tie(size.tq, size.tk) = parse_pair(arg, value());
      size_given = true;
    } else if (arg == "--tile") {
      std::tie(tile_q, tile_k) = parse_pair(arg, value());
    } else if (arg == "--out") {
      out_path = value();
    } else if (arg == "--scale") {
      scale = static_cast<int>(parse_int(arg, value()));
      if (scale < 1 || scale > 64) die("--scale needs 1..64");
    } else if (arg == "--no-text") {
      text = false;
    } else if (arg == "and" || arg == "or") {
      if (specs.empty() || !joiner.empty()) die("'" + arg + "' must stand between two policies");
      joiner = arg;
    } else if (arg.find('=') != std::string::npos) {
      if (specs.empty() || !joiner.empty()) die("parameter '" + arg + "' before any policy");
      const auto eq = arg.find('=');
      specs.back().params[arg.substr(0, eq)] = arg.substr(eq + 1);
    } else if (arg.rfind("--", 0) == 0) {
      die("unknown option " + arg);
    } else {
      if (!specs.empty() && joiner.empty()) die("join policies with 'and' or 'or' (before '" + arg + "')");
      specs.push_back(Spec{arg, {}, joiner});
      joiner.clear();
    }
  }
  if (specs.empty()) die("no policy given");
  if (!joiner.empty()) die("'" + joiner + "' needs a policy after it");
  if (!size_given) {
    for (const Spec& s : specs) {
      if (s.name != "digest") continue;
      Params p(s);
      const int n = static_cast<int>(p.integer("n", 16));
      size.tq = n;
      size.tk = static_cast<int>(p.integer("context", 48)) + n;
    }
  }

  try {
    std::vector<std::unique_ptr<bool[]>> storage;
    AnyMask m = build(specs[0], size, storage);
    std::string title = specs[0].name;
    for (const auto& [key, v] : specs[0].params) title += " " + key + "=" + v;
    for (std::size_t s = 1; s < specs.size(); ++s) {
      AnyMask next = build(specs[s], size, storage);
      m = specs[s].joiner == "and" ? erase(mask::Intersect(m, next)) : erase(mask::Union(m, next));
      title += " " + specs[s].joiner + " " + specs[s].name;
      for (const auto& [key, v] : specs[s].params) title += " " + key + "=" + v;
    }

    const Tensor<bool> allowed = materialize(m, 0, size.tq, size.tk);
    const TileMap tiles = tile_map(m, 0, size.tq, size.tk, tile_q, tile_k);
    const auto values = allowed.to_vector();
    std::vector<char> cells(values.size());
    for (int q = 0; q < size.tq; ++q) {
      for (int k = 0; k < size.tk; ++k) {
        const std::size_t at = static_cast<std::size_t>(q) * static_cast<std::size_t>(size.tk) + static_cast<std::size_t>(k);
        const TileKind kind = tiles.at(q / tile_q, k / tile_k);
        cells[at] = kind == TileKind::Empty ? ' ' : kind == TileKind::Full ? '#' : (values[at] ? 'x' : '.');
      }
    }
    const std::int64_t n_allowed = count_allowed(m, 0, size.tq, size.tk);
    std::printf("%s: %dx%d, tiles %dx%d: %lld full, %lld partial, %lld empty; %lld of %lld pairs allowed (%.1f%%)\n",
                title.c_str(), size.tq, size.tk, tile_q, tile_k, static_cast<long long>(tiles.count(TileKind::Full)),
                static_cast<long long>(tiles.count(TileKind::Partial)), static_cast<long long>(tiles.count(TileKind::Empty)),
                static_cast<long long>(n_allowed), static_cast<long long>(size.tq) * size.tk,
                100.0 * density(m, 0, size.tq, size.tk));
    if (text) {
      std::string border = "+" + std::string(static_cast<std::size_t>(size.tk), '-') + "+";
      std::printf("%s\n", border.c_str());
      for (int q = 0; q < size.tq; ++q)
        std::printf("|%.*s|\n", size.tk, cells.data() + static_cast<std::size_t>(q) * static_cast<std::size_t>(size.tk));
      std::printf("%s\n", border.c_str());
    }
    if (out_path != "none") {
      if (scale == 0) scale = std::max(1, (256 + std::max(size.tq, size.tk) - 1) / std::max(size.tq, size.tk));
      write_pgm(out_path, cells, size.tq, size.tk, tile_q, tile_k, scale);
      std::printf("wrote %s (%dx%d pixels)\n", out_path.c_str(), size.tk * scale, size.tq * scale);
    }
  } catch (const Error& e) {
    std::cerr << "mask_viewer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
