// Step time and state memory of the 8-bit optimizers against their fp32
// torch::optim counterparts, in the same run (steps interleaved), at several
// model sizes. The
// model is `params` float32 elements in tensors of at most 4M (layers), each
// with a fixed random gradient. One JSON line per (optimizer, size, impl):
// seconds per step (median of the timed steps), state bytes per parameter,
// and speedup_vs_fp32 = the counterpart's seconds / these seconds.
//   impl torch_fp32:  torch::optim::Adam / AdamW / SGD / RMSprop / Adagrad
//   impl lowbit_8bit: lowbit::optim::*8bit (state 8-bit, fused kernel)
//   impl lowbit_fp32: the same fused kernel with fp32 state (min_8bit_size huge)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/optim_8bit.h"

ABSL_FLAG(std::string, sizes, "1000000,10000000,50000000", "model sizes (parameter elements), comma-separated");
ABSL_FLAG(std::string, optimizers, "adam,adamw,sgd,rmsprop,adagrad,lion", "which optimizers");
ABSL_FLAG(int, steps, 10, "timed steps per measurement (after 2 untimed)");
ABSL_FLAG(int, threads, 0, "intra-op threads (0: LibTorch's default)");

namespace {

namespace lo = lowbit::optim;
using Make = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)>;

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

constexpr int64_t kAllFp32 = std::numeric_limits<int64_t>::max();

struct Impls {
  Make torch_fp32, lowbit_8bit, lowbit_fp32;
};

Impls ImplsFor(const std::string& name) {
  if (name == "adam") {
    return {[](auto p) { return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(1e-3)); },
            [](auto p) { return std::make_unique<lo::Adam8bit>(p, lo::Adam8bitOptions(1e-3)); },
            [](auto p) { return std::make_unique<lo::Adam8bit>(p, lo::Adam8bitOptions(1e-3).min_8bit_size(kAllFp32)); }};
  }
  if (name == "adamw") {
    return {[](auto p) { return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(1e-3)); },
            [](auto p) { return std::make_unique<lo::AdamW8bit>(p, lo::AdamW8bitOptions(1e-3)); },
            [](auto p) { return std::make_unique<lo::AdamW8bit>(p, lo::AdamW8bitOptions(1e-3).min_8bit_size(kAllFp32)); }};
  }
  if (name == "sgd") {
    return {[](auto p) { return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.01).momentum(0.9)); },
            [](auto p) { return std::make_unique<lo::SGD8bit>(p, lo::SGD8bitOptions(0.01).momentum(0.9)); },
            [](auto p) {
              return std::make_unique<lo::SGD8bit>(p, lo::SGD8bitOptions(0.01).momentum(0.9).min_8bit_size(kAllFp32));
            }};
  }
  if (name == "rmsprop") {
    return {[](auto p) { return std::make_unique<torch::optim::RMSprop>(p, torch::optim::RMSpropOptions(1e-3)); },
            [](auto p) { return std::make_unique<lo::RMSprop8bit>(p, lo::RMSprop8bitOptions(1e-3)); },
            [](auto p) {
              return std::make_unique<lo::RMSprop8bit>(p, lo::RMSprop8bitOptions(1e-3).min_8bit_size(kAllFp32));
            }};
  }
  if (name == "adagrad") {
    return {[](auto p) { return std::make_unique<torch::optim::Adagrad>(p, torch::optim::AdagradOptions(1e-2)); },
            [](auto p) { return std::make_unique<lo::Adagrad8bit>(p, lo::Adagrad8bitOptions(1e-2)); },
            [](auto p) {
              return std::make_unique<lo::Adagrad8bit>(p, lo::Adagrad8bitOptions(1e-2).min_8bit_size(kAllFp32));
            }};
  }
  if (name == "lion") {  // LibTorch has no Lion: fp32 is our fused kernel with fp32 state
    return {nullptr, [](auto p) { return std::make_unique<lo::Lion8bit>(p, lo::Lion8bitOptions(1e-4)); },
            [](auto p) { return std::make_unique<lo::Lion8bit>(p, lo::Lion8bitOptions(1e-4).min_8bit_size(kAllFp32)); }};
  }
  TORCH_CHECK(false, "--optimizers: unknown optimizer '", name, "'");
}

int64_t Bytes(const std::vector<at::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const at::Tensor& t : tensors) bytes += t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
  return bytes;
}

// The tensors torch::optim keeps per parameter.
int64_t TorchStateBytes(const torch::optim::OptimizerParamState& s) {
  if (auto* a = dynamic_cast<const torch::optim::AdamParamState*>(&s)) {
    return Bytes({a->exp_avg(), a->exp_avg_sq(), a->max_exp_avg_sq()});
  }
  if (auto* a = dynamic_cast<const torch::optim::AdamWParamState*>(&s)) {
    return Bytes({a->exp_avg(), a->exp_avg_sq(), a->max_exp_avg_sq()});
  }
  if (auto* m = dynamic_cast<const torch::optim::SGDParamState*>(&s)) return Bytes({m->momentum_buffer()});
  if (auto* r = dynamic_cast<const torch::optim::RMSpropParamState*>(&s)) {
    return Bytes({r->square_avg(), r->momentum_buffer(), r->grad_avg()});
  }
  if (auto* a = dynamic_cast<const torch::optim::AdagradParamState*>(&s)) return Bytes({a->sum()});
  return 0;
}

// One implementation under test: its own copy of the model and optimizer.
struct Run {
  std::string impl;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::vector<double> times;
};

std::vector<at::Tensor> MakeModel(int64_t size) {
  std::vector<at::Tensor> params;
  torch::manual_seed(0);
  for (int64_t done = 0; done < size;) {
    const int64_t n = std::min<int64_t>(size - done, int64_t{1} << 22);
    at::Tensor p = (torch::randn({n}) * 0.02).requires_grad_();
    p.mutable_grad() = torch::randn({n}) * 1e-3;
    params.push_back(p);
    done += n;
  }
  return params;
}

double StateBytesPerParam(const torch::optim::Optimizer& opt, int64_t size) {
  double bytes = 0;
  if (auto* eight = dynamic_cast<const lo::Blockwise8bitOptimizer*>(&opt)) {
    bytes = static_cast<double>(eight->StateBytes());
  } else {
    for (const auto& [key, state] : opt.state()) bytes += TorchStateBytes(*state);
  }
  return bytes / static_cast<double>(size);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0) torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  lowbit::launch::KeepFreedMemory();
  std::vector<int64_t> sizes;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',')) {
    int64_t v = 0;
    TORCH_CHECK(absl::SimpleAtoi(s, &v) && v > 0, "--sizes: not a positive integer: '", std::string(s), "'");
    sizes.push_back(v);
  }
  const int steps = absl::GetFlag(FLAGS_steps);
  TORCH_CHECK(steps >= 1, "--steps must be >= 1, got ", steps);
  for (absl::string_view name_view : absl::StrSplit(absl::GetFlag(FLAGS_optimizers), ',')) {
    const std::string name(name_view);
    const Impls impls = ImplsFor(name);
    for (int64_t size : sizes) {
      // All implementations side by side, their steps interleaved, so that
      // the machine's drift (a shared VM) touches each alike.
      std::vector<Run> runs;
      for (const auto& [impl, make] : {std::make_pair("torch_fp32", impls.torch_fp32),
                                        std::make_pair("lowbit_fp32", impls.lowbit_fp32),
                                        std::make_pair("lowbit_8bit", impls.lowbit_8bit)}) {
        if (make) runs.push_back({impl, make(MakeModel(size)), {}});
      }
      for (int s = 0; s < steps + 2; ++s) {
        for (Run& run : runs) {
          const double t0 = Now();
          run.opt->step();
          if (s >= 2) run.times.push_back(Now() - t0);  // the first steps create the state
        }
      }
      double reference = 0;
      for (Run& run : runs) {
        std::sort(run.times.begin(), run.times.end());
        const double seconds = run.times[run.times.size() / 2];
        if (reference == 0) reference = seconds;
        std::printf("{\"bench\":\"optim8bit\",\"optimizer\":\"%s\",\"params\":%lld,\"impl\":\"%s\",\"threads\":%d,"
                    "\"seconds_per_step\":%.6g,\"state_bytes_per_param\":%.4g,\"speedup_vs_fp32\":%.4g}\n",
                    name.c_str(), static_cast<long long>(size), run.impl.c_str(), torch::get_num_threads(), seconds,
                    StateBytesPerParam(*run.opt, size), reference / seconds);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
