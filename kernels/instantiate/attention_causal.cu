// CUDA attention launchers for condense::mask::Causal (one policy per file, so they build in parallel).
#include "attention/flash_attention.cuh"
#include "condense/mask/policies.hpp"

CONDENSE_CUDA_INSTANTIATE_ATTENTION(condense::mask::Causal);
