#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <torch/serialize/archive.h>

#include <cstring>

#include "lowbit/base/error.h"
#include "lowbit/comm/comm_hook.h"

namespace lowbit::comm {

void WriteHookState(torch::serialize::OutputArchive& archive, const HookState& state, const std::string& prefix) {
  std::string names;
  for (size_t i = 0; i < state.size(); ++i) {
    archive.write(prefix + "t" + std::to_string(i), state[i].second);
    names += state[i].first + "\n";
  }
  at::Tensor bytes = at::empty({static_cast<int64_t>(names.size())}, at::kByte);
  if (!names.empty()) std::memcpy(bytes.data_ptr(), names.data(), names.size());  // an empty tensor has no data
  archive.write(prefix + "names", bytes);
}

HookState ReadHookState(torch::serialize::InputArchive& archive, const std::string& prefix) {
  at::Tensor bytes;
  LOWBIT_CHECK(archive.try_read(prefix + "names", bytes), "ReadHookState: no '", prefix, "names' entry");
  LOWBIT_CHECK(bytes.dim() == 1 && (bytes.scalar_type() == at::kByte || bytes.scalar_type() == at::kChar) &&
                   bytes.device().is_cpu(),
               "ReadHookState: '", prefix, "names' must be 1-D bytes, got ", bytes.scalar_type(), bytes.sizes());
  bytes = bytes.contiguous();
  const std::string names(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
  HookState state;
  size_t begin = 0;
  for (size_t end = names.find('\n'); end != std::string::npos; begin = end + 1, end = names.find('\n', begin)) {
    at::Tensor t;
    const std::string key = prefix + "t" + std::to_string(state.size());
    LOWBIT_CHECK(archive.try_read(key, t), "ReadHookState: '", prefix, "names' lists ", state.size() + 1,
                 " or more entries but '", key, "' is missing");
    state.emplace_back(names.substr(begin, end - begin), t);
  }
  LOWBIT_CHECK(begin == names.size(), "ReadHookState: '", prefix, "names' does not end with a newline");
  return state;
}

}  // namespace lowbit::comm
