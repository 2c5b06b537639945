// Compile-fail test of the mask-policy check: a policy holding a std::vector (not
// trivially copyable, so it cannot be passed by value to a kernel) must not compile, and the
// output must carry check_mask_policy's message (see missing_classify.cpp for how these
// files are run). Empty without CONDENSE_COMPILE_FAIL_TEST.
#ifdef CONDENSE_COMPILE_FAIL_TEST
#include <vector>

#include "condense/mask/policy.hpp"

struct VectorLengths {
  std::vector<int> lengths;
  bool allowed(int b, int, int k) const { return k < lengths[static_cast<std::size_t>(b)]; }
  condense::TileKind classify(int, int, int, int, int) const { return condense::TileKind::Partial; }
};

constexpr bool checked = condense::check_mask_policy<VectorLengths>();
#endif
