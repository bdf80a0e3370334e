// How stateful hooks flatten their per-tensor state into a HookState and back:
// "meta/world_size", "meta/step", then "<key>/<tensor>" for each entry.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/error_feedback.h"

namespace lowbit::compress::internal {

// A hook's state dict: meta entries, then every tensor of `state` (cloned).
comm::HookState SaveHookState(int world_size, int64_t step, const std::map<std::string, FeedbackState>& state);
// Restores what SaveHookState wrote into `state` and `step`. When it was saved
// by another world size, warns, clears `state` and leaves `step` alone.
void LoadHookState(const comm::HookState& saved, int world_size, const std::string& hook,
                   std::map<std::string, FeedbackState>* state, int64_t* step);

}  // namespace lowbit::compress::internal
