// Build configuration: the host/device function marker, version, and whether this
// translation unit is linked against the CUDA backend (condense::cuda defines
// CONDENSE_WITH_CUDA=1 for its users).
#pragma once

#if defined(__CUDACC__)
/// Marks a function callable from host and device code (mask policies, small helpers).
#define CONDENSE_HD __host__ __device__
#else
/// Marks a function callable from host and device code (mask policies, small helpers).
#define CONDENSE_HD
#endif

#ifndef CONDENSE_WITH_CUDA
/// 1 when the program links condense::cuda; 0 for a CPU-only build.
#define CONDENSE_WITH_CUDA 0
#endif

namespace condense {
/// Library version.
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
}  // namespace condense
