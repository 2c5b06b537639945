// Compile-fail test of the mask-policy check: a policy without classify() handed to an
// entry point templated on the policy must not compile, and the compiler output must carry
// check_mask_policy's message. Run by expect_compile_error.cmake with
// -DCONDENSE_COMPILE_FAIL_TEST; with -DCONDENSE_COMPILE_FAIL_CONTROL as well, the policy is
// complete and the file must compile (so a failure is the check's doing, not a broken
// include path). Without CONDENSE_COMPILE_FAIL_TEST the file is empty, so a test glob that
// picks it up compiles nothing.
#ifdef CONDENSE_COMPILE_FAIL_TEST
#include "condense/mask/policy.hpp"

struct NoClassify {
  bool allowed(int, int q, int k) const { return k <= q; }
#ifdef CONDENSE_COMPILE_FAIL_CONTROL
  condense::TileKind classify(int, int, int, int, int) const { return condense::TileKind::Partial; }
#endif
};

// The shape of an attention entry point.
template <class Policy>
int entry_point(const Policy& policy) {
  if constexpr (!condense::check_mask_policy<Policy>()) {
    return 0;
  } else {
    return policy.classify(0, 0, 1, 0, 1) == condense::TileKind::Empty ? 0 : policy.allowed(0, 0, 0);
  }
}

int use_entry_point() { return entry_point(NoClassify{}); }
#endif
