// Every CUDA kernel against its CPU twin (bitwise where the math allows).
#include <random>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "lowbit/kernels/cpu/scale.h"
#include "lowbit/kernels/cuda/scale.cuh"

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

}  // namespace
