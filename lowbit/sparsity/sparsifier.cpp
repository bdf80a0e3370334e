#include "lowbit/sparsity/sparsifier.h"

#include <fnmatch.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/kernels/sparse.h"

namespace lowbit::sparsity {

namespace {

// The weight of a layer the Sparsifier can attach to, or undefined.
at::Tensor WeightOf(torch::nn::Module& m) {
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(&m)) return l->weight;
  if (auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) return c->weight;
  return {};
}

// (dotted name, weight) of every Linear and Conv2d below `root`, depth first in
// registration order (torch's own walk; nothing inside a layer is a layer).
std::vector<std::pair<std::string, at::Tensor>> Collect(torch::nn::Module& root) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    at::Tensor w = WeightOf(*item.value());
    if (w.defined()) out.emplace_back(item.key(), w);
  }
  return out;
}

}  // namespace

at::Tensor InputMajor(const at::Tensor& weight) {
  if (weight.dim() == 2) return weight.contiguous();
  LOWBIT_CHECK(weight.dim() == 4, "InputMajor: weight must be 2-D (Linear) or 4-D (Conv2d), got ", weight.dim(), "-D");
  return weight.permute({0, 2, 3, 1}).reshape({-1, weight.size(1)}).contiguous();
}

at::Tensor FromInputMajor(const at::Tensor& rows, at::IntArrayRef weight_shape) {
  if (weight_shape.size() == 2) return rows.view(weight_shape);
  return rows.view({weight_shape[0], weight_shape[2], weight_shape[3], weight_shape[1]})
      .permute({0, 3, 1, 2})
      .contiguous();
}

Sparsifier::Sparsifier(torch::nn::Module& module, SparseConfig config,
                       std::vector<std::pair<std::string, std::optional<SparseConfig>>> overrides) {
  const std::vector<std::pair<std::string, at::Tensor>> found = Collect(module);
  torch::NoGradGuard no_grad;
  for (auto& [name, weight] : found) {
    std::optional<SparseConfig> c = config;
    for (const auto& [pattern, o] : overrides) {
      if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) {
        c = o;
        break;
      }
    }
    if (!c) continue;
    const std::string where = absl::StrCat("Sparsifier: layer '", name, "'");
    CheckSparseConfig(*c, where);
    LOWBIT_CHECK(weight.scalar_type() == at::kFloat, where, ": weight must be float, got ", weight.scalar_type());
    if (c->pattern == Pattern::kNm) {
      const int64_t in = weight.size(1);
      LOWBIT_CHECK(in % c->m == 0, where, ": its input dimension (", in, ") is not a multiple of m = ", c->m, " for ",
                   c->n, ":", c->m, " sparsity");
    }
    if (c->pattern == Pattern::kBlock) {
      const int64_t rows = weight.size(0), cols = weight.numel() / weight.size(0);
      LOWBIT_CHECK(rows % c->block_rows == 0 && cols % c->block_cols == 0, where, ": block ", c->block_rows, " x ",
                   c->block_cols, " does not tile its [out, fan_in] weight [", rows, ", ", cols, "]");
    }
    for (const Layer& other : layers_) {
      LOWBIT_CHECK(!c->global || !other.config.global || ToString(other.config) == ToString(*c), where,
                   ": global magnitude pruning needs the same settings on every layer it spans, got ", ToString(*c),
                   " here and ", ToString(other.config), " on '", other.name, "'");
    }
    Layer l{name, weight, *c, {}, {}};
    if (c->method != Method::kHard) l.dense = weight.detach().clone();
    layers_.push_back(std::move(l));
  }
  RecomputeMasks(0, /*all=*/true);
  for (Layer& l : layers_) WriteSparse(l);
}

void Sparsifier::RecomputeMasks(int64_t t, bool all) {
  std::vector<Layer*> global;
  for (Layer& l : layers_) {
    if (!all && !MaskDue(l, t)) continue;
    if (l.config.global) {
      global.push_back(&l);
    } else {
      l.mask = ComputeMask(l, l.Source(), t);
    }
  }
  if (global.empty()) return;
  std::vector<at::Tensor> flat;
  for (Layer* l : global) flat.push_back(l->Source().reshape({-1}));
  at::Tensor mask = kernels::MagnitudeMask(at::cat(flat), ScheduledSparsity(global[0]->config, t));
  int64_t offset = 0;
  for (Layer* l : global) {
    l->mask = mask.slice(0, offset, offset + l->weight.numel()).view(l->weight.sizes()).clone();
    offset += l->weight.numel();
  }
}

at::Tensor Sparsifier::ComputeMask(const Layer& l, const at::Tensor& w, int64_t t) const {
  const SparseConfig& c = l.config;
  switch (c.pattern) {
    case Pattern::kNm: {
      const int64_t n = ScheduledN(c, t);
      if (n >= c.m) return at::ones(w.sizes(), w.options().dtype(at::kBool));
      return FromInputMajor(kernels::NmMask(InputMajor(w), n, c.m), w.sizes());
    }
    case Pattern::kUnstructured:
      return kernels::MagnitudeMask(w, ScheduledSparsity(c, t));
    case Pattern::kBlock:
      return kernels::BlockMagnitudeMask(w.reshape({w.size(0), -1}), ScheduledSparsity(c, t), c.block_rows,
                                         c.block_cols)
          .view(w.sizes());
  }
  return {};
}

bool Sparsifier::MaskDue(const Layer& l, int64_t t) const {
  const SparseConfig& c = l.config;
  if (t % c.update_every != 0) return false;
  // Hard masks with a schedule stop changing at its end; SR-STE and PGF
  // keep choosing from the dense weights.
  if (c.method == Method::kHard && c.end_step > c.start_step) return t >= c.start_step && t <= c.end_step;
  return true;
}

at::Tensor Sparsifier::SparseWeights(const Layer& l) const {
  const at::Tensor w = l.Source();
  const double beta = PgfBeta(l.config, step_);
  return beta > 0.0 ? w * at::where(l.mask, 1.0, beta) : w * l.mask;
}

void Sparsifier::WriteSparse(Layer& l) { l.weight.detach().copy_(SparseWeights(l)); }

// Note [Weights overwritten under the Sparsifier]
// The masks (and for SR-STE and PGF the dense weights) are this rank's,
// taken from the weights the Sparsifier saw when it was built or loaded. If
// something overwrote the parameters after that, the Sparsifier would go on
// from stale state: DistributedDataParallel built after the Sparsifier on
// ranks that did not all start from the same weights broadcasts rank 0's
// (sparse) weights, so every other rank writes its own dense weights back
// at the first step and the ranks train apart. So the first step after
// construction or Load checks, once, that each parameter still holds what
// the Sparsifier wrote.
void Sparsifier::CheckWeightsUnchanged() const {
  torch::NoGradGuard no_grad;
  for (const Layer& l : layers_) {
    LOWBIT_CHECK(at::equal(l.weight.detach(), SparseWeights(l)), "Sparsifier: layer '", l.name,
                 "': its weight is no longer what the Sparsifier wrote when it was built or loaded, so its masks",
                 l.dense.defined() ? " and dense weights" : "",
                 " are stale. Something overwrote the parameters in between: most often DistributedDataParallel, "
                 "built after the Sparsifier, broadcasting rank 0's weights to ranks that started from their own "
                 "(build the Sparsifier after DistributedDataParallel, or seed every rank alike), or a model load "
                 "without the Sparsifier's state (restore both with train::Checkpoint)");
  }
}

void Sparsifier::Step(torch::optim::Optimizer& optimizer) {
  BeforeStep();
  optimizer.step();
  AfterStep();
}

void Sparsifier::BeforeStep() {
  if (!checked_) {  // See Note [Weights overwritten under the Sparsifier]
    CheckWeightsUnchanged();
    checked_ = true;
  }
  torch::NoGradGuard no_grad;
  for (Layer& l : layers_) {
    at::Tensor g = l.weight.mutable_grad();
    if (g.defined()) {
      switch (l.config.method) {
        case Method::kHard:
          g.mul_(l.mask);
          break;
        case Method::kSrSte:  // + lambda (1 - mask) W (Zhou et al. 2021, eq. 6)
          g.add_(l.dense * l.mask.logical_not(), l.config.srste_lambda);
          break;
        case Method::kPgf: {
          const double beta = PgfBeta(l.config, step_);
          g.mul_(at::where(l.mask, 1.0, beta));
          break;
        }
      }
    }
    if (l.dense.defined()) l.weight.detach().copy_(l.dense);
  }
}

void Sparsifier::AfterStep() {
  torch::NoGradGuard no_grad;
  ++step_;
  for (Layer& l : layers_) {
    if (l.dense.defined()) l.dense.copy_(l.weight.detach());
  }
  RecomputeMasks(step_, /*all=*/false);
  for (Layer& l : layers_) WriteSparse(l);
}

std::vector<std::string> Sparsifier::LayerNames() const {
  std::vector<std::string> names;
  for (const Layer& l : layers_) names.push_back(l.name);
  return names;
}

Sparsifier::Layer& Sparsifier::Find(const std::string& name) {
  for (Layer& l : layers_) {
    if (l.name == name) return l;
  }
  LOWBIT_CHECK(false, "Sparsifier: no sparse layer named '", name, "'");
}

const Sparsifier::Layer& Sparsifier::Find(const std::string& name) const {
  return const_cast<Sparsifier*>(this)->Find(name);
}

const SparseConfig& Sparsifier::Config(const std::string& layer) const { return Find(layer).config; }
const at::Tensor& Sparsifier::Mask(const std::string& layer) const { return Find(layer).mask; }
const at::Tensor& Sparsifier::Dense(const std::string& layer) const {
  const Layer& l = Find(layer);
  return l.dense.defined() ? l.dense : l.weight;
}
const at::Tensor& Sparsifier::Weight(const std::string& layer) const { return Find(layer).weight; }

double Sparsifier::MaskSparsity() const {
  int64_t zeros = 0, total = 0;
  for (const Layer& l : layers_) {
    total += l.mask.numel();
    zeros += l.mask.numel() - l.mask.sum().item<int64_t>();
  }
  return total > 0 ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

std::vector<std::string> Sparsifier::Settings() const {
  std::vector<std::string> lines;
  for (const Layer& l : layers_) {
    std::ostringstream line;
    line << l.name << " " << l.weight.sizes() << " " << ToString(l.config);
    lines.push_back(line.str());
  }
  return lines;
}

void Sparsifier::Save(torch::serialize::OutputArchive& archive) const {
  archive.write("step", torch::tensor({step_}, torch::kLong));
  for (const Layer& l : layers_) {
    archive.write(l.name + "/config", c10::IValue(ToString(l.config)));
    archive.write(l.name + "/mask", l.mask);
    if (l.dense.defined()) archive.write(l.name + "/dense", l.dense);
  }
}

void Sparsifier::Load(torch::serialize::InputArchive& archive) {
  at::Tensor step;
  LOWBIT_CHECK(archive.try_read("step", step) && step.numel() == 1, "Sparsifier::Load: the archive has no step");
  torch::NoGradGuard no_grad;
  for (Layer& l : layers_) {
    c10::IValue config;
    LOWBIT_CHECK(archive.try_read(l.name + "/config", config), "Sparsifier::Load: the archive has no layer '", l.name,
                 "'");
    LOWBIT_CHECK(config.toStringRef() == ToString(l.config), "Sparsifier::Load: layer '", l.name, "' was saved as ",
                 config.toStringRef(), ", this run has ", ToString(l.config));
    at::Tensor mask;
    archive.read(l.name + "/mask", mask);
    LOWBIT_CHECK(mask.sizes() == l.weight.sizes() && mask.scalar_type() == at::kBool, "Sparsifier::Load: layer '",
                 l.name, "' mask has shape ", mask.sizes(), ", the weight ", l.weight.sizes());
    l.mask = mask;
    if (l.dense.defined()) {
      at::Tensor dense;
      archive.read(l.name + "/dense", dense);
      LOWBIT_CHECK(dense.sizes() == l.weight.sizes(), "Sparsifier::Load: layer '", l.name,
                   "' dense weights have shape ", dense.sizes(), ", the weight ", l.weight.sizes());
      l.dense.copy_(dense);
    }
  }
  step_ = step.item<int64_t>();
  for (Layer& l : layers_) WriteSparse(l);
  checked_ = false;
}

}  // namespace lowbit::sparsity
