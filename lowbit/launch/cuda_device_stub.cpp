#include <c10/util/Exception.h>

#include "lowbit/base/error.h"
#include "lowbit/launch/internal/cuda_device.h"

namespace lowbit::launch::internal {

int CudaDeviceCount() { return 0; }
void SetCudaDevice(int device) {
  LOWBIT_CHECK(false, "cannot select CUDA device ", device, ": lowbit was built against a LibTorch without CUDA");
}

}  // namespace lowbit::launch::internal
