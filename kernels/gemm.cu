// Batched GEMM through cuBLAS (cublasGemmStridedBatchedEx): one handle per device and
// thread, bound to the current stream before each call. float runs in FP32 (or TF32 when
// allow_tf32()), double in FP64, bfloat16 and float16 with FP32 accumulation, and float
// outputs from bfloat16 operands (allow_bf16_matmul()) with FP32 accumulation.
#include <cublas_v2.h>

#include <array>
#include <climits>
#include <cstdint>

#include "condense/backend/cuda/kernels.hpp"
#include "detail/common.cuh"

namespace condense::cuda {
namespace {

const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

void check_cublas(cublasStatus_t status, std::string_view op, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(op, what, " failed: ", cublas_status_name(status));
}

/// The calling thread's cuBLAS handle for `device`, created on first use. Handles are never
/// destroyed: a destructor at thread exit could run after the CUDA runtime has shut down,
/// and the process releases them anyway.
cublasHandle_t handle_for(int device, std::string_view op) {
  thread_local std::array<cublasHandle_t, 64> handles{};
  CONDENSE_CHECK(device >= 0 && device < 64, op, "CUDA device ", device, " is beyond the 64 supported");
  cublasHandle_t& h = handles[static_cast<std::size_t>(device)];
  if (!h) check_cublas(cublasCreate(&h), op, "cublasCreate");
  return h;
}

int checked_int(std::int64_t v, std::string_view op, const char* what) {
  CONDENSE_CHECK(v >= 0 && v <= INT_MAX, op, "GEMM ", what, " ", v, " does not fit cuBLAS's 32-bit int");
  return static_cast<int>(v);
}

}  // namespace

void gemm(const GemmArgs& g, std::string_view op) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  detail::use_device(g.device, op);
  cublasHandle_t handle = handle_for(g.device, op);
  check_cublas(cublasSetStream(handle, detail::stream_of(g.device)), op, "cublasSetStream");
  const int m = checked_int(g.m, op, "m"), n = checked_int(g.n, op, "n"), k = checked_int(g.k, op, "k");
  const int batch = checked_int(g.batch, op, "batch");
  const int lda = checked_int(g.lda, op, "lda"), ldb = checked_int(g.ldb, op, "ldb"), ldc = checked_int(g.ldc, op, "ldc");
  const cublasOperation_t ta = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cudaDataType_t type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  const float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(g.beta);
  const void* alpha = &alpha_f;
  const void* beta = &beta_f;
  switch (g.dtype) {
    case DType::Float32:
      compute = allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      break;
    case DType::Float64:
      type = CUDA_R_64F;
      compute = CUBLAS_COMPUTE_64F;
      alpha = &g.alpha;
      beta = &g.beta;
      break;
    case DType::BFloat16: type = CUDA_R_16BF; break;
    case DType::Float16: type = CUDA_R_16F; break;
    default: fail(op, "no CUDA GEMM for element type ", dtype_name(g.dtype));
  }
  cudaDataType_t input_type = type;
  if (g.bf16_inputs) {
    CONDENSE_CHECK(g.dtype == DType::Float32, op, "bfloat16 GEMM operands need a float32 output, got ",
                   dtype_name(g.dtype));
    input_type = CUDA_R_16BF;
    compute = CUBLAS_COMPUTE_32F;
  }
  check_cublas(cublasGemmStridedBatchedEx(handle, ta, tb, m, n, k, alpha, g.a, input_type, lda, g.stride_a, g.b,
                                          input_type, ldb, g.stride_b, beta, g.c, type, ldc, g.stride_c, batch, compute,
                                          CUBLAS_GEMM_DEFAULT),
               op, "cublasGemmStridedBatchedEx");
}

}  // namespace condense::cuda
