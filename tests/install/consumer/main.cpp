// Consumer of the installed package: one autograd step through the umbrella header.
#include <condense/condense.hpp>

#include <iostream>

int main() {
  using namespace condense;
  auto x = tensor<double>({1.0, 2.0, 3.0}).requires_grad_();
  auto loss = sum(x * x);
  loss.backward();
  const auto g = x.grad().to_vector();
  if (g != std::vector<double>{2.0, 4.0, 6.0}) return 1;
  std::cout << "consumer ok: loss " << loss.item() << "\n";
  return 0;
}
