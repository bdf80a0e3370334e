// CUDA device queries for launch/. cuda_device.cpp implements them against a
// CUDA LibTorch; cuda_device_stub.cpp (no CUDA) reports no devices.
#pragma once

namespace lowbit::launch::internal {

int CudaDeviceCount();
void SetCudaDevice(int device);

}  // namespace lowbit::launch::internal
