// The loops of the fused 8-bit optimizer steps (kernels/cpu/optim8bit.h),
// included into an anonymous namespace by each CPU build of them: the
// baseline (optim8bit.cpp) and the AVX2 one (optim8bit_avx2.cpp), which
// compile the same code for different instruction sets. The includer
// defines EncodeBlock(x, n, code, inv, out) and Decode(codes, n, code,
// absmax, out) first.
// No include guard: included once per translation unit, into a namespace.

inline float FloatFromBits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// max |x| over a block as the bits of |x|: for non-negative floats, the
// integer order is the float order, and integer max vectorises.
uint32_t AbsMaxBits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t a = kernels::FloatBits(x[j]) & 0x7FFFFFFFu;
    m = a > m ? a : m;
  }
  return m;
}


// Normalises a block by its absmax, then encodes it; returns the absmax.
float RequantizeBlock(const float* x, int64_t n, const DynamicCode& code, uint8_t* out) {
  const float absmax = FloatFromBits(AbsMaxBits(x, n));
  EncodeBlock(x, n, code, kernels::internal::InvAbsMax(absmax), out);
  return absmax;
}

template <OptimRule R, bool kM, bool kV>
void Step8bitBlocks(const OptimStepArgs& args, float* __restrict p, const float* __restrict g, int64_t n,
                    int64_t block, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                    const DynamicCode& signed_code, const DynamicCode& unsigned_code, int64_t b0, int64_t b1) {
  const OptimStepArgs a = args;  // a local copy: stores through p cannot alias it, so the loop vectorises
  alignas(64) float mbuf[kMaxOptimBlock];
  alignas(64) float vbuf[kMaxOptimBlock];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t begin = b * block;
    const int64_t len = std::min(block, n - begin);
    float* __restrict pb = p + begin;
    const float* __restrict gb = g + begin;
    // The loops over a block are short and busy with table lookups, so the
    // hardware prefetcher falls behind on the streams; fetch two blocks ahead.
    const int64_t ahead = begin + 2 * block;
    if (ahead < n) {
      const int64_t ahead_len = std::min(block, n - ahead);
      for (int64_t j = 0; j < ahead_len; j += 16) {
        __builtin_prefetch(p + ahead + j, 1);
        __builtin_prefetch(g + ahead + j, 0);
      }
      for (int64_t j = 0; j < ahead_len; j += 64) {
        if (kM) __builtin_prefetch(m_codes + ahead + j, 1);
        if (kV) __builtin_prefetch(v_codes + ahead + j, 1);
      }
    }
    if (kM) Decode(m_codes + begin, len, signed_code, m_absmax[b], mbuf);
    if (kV) Decode(v_codes + begin, len, unsigned_code, v_absmax[b], vbuf);
    for (int64_t j = 0; j < len; ++j) {
      float m = kM ? mbuf[j] : 0.0f;
      float v = kV ? vbuf[j] : 0.0f;
      pb[j] = kernels::internal::UpdateOne<R>(a, kM, pb[j], kernels::internal::FiniteOrZero(gb[j]) * a.grad_scale, m, v);
      if (kM) mbuf[j] = m;
      if (kV) vbuf[j] = v;
    }
    if (kM) m_absmax[b] = RequantizeBlock(mbuf, len, signed_code, m_codes + begin);
    if (kV) v_absmax[b] = RequantizeBlock(vbuf, len, unsigned_code, v_codes + begin);
  }
}

template <OptimRule R, bool kM, bool kV>
void Step32bitRange(const OptimStepArgs& args, float* __restrict p, const float* __restrict g,
                    float* __restrict m_state, float* __restrict v_state, int64_t i0, int64_t i1) {
  const OptimStepArgs a = args;  // see Step8bitBlocks
  for (int64_t i = i0; i < i1; ++i) {
    float m = kM ? m_state[i] : 0.0f;
    float v = kV ? v_state[i] : 0.0f;
    p[i] = kernels::internal::UpdateOne<R>(a, kM, p[i], kernels::internal::FiniteOrZero(g[i]) * a.grad_scale, m, v);
    if (kM) m_state[i] = m;
    if (kV) v_state[i] = v;
  }
}


inline void EncodeBlocks(const float* x, int64_t n, int64_t block, const DynamicCode& code, const float* absmax,
                         uint8_t* codes) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      EncodeBlock(x + begin, std::min(block, n - begin), code, kernels::internal::InvAbsMax(absmax[b]), codes + begin);
    }
  });
}

inline void DecodeBlocks(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, const DynamicCode& code,
                         float* out) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      Decode(codes + begin, std::min(block, n - begin), code, absmax[b], out + begin);
    }
  });
}

template <typename Args>
bool RunStep8bit(const Args& a, float* p, const float* g, int64_t n, int64_t block, uint8_t* m_codes,
                 float* m_absmax, uint8_t* v_codes, float* v_absmax, const DynamicCode& signed_code,
                 const DynamicCode& unsigned_code) {
  if (!IsOptimBlock(block)) return false;
  const int64_t nblocks = (n + block - 1) / block;
  return kernels::internal::DispatchRule(a.rule, m_codes != nullptr, v_codes != nullptr, [&](auto rule, auto has_m, auto has_v) {
    at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
      Step8bitBlocks<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>(
          a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code, unsigned_code, b0, b1);
    });
  });
}

template <typename Args>
bool RunStep32bit(const Args& a, float* p, const float* g, int64_t n, float* m, float* v) {
  return kernels::internal::DispatchRule(a.rule, m != nullptr, v != nullptr, [&](auto rule, auto has_m, auto has_v) {
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      Step32bitRange<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>(a, p, g, m, v, i0, i1);
    });
  });
}
