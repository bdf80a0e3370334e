# install() rules and the package files behind find_package(lowbit).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(lowbit_targets GLOBAL PROPERTY LOWBIT_EXPORTED_TARGETS)
install(TARGETS ${lowbit_targets} lowbit EXPORT lowbitTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The public headers are the ones directly in each folder of lowbit/; what
# lies in internal/, cpu/ and cuda/ (the raw-pointer kernels) is the
# library's own and is not installed, and no public header includes it
# (tests/consumer compiles every installed header to hold that).
get_property(lowbit_folders GLOBAL PROPERTY LOWBIT_FOLDERS)
foreach(dir ${lowbit_folders})
  file(GLOB headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lowbit/${dir}/*.h)
  install(FILES ${headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lowbit/${dir})
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/generated/lowbit/config.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lowbit)
install(EXPORT lowbitTargets NAMESPACE lowbit:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowbit)
# The raw CUDA kernels (lowbit::cuda_kernels, which needs CUDA::cudart) are a
# component of their own, so that a CPU-only consumer never needs the CUDA
# toolkit (tests/consumer/run.sh configures one with the toolkit hidden).
get_property(lowbit_cuda_targets GLOBAL PROPERTY LOWBIT_CUDA_EXPORTED_TARGETS)
if(lowbit_cuda_targets)
  install(TARGETS ${lowbit_cuda_targets} EXPORT lowbitCudaTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT lowbitCudaTargets NAMESPACE lowbit:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowbit)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/lowbitConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lowbitConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowbit)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lowbitConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lowbitConfig.cmake ${PROJECT_BINARY_DIR}/lowbitConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowbit)
