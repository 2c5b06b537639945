// nn::Embedding: a table of token vectors looked up by integer ids, and grow(), which
// appends rows (new special tokens) initialised to the mean of the existing rows.
#pragma once

#include <cstdint>
#include <algorithm>
#include <vector>

#include "condense/core/random.hpp"
#include "condense/nn/init.hpp"
#include "condense/nn/module.hpp"
#include "condense/ops/embedding.hpp"

namespace condense::nn {
namespace detail {

/// A copy of `t` [R, ...] with `n_new` rows appended along dim 0, each the mean of the
/// existing rows (zeros when R = 0). No autograd history.
// t: [R, ...] -> [R + n_new, ...]
template <DifferentiableElement T>
Tensor<T> append_mean_rows(const Tensor<T>& t, std::int64_t n_new) {
  const Tensor<T> old = t.detach().contiguous();
  const std::int64_t rows = old.size(0);
  Shape shape = old.shape();
  std::int64_t row_elems = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) row_elems *= shape[d];
  shape[0] = rows + n_new;
  Tensor<T> fresh = Tensor<T>::empty(shape);
  const T* src = old.data();
  T* dst = fresh.data();
  std::copy(src, src + rows * row_elems, dst);
  std::vector<double> mean(static_cast<std::size_t>(row_elems), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < row_elems; ++j) mean[static_cast<std::size_t>(j)] += static_cast<double>(src[r * row_elems + j]);
  for (auto& m : mean) m = rows > 0 ? m / static_cast<double>(rows) : 0.0;
  for (std::int64_t r = rows; r < rows + n_new; ++r)
    for (std::int64_t j = 0; j < row_elems; ++j) dst[r * row_elems + j] = static_cast<T>(mean[static_cast<std::size_t>(j)]);
  return fresh;
}

}  // namespace detail

/// Lookup table. Parameter: "weight" [num_embeddings, dim], initialised N(0, init_std^2)
/// (PyTorch's default is init_std = 1).
template <DifferentiableElement T>
class Embedding : public Module<T> {
 public:
  /// A table of `num_embeddings` rows of `dim` values.
  Embedding(std::int64_t num_embeddings, std::int64_t dim, Generator& gen, double init_std = 1.0) : dim_(dim) {
    CONDENSE_CHECK(num_embeddings >= 0 && dim >= 0, "Embedding", "sizes must be >= 0, got ", num_embeddings, " x ", dim);
    weight_ = &this->register_parameter("weight", Tensor<T>::empty({num_embeddings, dim}));
    init::normal_(*weight_, 0.0, init_std, gen);
  }

  /// The rows of `ids` (int32 or int64, any shape, each in [0, num_embeddings)).
  // ids: [...] -> [..., dim]
  template <IndexElement I>
  Tensor<T> forward(const Tensor<I>& ids) const {
    return embedding(*weight_, ids);
  }
  /// Same as forward().
  template <IndexElement I>
  Tensor<T> operator()(const Tensor<I>& ids) const {
    return forward(ids);
  }

  /// Appends `n_new` rows, each initialised to the mean of the existing rows (zeros for an
  /// empty table). Replaces the parameter tensor: optimizer state built on the old one
  /// must be rebuilt, and earlier copies of the handle keep the old table.
  void grow(std::int64_t n_new) {
    CONDENSE_CHECK(n_new >= 0, "Embedding::grow", "number of new rows must be >= 0, got ", n_new);
    *weight_ = detail::append_mean_rows(*weight_, n_new);
    weight_->requires_grad_(true);
  }

  /// The table slot, [num_embeddings, dim].
  Tensor<T>& weight() const { return *weight_; }
  /// Rows of the table.
  std::int64_t num_embeddings() const { return weight_->size(0); }
  /// Width of a row.
  std::int64_t embedding_dim() const { return dim_; }

 private:
  std::int64_t dim_;
  Tensor<T>* weight_ = nullptr;
};

}  // namespace condense::nn
