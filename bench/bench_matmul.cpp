// Matrix-product benchmarks: condense matmul against Eigen's own GEMM on the same row-major
// data in the same process (pairs BM_matmul_condense/N and BM_matmul_eigen/N), linear forward
// and forward+backward at transformer-layer size (with the raw-Eigen equivalents), and batched
// products: many small matrices times one shared matrix, and a true bmm. condense returns a new
// tensor per call while the Eigen references write into a preallocated matrix.
// Threads: CONDENSE_THREADS (default 2), shared by condense's loops and Eigen. On a shared
// machine, add --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>

#include <Eigen/Core>

#include "condense/core/factories.hpp"
#include "condense/ops/matmul.hpp"

using namespace condense;

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMatrix>;

void set_threads() {
  const char* env = std::getenv("CONDENSE_THREADS");
  set_num_threads(env ? std::atoi(env) : 2);
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- square matmul: condense vs Eigen ---------------------------------------------------
void BM_matmul_condense(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  Generator gen(1);
  const auto a = randn<float>({n, n}, gen), b = randn<float>({n, n}, gen);
  for (auto _ : state) {
    auto c = matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * double(n) * double(n) * double(n));
}

void BM_matmul_eigen(benchmark::State& state) {
  const auto n = static_cast<Eigen::Index>(state.range(0));
  Generator gen(1);
  const auto a = randn<float>({n, n}, gen), b = randn<float>({n, n}, gen);
  const RowMap A(a.data(), n, n), B(b.data(), n, n);
  RowMatrix C(n, n);
  for (auto _ : state) {
    C.noalias() = A * B;
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(state, 2.0 * double(n) * double(n) * double(n));
}

// ---- linear: x [8*256, 1024] -> 4096 ----------------------------------------------------
constexpr std::int64_t kRows = 8 * 256, kIn = 1024, kOut = 4096;
constexpr double kLinearFlops = 2.0 * double(kRows) * double(kIn) * double(kOut);

void BM_linear_forward_condense(benchmark::State& state) {
  Generator gen(2);
  const auto x = randn<float>({8, 256, kIn}, gen), w = randn<float>({kOut, kIn}, gen, 0.0, 0.03), b = randn<float>({kOut}, gen);
  for (auto _ : state) {
    auto y = linear(x, w, b);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, kLinearFlops);
}

void BM_linear_forward_eigen(benchmark::State& state) {
  Generator gen(2);
  const auto x = randn<float>({kRows, kIn}, gen), w = randn<float>({kOut, kIn}, gen, 0.0, 0.03), b = randn<float>({kOut}, gen);
  const RowMap X(x.data(), kRows, kIn), W(w.data(), kOut, kIn);
  const Eigen::Map<Eigen::RowVectorXf> bias(b.data(), kOut);
  RowMatrix Y(kRows, kOut);
  for (auto _ : state) {
    Y.rowwise() = bias;
    Y.noalias() += X * W.transpose();
    benchmark::DoNotOptimize(Y.data());
  }
  set_flops(state, kLinearFlops);
}

void BM_linear_forward_backward_condense(benchmark::State& state) {
  Generator gen(3);
  auto x = randn<float>({8, 256, kIn}, gen).requires_grad_();
  auto w = randn<float>({kOut, kIn}, gen, 0.0, 0.03).requires_grad_();
  auto b = randn<float>({kOut}, gen).requires_grad_();
  const auto gy = randn<float>({8, 256, kOut}, gen);
  for (auto _ : state) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    linear(x, w, b).backward(gy);
    benchmark::DoNotOptimize(w.grad().data());
  }
  set_flops(state, 3.0 * kLinearFlops);
}

void BM_linear_forward_backward_eigen(benchmark::State& state) {
  Generator gen(3);
  const auto x = randn<float>({kRows, kIn}, gen), w = randn<float>({kOut, kIn}, gen, 0.0, 0.03), b = randn<float>({kOut}, gen);
  const auto gy = randn<float>({kRows, kOut}, gen);
  const RowMap X(x.data(), kRows, kIn), W(w.data(), kOut, kIn), G(gy.data(), kRows, kOut);
  const Eigen::Map<Eigen::RowVectorXf> bias(b.data(), kOut);
  RowMatrix Y(kRows, kOut), dX(kRows, kIn), dW(kOut, kIn);
  Eigen::RowVectorXf db(kOut);
  for (auto _ : state) {
    Y.rowwise() = bias;
    Y.noalias() += X * W.transpose();
    dX.noalias() = G * W;
    dW.noalias() = G.transpose() * X;
    db = G.colwise().sum();
    benchmark::DoNotOptimize(Y.data());
    benchmark::DoNotOptimize(dW.data());
  }
  set_flops(state, 3.0 * kLinearFlops);
}

// ---- batched: [8*8, 256, 64] @ [64, 256] (shared right operand) -------------------------
// condense runs one single-threaded GEMM per batch entry on each thread here; the Eigen
// references are the folded single GEMM and a loop of threaded GEMMs.
constexpr std::int64_t kBatch = 8 * 8, kT = 256, kD = 64;
constexpr double kBatchedFlops = 2.0 * double(kBatch) * double(kT) * double(kD) * double(kT);

void BM_matmul_batched_condense(benchmark::State& state) {
  Generator gen(4);
  const auto a = randn<float>({kBatch, kT, kD}, gen), b = randn<float>({kD, kT}, gen);
  for (auto _ : state) {
    auto c = matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, kBatchedFlops);
}

void BM_matmul_batched_eigen_folded(benchmark::State& state) {
  Generator gen(4);
  const auto a = randn<float>({kBatch, kT, kD}, gen), b = randn<float>({kD, kT}, gen);
  const RowMap A(a.data(), kBatch * kT, kD), B(b.data(), kD, kT);
  RowMatrix C(kBatch * kT, kT);
  for (auto _ : state) {  // the batch folded into the rows: one [B*T, D] @ [D, T] GEMM
    C.noalias() = A * B;
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(state, kBatchedFlops);
}

void BM_matmul_batched_eigen_loop(benchmark::State& state) {
  Generator gen(4);
  const auto a = randn<float>({kBatch, kT, kD}, gen), b = randn<float>({kD, kT}, gen);
  const RowMap B(b.data(), kD, kT);
  RowMatrix C(kBatch * kT, kT);
  for (auto _ : state) {  // one matrix after another, each GEMM threaded by Eigen
    for (std::int64_t i = 0; i < kBatch; ++i)
      C.middleRows(i * kT, kT).noalias() = RowMap(a.data() + i * kT * kD, kT, kD) * B;
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(state, kBatchedFlops);
}

// ---- bmm: [8*8, 256, 64] @ [8*8, 64, 256] (a product per batch entry) -------------------
void BM_bmm_condense(benchmark::State& state) {
  Generator gen(5);
  const auto a = randn<float>({kBatch, kT, kD}, gen), b = randn<float>({kBatch, kD, kT}, gen);
  for (auto _ : state) {
    auto c = bmm(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, kBatchedFlops);
}

void BM_bmm_eigen(benchmark::State& state) {
  Generator gen(5);
  const auto a = randn<float>({kBatch, kT, kD}, gen), b = randn<float>({kBatch, kD, kT}, gen);
  RowMatrix C(kBatch * kT, kT);
  for (auto _ : state) {  // one matrix after another, each GEMM threaded by Eigen
    for (std::int64_t i = 0; i < kBatch; ++i)
      C.middleRows(i * kT, kT).noalias() = RowMap(a.data() + i * kT * kD, kT, kD) * RowMap(b.data() + i * kD * kT, kD, kT);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(state, kBatchedFlops);
}

}  // namespace

BENCHMARK(BM_linear_forward_condense)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_linear_forward_eigen)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_linear_forward_backward_condense)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_linear_forward_backward_eigen)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_batched_condense)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_batched_eigen_folded)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_batched_eigen_loop)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bmm_condense)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bmm_eigen)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  set_threads();
  // Each size runs condense then Eigen back to back, so both see the same machine load.
  for (std::int64_t n = 128; n <= 2048; n *= 2) {
    benchmark::RegisterBenchmark("BM_matmul_condense", BM_matmul_condense)->Arg(n)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark("BM_matmul_eigen", BM_matmul_eigen)->Arg(n)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
