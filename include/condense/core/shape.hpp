// Shape (and strides): a small vector of int64 extents that prints as "(2x3x4)", plus the
// shape arithmetic every op shares: numel, contiguous strides, dim normalisation and
// broadcasting.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "condense/core/error.hpp"

namespace condense {

/// Extents (or strides) of a tensor, outermost first. Prints as "(2x3x4)"; a scalar as "()".
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {}
  template <class It>
  Shape(It first, It last) : dims_(first, last) {}

  std::size_t size() const { return dims_.size(); }
  bool empty() const { return dims_.empty(); }
  std::int64_t& operator[](std::size_t i) { return dims_[i]; }
  std::int64_t operator[](std::size_t i) const { return dims_[i]; }
  auto begin() { return dims_.begin(); }
  auto end() { return dims_.end(); }
  auto begin() const { return dims_.begin(); }
  auto end() const { return dims_.end(); }
  std::int64_t back() const { return dims_.back(); }
  void push_back(std::int64_t d) { dims_.push_back(d); }
  void insert(std::size_t at, std::int64_t d) { dims_.insert(dims_.begin() + static_cast<std::ptrdiff_t>(at), d); }
  void erase(std::size_t at) { dims_.erase(dims_.begin() + static_cast<std::ptrdiff_t>(at)); }
  const std::vector<std::int64_t>& vec() const { return dims_; }
  friend bool operator==(const Shape&, const Shape&) = default;

  /// "(2x3x4)".
  std::string str() const {
    std::ostringstream os;
    os << *this;
    return os.str();
  }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << '(';
    for (std::size_t i = 0; i < s.size(); ++i) os << (i ? "x" : "") << s[i];
    return os << ')';
  }

 private:
  std::vector<std::int64_t> dims_;
};

/// Strides are element counts per dimension, stored like a shape.
using Strides = Shape;

/// Number of elements of `shape` (1 for a scalar).
inline std::int64_t numel_of(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// Row-major strides of a contiguous tensor of `shape`.
inline Strides contiguous_strides(const Shape& shape) {
  Strides strides(std::vector<std::int64_t>(shape.size(), 1));
  for (std::size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

/// Maps a possibly negative `dim` into [0, rank); throws naming `op` when out of range.
inline std::size_t normalize_dim(std::string_view op, std::int64_t dim, std::size_t rank) {
  const auto r = static_cast<std::int64_t>(rank);
  CONDENSE_CHECK(dim >= -r && dim < r, op, "dim ", dim, " out of range for a tensor of rank ", rank);
  return static_cast<std::size_t>(dim < 0 ? dim + r : dim);
}

/// Validates extents (non-negative); throws naming `op`.
inline void check_shape(std::string_view op, const Shape& shape) {
  for (auto d : shape) CONDENSE_CHECK(d >= 0, op, "negative extent in shape ", shape);
}

/// NumPy broadcasting of two shapes; throws naming `op` and both shapes when incompatible.
inline Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b) {
  const std::size_t rank = a.size() > b.size() ? a.size() : b.size();
  Shape out{std::vector<std::int64_t>(rank, 1)};
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    CONDENSE_CHECK(da == db || da == 1 || db == 1, op, "shapes cannot be broadcast: ", a, " and ", b);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace condense
