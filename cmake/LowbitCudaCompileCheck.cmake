# The sources only a CUDA LibTorch builds (kernels/cuda_dispatch.cpp,
# comm/nccl_process_group.cpp, launch/cuda_device.cpp), compiled without one so
# that a change breaking the GPU path fails every build, CI's included.
#
# Debian's libtorch-dev ships the c10/cuda and ATen/cuda headers and
# /usr/local/cuda has CUDA's and NCCL's; the one piece missing is the header a
# CUDA LibTorch generates at its build, c10/cuda/impl/cuda_cmake_macros.h,
# written here as that build writes it for shared libraries. The objects are
# compiled, never linked (there is no libc10_cuda to link against); the
# target is part of ALL, so scripts/test.sh builds it.
if(LOWBIT_WITH_CUDA)
  return()  # a CUDA LibTorch builds these sources into the library itself
endif()
find_path(LOWBIT_C10_CUDA_INCLUDE c10/cuda/CUDAGuard.h HINTS ${TORCH_INCLUDE_DIRS} /usr/include)
find_path(LOWBIT_CUDA_RUNTIME_INCLUDE cuda_runtime.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
find_path(LOWBIT_NCCL_HEADER_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
if(NOT LOWBIT_C10_CUDA_INCLUDE OR NOT LOWBIT_CUDA_RUNTIME_INCLUDE OR NOT LOWBIT_NCCL_HEADER_DIR)
  message(STATUS "lowbit: no CUDA/NCCL or c10/cuda headers: the CUDA-only sources are not compiled")
  set(LOWBIT_CUDA_COMPILE_CHECK OFF)
  return()
endif()
set(LOWBIT_CUDA_COMPILE_CHECK ON)
set(shim ${PROJECT_BINARY_DIR}/generated/cuda_shim)
file(WRITE ${shim}/c10/cuda/impl/cuda_cmake_macros.h.in
  "#pragma once\n// Written by lowbit's CMake (cmake/LowbitCudaCompileCheck.cmake): what a CUDA\n"
  "// LibTorch build generates here, for compiling against Debian's headers.\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
configure_file(${shim}/c10/cuda/impl/cuda_cmake_macros.h.in ${shim}/c10/cuda/impl/cuda_cmake_macros.h COPYONLY)
add_library(lowbit_cuda_compile_check OBJECT
  ${PROJECT_SOURCE_DIR}/lowbit/kernels/cuda_dispatch.cpp
  ${PROJECT_SOURCE_DIR}/lowbit/comm/nccl_process_group.cpp
  ${PROJECT_SOURCE_DIR}/lowbit/launch/cuda_device.cpp)
target_include_directories(lowbit_cuda_compile_check SYSTEM PRIVATE ${shim} ${LOWBIT_CUDA_RUNTIME_INCLUDE}
  ${LOWBIT_NCCL_HEADER_DIR})
# Includes, definitions and flags of the library the sources belong to.
target_link_libraries(lowbit_cuda_compile_check PRIVATE lowbit_comm)
lowbit_use_pch(lowbit_cuda_compile_check)
