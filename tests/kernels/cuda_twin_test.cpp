// Every CUDA kernel against its CPU twin (bitwise where the math allows).
#include <algorithm>
#include <random>
#include <tuple>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "lowbit/kernels/cpu/quantize.h"
#include "lowbit/kernels/cpu/scale.h"
#include "lowbit/kernels/cpu/sign.h"
#include "lowbit/kernels/cpu/topk.h"
#include "lowbit/kernels/cuda/quantize.cuh"
#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/cuda/sign.cuh"
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

}  // namespace
