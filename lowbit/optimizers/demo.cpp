#include "lowbit/optimizers/demo.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <map>
#include <sstream>

#include "lowbit/base/error.h"
#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::optim {
namespace {

// The largest divisor of n that is <= limit.
int64_t LargestDivisor(int64_t n, int64_t limit) {
  for (int64_t s = std::min(n, limit); s > 1; --s) {
    if (n % s == 0) return s;
  }
  return 1;
}

// The orthonormal DCT-II matrix: row k is basis function k, so y = D x and
// x = D^T y.
at::Tensor DctMatrix(int64_t s, const at::TensorOptions& options) {
  const at::Tensor n = at::arange(s, options.dtype(at::kDouble));
  at::Tensor d = at::cos(n.unsqueeze(1) * (2.0 * n.unsqueeze(0) + 1.0) * (M_PI / (2.0 * static_cast<double>(s))));
  d.mul_(std::sqrt(2.0 / static_cast<double>(s)));
  d[0].mul_(1.0 / std::sqrt(2.0));
  return d.to(options.dtype(at::kFloat));
}

int64_t RoundUp4(int64_t x) { return (x + 3) / 4 * 4; }

}  // namespace

// Note [DeMo's tiles]
// A 2-D parameter [r, c] is cut into tiles of s1 x s2, each transformed by
// the 2-D DCT D1 X D2^T; any other parameter is flattened and cut into runs
// of s, each transformed by D x. A side's s is its largest divisor up to
// `chunk` (the reference's rule); where that is under chunk / 2 (a side of
// 73, say, whose best divisor is 1), s is `chunk` and the side is padded
// with zeros to a multiple of it, and the padding's share of a decoded tile
// is dropped. Tiles are rows of a [tiles, tile] matrix; top-k runs along
// the rows.
struct DeMo::Plan {
  std::vector<int64_t> shape;
  bool two_d = false;
  int64_t rows = 0, cols = 0, prows = 0, pcols = 0, s1 = 1, s2 = 1, tiles = 0, tile = 0, k = 0;
  at::Tensor d1, d2;

  at::Tensor Encode(const at::Tensor& m) const {
    if (two_d) {
      at::Tensor x = m;
      if (prows != rows || pcols != cols) x = at::constant_pad_nd(m, {0, pcols - cols, 0, prows - rows});
      x = x.view({prows / s1, s1, pcols / s2, s2}).permute({0, 2, 1, 3}).reshape({tiles, s1, s2});
      return at::matmul(at::matmul(d1, x), d2.t()).reshape({tiles, tile});
    }
    at::Tensor x = m.reshape({-1});
    if (prows != rows) x = at::constant_pad_nd(x, {0, prows - rows});
    return at::matmul(x.view({tiles, tile}), d1.t());
  }
  at::Tensor Decode(const at::Tensor& y) const {
    if (two_d) {
      at::Tensor x = at::matmul(at::matmul(d1.t(), y.view({tiles, s1, s2})), d2);
      x = x.view({prows / s1, pcols / s2, s1, s2}).permute({0, 2, 1, 3}).reshape({prows, pcols});
      return x.narrow(0, 0, rows).narrow(1, 0, cols).reshape(shape);
    }
    return at::matmul(y, d1).reshape({-1}).narrow(0, 0, rows).reshape(shape);
  }
};

namespace {

// A side of n cut into runs of s, padded to `padded`.
void Side(int64_t n, int64_t chunk, int64_t* s, int64_t* padded) {
  *s = LargestDivisor(n, chunk);
  if (n > chunk && *s < chunk / 2) *s = chunk;
  *padded = (n + *s - 1) / *s * *s;
}

}  // namespace

DeMo::DeMo(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
           DeMoOptions defaults)
    : torch::optim::Optimizer(std::move(groups), std::make_unique<DeMoOptions>(defaults)), pg_(std::move(pg)) {
  LOWBIT_CHECK(pg_ != nullptr, "DeMo: process group is null");
  const auto& d = static_cast<const DeMoOptions&>(*defaults_);
  LOWBIT_CHECK(d.beta() >= 0.0 && d.beta() <= 1.0, "DeMo: beta must be in [0, 1], got ", d.beta());
  LOWBIT_CHECK(d.chunk() >= 1 && d.chunk() <= 128,
               "DeMo: chunk must be in [1, 128] (a tile's positions travel as "
               "16 bits), got ",
               d.chunk());
  LOWBIT_CHECK(d.topk() >= 1, "DeMo: topk must be >= 1, got ", d.topk());
  std::vector<std::string> lines{absl::StrCat("DeMo(beta=", d.beta(), ",chunk=", d.chunk(), ",topk=", d.topk(), ")")};
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const DeMoOptions&>(param_groups_[g].options());
    LOWBIT_CHECK(o.lr() > 0.0, "DeMo: lr must be > 0, got ", o.lr(), " (group ", g, ")");
    LOWBIT_CHECK(o.weight_decay() >= 0.0, "DeMo: weight_decay must be >= 0, got ", o.weight_decay(), " (group ", g,
                 ")");
    lines.push_back(absl::StrCat("group ", g, " weight_decay=", o.weight_decay(),
                                 " parameters=", param_groups_[g].params().size()));
    for (const at::Tensor& p : param_groups_[g].params()) {
      const size_t i = params_.size();
      LOWBIT_CHECK(p.defined() && p.scalar_type() == at::kFloat && p.layout() == at::kStrided, "DeMo: parameter ", i,
                   " must be a dense float32 tensor, got ", p.defined() ? toString(p.scalar_type()) : "undefined");
      params_.push_back(p);
      group_of_.push_back(g);
      std::ostringstream shape;
      shape << "parameter " << i << " " << p.sizes();
      lines.push_back(shape.str());
    }
  }
  LOWBIT_CHECK(!params_.empty(), "DeMo: no parameters");
  for (const auto& line : lines) absl::StrAppend(&config_, line, "\n");
  comm::CheckSameOnAllRanks(*pg_, lines, "settings or parameter shapes", "DeMo");

  torch::NoGradGuard no_grad;
  for (const at::Tensor& p : params_) {
    auto plan = std::make_unique<Plan>();
    plan->shape = p.sizes().vec();
    const at::TensorOptions o = p.options().requires_grad(false);
    if (p.dim() == 2 && p.numel() > 0) {
      plan->two_d = true;
      plan->rows = p.size(0);
      plan->cols = p.size(1);
      Side(plan->rows, d.chunk(), &plan->s1, &plan->prows);
      Side(plan->cols, d.chunk(), &plan->s2, &plan->pcols);
      plan->tiles = (plan->prows / plan->s1) * (plan->pcols / plan->s2);
      plan->tile = plan->s1 * plan->s2;
      plan->d1 = DctMatrix(plan->s1, o);
      plan->d2 = DctMatrix(plan->s2, o);
    } else {
      plan->rows = p.numel();
      Side(std::max<int64_t>(p.numel(), 1), d.chunk(), &plan->tile, &plan->prows);
      plan->tiles = p.numel() > 0 ? plan->prows / plan->tile : 0;
      plan->d1 = DctMatrix(plan->tile, o);
    }
    plan->k = std::min(d.topk(), plan->tile);
    kept_ += plan->tiles * plan->k;
    elements_ += p.numel();
    momentum_.push_back(at::zeros_like(p, o));
    plans_.push_back(std::move(plan));
  }
  // [flag float][kept floats][kept int16 positions], padded to 4 bytes.
  payload_bytes_ = RoundUp4(4 + 4 * kept_ + 2 * kept_);
  // Every rank starts from rank 0's parameters (sign updates keep any
  // difference forever).
  for (const at::Tensor& p : params_) pg_->Broadcast(p.detach(), 0)->Wait();
}

DeMo::DeMo(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, DeMoOptions defaults)
    : DeMo(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
           std::move(pg), defaults) {}

DeMo::DeMo(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
           DeMoOptions defaults)
    : DeMo(std::move(groups), ddp.shared_process_group(), defaults) {
  ddp.RegisterOwnedCommHook(std::make_shared<comm::LocalHook>(), "DeMo");
}

DeMo::~DeMo() = default;

at::Tensor DeMo::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    torch::AutoGradMode grad(true);
    loss = closure();
  }
  torch::NoGradGuard no_grad;
  last_ = DeMoStepStats{};
  const comm::TrafficCounters before = pg_->Traffic();
  const auto& d = static_cast<const DeMoOptions&>(*defaults_);
  bool bad = false;
  for (const at::Tensor& p : params_) {
    if (p.grad().defined() && !kernels::AllFinite(p.grad())) bad = true;
  }
  const at::TensorOptions fopt = params_.front().options().requires_grad(false);
  at::Tensor payload = at::zeros({payload_bytes_}, fopt.dtype(at::kByte));
  at::Tensor values = payload.narrow(0, 4, 4 * kept_).view(at::kFloat);
  at::Tensor positions = payload.narrow(0, 4 + 4 * kept_, 2 * kept_).view(at::kShort);
  if (bad) {
    payload.narrow(0, 0, 4).view(at::kFloat).fill_(1.0);
  } else {
    int64_t at = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Plan& plan = *plans_[i];
      if (params_[i].numel() == 0) continue;
      const double lr = param_groups_[group_of_[i]].options().get_lr();
      at::Tensor& m = momentum_[i];
      m.mul_(d.beta());
      if (params_[i].grad().defined()) m.add_(params_[i].grad(), lr);
      const at::Tensor y = plan.Encode(m);
      const at::Tensor idx = std::get<1>(y.abs().topk(plan.k, 1, true, false));
      const at::Tensor val = y.gather(1, idx);
      m.sub_(plan.Decode(at::zeros_like(y).scatter_(1, idx, val)));
      const int64_t n = plan.tiles * plan.k;
      values.narrow(0, at, n).copy_(val.reshape({-1}));
      positions.narrow(0, at, n).copy_(idx.reshape({-1}));
      at += n;
    }
  }
  const int world = pg_->Size();
  at::Tensor gathered = at::empty({world * payload_bytes_}, payload.options());
  pg_->AllGather(gathered, payload)->Wait();
  for (int r = 0; r < world; ++r) {
    if (gathered.narrow(0, static_cast<int64_t>(r) * payload_bytes_, 4).view(at::kFloat).item<float>() != 0.0f) {
      last_.skipped = true;
    }
  }
  if (!last_.skipped) {
    ++step_;
    int64_t at = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Plan& plan = *plans_[i];
      if (params_[i].numel() == 0) continue;
      const int64_t n = plan.tiles * plan.k;
      at::Tensor sum = at::zeros({plan.tiles, plan.tile}, fopt);
      at::Tensor count = at::zeros({plan.tiles, plan.tile}, fopt);
      const at::Tensor ones = at::ones({plan.tiles, plan.k}, fopt);
      for (int r = 0; r < world; ++r) {
        const at::Tensor mine = gathered.narrow(0, static_cast<int64_t>(r) * payload_bytes_, payload_bytes_);
        const at::Tensor val =
            mine.narrow(0, 4, 4 * kept_).view(at::kFloat).narrow(0, at, n).view({plan.tiles, plan.k});
        const at::Tensor idx = mine.narrow(0, 4 + 4 * kept_, 2 * kept_)
                                   .view(at::kShort)
                                   .narrow(0, at, n)
                                   .to(at::kLong)
                                   .view({plan.tiles, plan.k});
        sum.scatter_add_(1, idx, val);
        count.scatter_add_(1, idx, ones);
      }
      const at::Tensor q = plan.Decode(sum.div_(count.clamp_min_(1.0)));
      const auto& o = static_cast<const DeMoOptions&>(param_groups_[group_of_[i]].options());
      at::Tensor p = params_[i].detach();
      if (o.weight_decay() != 0.0) p.mul_(1.0 - o.lr() * o.weight_decay());
      p.sub_(q.sign(), o.lr());
      at += n;
    }
  }
  last_.bytes_sent = pg_->Traffic().bytes_sent - before.bytes_sent;
  return loss;
}

void DeMo::save(torch::serialize::OutputArchive& archive) const {
  comm::HookState state{{"step", at::tensor(step_)}, {"parameters", at::tensor(static_cast<int64_t>(params_.size()))}};
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    state.emplace_back(absl::StrCat("group", g, "/lr"), at::tensor(param_groups_[g].options().get_lr(), at::kDouble));
  }
  for (size_t i = 0; i < momentum_.size(); ++i) state.emplace_back(absl::StrCat("momentum/", i), momentum_[i]);
  comm::WriteHookState(archive, state, "demo_");
}

void DeMo::load(torch::serialize::InputArchive& archive) {
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, tensor] : comm::ReadHookState(archive, "demo_")) saved[name] = tensor;
  for (const char* key : {"step", "parameters"}) {
    LOWBIT_CHECK(saved.count(key) && saved[key].numel() == 1, "DeMo: the archive has no '", key,
                 "' entry; not a DeMo state");
  }
  LOWBIT_CHECK(saved["parameters"].item<int64_t>() == static_cast<int64_t>(params_.size()), "DeMo: the archive holds ",
               saved["parameters"].item<int64_t>(), " parameters, this optimizer has ", params_.size());
  const int64_t step = saved["step"].item<int64_t>();
  LOWBIT_CHECK(step >= 0, "DeMo: the archive's step is ", step);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < momentum_.size(); ++i) {
    const std::string key = absl::StrCat("momentum/", i);
    auto it = saved.find(key);
    LOWBIT_CHECK(it != saved.end(), "DeMo: the archive has no '", key, "' entry");
    LOWBIT_CHECK(it->second.sizes() == momentum_[i].sizes() && it->second.scalar_type() == at::kFloat,
                 "DeMo: archive entry '", key, "' has shape ", it->second.sizes(), " and dtype ",
                 it->second.scalar_type(), ", parameter ", i, " is ", momentum_[i].sizes(), " float");
    momentum_[i].copy_(it->second);
  }
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    auto it = saved.find(absl::StrCat("group", g, "/lr"));
    LOWBIT_CHECK(it != saved.end() && it->second.numel() == 1, "DeMo: the archive has no learning rate for group ", g);
    param_groups_[g].options().set_lr(it->second.item<double>());
  }
  step_ = step;
}

}  // namespace lowbit::optim
