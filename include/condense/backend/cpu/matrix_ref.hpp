// MatrixRef: a strided matrix on a raw pointer, the operand type of the CPU matrix products
// (gemm.hpp, packed_gemm.hpp).
#pragma once

#include <cstdint>
#include <type_traits>

namespace condense::cpu {

/// A strided matrix: element (i, j) is data[i * row_stride + j * col_stride].
template <class T>
struct MatrixRef {
  T* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;
  std::int64_t col_stride = 0;

  MatrixRef() = default;
  MatrixRef(T* data_, std::int64_t rows_, std::int64_t cols_, std::int64_t row_stride_, std::int64_t col_stride_)
      : data(data_), rows(rows_), cols(cols_), row_stride(row_stride_), col_stride(col_stride_) {}
  /// A read-only view of a mutable matrix.
  template <class U>
    requires std::is_same_v<const U, T> && (!std::is_same_v<U, T>)
  MatrixRef(const MatrixRef<U>& m)  // NOLINT(google-explicit-constructor): T* -> const T*
      : data(m.data), rows(m.rows), cols(m.cols), row_stride(m.row_stride), col_stride(m.col_stride) {}

  /// Element (i, j).
  T& operator()(std::int64_t i, std::int64_t j) const { return data[i * row_stride + j * col_stride]; }
  /// The transposed matrix over the same memory (no copy).
  MatrixRef transposed() const { return {data, cols, rows, col_stride, row_stride}; }
};

}  // namespace condense::cpu
