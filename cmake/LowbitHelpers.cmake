# Small helpers that keep each folder's CMakeLists.txt a few lines long.

# lowbit_make_pch(): one precompiled header with <torch/torch.h>, built once and
# reused by the tests, examples and benchmarks, which all include it.
function(lowbit_make_pch)
  add_library(lowbit_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
  target_link_libraries(lowbit_pch PRIVATE torch)
  if(LOWBIT_USE_PCH)
    target_precompile_headers(lowbit_pch PRIVATE ${PROJECT_SOURCE_DIR}/cmake/pch.h)
  endif()
endfunction()

function(lowbit_use_pch target)
  if(LOWBIT_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM lowbit_pch)
  endif()
endfunction()

function(lowbit_common_includes target scope)
  target_include_directories(${target} ${scope}
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
    $<INSTALL_INTERFACE:include>)
endfunction()

# lowbit_cc_library(NAME comm SRCS a.cpp ... DEPS ...): target lowbit_NAME,
# alias lowbit::NAME, exported for find_package(lowbit).
function(lowbit_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target lowbit_${ARG_NAME})
  if(ARG_SRCS)
    add_library(${target} STATIC ${ARG_SRCS})
    lowbit_common_includes(${target} PUBLIC)
    target_link_libraries(${target} PUBLIC torch ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
    # No precompiled header here: most library files include only ATen's core
    # headers, and a 570 MB PCH costs them more to load than they take to parse.
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  else()
    add_library(${target} INTERFACE)
    lowbit_common_includes(${target} INTERFACE)
    target_link_libraries(${target} INTERFACE torch ${ARG_DEPS})
  endif()
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${ARG_NAME})
  add_library(lowbit::${ARG_NAME} ALIAS ${target})
  set_property(GLOBAL APPEND PROPERTY LOWBIT_EXPORTED_TARGETS ${target})
  set_property(GLOBAL APPEND PROPERTY LOWBIT_FOLDERS ${ARG_NAME})
endfunction()

# lowbit_cc_binary(NAME x SRCS ... DEPS ...): an executable linked to lowbit.
function(lowbit_cc_binary)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE lowbit::lowbit ${ARG_DEPS})
  target_compile_options(${ARG_NAME} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  lowbit_use_pch(${ARG_NAME})
endfunction()

function(lowbit_print_summary)
  message(STATUS "")
  message(STATUS "lowbit ${PROJECT_VERSION} configuration")
  message(STATUS "  LibTorch        ${Torch_VERSION} (${TORCH_INSTALL_PREFIX})")
  message(STATUS "  CUDA LibTorch   ${LOWBIT_WITH_CUDA}")
  message(STATUS "  MPI backend     ${LOWBIT_WITH_MPI} ${MPI_CXX_LIBRARY_VERSION_STRING}")
  message(STATUS "  Gloo backend    ${LOWBIT_WITH_GLOO}")
  message(STATUS "  NCCL backend    ${LOWBIT_WITH_NCCL}")
  message(STATUS "  CUDA kernels    ${LOWBIT_WITH_CUDA_KERNELS} ${CMAKE_CUDA_COMPILER}")
  if(LOWBIT_WITH_CUDA)
    message(STATUS "  CUDA-only sources built into the library (CUDA LibTorch)")
  else()
    message(STATUS "  CUDA-only sources compiled without a CUDA LibTorch ${LOWBIT_CUDA_COMPILE_CHECK}")
  endif()
  message(STATUS "  ccache          ${LOWBIT_CCACHE}")
  message(STATUS "  sanitizers      ${LOWBIT_SANITIZE}")
  message(STATUS "  precompiled hdr ${LOWBIT_USE_PCH}")
  message(STATUS "  tests/examples/bench ${LOWBIT_BUILD_TESTS}/${LOWBIT_BUILD_EXAMPLES}/${LOWBIT_BUILD_BENCH}")
  message(STATUS "")
endfunction()
