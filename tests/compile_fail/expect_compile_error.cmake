# Compile-fail check, run as a test:
#   cmake -DCXX=<c++ compiler> -DSOURCE=<file.cpp> -DINCLUDE_DIR=<include dir> -DEXPECT=<text>
#         [-DDEFINES=NAME1;NAME2] [-DSHOULD_COMPILE=ON] -P expect_compile_error.cmake
# Compiles SOURCE with -std=c++20 -fsyntax-only -DCONDENSE_COMPILE_FAIL_TEST (plus -D each of
# DEFINES). Passes only if the compilation fails and its output contains EXPECT; with
# SHOULD_COMPILE=ON it passes only if the compilation succeeds (the control case).
foreach(var CXX SOURCE INCLUDE_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "expect_compile_error: ${var} is not set")
  endif()
endforeach()

set(_flags -std=c++20 -fsyntax-only -DCONDENSE_COMPILE_FAIL_TEST)
foreach(_define IN LISTS DEFINES)
  list(APPEND _flags -D${_define})
endforeach()

execute_process(
  COMMAND ${CXX} ${_flags} -I${INCLUDE_DIR} ${SOURCE}
  RESULT_VARIABLE _rc
  OUTPUT_VARIABLE _out
  ERROR_VARIABLE _err)
set(_log "${_out}${_err}")

if(SHOULD_COMPILE)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "expected ${SOURCE} to compile, but it failed:\n${_log}")
  endif()
  message(STATUS "compiled as expected: ${SOURCE}")
  return()
endif()

if(_rc EQUAL 0)
  message(FATAL_ERROR "expected a compile error from ${SOURCE}, but it compiled")
endif()
if("${EXPECT}" STREQUAL "")
  message(FATAL_ERROR "expect_compile_error: EXPECT is not set")
endif()
string(FIND "${_log}" "${EXPECT}" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "${SOURCE} failed to compile, but the output lacks \"${EXPECT}\":\n${_log}")
endif()
message(STATUS "failed to compile with the expected message: ${EXPECT}")
