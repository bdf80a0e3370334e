// QAT costs, measured in the same run on one thread:
//  - the fake-quantization kernels in GB/s of float32 input, against a
//    memory copy and, where LibTorch has the same operation, against ATen
//    (fake_quantize_per_tensor/per_channel_affine and the learnable LSQ
//    op's forward+backward): ratio_vs_memcpy, speedup_vs_aten;
//  - one layer's forward+backward with each preset against the fp32 layer
//    (Linear 1024 -> 1024 on a batch of 256): ratio_vs_fp32 = time / fp32 time;
//  - DKM on the GPT small preset's weight shapes (N(0, 0.02) weights): the
//    attention maps' bytes and the forward+backward time with eDKM's
//    uniquification and without (bench "dkm_memory").
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/timing.h"
#include "lowbit/kernels/fake_quant.h"
#include "lowbit/launch/init.h"
#include "lowbit/qat/estimators.h"
#include "lowbit/qat/fake_quantizer.h"
#include "lowbit/qat/prepare.h"

ABSL_FLAG(int64_t, floats, 1 << 24, "elements per kernel call");
ABSL_FLAG(int, threads, 1, "intra-op threads");
ABSL_FLAG(int64_t, features, 1024, "layer benchmark: in and out features");
ABSL_FLAG(int64_t, batch, 256, "layer benchmark: batch");

namespace {

using lowbit::bench::BestSeconds;

namespace k = lowbit::kernels;

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads);
  torch::set_num_threads(threads);
  lowbit::launch::KeepFreedMemory();
  const int64_t n = absl::GetFlag(FLAGS_floats);
  if (n <= 0 || n % 4096 != 0) {  // per-channel rows of 4096, Hadamard rows of 1024
    std::fprintf(stderr, "qat_bench: --floats must be a positive multiple of 4096, got %lld\n", static_cast<long long>(n));
    return 2;
  }
  at::Tensor x = torch::randn({n});
  at::Tensor copy = torch::empty({n});
  const double t_copy = BestSeconds([&] { std::memcpy(copy.data_ptr<float>(), x.data_ptr<float>(), n * 4); });
  auto report = [&](const char* kernel, double t, double t_aten) {
    lowbit::bench::PrintKernelLine("qat_kernel", kernel, n, threads, t, t_copy, t_aten);
  };
  report("memcpy", t_copy, 0);
  const at::Tensor s = torch::tensor({0.02f}), zp = torch::tensor({3.0f});
  report("fake_quant_int8_per_tensor", BestSeconds([&] { k::FakeQuantizeInt(x, s, zp, {}, -128, 127, {}); }),
         BestSeconds([&] { at::fake_quantize_per_tensor_affine(x, 0.02, 3, -128, 127); }));
  const int64_t rows = 4096;
  at::Tensor w = x.view({rows, -1});
  at::Tensor cs = torch::rand({rows}) * 0.02 + 0.01;
  at::Tensor czp = torch::zeros({rows}, torch::kInt);
  report("fake_quant_int4_per_channel",
         BestSeconds([&] { k::FakeQuantizeInt(w, cs, {}, {}, -8, 7, {k::ScaleLayout::kPerChannel, 0, 0}); }),
         BestSeconds([&] { at::fake_quantize_per_channel_affine(w, cs, czp, 0, -8, 7); }));
  {
    // LSQ forward + backward (x and step gradients) against ATen's learnable op.
    at::Tensor xg = x.clone().requires_grad_();
    at::Tensor dy = torch::randn({n});
    at::Tensor step = torch::tensor({0.05f}).requires_grad_();
    at::Tensor zero = torch::tensor({0.0f}).requires_grad_();
    const double t_ours = BestSeconds([&] {
      lowbit::qat::FakeQuantLsq(xg, step, {}, -8, 7, {}, 1e-3).backward(dy);
    });
    const double t_aten = BestSeconds([&] {
      at::_fake_quantize_learnable_per_tensor_affine(xg, step, zero, -8, 7, 1e-3).backward(dy);
    });
    report("lsq_forward_backward", t_ours, t_aten);
  }
  const at::Tensor fs = torch::tensor({0.01f});
  report("fake_quant_fp8_e4m3", BestSeconds([&] { k::FakeQuantizeMiniFloat(x, fs, k::MiniFloatE4M3(), {}); }), 0);
  report("fake_quant_fp4_e2m1", BestSeconds([&] { k::FakeQuantizeMiniFloat(x, fs, k::MiniFloatE2M1(), {}); }), 0);
  report("stochastic_round_int8", BestSeconds([&] { k::StochasticRoundInt(x, 0.02, -127, 127, 5); }), 0);
  at::Tensor h = x.clone().view({-1, 1024});
  report("walsh_hadamard_128", BestSeconds([&] { k::FastWalshHadamard_(h, 128); }), 0);
  {
    at::Tensor mask;
    report("quest_rows_4bit", BestSeconds([&] { k::QuestQuantizeRows(h, 2.5139, 4, &mask); }), 0);
  }
  report("quest_forward_4bit", BestSeconds([&] { lowbit::qat::FakeQuantQuest(h, 4, 128, 1); }), 0);

  // One layer, forward + backward.
  const int64_t f = absl::GetFlag(FLAGS_features), b = absl::GetFlag(FLAGS_batch);
  at::Tensor input = torch::randn({b, f});
  at::Tensor grad = torch::randn({b, f});
  auto time_layer = [&](const std::function<at::Tensor(const at::Tensor&)>& fwd) {
    return BestSeconds([&] { fwd(input).backward(grad); }, 15);
  };
  torch::manual_seed(1);
  torch::nn::Linear fp32(f, f);
  const double t_fp32 = time_layer([&](const at::Tensor& in) { return fp32->forward(in); });
  std::printf("{\"bench\":\"qat_layer\",\"preset\":\"fp32\",\"batch\":%lld,\"features\":%lld,\"seconds\":%.6g,"
              "\"ratio_vs_fp32\":1}\n",
              static_cast<long long>(b), static_cast<long long>(f), t_fp32);
  for (const std::string preset : {"w8a8", "w4a8", "w4a4_lsq", "w4a4_quest", "w1a1_quest", "int8_train", "fp8_train"}) {
    torch::nn::Linear src(f, f);
    lowbit::qat::QuantLinear layer(src, lowbit::qat::PresetConfig(preset).layers);
    const double t = time_layer([&](const at::Tensor& in) { return layer->forward(in); });
    std::printf("{\"bench\":\"qat_layer\",\"preset\":\"%s\",\"batch\":%lld,\"features\":%lld,\"seconds\":%.6g,"
                "\"ratio_vs_fp32\":%.4g}\n",
                preset.c_str(), static_cast<long long>(b), static_cast<long long>(f), t, t / t_fp32);
    std::fflush(stdout);
  }
  // DKM on the GPT small preset's matrices (n_embd 384): the attention map is
  // what DKM keeps for backward; eDKM builds it over distinct fp16 values.
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1152, 384}, {384, 384}, {1536, 384}, {384, 1536}}) {
    for (int bits : {2, 4}) {
      for (bool unique : {false, true}) {
        lowbit::qat::QuantizerConfig c;
        c.format = lowbit::qat::Format::kPalette;
        c.estimator = lowbit::qat::Estimator::kDkm;
        c.bits = bits;
        c.dkm_unique = unique;
        lowbit::qat::FakeQuantizer q(c, 1, true);
        torch::manual_seed(2);
        const at::Tensor w = (torch::randn({rows, cols}) * 0.02).requires_grad_();
        q->forward(w);  // initialise the centroids
        const double t = BestSeconds([&] { q->forward(w).sum().backward(); }, 3);
        std::printf("{\"bench\":\"dkm_memory\",\"shape\":\"%lldx%lld\",\"bits\":%d,\"unique\":%s,"
                    "\"attention_bytes\":%lld,\"weight_bytes\":%lld,\"seconds\":%.6g}\n",
                    static_cast<long long>(rows), static_cast<long long>(cols), bits, unique ? "true" : "false",
                    static_cast<long long>(q->LastAttentionBytes()), static_cast<long long>(rows * cols * 4), t);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
