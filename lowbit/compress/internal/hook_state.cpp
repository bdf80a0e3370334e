#include "lowbit/compress/internal/hook_state.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "lowbit/base/error.h"

namespace lowbit::compress::internal {

comm::HookState SaveHookState(int world_size, int64_t step, const std::map<std::string, FeedbackState>& state) {
  comm::HookState out{{"meta/world_size", at::tensor(static_cast<int64_t>(world_size))}, {"meta/step", at::tensor(step)}};
  for (const auto& [key, tensors] : state) {
    for (const auto& [name, tensor] : tensors) out.emplace_back(key + "/" + name, tensor.clone());
  }
  return out;
}

void LoadHookState(const comm::HookState& saved, int world_size, const std::string& hook,
                   std::map<std::string, FeedbackState>* state, int64_t* step) {
  std::optional<int64_t> saved_world;
  std::optional<int64_t> saved_step;
  for (const auto& [name, tensor] : saved) {
    if (name == "meta/world_size") {
      saved_world = tensor.item<int64_t>();
    } else if (name == "meta/step") {
      saved_step = tensor.item<int64_t>();
    }
  }
  LOWBIT_CHECK(saved_world.has_value() && saved_step.has_value(), hook,
               " hook state: missing meta/world_size or meta/step");
  state->clear();
  if (*saved_world != world_size) {
    base::Warn(c10::str(hook, " hook state was saved by ", *saved_world, " ranks, this run has ", world_size,
                        "; error feedback and warm starts start afresh"));
    return;
  }
  for (const auto& [name, tensor] : saved) {
    if (name.rfind("meta/", 0) == 0) continue;
    const size_t slash = name.rfind('/');
    LOWBIT_CHECK(slash != std::string::npos && slash > 0 && slash + 1 < name.size(), hook,
                 " hook state: malformed entry name '", name, "'");
    (*state)[name.substr(0, slash)][name.substr(slash + 1)] = tensor.clone();
  }
  *step = *saved_step;
}

}  // namespace lowbit::compress::internal
