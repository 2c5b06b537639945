// Storage: a reference-counted block of bytes on one device, shared by a tensor and all of
// its views. CPU blocks are 64-byte aligned and come from the caching CPU allocator
// (core/cpu_allocator.hpp); CUDA blocks come from the CUDA backend.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

#include "condense/backend/cuda/runtime.hpp"
#include "condense/core/cpu_allocator.hpp"
#include "condense/core/device.hpp"
#include "condense/core/error.hpp"

namespace condense {

/// Shared, untyped memory block. Copying a Storage shares the block.
class Storage {
 public:
  static constexpr std::size_t cpu_alignment = 64;

  Storage() = default;

  /// Allocates `bytes` on `device` (uninitialised); `op` names the caller in errors.
  static Storage allocate(std::size_t bytes, Device device, std::string_view op = "allocate") {
    Storage s;
    s.block_ = std::make_shared<Block>();
    s.block_->bytes = bytes;
    s.block_->device = device;
    if (device.is_cpu()) {
      const std::size_t padded = (bytes + cpu_alignment - 1) / cpu_alignment * cpu_alignment;
      s.block_->ptr = detail::CpuBlockCache::instance().acquire(padded == 0 ? cpu_alignment : padded, &s.block_->granted);
    } else {
      // The exact size (cudaMalloc aligns to 256 bytes and the cache rounds up anyway), so
      // that the emulated backend's checks hold every access to the tensor's own bytes.
      s.block_->ptr = cuda::allocate(bytes == 0 ? 1 : bytes, device.index, op);
    }
    return s;
  }

  /// Allocates `bytes` on `device` and sets them to zero.
  static Storage zeros(std::size_t bytes, Device device, std::string_view op = "zeros") {
    Storage s = allocate(bytes, device, op);
    if (device.is_cpu()) {
      std::memset(s.data(), 0, bytes);
    } else if (bytes > 0) {
      cuda::memset_zero(s.data(), bytes, device.index, op);
    }
    return s;
  }

  void* data() const { return block_ ? block_->ptr : nullptr; }
  std::size_t bytes() const { return block_ ? block_->bytes : 0; }
  Device device() const { return block_ ? block_->device : Device::cpu(); }
  bool defined() const { return static_cast<bool>(block_); }
  /// Number of Storage handles sharing the block.
  long use_count() const { return block_.use_count(); }
  /// True when both handles share one block.
  bool same_block(const Storage& other) const { return block_ == other.block_; }

 private:
  struct Block {
    void* ptr = nullptr;
    std::size_t bytes = 0;
    std::size_t granted = 0;  ///< CPU: the size the allocator handed out
    Device device;
    Block() = default;
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() {
      if (!ptr) return;
      if (device.is_cpu()) {
        detail::CpuBlockCache::instance().release(ptr, granted);
      } else {
        cuda::deallocate(ptr, device.index);
      }
    }
  };
  std::shared_ptr<Block> block_;
};

}  // namespace condense
