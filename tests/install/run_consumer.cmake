# ctest script: installs condense into a fresh prefix (from the calling build when BUILD_DIR
# is given, else from a fresh build of SOURCE_DIR), then configures, builds and runs the
# consumer project in tests/install/consumer against that prefix.
foreach(var SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake needs -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${name}: ok")
endfunction()

if(NOT DEFINED WITH_CUDA)
  set(WITH_CUDA OFF)
endif()
if(DEFINED BUILD_DIR)
  # Install what the calling build already compiled (condense::cuda takes minutes of nvcc).
  run_step("install condense" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
else()
  run_step("configure condense" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/condense-build -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=${prefix} -DCONDENSE_CUDA=${WITH_CUDA}
    -DCONDENSE_BUILD_TESTS=OFF -DCONDENSE_BUILD_BENCH=OFF -DCONDENSE_BUILD_EXAMPLES=OFF)
  run_step("build condense" ${CMAKE_COMMAND} --build ${WORK_DIR}/condense-build)
  run_step("install condense" ${CMAKE_COMMAND} --install ${WORK_DIR}/condense-build)
endif()
run_step("configure consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/consumer-build
  -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix})
run_step("build consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
execute_process(COMMAND ${WORK_DIR}/consumer-build/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "consumer program failed (${rc}): ${out}")
endif()
message(STATUS "consumer program: ${out}")
