#include "lowbit/comm/consistency.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "lowbit/base/error.h"

namespace lowbit::comm {
namespace {

std::vector<std::string> SplitLines(const at::Tensor& bytes) {
  std::string text(static_cast<const char*>(bytes.data_ptr()), bytes.numel());
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

void CheckSameOnAllRanks(ProcessGroup& pg, const std::vector<std::string>& lines, const std::string& what,
                         const std::string& who) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  if (!text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  auto work = pg.AllGatherV(bytes);
  work->Wait();
  const std::vector<at::Tensor> all = work->Result();
  const std::vector<std::string> reference = SplitLines(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const std::vector<std::string> other = SplitLines(all[r]);
    for (size_t i = 0; i < std::max(reference.size(), other.size()); ++i) {
      const std::string a = i < reference.size() ? reference[i] : "<nothing>";
      const std::string b = i < other.size() ? other[i] : "<nothing>";
      LOWBIT_CHECK(a == b, who, ": the ", what, " on rank ", r, " differs from rank 0; first difference at entry ", i,
                   ": rank 0 has '", a, "', rank ", r, " has '", b, "'");
    }
  }
}

}  // namespace lowbit::comm
