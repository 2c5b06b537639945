// Grad mode: a thread-local switch that says whether ops record the autograd graph, and
// NoGradGuard, which turns recording off for a scope.
#pragma once

namespace condense {

/// Whether ops on this thread record autograd history.
struct GradMode {
  static bool& flag() {
    thread_local bool enabled = true;
    return enabled;
  }
  static bool is_enabled() { return flag(); }
  static void set_enabled(bool on) { flag() = on; }
};

/// Disables graph recording until the end of the scope (restores the previous mode).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// Enables graph recording until the end of the scope (restores the previous mode).
class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(previous_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace condense
