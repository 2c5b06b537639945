// Builds condense's CUDA attention kernels for PrefixLM: include the kernel templates and
// instantiate them once for the policy. This is the only CUDA file a user writes for a new
// mask; everything else stays C++ (main.cpp).
#include "attention/flash_attention.cuh"
#include "prefix_lm.hpp"

CONDENSE_CUDA_INSTANTIATE_ATTENTION(PrefixLM);
