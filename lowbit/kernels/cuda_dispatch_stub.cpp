#include <c10/util/Exception.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels::internal {
namespace {

[[noreturn]] void NoCuda(const at::Tensor& t) {
  LOWBIT_CHECK(false, "lowbit was built against a LibTorch without CUDA, but got a tensor on ", t.device());
}

[[noreturn]] void NoCudaOn(const at::Device& device) {
  LOWBIT_CHECK(false, "lowbit was built against a LibTorch without CUDA, but got a tensor on ", device);
}

}  // namespace

void ScaleFloatCuda(at::Tensor& t, float) { NoCuda(t); }
void PackSignsCuda(const at::Tensor& x, at::Tensor&) { NoCuda(x); }
void UnpackSignsCuda(const at::Tensor& bits, const at::Tensor&, int64_t, at::Tensor&, bool) { NoCuda(bits); }
void BlockAbsMaxCuda(const at::Tensor& x, int64_t, at::Tensor&) { NoCuda(x); }
void QuantizeBlockwiseCuda(const at::Tensor& x, const at::Tensor&, const QuantSpec&, uint64_t, int64_t,
                           at::Tensor&) {
  NoCuda(x);
}
void DequantizeBlockwiseCuda(const at::Tensor& codes, const at::Tensor&, const QuantSpec&, at::Tensor&, bool) {
  NoCuda(codes);
}
std::pair<at::Tensor, at::Tensor> SelectAtLeastCuda(const at::Tensor& x, float) { NoCuda(x); }
void ScatterAddCuda(const at::Tensor& idx, const at::Tensor&, at::Tensor&) { NoCuda(idx); }
void QuantizeDynamicCuda(const at::Tensor& x, bool, int64_t, at::Tensor&, at::Tensor&) { NoCuda(x); }
void DequantizeDynamicCuda(const at::Tensor& codes, const at::Tensor&, bool, int64_t, at::Tensor&) { NoCuda(codes); }
void FusedOptimizerStepCuda(const OptimStepArgs&, at::Tensor& param, const at::Tensor&, OptimState*, OptimState*,
                            int64_t) {
  NoCuda(param);
}

void FakeQuantIntCuda(const at::Device& device, const float*, QuantGroups, const float*, const float*, const float*,
                      float, float, float*, uint8_t*, float*) {
  NoCudaOn(device);
}
void FakeQuantIntBackwardCuda(const at::Device& device, const float*, const float*, QuantGroups, const float*,
                              const float*, const float*, float, float, float*, float*, float*) {
  NoCudaOn(device);
}
void FakeQuantMiniFloatCuda(const at::Device& device, const float*, QuantGroups, const float*, MiniFloat, float*,
                            uint8_t*) {
  NoCudaOn(device);
}
void QuestQuantizeRowsCuda(const at::Device& device, const float*, int64_t, int64_t, float, int, float*, uint8_t*,
                           float*) {
  NoCudaOn(device);
}
void StochasticRoundIntCuda(const at::Device& device, const float*, int64_t, float, float, float, uint64_t, float*) {
  NoCudaOn(device);
}
void StochasticRoundMiniFloatCuda(const at::Device& device, const float*, int64_t, float, MiniFloat, uint64_t,
                                  float*) {
  NoCudaOn(device);
}
void FastWalshHadamardCuda(const at::Device& device, float*, int64_t, int64_t, int64_t) { NoCudaOn(device); }

void NmMaskCuda(const at::Device& device, const float*, int64_t, int, int, uint8_t*) { NoCudaOn(device); }
int64_t NmCompressCuda(const at::Device& device, const float*, const uint8_t*, int64_t, int, int, float*, uint8_t*) {
  NoCudaOn(device);
}
int64_t NmDecompressCuda(const at::Device& device, const float*, const uint8_t*, int64_t, int, int, float*) {
  NoCudaOn(device);
}

}  // namespace lowbit::kernels::internal
