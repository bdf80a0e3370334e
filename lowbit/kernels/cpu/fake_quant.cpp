#include "lowbit/kernels/cpu/fake_quant.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::kernels::cpu {

namespace {

constexpr int64_t kGrain = int64_t{1} << 15;

// Calls body(begin, end, group) over runs of elements that share a group,
// in parallel chunks of about kGrain elements.
template <typename Body>
void ForEachRun(Groups g, const Body& body) {
  at::parallel_for(0, g.n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t run = i / g.inner;
      const int64_t run_end = std::min(end, (run + 1) * g.inner);
      body(i, run_end, run % g.groups);
      i = run_end;
    }
  });
}

}  // namespace

void FakeQuantInt(const float* x, Groups g, const float* scale, const float* zero_point, const float* offset,
                  float qmin, float qmax, float* y, uint8_t* mask, float* codes) {
  ForEachRun(g, [&](int64_t begin, int64_t end, int64_t k) {
    const float s = scale[k], inv = 1.0f / s;
    const float zp = zero_point != nullptr ? zero_point[k] : 0.0f;
    float code;
    bool inside;
    if (offset == nullptr) {
      for (int64_t i = begin; i < end; ++i) {
        y[i] = FakeQuantIntOne(x[i], s, inv, zp, qmin, qmax, &code, &inside);
        if (mask != nullptr) mask[i] = inside;
        if (codes != nullptr) codes[i] = code;
      }
    } else {
      const float b = offset[k];
      for (int64_t i = begin; i < end; ++i) {
        y[i] = FakeQuantIntOne(x[i] - b, s, inv, zp, qmin, qmax, &code, &inside) + b;
        if (mask != nullptr) mask[i] = inside;
        if (codes != nullptr) codes[i] = code;
      }
    }
  });
}

void FakeQuantIntBackward(const float* x, const float* dy, Groups g, const float* scale, const float* zero_point,
                          const float* offset, float qmin, float qmax, float* dx, float* dscale,
                          float* doffset) {
  ForEachRun(g, [&](int64_t begin, int64_t end, int64_t k) {
    const float s = scale[k], inv = 1.0f / s;
    const float zp = zero_point != nullptr ? zero_point[k] : 0.0f;
    const float b = offset != nullptr ? offset[k] : 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      const IntGrads d = FakeQuantIntGradOne(x[i], dy[i], s, inv, zp, b, qmin, qmax);
      dx[i] = d.dx;
      if (dscale != nullptr) dscale[i] = d.dscale;
      if (doffset != nullptr) doffset[i] = d.doffset;
    }
  });
}

void FakeQuantMiniFloat(const float* x, Groups g, const float* scale, MiniFloat f, float* y, uint8_t* mask) {
  ForEachRun(g, [&](int64_t begin, int64_t end, int64_t k) {
    const float s = scale[k];
    for (int64_t i = begin; i < end; ++i) {
      bool inside;
      y[i] = FakeQuantMiniFloatOne(x[i], s, f, &inside);
      if (mask != nullptr) mask[i] = inside;
    }
  });
}

void QuestQuantizeRows(const float* x, int64_t rows, int64_t cols, float clip_factor, int bits, float* y,
                       uint8_t* mask, float* clips) {
  const float levels_minus_1 = static_cast<float>((1 << bits) - 1);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      double sum_sq = 0.0;
      for (int64_t j = 0; j < cols; ++j) sum_sq += static_cast<double>(xr[j]) * xr[j];
      const float rms = static_cast<float>(std::sqrt(sum_sq / static_cast<double>(cols)));
      const float clip = clip_factor * rms + 1e-8f;
      const float step = 2.0f * clip / levels_minus_1;
      if (clips != nullptr) clips[r] = clip;
      for (int64_t j = 0; j < cols; ++j) {
        bool trusted;
        y[r * cols + j] = QuestGridOne(xr[j], clip, step, levels_minus_1, &trusted);
        mask[r * cols + j] = trusted;
      }
    }
  });
}

void StochasticRoundInt(const float* x, int64_t n, float scale, float qmin, float qmax, uint64_t key, float* y) {
  const float inv = 1.0f / scale;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = StochasticRoundIntOne(x[i], scale, inv, qmin, qmax, Uniform(key, i));
  });
}

void StochasticRoundMiniFloat(const float* x, int64_t n, float scale, MiniFloat f, uint64_t key, float* y) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = StochasticRoundToMiniFloat(x[i] / scale, f, Uniform(key, i)) * scale;
  });
}

void FastWalshHadamard(float* x, int64_t rows, int64_t cols, int64_t block) {
  const int64_t blocks = rows * (cols / block);
  const float norm = 1.0f / std::sqrt(static_cast<float>(block));
  at::parallel_for(0, blocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* v = x + b * block;
      for (int64_t h = 1; h < block; h *= 2) {
        for (int64_t i = 0; i < block; i += 2 * h) {
          for (int64_t j = i; j < i + h; ++j) {
            const float a = v[j], c = v[j + h];
            v[j] = a + c;
            v[j + h] = a - c;
          }
        }
      }
      for (int64_t j = 0; j < block; ++j) v[j] *= norm;
    }
  });
}

}  // namespace lowbit::kernels::cpu
