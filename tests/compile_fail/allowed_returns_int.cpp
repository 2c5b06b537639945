// Compile-fail test of the mask-policy check: allowed() returning int instead of bool must
// not compile, and the output must carry check_mask_policy's message (see
// missing_classify.cpp for how these files are run). Empty without CONDENSE_COMPILE_FAIL_TEST.
#ifdef CONDENSE_COMPILE_FAIL_TEST
#include "condense/mask/policy.hpp"

struct IntAllowed {
  int allowed(int, int q, int k) const { return k <= q; }
  condense::TileKind classify(int, int, int, int, int) const { return condense::TileKind::Partial; }
};

constexpr bool checked = condense::check_mask_policy<IntAllowed>();
#endif
