// LOWBIT_MPI_CHECK: throws lowbit::base::Error with file:line (from lowbit/ on) and MPI's own message when
// an MPI call does not return MPI_SUCCESS.
#pragma once

#include <c10/util/Exception.h>
#include <mpi.h>

#include "lowbit/base/error.h"

namespace lowbit::comm::internal {

inline std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}

}  // namespace lowbit::comm::internal

#define LOWBIT_MPI_CHECK(call)                                                                                   \
  do {                                                                                                           \
    const int lowbit_mpi_rc_ = (call);                                                                           \
    LOWBIT_CHECK(lowbit_mpi_rc_ == MPI_SUCCESS, #call, " failed at ", ::lowbit::base::SourcePath(__FILE__), ":", \
                 __LINE__, ": ", ::lowbit::comm::internal::MpiErrorString(lowbit_mpi_rc_));                      \
  } while (0)
