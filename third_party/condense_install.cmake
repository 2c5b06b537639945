# Installs the headers, the CUDA kernels' headers and library (when built), and a CMake
# package config so that consumers can `find_package(condense CONFIG REQUIRED)`.
include(CMakePackageConfigHelpers)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/condense DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(_condense_export_targets condense)
if(CONDENSE_CUDA)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/kernels/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/condense/kernels
          FILES_MATCHING PATTERN "*.cuh")
  list(APPEND _condense_export_targets condense_cuda)
endif()
install(TARGETS ${_condense_export_targets} EXPORT condenseTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT condenseTargets NAMESPACE condense:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/condense)
set(CONDENSE_INSTALLED_WITH_CUDA ${CONDENSE_CUDA})
configure_package_config_file(${PROJECT_SOURCE_DIR}/third_party/condenseConfig.cmake.in
  ${PROJECT_BINARY_DIR}/condenseConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/condense)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/condenseConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${PROJECT_BINARY_DIR}/condenseConfig.cmake ${PROJECT_BINARY_DIR}/condenseConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/condense)
