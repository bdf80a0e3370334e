# Finds what lowbit builds against. Only LibTorch and Abseil are required;
# MPI, Gloo, NCCL and nvcc add backends and kernels when present.

# A CUDA LibTorch (PyPI's torch 2.x wheels) adds nvcc flags for its own
# architecture list, whose oldest (compute_50) CUDA 13's nvcc refuses; the
# kernels' architectures instead, unless the caller names its own.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
# torch.utils.cmake_prefix_path names the wheel's share/cmake, whose lib/ is
# not the wheel's: its libraries (libtorch.so, libc10.so) would then be found
# in the system folders first, i.e. Debian's 1.13 beside the 2.x headers. The
# folder above it is the LibTorch root, searched first.
foreach(prefix IN LISTS CMAKE_PREFIX_PATH)
  if(EXISTS "${prefix}/Torch/TorchConfig.cmake")
    get_filename_component(lowbit_torch_root "${prefix}/../.." ABSOLUTE)
    list(PREPEND CMAKE_PREFIX_PATH "${lowbit_torch_root}")
    break()
  endif()
endforeach()
find_package(Torch REQUIRED)
# The libraries must be the LibTorch's whose headers are used (Torch_DIR set by
# hand can still meet the trap above).
get_filename_component(lowbit_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
get_filename_component(lowbit_torch_lib_dir "${lowbit_torch_lib_dir}" REALPATH)
get_filename_component(lowbit_torch_prefix "${TORCH_INSTALL_PREFIX}" REALPATH)
string(FIND "${lowbit_torch_lib_dir}/" "${lowbit_torch_prefix}/" lowbit_torch_at)
if(NOT lowbit_torch_at EQUAL 0)
  message(FATAL_ERROR "LibTorch's headers are from ${TORCH_INSTALL_PREFIX} but TORCH_LIBRARY is ${TORCH_LIBRARY}: "
                      "pass -DCMAKE_PREFIX_PATH=${TORCH_INSTALL_PREFIX} (the folder above share/cmake) on a fresh build folder")
endif()
# PyPI's LibTorch (2.x) carries parts of a newer libstdc++ of its own
# (std::filesystem, std::chrono's time zones) and exports them from
# libtorch.so, which does not itself need libstdc++.so.6. A program whose
# NEEDED list names libtorch.so before libstdc++.so.6 binds its
# std::filesystem calls to that copy, whose remove_all jumps to address 0.
# libstdc++.so.6 named first wins the lookup; lowbit::base carries this to
# every lowbit target and to consumers (docs/versions.md).
set(LOWBIT_TORCH_LINK_OPTIONS "")
if(Torch_VERSION VERSION_GREATER_EQUAL 2.0 AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(LOWBIT_TORCH_LINK_OPTIONS "LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
endif()
find_package(absl REQUIRED)
find_package(Threads REQUIRED)

find_package(MPI COMPONENTS CXX)
set(LOWBIT_WITH_MPI ${MPI_CXX_FOUND})

# Gloo ships inside LibTorch (c10d); its headers come from libgloo-dev.
find_path(LOWBIT_C10D_GLOO_HEADER torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
  HINTS ${TORCH_INCLUDE_DIRS})
find_path(LOWBIT_GLOO_HEADER gloo/algorithm.h HINTS ${TORCH_INCLUDE_DIRS})
if(LOWBIT_C10D_GLOO_HEADER AND LOWBIT_GLOO_HEADER)
  set(LOWBIT_WITH_GLOO ON)
else()
  set(LOWBIT_WITH_GLOO OFF)
endif()

# A CUDA LibTorch exports torch_cuda; Debian's libtorch-dev does not.
if(TARGET torch_cuda)
  set(LOWBIT_WITH_CUDA ON)
else()
  set(LOWBIT_WITH_CUDA OFF)
endif()

# nvcc alone is enough to build kernels/cuda, so CI proves the kernels compile.
if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  set(LOWBIT_WITH_CUDA_KERNELS ON)
else()
  set(LOWBIT_WITH_CUDA_KERNELS OFF)
endif()

set(LOWBIT_WITH_NCCL OFF)
if(LOWBIT_WITH_CUDA AND LOWBIT_WITH_CUDA_KERNELS)
  find_path(LOWBIT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  find_library(LOWBIT_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  if(LOWBIT_NCCL_INCLUDE_DIR AND LOWBIT_NCCL_LIBRARY)
    set(LOWBIT_WITH_NCCL ON)
  endif()
endif()

foreach(flag MPI GLOO NCCL CUDA CUDA_KERNELS)
  if(LOWBIT_WITH_${flag})
    set(LOWBIT_WITH_${flag}_01 1)
  else()
    set(LOWBIT_WITH_${flag}_01 0)
  endif()
endforeach()

if(LOWBIT_USE_CCACHE)
  find_program(LOWBIT_CCACHE ccache)
  if(LOWBIT_CCACHE)
    # Sloppiness lets ccache cache translation units that use the precompiled
    # header; depend mode skips its preprocessor pass, which would expand all of
    # <torch/torch.h> again for every file.
    # The base folder makes paths under the source tree relative in ccache's
    # keys, so that another clone (CI's) hits the same entries.
    set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
        CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
        CCACHE_DEPEND=1 CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} ${LOWBIT_CCACHE})
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${LOWBIT_CCACHE})
  endif()
endif()
