// The token input/output pair the language models share: vocabulary logits through an untied
// output layer or the tied embedding table, and vocabulary growth of both (new special
// tokens start from the mean of the existing rows).
#pragma once

#include <cstdint>

#include "condense/core/tensor_type.hpp"
#include "condense/nn/embedding.hpp"
#include "condense/nn/linear.hpp"
#include "condense/ops/matmul.hpp"

namespace condense::nn {

/// Vocabulary logits of hidden states: `lm_head` when there is one, else the embedding table
/// (tied embeddings).
// hidden: [..., d], embed: [V, d] -> [..., V]
template <DifferentiableElement T>
Tensor<T> token_logits(const Embedding<T>& embed, const Linear<T>* lm_head, const Tensor<T>& hidden) {
  return lm_head ? lm_head->forward(hidden) : linear(hidden, embed.weight());
}

/// Appends `n_new` rows to the embedding table and, when untied, to the output layer, each
/// the mean of the existing rows. Parameter tensors are replaced, so an optimizer built on
/// the old ones must be rebuilt.
template <DifferentiableElement T>
void grow_token_rows(Embedding<T>& embed, Linear<T>* lm_head, std::int64_t n_new) {
  embed.grow(n_new);
  if (lm_head) {
    lm_head->weight() = detail::append_mean_rows(lm_head->weight(), n_new);
    lm_head->weight().requires_grad_(true);
  }
}

}  // namespace condense::nn
