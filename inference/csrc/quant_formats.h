// GGML's block formats, as a GGUF file stores them (layouts as the `gguf` package's gguf.quants
// reads and writes them): a matrix row is a run of blocks, each 32 consecutive weights with
// their scale. For each format, the row operations one decoded token needs with fp32
// activations: the dot product of a row with x, acc += c * row, and the row dequantized.
//
// Each operation has a scalar reference (the weight dequantized, then multiplied: what the
// tests compare every SIMD path with) and an AVX2 and an AVX-512 path where the compiler
// targets them; `row_ops(type)` is the one place that picks one (`set_quant_isa` forces a
// path, for the tests).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace quant {

constexpr int64_t kBlock = 32;  // weights per block, every format here

// GGML type ids (gguf.GGMLQuantizationType).
enum Type : int64_t { kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8 };

struct BlockQ4_0 {  // w = d * (q - 8); q: low nibbles are weights 0..15, high nibbles 16..31
  uint16_t d;
  uint8_t qs[kBlock / 2];
};
struct BlockQ4_1 {  // w = d * q + m; nibbles as Q4_0
  uint16_t d, m;
  uint8_t qs[kBlock / 2];
};
struct BlockQ8_0 {  // w = d * q
  uint16_t d;
  int8_t qs[kBlock];
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ8_0) == 34,
              "GGML block layouts are packed");

// IEEE half to float, exact (the scalar path; F16C's conversion gives the same value).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// --- scalar reference: each weight dequantized, then used -------------------------------------

inline void dequant_block(const BlockQ4_0& b, float* w) {
  const float d = half_to_float(b.d);
  for (int k = 0; k < kBlock / 2; ++k) {
    w[k] = d * static_cast<float>((b.qs[k] & 0x0f) - 8);
    w[k + kBlock / 2] = d * static_cast<float>((b.qs[k] >> 4) - 8);
  }
}
inline void dequant_block(const BlockQ4_1& b, float* w) {
  const float d = half_to_float(b.d), m = half_to_float(b.m);
  for (int k = 0; k < kBlock / 2; ++k) {
    w[k] = d * static_cast<float>(b.qs[k] & 0x0f) + m;
    w[k + kBlock / 2] = d * static_cast<float>(b.qs[k] >> 4) + m;
  }
}
inline void dequant_block(const BlockQ8_0& b, float* w) {
  const float d = half_to_float(b.d);
  for (int k = 0; k < kBlock; ++k) w[k] = d * static_cast<float>(b.qs[k]);
}

template <class B>
void dequant_row_scalar(const uint8_t* row, float* out, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  for (int64_t i = 0; i < nb; ++i) dequant_block(blocks[i], out + i * kBlock);
}

template <class B>
float dot_row_scalar(const uint8_t* row, const float* x, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  float w[kBlock], s = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    dequant_block(blocks[i], w);
    for (int k = 0; k < kBlock; ++k) s += w[k] * x[i * kBlock + k];
  }
  return s;
}

template <class B>
void axpy_row_scalar(float c, const uint8_t* row, float* acc, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  float w[kBlock];
  for (int64_t i = 0; i < nb; ++i) {
    dequant_block(blocks[i], w);
    for (int k = 0; k < kBlock; ++k) acc[i * kBlock + k] += c * w[k];
  }
}

// --- SIMD: a block's 32 quants as float vectors, its scale and its offset (0 but for Q4_1) ----
// The dot product sums d * (q . x) + m * sum(x) per block; acc += c * row adds c*d * q + c*m.

#ifdef __AVX512F__
struct Block512 {
  __m512 q0, q1;  // weights 0..15 and 16..31, without scale
  float d, m;
};

inline Block512 load512(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i nib = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, nib), eight);
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), nib), eight);
  return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)),
          _cvtsh_ss(b.d), 0.f};
}
inline Block512 load512(const BlockQ4_1& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(raw, nib), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nib);
  return {_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)),
          _cvtsh_ss(b.d), _cvtsh_ss(b.m)};
}
inline Block512 load512(const BlockQ8_0& b) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
  return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)),
          _cvtsh_ss(b.d), 0.f};
}

template <class B>
float dot_row_avx512(const uint8_t* row, const float* x, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, offset = acc0;
  for (int64_t i = 0; i < nb; ++i) {
    const Block512 q = load512(blocks[i]);
    const __m512 x0 = _mm512_loadu_ps(x + i * kBlock), x1 = _mm512_loadu_ps(x + i * kBlock + 16);
    const __m512 t = _mm512_fmadd_ps(q.q0, x0, _mm512_mul_ps(q.q1, x1));
    if (i & 1) {
      acc1 = _mm512_fmadd_ps(_mm512_set1_ps(q.d), t, acc1);
    } else {
      acc0 = _mm512_fmadd_ps(_mm512_set1_ps(q.d), t, acc0);
    }
    if constexpr (std::is_same_v<B, BlockQ4_1>) {
      offset = _mm512_fmadd_ps(_mm512_set1_ps(q.m), _mm512_add_ps(x0, x1), offset);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), offset));
}

template <class B>
void axpy_row_avx512(float c, const uint8_t* row, float* acc, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  for (int64_t i = 0; i < nb; ++i) {
    const Block512 q = load512(blocks[i]);
    const __m512 cd = _mm512_set1_ps(c * q.d), cm = _mm512_set1_ps(c * q.m);
    float* a = acc + i * kBlock;
    _mm512_storeu_ps(a, _mm512_fmadd_ps(cd, q.q0, _mm512_add_ps(_mm512_loadu_ps(a), cm)));
    _mm512_storeu_ps(a + 16,
                     _mm512_fmadd_ps(cd, q.q1, _mm512_add_ps(_mm512_loadu_ps(a + 16), cm)));
  }
}
#endif

#ifdef __AVX2__
struct Block256 {
  __m256 q[4];  // weights 0..7, 8..15, 16..23, 24..31, without scale
  float d, m;
};

inline void widen256(__m128i lo, __m128i hi, bool is_signed, __m256* q) {
  auto cvt = [&](__m128i v) {
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v));
  };
  q[0] = cvt(lo);
  q[1] = cvt(_mm_srli_si128(lo, 8));
  q[2] = cvt(hi);
  q[3] = cvt(_mm_srli_si128(hi, 8));
}

inline Block256 load256(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i nib = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  Block256 out;
  widen256(_mm_sub_epi8(_mm_and_si128(raw, nib), eight),
           _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), nib), eight), true, out.q);
  out.d = _cvtsh_ss(b.d);
  out.m = 0.f;
  return out;
}
inline Block256 load256(const BlockQ4_1& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i nib = _mm_set1_epi8(0x0f);
  Block256 out;
  widen256(_mm_and_si128(raw, nib), _mm_and_si128(_mm_srli_epi16(raw, 4), nib), false, out.q);
  out.d = _cvtsh_ss(b.d);
  out.m = _cvtsh_ss(b.m);
  return out;
}
inline Block256 load256(const BlockQ8_0& b) {
  Block256 out;
  widen256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)),
           _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16)), true, out.q);
  out.d = _cvtsh_ss(b.d);
  out.m = 0.f;
  return out;
}

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class B>
float dot_row_avx2(const uint8_t* row, const float* x, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  __m256 acc = _mm256_setzero_ps(), offset = acc;
  for (int64_t i = 0; i < nb; ++i) {
    const Block256 q = load256(blocks[i]);
    const float* xb = x + i * kBlock;
    const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
    const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
    const __m256 t = _mm256_add_ps(_mm256_fmadd_ps(q.q[0], x0, _mm256_mul_ps(q.q[1], x1)),
                                   _mm256_fmadd_ps(q.q[2], x2, _mm256_mul_ps(q.q[3], x3)));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(q.d), t, acc);
    if constexpr (std::is_same_v<B, BlockQ4_1>) {
      const __m256 xs = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
      offset = _mm256_fmadd_ps(_mm256_set1_ps(q.m), xs, offset);
    }
  }
  return hsum256(_mm256_add_ps(acc, offset));
}

template <class B>
void axpy_row_avx2(float c, const uint8_t* row, float* acc, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  for (int64_t i = 0; i < nb; ++i) {
    const Block256 q = load256(blocks[i]);
    const __m256 cd = _mm256_set1_ps(c * q.d), cm = _mm256_set1_ps(c * q.m);
    float* a = acc + i * kBlock;
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(a + 8 * j,
                       _mm256_fmadd_ps(cd, q.q[j], _mm256_add_ps(_mm256_loadu_ps(a + 8 * j), cm)));
    }
  }
}
#endif

// --- dispatch: the one place a format and an instruction set are chosen ----------------------

enum class Isa { kScalar, kAvx2, kAvx512 };

struct RowOps {
  int64_t block_bytes;
  float (*dot)(const uint8_t* row, const float* x, int64_t nb);            // row . x
  void (*axpy)(float c, const uint8_t* row, float* acc, int64_t nb);       // acc += c * row
  void (*dequant)(const uint8_t* row, float* out, int64_t nb);             // out = row
};

// The best path this build has (compiled with -march=native).
inline Isa& current_isa() {
#if defined(__AVX512F__)
  static Isa isa = Isa::kAvx512;
#elif defined(__AVX2__)
  static Isa isa = Isa::kAvx2;
#else
  static Isa isa = Isa::kScalar;
#endif
  return isa;
}

template <class B>
RowOps ops_for(Isa isa) {
  RowOps ops{static_cast<int64_t>(sizeof(B)), dot_row_scalar<B>, axpy_row_scalar<B>,
             dequant_row_scalar<B>};
#ifdef __AVX2__
  if (isa == Isa::kAvx2) {
    ops.dot = dot_row_avx2<B>;
    ops.axpy = axpy_row_avx2<B>;
  }
#endif
#ifdef __AVX512F__
  if (isa == Isa::kAvx512) {
    ops.dot = dot_row_avx512<B>;
    ops.axpy = axpy_row_avx512<B>;
  }
#endif
  return ops;
}

// The row operations of GGML type `type` on the current path; block_bytes 0 if unsupported.
inline RowOps row_ops(int64_t type) {
  const Isa isa = current_isa();
  switch (type) {
    case kQ4_0: return ops_for<BlockQ4_0>(isa);
    case kQ4_1: return ops_for<BlockQ4_1>(isa);
    case kQ8_0: return ops_for<BlockQ8_0>(isa);
    default: return {0, nullptr, nullptr, nullptr};
  }
}

// Names of the paths this build has, best last.
inline std::string isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "scalar";
}

}  // namespace quant
