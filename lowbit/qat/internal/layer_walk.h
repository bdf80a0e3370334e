// The walk Prepare and Convert share over a model's children, and how they
// replace a child.
#pragma once

#include <string>

#include <memory>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include "absl/strings/str_cat.h"

namespace lowbit::qat::internal {

// Calls f(parent, key, dotted, child) for every module below `parent`, depth
// first in registration order, with `dotted` the name from the root; the
// walk enters a child only when f returns true. The children are listed
// before f runs, so f may replace `child` in `parent`.
template <typename F>
void WalkChildren(torch::nn::Module& parent, const std::string& prefix, F&& f) {
  for (const auto& item : parent.named_children()) {
    const std::string dotted = prefix.empty() ? item.key() : absl::StrCat(prefix, ".", item.key());
    if (f(parent, item.key(), dotted, *item.value())) WalkChildren(*item.value(), dotted, f);
  }
}

// Replaces parent's child `key` by `replacement` in the module tree and, for
// the containers whose forward (or whose users) walk a list of their own, in
// that list too.
template <typename Holder>
void ReplaceChild(torch::nn::Module& parent, const std::string& key, const std::shared_ptr<torch::nn::Module>& old,
                  const Holder& replacement) {
  if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&parent)) {
    for (auto& any : *seq) {
      if (any.ptr() == old) any = torch::nn::AnyModule(replacement);
    }
  } else if (auto* list = dynamic_cast<torch::nn::ModuleListImpl*>(&parent)) {
    for (auto& m : *list) {
      if (m == old) m = replacement.ptr();
    }
  } else if (auto* dict = dynamic_cast<torch::nn::ModuleDictImpl*>(&parent)) {
    dict->update(std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>{{key, replacement.ptr()}});
    return;  // update() replaced the registered child too
  }
  parent.replace_module(key, replacement);
}

}  // namespace lowbit::qat::internal
