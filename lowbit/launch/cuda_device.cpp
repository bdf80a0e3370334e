#include <c10/cuda/CUDAFunctions.h>

#include "lowbit/launch/internal/cuda_device.h"

namespace lowbit::launch::internal {

int CudaDeviceCount() { return static_cast<int>(c10::cuda::device_count()); }
void SetCudaDevice(int device) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(device)); }

}  // namespace lowbit::launch::internal
