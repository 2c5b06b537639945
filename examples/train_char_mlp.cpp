// The main demo (for now): trains a small character-level language model — an MLP over a
// window of the previous characters (embedding -> tanh hidden layer -> logits) — with
// condense's autograd on the CPU, and prints the loss falling, then samples some text.
// Text: the file given as argv[1], else the GPL-3 text that Debian ships in base-files.
#include <condense/condense.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using namespace condense;

namespace {

constexpr int context = 6;     // characters the model sees
constexpr int embed_dim = 24;  // per character
constexpr int hidden = 256;
constexpr int vocab = 256;     // bytes

std::string read_text(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "/usr/share/common-licenses/GPL-3";
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() < 1000) {
    text = "the quick brown fox jumps over the lazy dog. a small model learns which letters follow which. ";
    for (int i = 0; i < 5; ++i) text += text;
    std::cout << "(" << path << " not found: training on a built-in sentence)\n";
  } else {
    std::cout << "training on " << path << " (" << text.size() << " bytes)\n";
  }
  return text;
}

struct Model {
  Tensor<float> embed, w1, b1, w2, b2;
  explicit Model(Generator& gen)
      : embed(randn<float>({vocab, embed_dim}, gen, 0.0, 0.5)),
        w1(randn<float>({hidden, context * embed_dim}, gen, 0.0, 1.0 / std::sqrt(context * embed_dim))),
        b1(zeros<float>({hidden})),
        w2(randn<float>({vocab, hidden}, gen, 0.0, 1.0 / std::sqrt(hidden))),
        b2(zeros<float>({vocab})) {
    for (auto* p : params()) p->requires_grad_();
  }
  std::vector<Tensor<float>*> params() { return {&embed, &w1, &b1, &w2, &b2}; }

  // ids: [B, context] -> logits [B, vocab]
  Tensor<float> forward(const Tensor<std::int64_t>& ids) {
    const auto b = ids.size(0);
    auto x = embedding(embed, ids).reshape({b, context * embed_dim});
    auto h = tanh(linear(x, w1, b1));
    return linear(h, w2, b2);
  }
};

/// Plain SGD: p -= lr * grad, then clears the gradients.
void sgd_step(Model& model, float lr) {
  NoGradGuard no_grad;
  for (auto* p : model.params()) {
    const Tensor<float> g = p->grad();
    float* w = p->data();
    const float* d = g.data();
    for (std::int64_t i = 0; i < p->numel(); ++i) w[i] -= lr * d[i];
    p->zero_grad();
  }
}

}  // namespace

int main(int argc, char** argv) {
  set_num_threads(2);
  const std::string text = read_text(argc, argv);
  Generator gen(2024);
  Model model(gen);
  const int batch = 256, steps = 1500;
  const auto start = std::chrono::steady_clock::now();
  double running = 0.0;
  for (int step = 1; step <= steps; ++step) {
    std::vector<std::int64_t> ids, targets;
    for (int b = 0; b < batch; ++b) {
      const auto at = static_cast<std::size_t>(gen.below(text.size() - context - 1));
      for (int c = 0; c < context; ++c) ids.push_back(static_cast<unsigned char>(text[at + c]));
      targets.push_back(static_cast<unsigned char>(text[at + context]));
    }
    auto logits = model.forward(from_vector<std::int64_t>(ids, {batch, context}));
    auto loss = cross_entropy(logits, from_vector<std::int64_t>(targets, {batch}));
    loss.backward();
    const float lr = step < steps * 2 / 3 ? 0.5f : 0.15f;
    sgd_step(model, lr);
    running = step == 1 ? loss.item() : 0.9 * running + 0.1 * loss.item();
    if (step == 1 || step % 100 == 0) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("step %5d  loss %.3f  (smoothed %.3f)  %.1f s\n", step, loss.item(), running, secs);
    }
  }
  // Sample a few hundred characters, greedy with a little temperature.
  NoGradGuard no_grad;
  std::string out = text.substr(0, context);
  for (int i = 0; i < 300; ++i) {
    std::vector<std::int64_t> window;
    for (int c = 0; c < context; ++c) window.push_back(static_cast<unsigned char>(out[out.size() - context + c]));
    const auto probs = softmax(mul(model.forward(from_vector<std::int64_t>(window, {1, context})), 1.0f / 0.7f), -1).to_vector();
    double u = gen.uniform01(), acc = 0.0;
    int next = 0;
    for (int v = 0; v < vocab; ++v) {
      acc += probs[static_cast<std::size_t>(v)];
      if (u < acc) { next = v; break; }
    }
    out.push_back(static_cast<char>(next));
  }
  std::cout << "\nsample:\n" << out << "\n";
  return 0;
}
