// The cuBLAS functions kernels/gemm.cu (and bench/bench_cuda_matmul.cpp) call, for the
// emulated CUDA backend: handles, streams (ignored: work runs at once),
// cublasGemmStridedBatchedEx, and cublasGemmEx and cublasSgemm as its one-batch forms,
// computed by a plain loop from
// the definition in the cuBLAS documentation (column-major operands, op(A) m x k, op(B)
// k x n, C = alpha op(A) op(B) + beta C per batch, C not read when beta is 0), with the
// documented argument checks, the supported type combinations, and every operand checked to
// lie in emulated device memory. bfloat16 and float16 accumulate in float, TF32 rounds the
// float operands to 10 mantissa bits first, double accumulates in double.
#include "emulation/cuda_emulation.hpp"

#include <cublas_v2.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

/// The opaque handle type cublas_api.h declares.
struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

namespace emu = condense_cuda_emulation;

std::size_t element_bytes(cudaDataType type) {
  switch (type) {
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    default: return 0;
  }
}

/// Element i of an operand of `type`, widened.
double read(const void* base, cudaDataType type, std::int64_t i) {
  const auto* bytes = static_cast<const unsigned char*>(base) + static_cast<std::size_t>(i) * element_bytes(type);
  switch (type) {
    case CUDA_R_16BF: {
      std::uint16_t bits;
      std::memcpy(&bits, bytes, 2);
      return emu::widen(bits, true);
    }
    case CUDA_R_16F: {
      std::uint16_t bits;
      std::memcpy(&bits, bytes, 2);
      return emu::widen(bits, false);
    }
    case CUDA_R_32F: {
      float v;
      std::memcpy(&v, bytes, 4);
      return v;
    }
    default: {
      double v;
      std::memcpy(&v, bytes, 8);
      return v;
    }
  }
}

/// Stores v, rounded to nearest even, as element i of an operand of `type`.
void write(void* base, cudaDataType type, std::int64_t i, double v) {
  auto* bytes = static_cast<unsigned char*>(base) + static_cast<std::size_t>(i) * element_bytes(type);
  switch (type) {
    case CUDA_R_16BF: {
      const std::uint16_t bits = __bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)));
      std::memcpy(bytes, &bits, 2);
      break;
    }
    case CUDA_R_16F: {
      const std::uint16_t bits = __half_as_ushort(__float2half_rn(static_cast<float>(v)));
      std::memcpy(bytes, &bits, 2);
      break;
    }
    case CUDA_R_32F: {
      const auto f = static_cast<float>(v);
      std::memcpy(bytes, &f, 4);
      break;
    }
    default: std::memcpy(bytes, &v, 8);
  }
}

/// x rounded to TF32 (10 mantissa bits, nearest, ties away from zero as the tensor cores' conversion).
float to_tf32(float x) {
  if (!std::isfinite(x)) return x;
  std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  bits = (bits + 0x1000u) & ~0x1fffu;
  return std::bit_cast<float>(bits);
}

/// Whether a rows x cols column-major matrix with leading dim ld, repeated `batch` times
/// `stride` elements apart, lies in one emulated device allocation.
bool in_device_memory(const void* base, cudaDataType type, int rows, int cols, int ld, long long stride, int batch) {
  if (rows == 0 || cols == 0 || batch == 0) return true;
  if (!base || stride < 0) return false;
  const std::int64_t last = std::int64_t{batch - 1} * stride + std::int64_t{cols - 1} * ld + (rows - 1);
  return emu::is_device_range(base, static_cast<std::size_t>(last + 1) * element_bytes(type));
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                          int lda, long long strideA, const void* B, cudaDataType Btype, int ldb,
                                          long long strideB, const void* beta, void* C, cudaDataType Ctype, int ldc,
                                          long long strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const auto valid_op = [](cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; };
  if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0 || batchCount < 0 || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
  // The type combinations of the cublasGemmEx table this library can ask for.
  const bool is_double = computeType == CUBLAS_COMPUTE_64F;
  const bool tf32 = computeType == CUBLAS_COMPUTE_32F_FAST_TF32;
  bool supported = false;
  if (is_double) {
    supported = Atype == CUDA_R_64F && Btype == CUDA_R_64F && Ctype == CUDA_R_64F;
  } else if (tf32) {
    supported = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
  } else if (computeType == CUBLAS_COMPUTE_32F) {
    const bool sixteen = Atype == CUDA_R_16BF || Atype == CUDA_R_16F;
    supported = Atype == Btype && (Atype == CUDA_R_32F ? Ctype == CUDA_R_32F : sixteen && (Ctype == Atype || Ctype == CUDA_R_32F));
  }
  if (!supported) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
  const bool reads_ab = k > 0;
  if ((reads_ab && (!in_device_memory(A, Atype, a_rows, a_cols, lda, strideA, batchCount) ||
                    !in_device_memory(B, Btype, b_rows, b_cols, ldb, strideB, batchCount))) ||
      !in_device_memory(C, Ctype, m, n, ldc, strideC, batchCount))
    return CUBLAS_STATUS_INVALID_VALUE;  // on a GPU: an illegal address, or silently wrong data
  ++condense_cuda_emulation::device_counters().gemms;
  const double alpha_v = is_double ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
  const double beta_v = is_double ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
  for (int batch = 0; batch < batchCount; ++batch) {
    const std::int64_t a0 = batch * strideA, b0 = batch * strideB, c0 = batch * strideC;
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        double sum = 0;
        float sum_f = 0;
        for (int p = 0; p < k; ++p) {
          const double a = read(A, Atype, a0 + (ta ? p + std::int64_t{i} * lda : i + std::int64_t{p} * lda));
          const double b = read(B, Btype, b0 + (tb ? j + std::int64_t{p} * ldb : p + std::int64_t{j} * ldb));
          if (is_double) {
            sum += a * b;
          } else if (tf32) {
            sum_f += to_tf32(static_cast<float>(a)) * to_tf32(static_cast<float>(b));
          } else {
            sum_f += static_cast<float>(a) * static_cast<float>(b);
          }
        }
        const std::int64_t ci = c0 + i + std::int64_t{j} * ldc;
        if (is_double) {
          write(C, Ctype, ci, alpha_v * sum + (beta_v != 0 ? beta_v * read(C, Ctype, ci) : 0.0));
        } else {
          const auto alpha_f = static_cast<float>(alpha_v), beta_f = static_cast<float>(beta_v);
          write(C, Ctype, ci, alpha_f * sum_f + (beta_f != 0 ? beta_f * static_cast<float>(read(C, Ctype, ci)) : 0.0f));
        }
      }
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

/// One product: the strided batched form with one batch.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C,
                                    Ctype, ldc, 0, 1, computeType, algo);
}

/// float GEMM in the handle's default math mode (no TF32).
cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                              int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                              const float* beta, float* C, int ldc) {
  return cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C,
                      CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

}  // extern "C"
