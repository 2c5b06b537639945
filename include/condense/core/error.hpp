// condense::Error, the one exception type of the library, and the helpers that build its
// messages: every message starts with the op's name in brackets, e.g.
// "[matmul] inner dimensions differ: (16x127) @ (128x64)".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace condense {

/// The exception thrown for every misuse: bad shapes, dims, indices, dtypes, devices,
/// malformed files, or a CUDA op in a build without CUDA. `op()` names the operation.
class Error : public std::runtime_error {
 public:
  Error(std::string_view op, std::string_view message)
      : std::runtime_error("[" + std::string(op) + "] " + std::string(message)), op_(op) {}
  /// Name of the op that raised the error.
  const std::string& op() const noexcept { return op_; }

 private:
  std::string op_;
};

/// Throws Error(op, concatenation of `parts` streamed through operator<<).
template <class... Parts>
[[noreturn]] void fail(std::string_view op, Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw Error(op, message.str());
}

}  // namespace condense

/// Throws condense::Error naming `op` with the streamed message parts when `cond` is false.
#define CONDENSE_CHECK(cond, op, ...)          \
  do {                                          \
    if (!(cond)) ::condense::fail(op, __VA_ARGS__); \
  } while (0)
