#include "lowbit/kernels/cuda/optim8bit.cuh"

#include "lowbit/kernels/cuda/internal/launch.cuh"
#include "lowbit/kernels/cuda/quantize.cuh"

namespace lowbit::kernels::cuda {
namespace {

using launch::BlocksFor;
using launch::kThreads;

// Values per thread in a fused step: block / threads, at most 4096 / 256.
constexpr int kMaxItems = 16;

__global__ void EncodeKernel(const float* __restrict__ x, int64_t n, int64_t block, const DynamicCode* code,
                             const float* __restrict__ absmax, uint8_t* __restrict__ codes) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    codes[i] = static_cast<uint8_t>(internal::Encode(*code, x[i] * internal::InvAbsMax(absmax[i / block])));
  }
}

__global__ void DecodeKernel(const uint8_t* __restrict__ codes, const float* __restrict__ absmax, int64_t n,
                             int64_t block, const DynamicCode* code, float* __restrict__ out) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    out[i] = code->values[codes[i]] * absmax[i / block];
  }
}

// Max over the CUDA block of the bits of |x| (integer order is float order
// for non-negative floats; the CPU twin reduces the same way).
__device__ uint32_t BlockMaxBits(uint32_t bits, uint32_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) bits = max(bits, __shfl_xor_sync(0xFFFFFFFFu, bits, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) shared[warp] = bits;
  __syncthreads();
  bits = lane < warps ? shared[lane] : 0u;
  for (int offset = 16; offset > 0; offset /= 2) bits = max(bits, __shfl_xor_sync(0xFFFFFFFFu, bits, offset));
  __syncthreads();  // shared is reused by the next reduction
  return bits;
}

// One CUDA block of min(block, 256) threads per quantization block; each
// thread keeps block / threads values of each state in registers.
template <OptimRule R, bool kM, bool kV>
__global__ void Step8bitKernel(OptimStepArgs a, float* __restrict__ p, const float* __restrict__ g, int64_t n,
                               int64_t block, uint8_t* __restrict__ m_codes, float* __restrict__ m_absmax,
                               uint8_t* __restrict__ v_codes, float* __restrict__ v_absmax,
                               const DynamicCode* signed_code, const DynamicCode* unsigned_code) {
  __shared__ uint32_t shared[32];
  const int items = static_cast<int>(block / blockDim.x);
  const int64_t nblocks = (n + block - 1) / block;
  for (int64_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    float m[kMaxItems], v[kMaxItems];
    uint32_t m_bits = 0, v_bits = 0;
    const float m_scale = kM ? m_absmax[b] : 0.0f;
    const float v_scale = kV ? v_absmax[b] : 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxItems; ++k) {
      if (k >= items) break;
      const int64_t i = b * block + k * blockDim.x + threadIdx.x;
      m[k] = 0.0f;
      v[k] = 0.0f;
      if (i >= n) continue;
      if (kM) m[k] = signed_code->values[m_codes[i]] * m_scale;
      if (kV) v[k] = unsigned_code->values[v_codes[i]] * v_scale;
      p[i] = internal::UpdateOne<R>(a, kM, p[i], internal::FiniteOrZero(g[i]) * a.grad_scale, m[k], v[k]);
      m_bits = max(m_bits, FloatBits(m[k]) & 0x7FFFFFFFu);
      v_bits = max(v_bits, FloatBits(v[k]) & 0x7FFFFFFFu);
    }
    // Everyone has read the old absmax before the reductions' barriers.
    const float m_new = __uint_as_float(kM ? BlockMaxBits(m_bits, shared) : 0u);
    const float v_new = __uint_as_float(kV ? BlockMaxBits(v_bits, shared) : 0u);
    if (threadIdx.x == 0) {
      if (kM) m_absmax[b] = m_new;
      if (kV) v_absmax[b] = v_new;
    }
    const float m_inv = internal::InvAbsMax(m_new), v_inv = internal::InvAbsMax(v_new);
#pragma unroll
    for (int k = 0; k < kMaxItems; ++k) {
      if (k >= items) break;
      const int64_t i = b * block + k * blockDim.x + threadIdx.x;
      if (i >= n) continue;
      if (kM) m_codes[i] = static_cast<uint8_t>(internal::Encode(*signed_code, m[k] * m_inv));
      if (kV) v_codes[i] = static_cast<uint8_t>(internal::Encode(*unsigned_code, v[k] * v_inv));
    }
  }
}

template <OptimRule R, bool kM, bool kV>
__global__ void Step32bitKernel(OptimStepArgs a, float* __restrict__ p, const float* __restrict__ g, int64_t n,
                                float* __restrict__ m_state, float* __restrict__ v_state) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    float m = kM ? m_state[i] : 0.0f;
    float v = kV ? v_state[i] : 0.0f;
    p[i] = internal::UpdateOne<R>(a, kM, p[i], internal::FiniteOrZero(g[i]) * a.grad_scale, m, v);
    if (kM) m_state[i] = m;
    if (kV) v_state[i] = v;
  }
}

}  // namespace

cudaError_t QuantizeDynamic(const float* x, int64_t n, int64_t block, const DynamicCode* code, float* absmax,
                            uint8_t* codes, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const cudaError_t err = BlockAbsMax(x, n, block, absmax, stream);
  if (err != cudaSuccess) return err;
  EncodeKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, block, code, absmax, codes);
  return cudaGetLastError();
}

cudaError_t DequantizeDynamic(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                              const DynamicCode* code, float* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  DecodeKernel<<<BlocksFor(n), kThreads, 0, stream>>>(codes, absmax, n, block, code, out);
  return cudaGetLastError();
}

cudaError_t OptimizerStep8bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                              uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                              const DynamicCode* signed_code, const DynamicCode* unsigned_code, cudaStream_t stream) {
  static_assert(kMaxOptimBlock <= kMaxItems * kThreads, "a block must fit the threads and their registers");
  if (!IsOptimBlock(block)) return cudaErrorInvalidValue;
  if (n <= 0) return cudaSuccess;
  const int64_t nblocks = (n + block - 1) / block;
  const int threads = static_cast<int>(block < kThreads ? block : kThreads);
  const int grid = static_cast<int>(nblocks > 65535 ? 65535 : nblocks);
  const bool known = internal::DispatchRule(a.rule, m_codes != nullptr, v_codes != nullptr,
                                            [&](auto rule, auto has_m, auto has_v) {
    Step8bitKernel<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>
        <<<grid, threads, 0, stream>>>(a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code,
                                       unsigned_code);
  });
  return known ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t OptimizerStep32bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v,
                               cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const bool known = internal::DispatchRule(a.rule, m != nullptr, v != nullptr, [&](auto rule, auto has_m, auto has_v) {
    Step32bitKernel<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>
        <<<BlocksFor(n), kThreads, 0, stream>>>(a, p, g, n, m, v);
  });
  return known ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace lowbit::kernels::cuda
