// Every CUDA kernel against its CPU twin (bitwise where the math allows).
#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "lowbit/kernels/cpu/fake_quant.h"
#include "lowbit/kernels/cpu/optim8bit.h"
#include "lowbit/kernels/cpu/quantize.h"
#include "lowbit/kernels/cpu/scale.h"
#include "lowbit/kernels/cpu/sign.h"
#include "lowbit/kernels/cpu/sparse.h"
#include "lowbit/kernels/cpu/topk.h"
#include "lowbit/kernels/cuda/fake_quant.cuh"
#include "lowbit/kernels/cuda/optim8bit.cuh"
#include "lowbit/kernels/cuda/quantize.cuh"
#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/cuda/sign.cuh"
#include "lowbit/kernels/cuda/sparse.cuh"
#include "lowbit/kernels/cuda/topk.cuh"

namespace {

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CudaTwin, ScaleFloatMatchesCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : {1, 3, 1024, 1000003}) {
    std::vector<float> in(n), cpu(n), gpu(n);
    std::mt19937 gen(7);
    std::normal_distribution<float> dist;
    for (auto& v : in) v = dist(gen);
    lowbit::kernels::cpu::ScaleFloat(in.data(), cpu.data(), n, 0.125f);
    float *d_in = nullptr, *d_out = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_in), n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_in, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(lowbit::kernels::cuda::ScaleFloat(d_in, d_out, n, 0.125f, nullptr), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(gpu.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d_in);
    cudaFree(d_out);
    EXPECT_EQ(cpu, gpu) << "n=" << n;
  }
}


// Device buffers that free themselves.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> Host(size_t n) const {
    std::vector<T> out(n);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
};

std::vector<float> Normal(int64_t n, int seed) {
  std::vector<float> v(n);
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  for (auto& x : v) x = dist(gen);
  return v;
}

TEST(CudaTwin, SignsMatchCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : {1, 13, 4096, 1000003}) {
    std::vector<float> x = Normal(n, 3);
    const int64_t nb = (n + 7) / 8;
    std::vector<uint8_t> cpu_bits(nb);
    lowbit::kernels::cpu::PackSigns(x.data(), n, cpu_bits.data());
    DeviceBuffer<float> dx(x);
    DeviceBuffer<uint8_t> dbits(nb);
    ASSERT_EQ(lowbit::kernels::cuda::PackSigns(dx.ptr, n, dbits.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(dbits.Host(nb), cpu_bits) << "n=" << n;
    std::vector<float> cpu_out(x);
    std::vector<float> scales((n + 63) / 64);
    for (size_t b = 0; b < scales.size(); ++b) scales[b] = 0.37f + 0.01f * b;
    DeviceBuffer<float> dscales(scales);
    lowbit::kernels::cpu::UnpackSigns(cpu_bits.data(), n, scales.data(), 64, cpu_out.data(), true);
    ASSERT_EQ(lowbit::kernels::cuda::UnpackSigns(dbits.ptr, n, dscales.ptr, 64, dx.ptr, true, nullptr), cudaSuccess);
    EXPECT_EQ(dx.Host(n), cpu_out) << "n=" << n;
  }
}

TEST(CudaTwin, BlockwiseQuantizeMatchesCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  for (auto [bits, levels, block] : {std::tuple{1, 1, 64}, std::tuple{2, 2, 1024}, std::tuple{4, 15, 256},
                                     std::tuple{7, 127, 100}, std::tuple{8, 255, 4096}}) {
    for (int64_t n : {5, 1000, 262147}) {
      std::vector<float> x = Normal(n, bits);
      const int64_t nblocks = (n + block - 1) / block;
      const int64_t ncodes = lowbit::kernels::cpu::PackedCodeBytes(n, bits);
      std::vector<float> scales(nblocks);
      std::vector<uint8_t> codes(ncodes);
      lowbit::kernels::cpu::BlockAbsMax(x.data(), n, block, scales.data());
      lowbit::kernels::cpu::QuantizeBlockwise(x.data(), n, block, scales.data(), bits, levels, true, 77, 5,
                                              codes.data());
      std::vector<float> decoded(n);
      lowbit::kernels::cpu::DequantizeBlockwise(codes.data(), scales.data(), n, block, bits, levels,
                                                decoded.data(), false);
      DeviceBuffer<float> dx(x), dscales(nblocks), dout(n);
      DeviceBuffer<uint8_t> dcodes(ncodes);
      ASSERT_EQ(lowbit::kernels::cuda::BlockAbsMax(dx.ptr, n, block, dscales.ptr, nullptr), cudaSuccess);
      EXPECT_EQ(dscales.Host(nblocks), scales);
      ASSERT_EQ(lowbit::kernels::cuda::QuantizeBlockwise(dx.ptr, n, block, dscales.ptr, bits, levels, true, 77, 5,
                                                         dcodes.ptr, nullptr),
                cudaSuccess);
      EXPECT_EQ(dcodes.Host(ncodes), codes) << "bits=" << bits << " n=" << n;
      ASSERT_EQ(lowbit::kernels::cuda::DequantizeBlockwise(dcodes.ptr, dscales.ptr, n, block, bits, levels,
                                                           dout.ptr, false, nullptr),
                cudaSuccess);
      EXPECT_EQ(dout.Host(n), decoded) << "bits=" << bits << " n=" << n;
    }
  }
}

TEST(CudaTwin, ThresholdSelectionAndScatterAddMatchCpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : {1, 1000, 1000003}) {
    std::vector<float> x = Normal(n, 9);
    const float threshold = 1.7f;
    const int64_t count = lowbit::kernels::cpu::CountAtLeast(x.data(), n, threshold);
    std::vector<int32_t> idx(count);
    std::vector<float> val(count);
    lowbit::kernels::cpu::GatherSelected(x.data(), n, threshold, -1, idx.data(), val.data());
    const int64_t tiles = (n + lowbit::kernels::cuda::kSelectTile - 1) / lowbit::kernels::cuda::kSelectTile;
    DeviceBuffer<float> dx(x);
    DeviceBuffer<int32_t> dcounts(tiles);
    ASSERT_EQ(lowbit::kernels::cuda::CountAtLeastTiles(dx.ptr, n, threshold, dcounts.ptr, nullptr), cudaSuccess);
    std::vector<int32_t> counts = dcounts.Host(tiles);
    std::vector<int64_t> offsets(tiles, 0);
    for (int64_t t = 1; t < tiles; ++t) offsets[t] = offsets[t - 1] + counts[t - 1];
    DeviceBuffer<int64_t> doffsets(offsets);
    DeviceBuffer<int32_t> didx(count);
    DeviceBuffer<float> dval(count);
    ASSERT_EQ(lowbit::kernels::cuda::GatherAtLeast(dx.ptr, n, threshold, doffsets.ptr, didx.ptr, dval.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(didx.Host(count), idx) << "n=" << n;
    EXPECT_EQ(dval.Host(count), val) << "n=" << n;
    std::vector<float> dense(n, 1.0f);
    lowbit::kernels::cpu::ScatterAdd(idx.data(), val.data(), count, dense.data());
    DeviceBuffer<float> ddense(std::vector<float>(n, 1.0f));
    ASSERT_EQ(lowbit::kernels::cuda::ScatterAdd(didx.ptr, dval.ptr, count, ddense.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(ddense.Host(n), dense) << "n=" << n;
  }
}

// The dynamic maps' tables on the device, built by the CPU code.
struct DeviceCodes {
  lowbit::kernels::DynamicCode host[2];
  DeviceBuffer<uint8_t> signed_code{sizeof(lowbit::kernels::DynamicCode)};
  DeviceBuffer<uint8_t> unsigned_code{sizeof(lowbit::kernels::DynamicCode)};
  DeviceCodes() {
    EXPECT_TRUE(lowbit::kernels::cpu::BuildDynamicCode(true, &host[1]));
    EXPECT_TRUE(lowbit::kernels::cpu::BuildDynamicCode(false, &host[0]));
    EXPECT_EQ(cudaMemcpy(signed_code.ptr, &host[1], sizeof host[1], cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(unsigned_code.ptr, &host[0], sizeof host[0], cudaMemcpyHostToDevice), cudaSuccess);
  }
  const lowbit::kernels::DynamicCode* Device(bool is_signed) const {
    return reinterpret_cast<const lowbit::kernels::DynamicCode*>(is_signed ? signed_code.ptr : unsigned_code.ptr);
  }
};

TEST(CudaTwin, DynamicQuantizeMatchesCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  DeviceCodes codes;
  for (bool is_signed : {true, false}) {
    for (int64_t block : {32, 256, 4096}) {
      const int64_t n = 3 * block + 5, nblocks = (n + block - 1) / block;
      std::vector<float> x = Normal(n, 4);
      if (!is_signed) {
        for (float& v : x) v = std::fabs(v);
      }
      const lowbit::kernels::DynamicCode& host = codes.host[is_signed ? 1 : 0];
      std::vector<float> absmax(nblocks), decoded(n);
      std::vector<uint8_t> q(n);
      lowbit::kernels::cpu::QuantizeDynamic(x.data(), n, block, host, absmax.data(), q.data());
      lowbit::kernels::cpu::DequantizeDynamic(q.data(), absmax.data(), n, block, host, decoded.data());
      DeviceBuffer<float> dx(x), dabsmax(nblocks), dout(n);
      DeviceBuffer<uint8_t> dq(n);
      ASSERT_EQ(lowbit::kernels::cuda::QuantizeDynamic(dx.ptr, n, block, codes.Device(is_signed), dabsmax.ptr, dq.ptr,
                                                       nullptr),
                cudaSuccess);
      EXPECT_EQ(dq.Host(n), q);
      EXPECT_EQ(dabsmax.Host(nblocks), absmax);
      ASSERT_EQ(lowbit::kernels::cuda::DequantizeDynamic(dq.ptr, dabsmax.ptr, n, block, codes.Device(is_signed),
                                                         dout.ptr, nullptr),
                cudaSuccess);
      EXPECT_EQ(dout.Host(n), decoded);
    }
  }
}

// Every rule, 8-bit and fp32 state, against the CPU twin, bitwise.
TEST(CudaTwin, FusedOptimizerStepsMatchCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  using lowbit::kernels::OptimRule;
  DeviceCodes codes;
  struct Rule {
    OptimRule rule;
    bool m, v;
  };
  for (const Rule& r : {Rule{OptimRule::kAdam, true, true}, Rule{OptimRule::kSgd, true, false},
                        Rule{OptimRule::kSgd, false, false}, Rule{OptimRule::kLion, true, false},
                        Rule{OptimRule::kRmsprop, false, true}, Rule{OptimRule::kRmsprop, true, true},
                        Rule{OptimRule::kAdagrad, false, true}}) {
    lowbit::kernels::OptimStepArgs a;
    a.rule = r.rule;
    a.lr = 1e-2f, a.beta1 = 0.9f, a.one_minus_beta1 = 0.1f, a.beta2 = 0.99f, a.one_minus_beta2 = 0.01f;
    a.eps = 1e-8f, a.inv_sqrt_bc2 = 3.0f, a.l2 = 1e-3f, a.decay = 0.999f, a.grad_scale = 0.75f;
    for (int64_t block : {64, 256, 2048}) {
      const int64_t n = 5 * block + 3, nblocks = (n + block - 1) / block;
      std::vector<float> p = Normal(n, 1), g = Normal(n, 2), m32 = Normal(n, 3), v32 = Normal(n, 4);
      for (float& x : v32) x = x * x;
      g[1] = NAN;
      std::vector<uint8_t> mq(n, 0), vq(n, 0);
      std::vector<float> ma(nblocks, 0.0f), va(nblocks, 0.0f);
      DeviceBuffer<float> dp(p), dg(g), dm32(m32), dv32(v32), dma(ma), dva(va);
      DeviceBuffer<uint8_t> dmq(mq), dvq(vq);
      std::vector<float> p8 = p;
      for (int step = 0; step < 3; ++step) {  // from zero state: three steps, so the codes matter
        ASSERT_TRUE(lowbit::kernels::cpu::OptimizerStep8bit(a, p8.data(), g.data(), n, block, r.m ? mq.data() : nullptr,
                                                            r.m ? ma.data() : nullptr, r.v ? vq.data() : nullptr,
                                                            r.v ? va.data() : nullptr, codes.host[1], codes.host[0]));
        ASSERT_EQ(lowbit::kernels::cuda::OptimizerStep8bit(a, dp.ptr, dg.ptr, n, block, r.m ? dmq.ptr : nullptr,
                                                           r.m ? dma.ptr : nullptr, r.v ? dvq.ptr : nullptr,
                                                           r.v ? dva.ptr : nullptr, codes.Device(true),
                                                           codes.Device(false), nullptr),
                  cudaSuccess);
      }
      EXPECT_EQ(dp.Host(n), p8) << "rule " << static_cast<int>(r.rule) << " block " << block;
      if (r.m) EXPECT_EQ(dmq.Host(n), mq);
      if (r.v) EXPECT_EQ(dvq.Host(n), vq);
      if (r.m) EXPECT_EQ(dma.Host(nblocks), ma);
      if (r.v) EXPECT_EQ(dva.Host(nblocks), va);
      std::vector<float> p32 = p;
      DeviceBuffer<float> dp32(p);
      ASSERT_TRUE(lowbit::kernels::cpu::OptimizerStep32bit(a, p32.data(), g.data(), n, r.m ? m32.data() : nullptr,
                                                           r.v ? v32.data() : nullptr));
      ASSERT_EQ(lowbit::kernels::cuda::OptimizerStep32bit(a, dp32.ptr, dg.ptr, n, r.m ? dm32.ptr : nullptr,
                                                          r.v ? dv32.ptr : nullptr, nullptr),
                cudaSuccess);
      EXPECT_EQ(dp32.Host(n), p32);
      if (r.m) EXPECT_EQ(dm32.Host(n), m32);
      if (r.v) EXPECT_EQ(dv32.Host(n), v32);
    }
  }
}

// Fake quantization: per-channel int grids with zero points and offsets
// (values, masks, codes, LSQ gradients), mini-floats, QuEST rows, stochastic
// rounding and the Walsh-Hadamard transform, bitwise against the CPU.
TEST(CudaTwin, FakeQuantMatchesCpuBitwise) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  namespace cpu = lowbit::kernels::cpu;
  namespace cu = lowbit::kernels::cuda;
  const int64_t rows = 37, cols = 256, n = rows * cols;
  std::vector<float> x = Normal(n, 21), dy = Normal(n, 22);
  for (auto& v : x) v *= 3;
  std::vector<float> scale(rows), zp(rows), offset(rows);
  for (int64_t r = 0; r < rows; ++r) {
    scale[r] = 0.05f + 0.01f * r;
    zp[r] = static_cast<float>(r % 9);
    offset[r] = 0.1f * (r % 5) - 0.2f;
  }
  const lowbit::kernels::QuantGroups g{n, cols, rows};
  DeviceBuffer<float> dx(x), ddy(dy), ds(scale), dzp(zp), doff(offset);
  for (bool with_offset : {false, true}) {
    std::vector<float> y(n), codes(n);
    std::vector<uint8_t> mask(n);
    cpu::FakeQuantInt(x.data(), g, scale.data(), zp.data(), with_offset ? offset.data() : nullptr, 0, 15, y.data(),
                      mask.data(), codes.data());
    DeviceBuffer<float> gy(n), gcodes(n);
    DeviceBuffer<uint8_t> gmask(n);
    ASSERT_EQ(cu::FakeQuantInt(dx.ptr, g, ds.ptr, dzp.ptr, with_offset ? doff.ptr : nullptr, 0, 15, gy.ptr, gmask.ptr,
                               gcodes.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(gy.Host(n), y);
    EXPECT_EQ(gmask.Host(n), mask);
    EXPECT_EQ(gcodes.Host(n), codes);
    std::vector<float> gx(n), gs(n), gb(n);
    cpu::FakeQuantIntBackward(x.data(), dy.data(), g, scale.data(), zp.data(), with_offset ? offset.data() : nullptr,
                              0, 15, gx.data(), gs.data(), gb.data());
    DeviceBuffer<float> dgx(n), dgs(n), dgb(n);
    ASSERT_EQ(cu::FakeQuantIntBackward(dx.ptr, ddy.ptr, g, ds.ptr, dzp.ptr, with_offset ? doff.ptr : nullptr, 0, 15,
                                       dgx.ptr, dgs.ptr, dgb.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(dgx.Host(n), gx);
    EXPECT_EQ(dgs.Host(n), gs);
    EXPECT_EQ(dgb.Host(n), gb);
  }
  for (auto f : {lowbit::kernels::MiniFloatE4M3(), lowbit::kernels::MiniFloatE5M2(), lowbit::kernels::MiniFloatE2M1()}) {
    std::vector<float> y(n);
    std::vector<uint8_t> mask(n);
    cpu::FakeQuantMiniFloat(x.data(), g, scale.data(), f, y.data(), mask.data());
    DeviceBuffer<float> gy(n);
    DeviceBuffer<uint8_t> gmask(n);
    ASSERT_EQ(cu::FakeQuantMiniFloat(dx.ptr, g, ds.ptr, f, gy.ptr, gmask.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(gy.Host(n), y) << "e" << f.exp_bits << "m" << f.man_bits;
    EXPECT_EQ(gmask.Host(n), mask);
    std::vector<float> sr(n);
    cpu::StochasticRoundMiniFloat(x.data(), n, 0.5f, f, 99, sr.data());
    DeviceBuffer<float> gsr(n);
    ASSERT_EQ(cu::StochasticRoundMiniFloat(dx.ptr, n, 0.5f, f, 99, gsr.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(gsr.Host(n), sr);
  }
  for (int bits : {1, 4, 8}) {
    std::vector<float> y(n), clips(rows);
    std::vector<uint8_t> mask(n);
    cpu::QuestQuantizeRows(x.data(), rows, cols, 2.5f, bits, y.data(), mask.data(), clips.data());
    DeviceBuffer<float> gy(n), gclips(rows);
    DeviceBuffer<uint8_t> gmask(n);
    ASSERT_EQ(cu::QuestQuantizeRows(dx.ptr, rows, cols, 2.5f, bits, gy.ptr, gmask.ptr, gclips.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(gclips.Host(rows), clips) << "bits " << bits;
    EXPECT_EQ(gy.Host(n), y) << "bits " << bits;
    EXPECT_EQ(gmask.Host(n), mask) << "bits " << bits;
  }
  {
    std::vector<float> y(n);
    cpu::StochasticRoundInt(x.data(), n, 0.1f, -128, 127, 1234, y.data());
    DeviceBuffer<float> gy(n);
    ASSERT_EQ(cu::StochasticRoundInt(dx.ptr, n, 0.1f, -128, 127, 1234, gy.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(gy.Host(n), y);
  }
  for (int64_t block : {1, 32, 128, 8192}) {
    const int64_t hrows = 3, hcols = 8192;
    std::vector<float> h = Normal(hrows * hcols, 23);
    DeviceBuffer<float> dh(h);
    cpu::FastWalshHadamard(h.data(), hrows, hcols, block);
    ASSERT_EQ(cu::FastWalshHadamard(dh.ptr, hrows, hcols, block, nullptr), cudaSuccess);
    EXPECT_EQ(dh.Host(hrows * hcols), h) << "block " << block;
  }
}

TEST(CudaTwin, NmMaskAndCompressionMatchCpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  namespace cpu = lowbit::kernels::cpu;
  namespace cu = lowbit::kernels::cuda;
  for (auto [n, m] : {std::pair<int, int>{2, 4}, {4, 8}, {1, 4}, {3, 16}}) {
    const int64_t groups = 1001, total = groups * m;
    std::vector<float> w = Normal(total, 31 + m);
    for (int64_t i = 0; i < total; i += 7) w[i] = w[i + 1 < total ? i + 1 : i];  // ties
    std::vector<uint8_t> mask(total);
    cpu::NmMask(w.data(), groups, m, n, mask.data());
    DeviceBuffer<float> dw(w);
    DeviceBuffer<uint8_t> dmask(total);
    ASSERT_EQ(cu::NmMask(dw.ptr, groups, m, n, dmask.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(dmask.Host(total), mask) << n << ":" << m;
    std::vector<float> values(groups * n), out(total);
    std::vector<uint8_t> index(groups * n);
    ASSERT_EQ(cpu::NmCompress(w.data(), mask.data(), groups, m, n, values.data(), index.data()), 0);
    ASSERT_EQ(cpu::NmDecompress(values.data(), index.data(), groups, m, n, out.data()), 0);
    DeviceBuffer<float> dvalues(groups * n), dout(total);
    DeviceBuffer<uint8_t> dindex(groups * n);
    DeviceBuffer<unsigned long long> dbad(1);
    ASSERT_EQ(cu::NmCompress(dw.ptr, dmask.ptr, groups, m, n, dvalues.ptr, dindex.ptr, dbad.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(dbad.Host(1)[0], 0u);
    EXPECT_EQ(dvalues.Host(groups * n), values);
    EXPECT_EQ(dindex.Host(groups * n), index);
    ASSERT_EQ(cu::NmDecompress(dvalues.ptr, dindex.ptr, groups, m, n, dout.ptr, dbad.ptr, nullptr), cudaSuccess);
    EXPECT_EQ(dbad.Host(1)[0], 0u);
    EXPECT_EQ(dout.Host(total), out);
  }
}

}  // namespace
