// CheckSameOnAllRanks: start-up checks that every rank was given the same
// model, hook or optimizer settings.
//
//   CheckSameOnAllRanks(*pg, {config_string}, "optimizer settings", "OneBitAdam");
//
// It is a collective: every rank must call it, in the same order.
#pragma once

#include <string>
#include <vector>

#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

// All-gathers `lines` from every rank and throws, on every rank alike, when a
// rank's lines differ from rank 0's: "<who>: the <what> on rank r differs from
// rank 0; first difference at entry i: ...".
void CheckSameOnAllRanks(ProcessGroup& pg, const std::vector<std::string>& lines, const std::string& what,
                         const std::string& who);

}  // namespace lowbit::comm
