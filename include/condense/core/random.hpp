// Generator: a small, reproducible random number generator (xoshiro256** seeded through
// splitmix64) whose whole state can be saved and restored, plus the process-wide default
// generator that manual_seed() resets. Normal samples use Box-Muller, so a seed gives the
// same numbers on every platform.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace condense {

/// Seedable, copyable random generator with exportable state.
class Generator {
 public:
  using State = std::array<std::uint64_t, 4>;

  explicit Generator(std::uint64_t seed = 0x5eedULL) { seed_with(seed); }

  /// Resets the state from `seed`.
  void seed_with(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& word : state_) {
      x += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
  }

  /// Next 64 random bits.
  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  /// Uniform double in [0, 1).
  double uniform01() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Standard normal sample (Box-Muller, one value per call).
  double normal() {
    double u1 = uniform01();
    while (u1 <= 0.0) u1 = uniform01();
    const double u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

  /// Uniform integer in [0, n), n > 0.
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform01() * static_cast<double>(n)) % n; }

  /// The full state (for checkpoints).
  const State& state() const { return state_; }
  /// Restores a state from state().
  void set_state(const State& s) { state_ = s; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  State state_{};
};

/// The process-wide generator used when an op is given none.
inline Generator& default_generator() {
  static Generator generator;
  return generator;
}

/// Reseeds the default generator.
inline void manual_seed(std::uint64_t seed) { default_generator().seed_with(seed); }

}  // namespace condense
