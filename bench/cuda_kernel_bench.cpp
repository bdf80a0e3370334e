// The CUDA kernels' throughput against a device-to-device copy of the same
// bytes, in the same run: one JSON line per kernel and size, with GB/s (bytes
// the kernel must read plus write, over its time) and that as a fraction of
// cudaMemcpyAsync's GB/s on a copy of that many bytes (read + write). Without
// a CUDA device it prints one line saying so and exits 0.
//
//   cuda_kernel_bench [--floats 1000000,16000000,64000000] [--reps 20]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "lowbit/kernels/cuda/quantize.cuh"
#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/cuda/sign.cuh"
#include "lowbit/kernels/cuda/topk.cuh"

ABSL_FLAG(std::string, floats, "1000000,16000000,64000000", "tensor sizes in floats, comma-separated");
ABSL_FLAG(int, reps, 20, "timed repetitions per kernel (after 3 untimed)");

namespace {

#define CHECK_CUDA(expr)                                                                    \
  do {                                                                                      \
    cudaError_t err_ = (expr);                                                              \
    if (err_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "cuda_kernel_bench: %s: %s\n", #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

template <typename T>
T* DeviceAlloc(int64_t count) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, static_cast<size_t>(count) * sizeof(T)));
  return static_cast<T*>(p);
}

// Mean seconds of one call of `f` on `stream`.
double TimeIt(cudaStream_t stream, int reps, const std::function<cudaError_t()>& f) {
  for (int i = 0; i < 3; ++i) CHECK_CUDA(f());
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start, stream));
  for (int i = 0; i < reps; ++i) CHECK_CUDA(f());
  CHECK_CUDA(cudaEventRecord(stop, stream));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return ms / 1e3 / reps;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("{\"bench\":\"cuda_kernels\",\"skipped\":\"no CUDA device\"}\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int reps = absl::GetFlag(FLAGS_reps);
  std::vector<int64_t> sizes;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_floats), ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1024) {
      std::fprintf(stderr, "cuda_kernel_bench: --floats takes sizes of at least 1024, got '%s'\n",
                   std::string(s).c_str());
      return 2;
    }
    sizes.push_back(n);
  }
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  for (const int64_t n : sizes) {
    const int64_t block = 2048;
    const int64_t blocks = (n + block - 1) / block;
    float* x = DeviceAlloc<float>(n);
    float* y = DeviceAlloc<float>(n);
    float* copy_dst = DeviceAlloc<float>(n);
    float* scales = DeviceAlloc<float>(blocks);
    auto* codes = DeviceAlloc<uint8_t>(n);
    const int64_t tiles = (n + lowbit::kernels::cuda::kSelectTile - 1) / lowbit::kernels::cuda::kSelectTile;
    auto* tile_counts = DeviceAlloc<int32_t>(tiles);
    {  // values spread over [-1, 1]; the kernels' times do not depend on them
      std::vector<float> host(n);
      for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>((i * 2654435761ULL) % 2001) / 1000.0f - 1.0f;
      CHECK_CUDA(cudaMemcpy(x, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    }
    CHECK_CUDA(lowbit::kernels::cuda::BlockAbsMax(x, n, block, scales, stream));
    auto report = [&](const char* kernel, double bytes, double seconds) {
      // The copy of the same number of bytes (read + write): bytes / 2 copied.
      const auto copy_bytes = static_cast<size_t>(std::max(1.0, bytes / 2));
      const double copy_s = TimeIt(stream, reps, [&] {
        return cudaMemcpyAsync(copy_dst, x, std::min(copy_bytes, static_cast<size_t>(n) * sizeof(float)),
                               cudaMemcpyDeviceToDevice, stream);
      });
      const double copied = 2.0 * std::min(copy_bytes, static_cast<size_t>(n) * sizeof(float));
      const double gbps = bytes / seconds / 1e9, copy_gbps = copied / copy_s / 1e9;
      std::printf(
          "{\"bench\":\"cuda_kernels\",\"device\":\"%s\",\"kernel\":\"%s\",\"floats\":%lld,\"seconds\":%.3e,"
          "\"gb_per_s\":%.1f,\"d2d_copy_gb_per_s\":%.1f,\"vs_d2d_copy\":%.3f}\n",
          prop.name, kernel, static_cast<long long>(n), seconds, gbps, copy_gbps, gbps / copy_gbps);
      std::fflush(stdout);
    };
    const double f = sizeof(float);
    report("scale_float", 2 * f * n,
           TimeIt(stream, reps, [&] { return lowbit::kernels::cuda::ScaleFloat(x, y, n, 0.5f, stream); }));
    report("pack_signs", f * n + n / 8.0,
           TimeIt(stream, reps, [&] { return lowbit::kernels::cuda::PackSigns(x, n, codes, stream); }));
    report("unpack_signs", n / 8.0 + f * blocks + f * n, TimeIt(stream, reps, [&] {
             return lowbit::kernels::cuda::UnpackSigns(codes, n, scales, block, y, false, stream);
           }));
    report("block_absmax", f * n + f * blocks,
           TimeIt(stream, reps, [&] { return lowbit::kernels::cuda::BlockAbsMax(x, n, block, scales, stream); }));
    report("quantize_4bit_stochastic", f * n + f * blocks + n / 2.0, TimeIt(stream, reps, [&] {
             return lowbit::kernels::cuda::QuantizeBlockwise(x, n, block, scales, 4, 15, true, 42, 0, codes, stream);
           }));
    report("dequantize_4bit", n / 2.0 + f * blocks + f * n, TimeIt(stream, reps, [&] {
             return lowbit::kernels::cuda::DequantizeBlockwise(codes, scales, n, block, 4, 15, y, false, stream);
           }));
    report("count_at_least", f * n, TimeIt(stream, reps, [&] {
             return lowbit::kernels::cuda::CountAtLeastTiles(x, n, 0.99f, tile_counts, stream);
           }));
    for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(copy_dst),
                    static_cast<void*>(scales), static_cast<void*>(codes), static_cast<void*>(tile_counts)}) {
      CHECK_CUDA(cudaFree(p));
    }
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
