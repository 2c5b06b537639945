// The host side of the CUDA norm and rope kernels, which runs without a GPU: the row-chunk
// plan of the deterministic weight/bias gradient reduction (every row in exactly one
// non-empty chunk, enough rows per chunk, a bounded number of blocks, the same plan for
// the same sizes), the statistics type, and the errors a CPU-only build gives.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "condense/backend/cuda/norm_kernels.hpp"
#include "condense/core/factories.hpp"
#include "condense/ops/norms.hpp"
#include "condense/ops/rope.hpp"
#include "test_util.hpp"

namespace test_norm_cuda_plan {

using namespace condense;

TEST_CASE("cuda norm plan: every row lands in one non-empty chunk of enough rows") {
  const std::vector<std::int64_t> row_counts = {1, 2, 63, 64, 65, 127, 128, 1000, 3000, 16384, 100003, 1 << 22};
  const std::vector<std::int64_t> col_counts = {1, 3, 31, 32, 33, 768, 1024, 4096, 4100, 65536, 1 << 20};
  for (const std::int64_t rows : row_counts) {
    for (const std::int64_t cols : col_counts) {
      CAPTURE(rows);
      CAPTURE(cols);
      const cuda::NormParamChunks plan = cuda::norm_param_chunks(rows, cols);
      REQUIRE(plan.count >= 1);
      REQUIRE(plan.rows_per_chunk >= 1);
      // Chunks [k * rows_per_chunk, min(rows, (k + 1) * rows_per_chunk)) cover the rows, none empty.
      CHECK(plan.count * plan.rows_per_chunk >= rows);
      CHECK((plan.count - 1) * plan.rows_per_chunk < rows);
      CHECK(plan.rows_per_chunk >= std::min<std::int64_t>(rows, cuda::norm_param_min_chunk_rows));
      // The grid stays near the target: at most ceil(target / slabs) chunks per slab.
      const std::int64_t slabs = (cols + cuda::norm_param_slab_cols - 1) / cuda::norm_param_slab_cols;
      CHECK(plan.count <= (cuda::norm_param_target_blocks + slabs - 1) / slabs);
      CHECK(plan.count <= 65535);  // gridDim.y
    }
  }
}

TEST_CASE("cuda norm plan: typical training sizes split into many chunks") {
  // 16k rows of 768: 24 slabs, 86 chunks of 191 rows (2064 blocks).
  const auto small = cuda::norm_param_chunks(16384, 768);
  CHECK(small.count == 86);
  CHECK(small.rows_per_chunk == 191);
  // 16k rows of 4096: 128 slabs, 16 chunks of 1024 rows.
  const auto large = cuda::norm_param_chunks(16384, 4096);
  CHECK(large.count == 16);
  CHECK(large.rows_per_chunk == 1024);
  // 301 rows, the largest row count of the CUDA parity tests (tests/cuda/test_cuda_norms.cpp):
  // 4 chunks of 76 rows and a shorter last one for every row length those tests use.
  for (const std::int64_t cols : {1, 3, 64, 768, 1500, 4100}) {
    CAPTURE(cols);
    CHECK(cuda::norm_param_chunks(301, cols).count == 4);
    CHECK(cuda::norm_param_chunks(301, cols).rows_per_chunk == 76);
  }
  // Few rows: one chunk; no rows: no chunk.
  CHECK(cuda::norm_param_chunks(100, 768).count == 1);
  CHECK(cuda::norm_param_chunks(0, 768).count == 0);
  CHECK(cuda::norm_param_chunks(0, 768).rows_per_chunk == 0);
}

TEST_CASE("cuda norm plan: statistics are kept in the accumulation type") {
  CHECK(cuda::norm_stat_dtype(DType::Float64) == DType::Float64);
  CHECK(cuda::norm_stat_dtype(DType::Float32) == DType::Float32);
  CHECK(cuda::norm_stat_dtype(DType::BFloat16) == DType::Float32);
  CHECK(cuda::norm_stat_dtype(DType::Float16) == DType::Float32);
}

#if !CONDENSE_WITH_CUDA
TEST_CASE("cuda norm plan: a CPU-only build names the op") {
  CHECK_THROWS_WITH_AS(cuda::norm_forward(true, DType::Float32, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                          1, 1, 1e-5, "layer_norm"),
                       doctest::Contains("[layer_norm]"), Error);
  CHECK_THROWS_WITH_AS(cuda::norm_backward_params(false, DType::Float32, 0, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                  nullptr, 1, 1, "rms_norm"),
                       doctest::Contains("built without CUDA"), Error);
  CHECK_THROWS_WITH_AS(cuda::rope_rotate(false, cuda::StridedArg{}, cuda::StridedArg{}, nullptr, nullptr, 1, "rope"),
                       doctest::Contains("[rope]"), Error);
}
#endif

TEST_CASE("cpu norms and rope: argument errors that do not need a GPU") {
  const auto x = ones<float>({2, 4});
  CHECK_THROWS_WITH_AS(layer_norm(Tensor<float>()), doctest::Contains("undefined"), Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, ones<float>({3})), doctest::Contains("does not match"), Error);
  // A hand-made table whose cos and sin disagree in shape is rejected before any kernel runs.
  RopeTable<float> table = rope_table<float>(zeros<std::int64_t>({3}), 4);
  table.sin = zeros<float>({1, 3, 1});
  CHECK_THROWS_WITH_AS(rope(ones<float>({1, 1, 3, 4}), table), doctest::Contains("must both be"), Error);
  CHECK_THROWS_WITH_AS(rope(ones<float>({1, 1, 3, 4}), RopeTable<float>{}), doctest::Contains("undefined"), Error);
}

}  // namespace test_norm_cuda_plan
