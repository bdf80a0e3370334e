// AdaptiveHook: layer-adaptive gradient compression (L-GreCo, Markov et al.,
// MLSys 2024). One compression family (PowerSGD rank, top-k density or QSGD
// bit-width) whose parameter is chosen per layer, every `period` steps, by
// dynamic programming (comm/lgreco.h): the smallest total message size whose
// total compression error is at most alpha times that of the uniform default.
//
//   AdaptiveOptions o;
//   o.family = AdaptiveFamily::kTopK;
//   o.default_value = 0.01;                                // density
//   o.candidates = DefaultCandidates(o.family, o.default_value);
//   o.rules = DefaultLayerRules(o.family, /*min_compress_numel=*/1024, false);
//   ddp.RegisterCommHook(std::make_shared<AdaptiveHook>(pg, o));
//
// Which layers it decides: the ordered rules (see LayerRule); the first rule
// that matches a parameter handles it: uncompressed, a fixed value, or the
// DP. Until the first decision every adaptive layer uses the default.
//
// Measuring: over the last `window` steps of each period every rank sums its
// own gradient of each adaptive layer; at the start of the next step each
// rank computes, for every layer l and candidate c, size[l][c] (bytes of the
// layer's message) and err[l][c] = ||G_l - D(C_c(G_l))|| on its sum, the
// ranks all-gather the errors and average them in rank order, and every rank
// runs the same DP on the same numbers, so all choose the same. The new
// choice applies from that step on; error-feedback residuals, PowerSGD's
// errors and warm starts are kept (a Q whose rank changes keeps its shared
// columns). Errors of PowerSGD ranks are the best rank-r errors (from the
// singular values); of top-k the norm of what top-k drops; of QSGD one
// encode and decode.
//
// The choices, the step and a half-summed window are part of StateDict().
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/powersgd_hook.h"
#include "lowbit/compress/defaults.h"

namespace lowbit::compress {

enum class AdaptiveFamily { kPowerSgd, kTopK, kQsgd };
std::string ToString(AdaptiveFamily family);

// What happens to one layer.
struct LayerHandling {
  enum class Kind { kPlain, kFixed, kAdaptive };
  Kind kind = Kind::kAdaptive;
  double value = 0.0;  // kFixed: the family's parameter
};

// One rule of the ordered layer policy, as Horovod's ordered operations: the
// first rule Enabled() for a parameter handles it.
class LayerRule {
 public:
  virtual ~LayerRule() = default;
  virtual bool Enabled(const std::string& name, const std::vector<int64_t>& shape) const = 0;
  virtual LayerHandling Handling() const = 0;
  // Part of the hook's Config(), which must agree across ranks.
  virtual std::string Describe() const = 0;
};

// Parameters whose name matches the fnmatch(3) pattern (e.g. "fc2.*"):
// uncompressed when `value` is empty, else that fixed value.
std::shared_ptr<LayerRule> NameOverrideRule(std::string pattern, std::optional<double> value);
// Empty tensors, tensors under `min_compress_numel` elements, and 1-D tensors
// unless `compress_1d`: uncompressed.
std::shared_ptr<LayerRule> SkipSmallRule(int64_t min_compress_numel, bool compress_1d);
// Every parameter: chosen by the DP.
std::shared_ptr<LayerRule> AdaptiveRule();
// SkipSmallRule (1-D is never compressed by PowerSGD), then AdaptiveRule.
std::vector<std::shared_ptr<LayerRule>> DefaultLayerRules(AdaptiveFamily family, int64_t min_compress_numel,
                                                          bool compress_1d);
// Candidates around the default: PowerSGD ranks r/4 .. 4r (x2 steps, >= 1),
// top-k densities d/8 .. 8d (x2 steps, <= 1), QSGD bits b-2 .. b+2 in [2, 8].
std::vector<double> DefaultCandidates(AdaptiveFamily family, double default_value);

struct AdaptiveOptions {
  AdaptiveFamily family = AdaptiveFamily::kTopK;
  // The uniform setting: the budget's reference and the value before the
  // first decision. Added to `candidates` if missing.
  double default_value = defaults::kDensity;
  // Must not be empty.
  std::vector<double> candidates;
  std::vector<std::shared_ptr<LayerRule>> rules;
  // Decide every `period` steps, on gradients summed over the last `window`
  // steps of the period (1 <= window <= period).
  int64_t period = defaults::kAdaptPeriod;
  int64_t window = defaults::kAdaptWindow;
  // Error budget = alpha * the uniform default's total error; > 0.
  double alpha = defaults::kAdaptAlpha;
  int64_t bins = 10000;
  // The inner hook's settings (compressor, error feedback, ...; their
  // compressor is the uniform default's). kTopK and kQsgd: compression;
  // kPowerSgd: powersgd.
  CompressionHookOptions compression;
  TopKOptions topk;           // kTopK: sample ratio and warm-up of each layer's top-k
  int64_t qsgd_block = defaults::kBlock;   // kQsgd
  bool qsgd_stochastic = true;
  PowerSgdOptions powersgd;
  // Called on every rank when a decision changes some layer's value, with
  // the step and a summary ("fc1.weight 0.01 -> 0.005, ...").
  std::function<void(int64_t step, const std::string& summary)> on_change;
};

class AdaptiveHook final : public comm::CommHook {
 public:
  AdaptiveHook(std::shared_ptr<comm::ProcessGroup> pg, AdaptiveOptions options);
  ~AdaptiveHook() override;

  std::string Name() const override;
  std::string Config() const override;
  std::shared_ptr<comm::Work> RunHook(comm::GradBucket& bucket) override;
  // The inner hook's state, plus "lgreco/step", "lgreco/value/<parameter>"
  // (NaN: uncompressed) and, mid-window, "lgreco/sum/<parameter>".
  comm::HookState StateDict() const override;
  // Restores the choices and hands the rest to the inner hook. A state from
  // another world size is dropped with a warning. The first step after a
  // load checks that every rank holds the same choices.
  void LoadStateDict(const comm::HookState& state) override;
  void SetOverlap(bool on) override;

  struct Layer {
    std::vector<int64_t> shape;
    LayerHandling handling;
    std::optional<double> value;  // empty: uncompressed
    int64_t bytes = 0;            // of its message at `value` (the DP's estimate)
    double error = 0.0;           // at the last decision
  };
  // Every parameter seen so far, by name.
  const std::map<std::string, Layer>& layers() const { return layers_; }
  // "name=value;..." of every parameter (value "plain" when uncompressed).
  std::string ChoicesString() const;
  int64_t decisions() const { return decisions_; }
  int64_t step() const { return step_; }

  class Family;

 private:
  bool InWindow(int64_t step) const;
  void Learn(const comm::GradBucket& bucket);
  // Registers parameter `name` of `shape` (its handling from the rules, its value restored or the default).
  void LearnLayer(const std::string& name, std::vector<int64_t> shape);
  void Accumulate(const comm::GradBucket& bucket);
  void Decide();
  void CheckSameChoices();
  void Apply(const std::string& name, Layer& layer, std::optional<double> value);

  std::shared_ptr<comm::ProcessGroup> pg_;
  AdaptiveOptions options_;
  std::unique_ptr<Family> family_;
  int64_t step_ = 0;
  int64_t decisions_ = 0;
  bool check_after_load_ = false;
  std::map<std::string, Layer> layers_;
  std::map<std::string, at::Tensor> sums_;
  // Values restored before the layers were seen.
  std::map<std::string, std::optional<double>> restored_;
};

}  // namespace lowbit::compress
