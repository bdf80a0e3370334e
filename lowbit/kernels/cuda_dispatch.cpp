#include "lowbit/kernels/internal/cuda_dispatch.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#include <utility>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cuda/fake_quant.cuh"
#include "lowbit/kernels/cuda/optim8bit.cuh"
#include "lowbit/kernels/cuda/quantize.cuh"
#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/cuda/sign.cuh"
#include "lowbit/kernels/cuda/sparse.cuh"
#include "lowbit/kernels/cuda/topk.cuh"

namespace lowbit::kernels::internal {
namespace {

cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void Check(cudaError_t err, const char* kernel) {
  LOWBIT_CHECK(err == cudaSuccess, "lowbit ", kernel, " kernel launch failed: ", cudaGetErrorString(err));
}

// The dynamic map's tables on `device`, copied once per device and map.
const DynamicCode* DeviceCode(bool is_signed, const at::Device& device) {
  static std::mutex mu;
  static std::map<std::pair<int, bool>, at::Tensor> copies;
  std::lock_guard<std::mutex> lock(mu);
  at::Tensor& copy = copies[{device.index(), is_signed}];
  if (!copy.defined()) {
    const DynamicCode& host = HostDynamicCode(is_signed);
    at::Tensor bytes = at::from_blob(const_cast<DynamicCode*>(&host), {static_cast<int64_t>(sizeof(DynamicCode))},
                                     at::kByte);
    copy = bytes.to(device);
  }
  return reinterpret_cast<const DynamicCode*>(copy.data_ptr<uint8_t>());
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

void QuantizeDynamicCuda(const at::Tensor& x, bool is_signed, int64_t block, at::Tensor& absmax, at::Tensor& codes) {
  c10::cuda::CUDAGuard guard(x.device());
  Check(cuda::QuantizeDynamic(x.data_ptr<float>(), x.numel(), block, DeviceCode(is_signed, x.device()),
                              absmax.data_ptr<float>(), codes.data_ptr<uint8_t>(), Stream()),
        "QuantizeDynamic");
}

void DequantizeDynamicCuda(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed, int64_t block,
                           at::Tensor& out) {
  c10::cuda::CUDAGuard guard(out.device());
  Check(cuda::DequantizeDynamic(codes.data_ptr<uint8_t>(), absmax.data_ptr<float>(), out.numel(), block,
                                DeviceCode(is_signed, out.device()), out.data_ptr<float>(), Stream()),
        "DequantizeDynamic");
}

void FusedOptimizerStepCuda(const OptimStepArgs& args, at::Tensor& param, const at::Tensor& grad, OptimState* m,
                            OptimState* v, int64_t block) {
  c10::cuda::CUDAGuard guard(param.device());
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const bool quantized = (m != nullptr && m->quantized()) || (v != nullptr && v->quantized());
  if (quantized) {
    Check(cuda::OptimizerStep8bit(args, p, g, param.numel(), block, m ? m->codes.data_ptr<uint8_t>() : nullptr,
                                  m ? m->absmax.data_ptr<float>() : nullptr,
                                  v ? v->codes.data_ptr<uint8_t>() : nullptr,
                                  v ? v->absmax.data_ptr<float>() : nullptr, DeviceCode(true, param.device()),
                                  DeviceCode(false, param.device()), Stream()),
          "OptimizerStep8bit");
  } else {
    Check(cuda::OptimizerStep32bit(args, p, g, param.numel(), m ? m->values.data_ptr<float>() : nullptr,
                                   v ? v->values.data_ptr<float>() : nullptr, Stream()),
          "OptimizerStep32bit");
  }
}

void FakeQuantIntCuda(const at::Device& device, const float* x, QuantGroups g, const float* scale,
                      const float* zero_point, const float* offset, float qmin, float qmax, float* y, uint8_t* mask,
                      float* codes) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::FakeQuantInt(x, g, scale, zero_point, offset, qmin, qmax, y, mask, codes, Stream()), "FakeQuantInt");
}

void FakeQuantIntBackwardCuda(const at::Device& device, const float* x, const float* dy, QuantGroups g,
                              const float* scale, const float* zero_point, const float* offset, float qmin,
                              float qmax, float* dx, float* dscale, float* doffset) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::FakeQuantIntBackward(x, dy, g, scale, zero_point, offset, qmin, qmax, dx, dscale, doffset, Stream()),
        "FakeQuantIntBackward");
}

void FakeQuantMiniFloatCuda(const at::Device& device, const float* x, QuantGroups g, const float* scale,
                            MiniFloat f, float* y, uint8_t* mask) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::FakeQuantMiniFloat(x, g, scale, f, y, mask, Stream()), "FakeQuantMiniFloat");
}

void QuestQuantizeRowsCuda(const at::Device& device, const float* x, int64_t rows, int64_t cols, float clip_factor,
                           int bits, float* y, uint8_t* mask, float* clips) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::QuestQuantizeRows(x, rows, cols, clip_factor, bits, y, mask, clips, Stream()), "QuestQuantizeRows");
}

void StochasticRoundIntCuda(const at::Device& device, const float* x, int64_t n, float scale, float qmin, float qmax,
                            uint64_t key, float* y) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::StochasticRoundInt(x, n, scale, qmin, qmax, key, y, Stream()), "StochasticRoundInt");
}

void StochasticRoundMiniFloatCuda(const at::Device& device, const float* x, int64_t n, float scale, MiniFloat f,
                                  uint64_t key, float* y) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::StochasticRoundMiniFloat(x, n, scale, f, key, y, Stream()), "StochasticRoundMiniFloat");
}

void FastWalshHadamardCuda(const at::Device& device, float* x, int64_t rows, int64_t cols, int64_t block) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::FastWalshHadamard(x, rows, cols, block, Stream()), "FastWalshHadamard");
}

void NmMaskCuda(const at::Device& device, const float* w, int64_t groups, int m, int n, uint8_t* mask) {
  c10::cuda::CUDAGuard guard(device);
  Check(cuda::NmMask(w, groups, m, n, mask, Stream()), "NmMask");
}

namespace {
// Runs `launch` with a device counter and returns the counter.
template <typename Launch>
int64_t CountOnDevice(const at::Device& device, const char* what, const Launch& launch) {
  c10::cuda::CUDAGuard guard(device);
  at::Tensor bad = at::empty({1}, at::TensorOptions().device(device).dtype(at::kLong));
  Check(launch(reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>())), what);
  return bad.item<int64_t>();
}
}  // namespace

int64_t NmCompressCuda(const at::Device& device, const float* w, const uint8_t* mask, int64_t groups, int m, int n,
                       float* values, uint8_t* index) {
  return CountOnDevice(device, "NmCompress", [&](unsigned long long* bad) {
    return cuda::NmCompress(w, mask, groups, m, n, values, index, bad, Stream());
  });
}

int64_t NmDecompressCuda(const at::Device& device, const float* values, const uint8_t* index, int64_t groups, int m,
                         int n, float* out) {
  return CountOnDevice(device, "NmDecompress", [&](unsigned long long* bad) {
    return cuda::NmDecompress(values, index, groups, m, n, out, bad, Stream());
  });
}

}  // namespace lowbit::kernels::internal
