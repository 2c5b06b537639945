// custom_policy_cuda: a mask policy of your own on the GPU. PrefixLM (prefix_lm.hpp) gets
// its CUDA kernels from prefix_lm_kernels.cu; here the same attention call runs on the CPU
// and, when a CUDA device is present, on the GPU, and the outputs and gradients are
// compared. Without a device the program says so and runs the CPU half only.
#include <cstdio>

#include "condense/condense.hpp"
#include "prefix_lm.hpp"

using namespace condense;

int main() {
  const PrefixLM policy{16};
  Generator gen(0);
  const auto q = randn<float>({2, 4, 96, 64}, gen), k = randn<float>({2, 4, 96, 64}, gen), v = randn<float>({2, 4, 96, 64}, gen);

  const auto run = [&](Device device) {
    auto qd = q.detach().to(device).requires_grad_();
    auto kd = k.detach().to(device).requires_grad_();
    auto vd = v.detach().to(device).requires_grad_();
    const auto out = attention(qd, kd, vd, policy);
    sum(square(out)).backward();
    return std::vector<Tensor<float>>{out.cpu(), qd.grad().cpu(), kd.grad().cpu(), vd.grad().cpu()};
  };
  const auto cpu = run(Device::cpu());
  std::printf("PrefixLM attention on the CPU: out (%lld x %lld x %lld x %lld)\n", static_cast<long long>(q.size(0)),
              static_cast<long long>(q.size(1)), static_cast<long long>(q.size(2)), static_cast<long long>(q.size(3)));
  if (!cuda::is_available()) {
    std::printf("no CUDA device: the GPU comparison is skipped\n");
    return 0;
  }
  const auto gpu = run(Device::cuda());
  const char* names[] = {"out", "dq", "dk", "dv"};
  double worst = 0;
  for (int i = 0; i < 4; ++i) {
    const auto a = cpu[i].to_vector(), b = gpu[i].to_vector();
    double diff = 0;
    for (std::size_t j = 0; j < a.size(); ++j) diff = std::max(diff, double(std::abs(a[j] - b[j])));
    std::printf("%-3s max |cpu - cuda| = %.3g\n", names[i], diff);
    worst = std::max(worst, diff);
  }
  return worst < 1e-3 ? 0 : 1;
}
