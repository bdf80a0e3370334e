// How stateful hooks flatten their per-tensor state into a HookState and back:
// "meta/world_size", "meta/step", then "<key>/<tensor>" for each entry.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/error_feedback.h"

namespace lowbit::comm::internal {

HookState HookMeta(int world_size, int64_t step);
void AppendFeedbackState(const std::map<std::string, FeedbackState>& state, HookState& out);
// Parses what AppendFeedbackState wrote. When the state was saved by another
// world size, warns, returns an empty map and leaves `step` unset.
std::map<std::string, FeedbackState> ParseFeedbackState(const HookState& state, int world_size,
                                                        const std::string& hook, std::optional<int64_t>* step);

}  // namespace lowbit::comm::internal
