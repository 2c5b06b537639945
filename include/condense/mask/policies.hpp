// Every built-in mask policy and the combinators: None, Causal, SlidingWindow, KeyPadding,
// Pruned, Dense (basic.hpp); Gist, GistBidirectional, GistCross, GistNegativeControl
// (gist.hpp); ChunkedLocal (chunked.hpp); DigestCross (digest.hpp); Intersect, Union
// (combinators.hpp). The concept and TileKind are in policy.hpp.
#pragma once

#include "condense/mask/basic.hpp"
#include "condense/mask/chunked.hpp"
#include "condense/mask/combinators.hpp"
#include "condense/mask/digest.hpp"
#include "condense/mask/gist.hpp"
#include "condense/mask/policy.hpp"
