# Finds the system packages condense builds on (Debian: libeigen3-dev, libomp/gcc OpenMP,
# nlohmann-json3-dev, doctest-dev, libbenchmark-dev). No code is vendored here: only the lookups.
include(GNUInstallDirs)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.9 REQUIRED)
if(CONDENSE_BUILD_TESTS)
  find_package(doctest REQUIRED)
  include(doctest)  # doctest_discover_tests
endif()
if(CONDENSE_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
