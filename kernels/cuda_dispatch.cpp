#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "lowbit/kernels/cuda/quantize.cuh"
#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/cuda/sign.cuh"
#include "lowbit/kernels/cuda/topk.cuh"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels::internal {
namespace {

cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void Check(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "lowbit ", kernel, " kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace

void ScaleFloatCuda(at::Tensor& t, float factor) {
  c10::cuda::CUDAGuard guard(t.device());
  Check(cuda::ScaleFloat(t.data_ptr<float>(), t.data_ptr<float>(), t.numel(), factor, Stream()), "ScaleFloat");
}

void PackSignsCuda(const at::Tensor& x, at::Tensor& bits) {
  c10::cuda::CUDAGuard guard(x.device());
  Check(cuda::PackSigns(x.data_ptr<float>(), x.numel(), bits.data_ptr<uint8_t>(), Stream()), "PackSigns");
}

void UnpackSignsCuda(const at::Tensor& bits, const at::Tensor& scales, int64_t block, at::Tensor& out,
                     bool accumulate) {
  c10::cuda::CUDAGuard guard(out.device());
  Check(cuda::UnpackSigns(bits.data_ptr<uint8_t>(), out.numel(), scales.data_ptr<float>(), block,
                          out.data_ptr<float>(), accumulate, Stream()),
        "UnpackSigns");
}

void BlockAbsMaxCuda(const at::Tensor& x, int64_t block, at::Tensor& scales) {
  c10::cuda::CUDAGuard guard(x.device());
  Check(cuda::BlockAbsMax(x.data_ptr<float>(), x.numel(), block, scales.data_ptr<float>(), Stream()),
        "BlockAbsMax");
}

void QuantizeBlockwiseCuda(const at::Tensor& x, const at::Tensor& scales, const QuantSpec& spec, uint64_t key,
                           int64_t index_base, at::Tensor& codes) {
  c10::cuda::CUDAGuard guard(x.device());
  Check(cuda::QuantizeBlockwise(x.data_ptr<float>(), x.numel(), spec.block, scales.data_ptr<float>(), spec.bits,
                                spec.levels, spec.stochastic, key, index_base, codes.data_ptr<uint8_t>(),
                                Stream()),
        "QuantizeBlockwise");
}

void DequantizeBlockwiseCuda(const at::Tensor& codes, const at::Tensor& scales, const QuantSpec& spec,
                             at::Tensor& out, bool accumulate) {
  c10::cuda::CUDAGuard guard(out.device());
  Check(cuda::DequantizeBlockwise(codes.data_ptr<uint8_t>(), scales.data_ptr<float>(), out.numel(), spec.block,
                                  spec.bits, spec.levels, out.data_ptr<float>(), accumulate, Stream()),
        "DequantizeBlockwise");
}

std::pair<at::Tensor, at::Tensor> SelectAtLeastCuda(const at::Tensor& x, float threshold) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.numel();
  const int64_t tiles = (n + cuda::kSelectTile - 1) / cuda::kSelectTile;
  at::Tensor counts = at::empty({tiles}, x.options().dtype(at::kInt));
  Check(cuda::CountAtLeastTiles(x.data_ptr<float>(), n, threshold, counts.data_ptr<int32_t>(), Stream()),
        "CountAtLeastTiles");
  at::Tensor offsets = counts.to(at::kLong).cumsum(0) - counts.to(at::kLong);
  const int64_t total = tiles == 0 ? 0 : counts.to(at::kLong).sum().item<int64_t>();
  at::Tensor idx = at::empty({total}, x.options().dtype(at::kInt));
  at::Tensor val = at::empty({total}, x.options());
  Check(cuda::GatherAtLeast(x.data_ptr<float>(), n, threshold, offsets.data_ptr<int64_t>(),
                            idx.data_ptr<int32_t>(), val.data_ptr<float>(), Stream()),
        "GatherAtLeast");
  return {idx, val};
}

void ScatterAddCuda(const at::Tensor& idx, const at::Tensor& val, at::Tensor& out) {
  c10::cuda::CUDAGuard guard(out.device());
  Check(cuda::ScatterAdd(idx.data_ptr<int32_t>(), val.data_ptr<float>(), idx.numel(), out.data_ptr<float>(),
                         Stream()),
        "ScatterAdd");
}

}  // namespace lowbit::kernels::internal
