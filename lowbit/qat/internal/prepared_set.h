// The layers of one Prepare call and whether each was called, for the check
// in Note [Unreached layers] (qat/quant_modules.cpp).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::qat::internal {

struct PreparedSet {
  std::vector<std::pair<std::string, std::shared_ptr<bool>>> layers;
  // Dotted names of the layers whose forward never ran, in Prepare's order.
  std::vector<std::string> Uncalled() const;
};

}  // namespace lowbit::qat::internal
