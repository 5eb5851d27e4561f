// Quantization of fp32 weights to bitsandbytes 4-bit (NF4 / FP4), and the blockwise 8-bit
// quantization used for double quantization of the absmax values: the native twins of
// src/quant/quantize4bit.ts and src/quant/blockwise8bit.ts, BIT-IDENTICAL to them.
//
// Exactness notes (why each line is written the way it is):
// - The float32 product x · recip equals TS's fround(fround(x) · recip): the exact product of two
//   float32 fits a double, so both round once from the same exact value. Likewise the reciprocal
//   and the (absmax - offset) subtraction are written in double then rounded, as in TS.
// - The thread pool sets FTZ/DAZ on its workers; that would turn subnormal weights (and bnb's
//   1e-38 clamp, itself subnormal) into zeros, so every share here runs with them cleared.
// - Blocks are independent and each is written by exactly one thread, so the result does not
//   depend on the thread count. Block starts are multiples of an even blocksize, so no packed
//   byte is shared by two blocks.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "args.h"
#include "registry.h"
#include "threads.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define QLORA_QUANT_X86 1
#endif

namespace qlora {
namespace {

// Clears FTZ/DAZ for the lifetime of the guard (the pool's workers run with them set).
struct ExactSubnormals {
#ifdef QLORA_QUANT_X86
  unsigned saved;
  ExactSubnormals() : saved(_mm_getcsr()) { _mm_setcsr(saved & ~0x8040u); }
  ~ExactSubnormals() { _mm_setcsr(saved); }
#endif
};

// CUDA dQuantizeNF4 thresholds (codes4bit.ts NF4_THRESHOLDS): code = number of thresholds s is
// strictly above (ties go to the lower code). Written as double literals rounded to float, exactly
// as TS's Float32Array.from / Math.fround do: a `...f` literal rounds the decimal straight to float,
// which differs where the decimal's double is a float32 tie (these midpoints are).
#define QLORA_F32(x) static_cast<float>(x)
constexpr float kNf4Thresholds[15] = {
    QLORA_F32(-0.8480964004993439), QLORA_F32(-0.6106329262256622), QLORA_F32(-0.4599952697753906),
    QLORA_F32(-0.33967943489551544), QLORA_F32(-0.23460740596055984), QLORA_F32(-0.13791173323988914),
    QLORA_F32(-0.045525018125772476), QLORA_F32(0.03979014977812767), QLORA_F32(0.1202552504837513),
    QLORA_F32(0.2035212516784668), QLORA_F32(0.2920137718319893), QLORA_F32(0.3893125355243683),
    QLORA_F32(0.5016634166240692), QLORA_F32(0.6427869200706482), QLORA_F32(0.8614784181118011),
};

// CUDA dQuantizeFP4 pivots (codes4bit.ts FP4_PIVOTS = Math.fround of these doubles).
constexpr float kP0_29166667 = QLORA_F32(0.29166667), kP0_583333 = QLORA_F32(0.583333),
                kP0_8333333 = QLORA_F32(0.8333333), kP0_4166667 = QLORA_F32(0.4166667),
                kP0_0859375 = QLORA_F32(0.0859375), kP0_20833333 = QLORA_F32(0.20833333),
                kP0_00260417 = QLORA_F32(0.00260417);
#undef QLORA_F32

inline uint8_t nf4Code(float s) {
  int code = 0;
  for (int k = 0; k < 15; k++) code += s > kNf4Thresholds[k] ? 1 : 0;
  return static_cast<uint8_t>(code);
}

inline uint8_t fp4Code(float s) {
  const int sign = s < 0.0f ? 0b1000 : 0;
  const float a = std::fabs(s);
  const int hi = a > kP0_583333 ? (a > kP0_8333333 ? 0b011 : 0b010) : (a > kP0_4166667 ? 0b101 : 0b100);
  const int mid = a > kP0_20833333 ? 0b111 : 0b110;
  const int lo = a > kP0_00260417 ? 0b001 : 0b000;
  const int bits = a > kP0_29166667 ? hi : (a > kP0_0859375 ? mid : lo);
  return static_cast<uint8_t>(sign | bits);
}

// blockwise8bit.ts scaleReciprocal: f(1 / max(absmax, f(1e-38))).
inline float scaleReciprocal(float absmax) {
  constexpr float kMinAbsmax = static_cast<float>(1e-38);  // f(1e-38), via double like the TS
  const float clamped = absmax > kMinAbsmax ? absmax : kMinAbsmax;
  return static_cast<float>(1.0 / static_cast<double>(clamped));
}

// s = clamp(f(x · recip), -1, 1) with Math.max/Math.min semantics for finite x (-0 stays -0).
inline float scaled(float x, float recip) {
  const float p = x * recip;
  const float lo = p < -1.0f ? -1.0f : p;
  return lo > 1.0f ? 1.0f : lo;
}

template <bool Fp4>
void quantizeCodes(const float* x, int64_t count, float recip, uint8_t* codes) {
  for (int64_t i = 0; i < count; i++) codes[i] = Fp4 ? fp4Code(scaled(x[i], recip)) : nf4Code(scaled(x[i], recip));
}

// Quantizes blocks [b0, b1); returns the index of the first non-finite value met, or -1 (the
// share stops there: the caller throws, as the TS quantizer does).
int64_t quantize4bitBlocks(const float* values, int64_t n, bool fp4, int64_t blocksize, int64_t b0, int64_t b1,
                           uint8_t* packed, float* absmax) {
  ExactSubnormals exact;
  std::vector<uint8_t> codes(static_cast<size_t>(blocksize));
  for (int64_t b = b0; b < b1; b++) {
    const int64_t start = b * blocksize;
    const int64_t count = std::min(n, start + blocksize) - start;
    const float* x = values + start;
    float amax = 0.0f;
    int bad = 0;
    for (int64_t i = 0; i < count; i++) {
      const float a = std::fabs(x[i]);
      bad |= !(a <= FLT_MAX);
      amax = a > amax ? a : amax;
    }
    if (bad) {
      for (int64_t i = 0; i < count; i++) {
        if (!std::isfinite(x[i])) return start + i;
      }
    }
    absmax[b] = amax;
    const float recip = scaleReciprocal(amax);
    if (fp4) quantizeCodes<true>(x, count, recip, codes.data());
    else quantizeCodes<false>(x, count, recip, codes.data());
    uint8_t* out = packed + start / 2;
    const int64_t pairs = count / 2;
    for (int64_t j = 0; j < pairs; j++) out[j] = static_cast<uint8_t>((codes[2 * j] << 4) | codes[2 * j + 1]);
    // Odd count (only the last block of an odd n): the padding nibble is the code of 0.0.
    if (count % 2 == 1) out[pairs] = static_cast<uint8_t>((codes[count - 1] << 4) | (fp4 ? fp4Code(0.0f) : nf4Code(0.0f)));
  }
  return -1;
}

// quantize4bitF32(values: Float32Array, fp4: boolean, blocksize, packed: Uint8Array[ceil(n/2)],
// absmax: Float32Array[ceil(n/blocksize)]) -> index of the first non-finite value, or -1.
Napi::Value Quantize4bitF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Span<float> values = f32Arg(info, 0, "values");
  const bool fp4 = boolArg(info, 1);
  const int64_t blocksize = intArg(info, 2, "blocksize");
  require(blocksize >= 2 && blocksize % 2 == 0, env, "quantize4bitF32: blocksize must be even and >= 2");
  const int64_t n = static_cast<int64_t>(values.length);
  const int64_t nblocks = (n + blocksize - 1) / blocksize;
  Span<uint8_t> packed = u8Arg(info, 3, "packed", static_cast<size_t>((n + 1) / 2));
  Span<float> absmax = f32Arg(info, 4, "absmax", static_cast<size_t>(nblocks));
  std::vector<int64_t> firstBad(static_cast<size_t>(num_threads()) + 1, -1);
  parallel_for(nblocks, [&](int64_t b0, int64_t b1, int t) {
    firstBad[static_cast<size_t>(t)] = quantize4bitBlocks(values.data, n, fp4, blocksize, b0, b1, packed.data, absmax.data);
  });
  // Shares are contiguous and ordered by thread, so the smallest index is the first in the tensor.
  int64_t first = -1;
  for (int64_t i : firstBad) {
    if (i >= 0 && (first < 0 || i < first)) first = i;
  }
  return Napi::Number::New(env, static_cast<double>(first));
}

// Index of the code nearest to s, ties to the lower code: the count of midpoints strictly below s
// (blockwise8bit.ts nearestCodeIndex, the same binary search over float64 midpoints).
inline uint8_t nearestCodeIndex(const double* mids, int count, double s) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (s > mids[mid]) lo = mid + 1;
    else hi = mid;
  }
  return static_cast<uint8_t>(lo);
}

// quantizeBlockwise8bitF32(values: Float32Array, code: Float32Array[256] ascending, blocksize,
// codes: Uint8Array[n], absmax: Float32Array[ceil(n/blocksize)]). Values must be finite.
Napi::Value QuantizeBlockwise8bitF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Span<float> values = f32Arg(info, 0, "values");
  Span<float> code = f32Arg(info, 1, "code", 256);
  const int64_t blocksize = intArg(info, 2, "blocksize");
  require(blocksize >= 1, env, "quantizeBlockwise8bitF32: blocksize must be positive");
  const int64_t n = static_cast<int64_t>(values.length);
  const int64_t nblocks = (n + blocksize - 1) / blocksize;
  Span<uint8_t> codes = u8Arg(info, 3, "codes", static_cast<size_t>(n));
  Span<float> absmax = f32Arg(info, 4, "absmax", static_cast<size_t>(nblocks));
  double mids[255];
  for (int i = 0; i < 255; i++) {
    require(code.data[i + 1] >= code.data[i], env, "quantizeBlockwise8bitF32: code values must be sorted ascending");
    mids[i] = (static_cast<double>(code.data[i]) + static_cast<double>(code.data[i + 1])) / 2;
  }
  parallel_for(nblocks, [&](int64_t b0, int64_t b1, int) {
    ExactSubnormals exact;
    for (int64_t b = b0; b < b1; b++) {
      const int64_t start = b * blocksize;
      const int64_t end = std::min(n, start + blocksize);
      float amax = 0.0f;
      for (int64_t i = start; i < end; i++) {
        const float a = std::fabs(values.data[i]);
        amax = a > amax ? a : amax;
      }
      absmax.data[b] = amax;
      const float recip = scaleReciprocal(amax);
      for (int64_t i = start; i < end; i++) {
        const float s = amax == 0.0f ? 0.0f : scaled(values.data[i], recip);
        codes.data[i] = nearestCodeIndex(mids, 255, static_cast<double>(s));
      }
    }
  });
  return env.Undefined();
}

}  // namespace

QLORA_EXPORT("quantize4bitF32", Quantize4bitF32);
QLORA_EXPORT("quantizeBlockwise8bitF32", QuantizeBlockwise8bitF32);

}  // namespace qlora
