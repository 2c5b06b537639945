// Multi-tensor launches (internal to kernels/*.cu): many contiguous tensors updated or
// reduced by a few kernel launches instead of one or two launches per tensor. The optimizer
// step and gradient clipping of a transformer touch a hundred or more small tensors; at a few
// microseconds of host time per launch the GPU would wait on the launches. Each launch
// carries, in its kernel parameters, up to MaxTensors tensor descriptions and up to
// MaxBlocks block assignments: block b works on chunk chunk_of[b] (elements
// [chunk * list_chunk, (chunk + 1) * list_chunk)) of tensor tensor_of[b]. A tensor with more
// chunks than fit continues in the next launch. The launchers use up to 2048 blocks per
// launch, enough resident threads to keep a large GPU's memory busy (160 blocks, what fits
// in the classic 4 KB of parameters, would leave most of an H100 idle on a memory-bound
// update); that needs the 32 KB kernel parameters of CUDA 12.1+ on sm_70 and newer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace condense::cuda::detail {

/// Elements per block of a multi-tensor launch (64 per thread), and its threads per block.
inline constexpr std::int64_t list_chunk = 16384;
inline constexpr int list_threads = 256;
/// The most kernel-parameter bytes a launch may take (CUDA 12.1+, sm_70+).
inline constexpr std::size_t max_list_parameter_bytes = 32764;

/// The kernel parameters of one multi-tensor launch.
template <int MaxTensors, int MaxBlocks, class Tensor>
struct ListLaunch {
  static_assert(MaxTensors <= 256, "tensor_of holds 8-bit slots");
  Tensor tensor[MaxTensors];
  std::uint8_t tensor_of[MaxBlocks];
  std::int32_t chunk_of[MaxBlocks];
};

/// The first element of chunk `chunk`, and the end of that chunk in a tensor of `n` elements.
__device__ __forceinline__ std::int64_t chunk_begin(std::int32_t chunk) { return static_cast<std::int64_t>(chunk) * list_chunk; }
__device__ __forceinline__ std::int64_t chunk_end(std::int32_t chunk, std::int64_t n) {
  return chunk_begin(chunk) + list_chunk < n ? chunk_begin(chunk) + list_chunk : n;
}

/// Chunks of `n` elements.
inline std::int64_t list_chunks(std::int64_t n) { return (n + list_chunk - 1) / list_chunk; }

/// Covers every chunk of tensors 0..count-1 in order with launches: `numel(i)` is tensor i's
/// element count (tensors of 0 elements are skipped), `describe(i, slot)` fills its
/// description, and `launch(const ListLaunch&, blocks)` queues one kernel of `blocks` blocks.
template <int MaxTensors, int MaxBlocks, class Tensor, class Numel, class Describe, class Launch>
void for_each_list_launch(std::size_t count, Numel numel, Describe describe, Launch launch) {
  ListLaunch<MaxTensors, MaxBlocks, Tensor> batch{};
  int tensors = 0, blocks = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::int64_t chunks = list_chunks(numel(i));
    if (chunks == 0) continue;
    int slot = tensors++;
    describe(i, batch.tensor[slot]);
    for (std::int64_t c = 0; c < chunks; ++c) {
      batch.tensor_of[blocks] = static_cast<std::uint8_t>(slot);
      batch.chunk_of[blocks] = static_cast<std::int32_t>(c);
      if (++blocks < MaxBlocks) continue;
      launch(batch, blocks);
      blocks = 0;
      tensors = 0;
      if (c + 1 < chunks) {  // the rest of this tensor opens the next launch
        batch.tensor[0] = batch.tensor[slot];
        slot = 0;
        tensors = 1;
      }
    }
    if (tensors == MaxTensors) {
      if (blocks > 0) launch(batch, blocks);
      blocks = 0;
      tensors = 0;
    }
  }
  if (blocks > 0) launch(batch, blocks);
}

}  // namespace condense::cuda::detail
