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

#ifdef __AVX512F__
// 16 elements at a time: the same float32 compares as nf4Code / fp4Code / scaled (IEEE compares
// and min/max are exact, so lanes agree with the scalar code bit for bit).
inline __m512i nf4Codes16(__m512 s) {
  // Branch-free binary search over the 15 ascending thresholds (padded with +inf): the result is
  // the count of thresholds strictly below s, which is what nf4Code computes.
  alignas(64) static const float padded[16] = {
      kNf4Thresholds[0], kNf4Thresholds[1], kNf4Thresholds[2],  kNf4Thresholds[3],  kNf4Thresholds[4],
      kNf4Thresholds[5], kNf4Thresholds[6], kNf4Thresholds[7],  kNf4Thresholds[8],  kNf4Thresholds[9],
      kNf4Thresholds[10], kNf4Thresholds[11], kNf4Thresholds[12], kNf4Thresholds[13], kNf4Thresholds[14],
      INFINITY};
  const __m512 table = _mm512_load_ps(padded);
  __m512i code = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step >>= 1) {
    const __m512 t = _mm512_permutexvar_ps(_mm512_add_epi32(code, _mm512_set1_epi32(step - 1)), table);
    code = _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(s, t, _CMP_GT_OQ), code, _mm512_set1_epi32(step));
  }
  return code;
}

inline __m512i fp4Codes16(__m512 s) {
  const __m512 a = _mm512_abs_ps(s);
  auto gt = [&](float p) { return _mm512_cmp_ps_mask(a, _mm512_set1_ps(p), _CMP_GT_OQ); };
  auto pick = [](__mmask16 m, int yes, int no) {
    return _mm512_mask_blend_epi32(m, _mm512_set1_epi32(no), _mm512_set1_epi32(yes));
  };
  const __m512i hi = _mm512_mask_blend_epi32(gt(kP0_583333), pick(gt(kP0_4166667), 0b101, 0b100), pick(gt(kP0_8333333), 0b011, 0b010));
  const __m512i mid = pick(gt(kP0_20833333), 0b111, 0b110);
  const __m512i lo = pick(gt(kP0_00260417), 0b001, 0b000);
  __m512i bits = _mm512_mask_blend_epi32(gt(kP0_0859375), lo, mid);
  bits = _mm512_mask_blend_epi32(gt(kP0_29166667), bits, hi);
  const __mmask16 negative = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_or_epi32(bits, negative, bits, _mm512_set1_epi32(0b1000));
}

// Quantizes the first count - count % 16 elements of a block; returns how many it did.
template <bool Fp4>
int64_t quantizeChunks16(const float* x, int64_t count, float recip, uint8_t* out) {
  const __m512 r = _mm512_set1_ps(recip);
  const __m512 lo = _mm512_set1_ps(-1.0f), hi = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    // max_ps(p, -1) returns p unless -1 > p, so -0 stays -0 like Math.max(-1, -0).
    const __m512 s = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), r), lo), hi);
    const __m512i codes = Fp4 ? fp4Codes16(s) : nf4Codes16(s);
    // Each 64-bit lane holds (even element, odd element) as (low, high) int32: one packed byte.
    const __m512i pairs = _mm512_or_si512(_mm512_slli_epi64(_mm512_and_si512(codes, _mm512_set1_epi64(0xF)), 4),
                                          _mm512_srli_epi64(codes, 32));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i / 2), _mm512_cvtepi64_epi8(pairs));
  }
  return i;
}

// Max |x| of a block and whether any element is not finite.
inline float blockAbsmax(const float* x, int64_t count, bool& bad) {
  __m512 amax = _mm512_setzero_ps();
  const __m512 fmax = _mm512_set1_ps(FLT_MAX);
  __mmask16 notFinite = 0;
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    notFinite |= _mm512_cmp_ps_mask(a, fmax, _CMP_NLE_UQ);
    amax = _mm512_max_ps(amax, a);
  }
  float m = _mm512_reduce_max_ps(amax);  // max of non-negative finite values: order-free, exact
  bad = notFinite != 0;
  for (; i < count; i++) {
    const float a = std::fabs(x[i]);
    bad |= !(a <= FLT_MAX);
    m = a > m ? a : m;
  }
  return m;
}
#else
template <bool Fp4>
int64_t quantizeChunks16(const float*, int64_t, float, uint8_t*) { return 0; }

inline float blockAbsmax(const float* x, int64_t count, bool& bad) {
  float amax = 0.0f;
  int notFinite = 0;
  for (int64_t i = 0; i < count; i++) {
    const float a = std::fabs(x[i]);
    notFinite |= !(a <= FLT_MAX);
    amax = a > amax ? a : amax;
  }
  bad = notFinite != 0;
  return amax;
}
#endif

// Packs elements [from, count) of a block (from is even) with the scalar rule; an odd count
// (only the last block of an odd n) gets the code of 0.0 as padding nibble.
template <bool Fp4>
void quantizeTail(const float* x, int64_t from, int64_t count, float recip, uint8_t* out) {
  auto codeOf = [](float s) { return Fp4 ? fp4Code(s) : nf4Code(s); };
  for (int64_t i = from; i < count; i += 2) {
    const uint8_t even = codeOf(scaled(x[i], recip));
    const uint8_t odd = i + 1 < count ? codeOf(scaled(x[i + 1], recip)) : codeOf(0.0f);
    out[i / 2] = static_cast<uint8_t>((even << 4) | odd);
  }
}

// Quantizes blocks [b0, b1); returns the index of the first non-finite value met, or -1 (the
// share stops there: the caller throws, as the TS quantizer does).
template <bool Fp4>
int64_t quantize4bitBlocks(const float* values, int64_t n, int64_t blocksize, int64_t b0, int64_t b1,
                           uint8_t* packed, float* absmax) {
  ExactSubnormals exact;
  for (int64_t b = b0; b < b1; b++) {
    const int64_t start = b * blocksize;
    const int64_t count = std::min(n, start + blocksize) - start;
    const float* x = values + start;
    bool bad = false;
    const float amax = blockAbsmax(x, count, bad);
    if (bad) {
      for (int64_t i = 0; i < count; i++) {
        if (!std::isfinite(x[i])) return start + i;
      }
    }
    absmax[b] = amax;
    const float recip = scaleReciprocal(amax);
    uint8_t* out = packed + start / 2;
    const int64_t done = quantizeChunks16<Fp4>(x, count, recip, out);
    quantizeTail<Fp4>(x, done, count, recip, out);
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
    firstBad[static_cast<size_t>(t)] =
        fp4 ? quantize4bitBlocks<true>(values.data, n, blocksize, b0, b1, packed.data, absmax.data)
            : quantize4bitBlocks<false>(values.data, n, blocksize, b0, b1, packed.data, absmax.data);
  });
  // Shares are contiguous and ordered by thread, so the smallest index is the first in the tensor.
  int64_t first = -1;
  for (int64_t i : firstBad) {
    if (i >= 0 && (first < 0 || i < first)) first = i;
  }
  return Napi::Number::New(env, static_cast<double>(first));
}

// Index of the code nearest to s, ties to the lower code: the count of midpoints strictly below s
// (blockwise8bit.ts nearestCodeIndex). Branch-free binary search over the 255 ascending float64
// midpoints padded with +inf to 256 (s is finite, so the pad is never below it).
inline uint8_t nearestCodeIndex(const double* mids256, double s) {
  int idx = 0;
  for (int step = 128; step >= 1; step >>= 1) idx += s > mids256[idx + step - 1] ? step : 0;
  return static_cast<uint8_t>(idx);
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
  double mids[256];
  mids[255] = INFINITY;
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
        codes.data[i] = nearestCodeIndex(mids, static_cast<double>(s));
      }
    }
  });
  return env.Undefined();
}

}  // namespace

QLORA_EXPORT("quantize4bitF32", Quantize4bitF32);
QLORA_EXPORT("quantizeBlockwise8bitF32", QuantizeBlockwise8bitF32);

}  // namespace qlora
