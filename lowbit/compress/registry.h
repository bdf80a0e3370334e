// MakeCommHook: the DDP comm hooks by name, with settings by key. The
// registry (HookRegistry) is the one table of which hooks exist, which
// settings each takes, their defaults (compress/defaults.h) and ranges;
// an unknown hook or key, or a value out of range, is an error naming the
// hook, the key and the value.
//
//   ddp.RegisterCommHook(MakeCommHook(pg, "qsgd", {{"bits", "4"}}));
//   ddp.RegisterCommHook(MakeCommHook(pg, "powersgd:rank=8,start_iter=20"));
//
// | name      | what                                        | default ef |
// |-----------|---------------------------------------------|------------|
// | allreduce | uncompressed mean allreduce (also "none")   | -          |
// | fp16/bf16 | cast, allreduce                             | none       |
// | qsgd      | `bits`-bit QSGD, allgather                  | ef         |
// | ternary   | TernGrad {-s, 0, s}, allgather              | ef         |
// | onebit    | sign + per-block scale, allgather           | ef         |
// | topk      | top-k / DGC, allgather                      | ef         |
// | randomk   | random-k with shared indices, allreduce     | ef         |
// | powersgd  | PowerSGD rank `rank`                        | (built in) |
// | sparseloco| decayed EF, chunked top-k, 2-bit, allgather | (built in) |
//
// qsgd, ternary and onebit also run DeepSpeed's two-phase compressed
// allreduce (exchange=twophase), which sends less on large worlds but
// compresses twice. adaptive_powersgd, adaptive_topk and adaptive_qsgd
// choose the rank, the density or the bits per layer with L-GreCo
// (compress/adaptive_hook.h), around `rank`, `density` or `bits`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/defaults.h"

namespace lowbit::compress {

// One setting a hook takes.
struct HookSetting {
  enum class Kind { kInt, kDouble, kBool, kChoice, kText };
  std::string key;
  Kind kind = Kind::kInt;
  std::string default_value;  // as text; "" for text settings means unset
  // Numbers: the accepted range [min, max], or (min, max] when min_open.
  double min = 0, max = 0;
  bool min_open = false;
  std::vector<std::string> choices;  // kChoice
  std::string help;
  // "[1, 8]", "(0, 1]", "one of ef, none", "true or false", "text".
  std::string Range() const;
};

struct HookInfo {
  std::string name;
  std::string summary;
  std::vector<HookSetting> settings;
  const HookSetting* Find(const std::string& key) const;
};

// Every hook MakeCommHook builds, in a fixed order.
const std::vector<HookInfo>& HookRegistry();
// The hook called `name`; an unknown name is an error listing the known ones.
const HookInfo& FindHook(const std::string& name);

// key=value pairs; keys the hook does not take are errors.
using HookSettings = std::vector<std::pair<std::string, std::string>>;
// Called when L-GreCo changes a layer's setting (adaptive_* hooks only).
using AdaptCallback = std::function<void(int64_t step, const std::string& summary)>;

std::shared_ptr<comm::CommHook> MakeCommHook(std::shared_ptr<comm::ProcessGroup> pg, const std::string& name,
                                       const HookSettings& settings, AdaptCallback on_adapt = {});
// "name" or "name:key=value,key=value". adapt_overrides, whose value has
// commas, is set through the other overload. `on_adapt` as there:
//
//   MakeCommHook(pg, "adaptive_qsgd:period=100", [](int64_t step, const std::string& changes) {
//     std::cout << "L-GreCo step " << step << ": " << changes << "\n";
//   });
std::shared_ptr<comm::CommHook> MakeCommHook(std::shared_ptr<comm::ProcessGroup> pg, const std::string& spec,
                                             AdaptCallback on_adapt = {});

}  // namespace lowbit::compress
