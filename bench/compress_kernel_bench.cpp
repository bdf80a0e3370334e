// GB/s of the compression kernels against a memory copy of the same bytes, in
// the same run, on one thread: sign packing and unpacking, blockwise 4- and
// 8-bit quantization and dequantization, top-k selection. Bytes counted are
// the float32 input (what a copy of the gradient moves). One JSON line each,
// with ratio_vs_memcpy = GB/s / GB/s of std::memcpy of the input.
#include <cstring>
#include <iostream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "lowbit/kernels/quantize.h"
#include "lowbit/kernels/sign.h"
#include "lowbit/kernels/topk.h"
#include "lowbit/launch/init.h"

ABSL_FLAG(int64_t, floats, 1 << 24, "elements per call");
ABSL_FLAG(int, threads, 1, "intra-op threads");

namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <typename F>
double BestSeconds(F&& f) {
  f();
  double best = 1e30;
  for (int i = 0; i < 7; ++i) {
    const double t0 = Now();
    f();
    best = std::min(best, Now() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  lowbit::launch::KeepFreedMemory();  // as InitProcessGroup does
  const int64_t n = absl::GetFlag(FLAGS_floats);
  const double bytes = static_cast<double>(n) * 4;
  at::Tensor x = torch::randn({n});
  at::Tensor copy = torch::empty({n});
  const double t_copy = BestSeconds([&] { std::memcpy(copy.data_ptr<float>(), x.data_ptr<float>(), n * 4); });
  auto report = [&](const char* kernel, double t) {
    std::printf("{\"bench\":\"compress_kernel\",\"kernel\":\"%s\",\"floats\":%lld,\"threads\":%d,\"seconds\":%.6g,"
                "\"gbps\":%.4g,\"memcpy_gbps\":%.4g,\"ratio_vs_memcpy\":%.4g}\n",
                kernel, static_cast<long long>(n), absl::GetFlag(FLAGS_threads), t, bytes / t / 1e9,
                bytes / t_copy / 1e9, t_copy / t);
    std::fflush(stdout);
  };
  report("memcpy", t_copy);
  at::Tensor bits = torch::empty({(n + 7) / 8}, torch::kByte);
  report("sign_pack", BestSeconds([&] { lowbit::kernels::PackSignsInto(x, bits); }));
  at::Tensor sign_scales = torch::empty({(n + 2047) / 2048});
  report("sign_pack_with_block_scales",
         BestSeconds([&] { lowbit::kernels::PackSignsWithScales(x, 2048, 1, sign_scales, bits); }));
  report("sign_unpack", BestSeconds([&] { lowbit::kernels::UnpackSigns(bits, sign_scales, 2048, copy, false); }));
  report("sign_unpack_accumulate",
         BestSeconds([&] { lowbit::kernels::UnpackSigns(bits, sign_scales, 2048, copy, true); }));
  for (int b : {4, 8}) {
    lowbit::kernels::QuantSpec spec;
    spec.bits = b;
    spec.levels = (1 << b) - 1;
    spec.block = 256;
    at::Tensor scales = torch::empty({lowbit::kernels::NumBlocks(n, spec)});
    at::Tensor codes = torch::empty({lowbit::kernels::PackedCodeBytes(n, spec)}, torch::kByte);
    const std::string q = "quantize_" + std::to_string(b) + "bit_stochastic";
    report(q.c_str(), BestSeconds([&] { lowbit::kernels::AbsMaxQuantizeBlockwise(x, spec, 1, 0, scales, codes); }));
    const std::string d = "dequantize_" + std::to_string(b) + "bit";
    report(d.c_str(), BestSeconds([&] { lowbit::kernels::DequantizeBlockwise(codes, scales, spec, copy, false); }));
    report((d + "_accumulate").c_str(),
           BestSeconds([&] { lowbit::kernels::DequantizeBlockwise(codes, scales, spec, copy, true); }));
  }
  report("topk_1pct", BestSeconds([&] { lowbit::kernels::TopKByMagnitude(x, n / 100); }));
  report("select_at_least", BestSeconds([&] { lowbit::kernels::SelectAtLeast(x, 2.5f); }));
  return 0;
}
