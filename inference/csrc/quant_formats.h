// GGML's block formats, as a GGUF file stores them (layouts as the `gguf` package's gguf.quants
// reads and writes them): a matrix row is a run of blocks, each 32 consecutive weights with
// their scale. For each format, the row operations one decoded token needs: the dot product of
// a row with x (x rounded to 8 bits per block first, as llama.cpp does: an integer dot per
// block), acc += c * row (fp32 x and acc), and the row dequantized.
//
// Each operation has a scalar reference (the weight dequantized, then multiplied: what the
// tests compare every SIMD path with) and an AVX2 and an AVX-512 path where the compiler
// targets them; `row_ops(type)` is the one place that picks one (`set_quant_isa` forces a
// path, for the tests).
#pragma once
#include <algorithm>
#include <cmath>
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

// Float to IEEE half, rounding to nearest even as F16C and numpy do (the scalar path).
inline uint16_t float_to_half(float f) {
  uint32_t w;
  std::memcpy(&w, &f, 4);
  const uint32_t sign = (w >> 16) & 0x8000, abs = w & 0x7fffffff;
  if (abs > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds past 65504
  if (abs < 0x38800000) {  // a half subnormal: the float rounded to a multiple of 2^-24
    float a;
    std::memcpy(&a, &abs, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.f)));
  }
  const uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);  // 13 bits dropped, ties to even
  return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

// x rounded to 8 bits per block for the row dot products, exactly as gguf.quants (and ggml)
// round Q8_0: d = max|x| / 127 (kept as its fp16 value), q = round(x / d) half away from zero.
// sum (of q) and d * sum give Q4_0's and Q4_1's offsets.
struct BlockQ8x {
  float d, d_sum;
  int32_t sum;
  int8_t qs[kBlock];
};

inline void quantize_x_scalar(const float* x, BlockQ8x* out, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kBlock;
    float amax = 0.f;
    for (int k = 0; k < kBlock; ++k) amax = std::max(amax, std::fabs(xb[k]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int32_t sum = 0;
    for (int k = 0; k < kBlock; ++k) {
      out[i].qs[k] = static_cast<int8_t>(std::roundf(xb[k] * id));
      sum += out[i].qs[k];
    }
    out[i].d = half_to_float(float_to_half(d));
    out[i].sum = sum;
    out[i].d_sum = out[i].d * static_cast<float>(sum);
  }
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

// acc += d_w * d_x * (q_w . q_x) per block (plus Q4_0's -8 and Q4_1's m * d_x * sum q_x): the
// integer dot of a block is exact, so every path differs from this one only in the order of
// its float sums.
inline int32_t block_dot(const BlockQ4_0& b, const BlockQ8x& x) {
  int32_t s = 0;
  for (int k = 0; k < kBlock / 2; ++k) {
    s += (b.qs[k] & 0x0f) * x.qs[k] + (b.qs[k] >> 4) * x.qs[k + kBlock / 2];
  }
  return s - 8 * x.sum;
}
inline int32_t block_dot(const BlockQ4_1& b, const BlockQ8x& x) {
  int32_t s = 0;
  for (int k = 0; k < kBlock / 2; ++k) {
    s += (b.qs[k] & 0x0f) * x.qs[k] + (b.qs[k] >> 4) * x.qs[k + kBlock / 2];
  }
  return s;
}
inline int32_t block_dot(const BlockQ8_0& b, const BlockQ8x& x) {
  int32_t s = 0;
  for (int k = 0; k < kBlock; ++k) s += b.qs[k] * x.qs[k];
  return s;
}

template <class B>
float dot_row_scalar(const uint8_t* row, const BlockQ8x* x, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  float s = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    s += half_to_float(blocks[i].d) * x[i].d * static_cast<float>(block_dot(blocks[i], x[i]));
    if constexpr (std::is_same_v<B, BlockQ4_1>) s += half_to_float(blocks[i].m) * x[i].d_sum;
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

template <class B>
void axpy4_scalar(const float* c, const uint8_t* const* rows, float* acc, int64_t nb) {
  for (int j = 0; j < 4; ++j) axpy_row_scalar<B>(c[j], rows[j], acc, nb);
}

// --- SIMD, acc += c * row: a block's 32 quants as float vectors, its scale and its offset (0
// but for Q4_1); it adds c*d * q + c*m.

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

// Four rows into acc at once: acc is loaded and stored once per block for all four.
template <class B>
void axpy4_avx512(const float* c, const uint8_t* const* rows, float* acc, int64_t nb) {
  const B* b[4];
  for (int j = 0; j < 4; ++j) b[j] = reinterpret_cast<const B*>(rows[j]);
  for (int64_t i = 0; i < nb; ++i) {
    float* a = acc + i * kBlock;
    __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16);
    float offset = 0.f;
    for (int j = 0; j < 4; ++j) {
      const Block512 q = load512(b[j][i]);
      const __m512 cd = _mm512_set1_ps(c[j] * q.d);
      a0 = _mm512_fmadd_ps(cd, q.q0, a0);
      a1 = _mm512_fmadd_ps(cd, q.q1, a1);
      if constexpr (std::is_same_v<B, BlockQ4_1>) offset += c[j] * q.m;
    }
    if constexpr (std::is_same_v<B, BlockQ4_1>) {
      a0 = _mm512_add_ps(a0, _mm512_set1_ps(offset));
      a1 = _mm512_add_ps(a1, _mm512_set1_ps(offset));
    }
    _mm512_storeu_ps(a, a0);
    _mm512_storeu_ps(a + 16, a1);
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

template <class B>
void axpy4_avx2(const float* c, const uint8_t* const* rows, float* acc, int64_t nb) {
  const B* b[4];
  for (int j = 0; j < 4; ++j) b[j] = reinterpret_cast<const B*>(rows[j]);
  for (int64_t i = 0; i < nb; ++i) {
    float* a = acc + i * kBlock;
    __m256 s[4];
    for (int k = 0; k < 4; ++k) s[k] = _mm256_loadu_ps(a + 8 * k);
    float offset = 0.f;
    for (int j = 0; j < 4; ++j) {
      const Block256 q = load256(b[j][i]);
      const __m256 cd = _mm256_set1_ps(c[j] * q.d);
      for (int k = 0; k < 4; ++k) s[k] = _mm256_fmadd_ps(cd, q.q[k], s[k]);
      offset += c[j] * q.m;
    }
    for (int k = 0; k < 4; ++k) {
      _mm256_storeu_ps(a + 8 * k, _mm256_add_ps(s[k], _mm256_set1_ps(offset)));
    }
  }
}
#endif

// --- SIMD, row . x: a block's quants as 32 bytes and x's as 32 signed bytes, their integer dot
// (VNNI's dpbusd on AVX-512, maddubs on AVX2: unsigned times signed, so Q8_0's signs move onto
// x), scaled per block into a float accumulator.

#ifdef __AVX2__
template <bool kVnni>
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (kVnni) return _mm256_dpbusd_epi32(acc, u, s);
#endif
  return _mm256_add_epi32(
      acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

inline __m256i nibbles256(const uint8_t* qs) {  // weights 0..15 low lane, 16..31 high lane
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
}

// The block's integer dot q_w . q_x (Q4_0: its -8 folded in through the accumulator's start).
template <bool kVnni>
inline __m256i block_dot256(const BlockQ4_0& b, const BlockQ8x& x, __m256i xq) {
  return dot_u8s8<kVnni>(_mm256_setr_epi32(-8 * x.sum, 0, 0, 0, 0, 0, 0, 0), nibbles256(b.qs),
                         xq);
}
template <bool kVnni>
inline __m256i block_dot256(const BlockQ4_1& b, const BlockQ8x&, __m256i xq) {
  return dot_u8s8<kVnni>(_mm256_setzero_si256(), nibbles256(b.qs), xq);
}
template <bool kVnni>
inline __m256i block_dot256(const BlockQ8_0& b, const BlockQ8x&, __m256i xq) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return dot_u8s8<kVnni>(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(xq, w));
}

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class B, bool kVnni>
float dot_row_q8(const uint8_t* row, const BlockQ8x* x, int64_t nb) {
  const B* blocks = reinterpret_cast<const B*>(row);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  float offset = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
    const __m256 p = _mm256_cvtepi32_ps(block_dot256<kVnni>(blocks[i], x[i], xq));
    const __m256 scale = _mm256_set1_ps(_cvtsh_ss(blocks[i].d) * x[i].d);
    if (i & 1) {
      acc1 = _mm256_fmadd_ps(scale, p, acc1);
    } else {
      acc0 = _mm256_fmadd_ps(scale, p, acc0);
    }
    if constexpr (std::is_same_v<B, BlockQ4_1>) offset += _cvtsh_ss(blocks[i].m) * x[i].d_sum;
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) + offset;
}
#endif

#ifdef __AVX512F__
// quantize_x_scalar on 16 lanes: the same float operations, so the same bytes.
inline void quantize_x_avx512(const float* x, BlockQ8x* out, int64_t nb) {
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
  for (int64_t i = 0; i < nb; ++i) {
    const __m512 v0 = _mm512_loadu_ps(x + i * kBlock), v1 = _mm512_loadu_ps(x + i * kBlock + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    auto round = [&](__m512 v) {  // roundf: floor(a) + floor(2 (a - floor(a))), a = |v id|
      const __m512 s = _mm512_mul_ps(v, _mm512_set1_ps(id)), a = _mm512_abs_ps(s);
      const __m512 f = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m512 up = _mm512_roundscale_ps(_mm512_add_ps(_mm512_sub_ps(a, f), _mm512_sub_ps(a, f)),
                                             _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m512i r = _mm512_castps_si512(_mm512_add_ps(f, up));
      return _mm512_cvtps_epi32(_mm512_castsi512_ps(
          _mm512_or_si512(r, _mm512_and_si512(_mm512_castps_si512(s), sign))));
    };
    const __m512i q0 = round(v0), q1 = round(v1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[i].qs), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[i].qs + 16), _mm512_cvtepi32_epi8(q1));
    out[i].d = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    out[i].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    out[i].d_sum = out[i].d * static_cast<float>(out[i].sum);
  }
}
#endif

// --- dispatch: the one place a format and an instruction set are chosen ----------------------

enum class Isa { kScalar, kAvx2, kAvx512 };

struct RowOps {
  int64_t block_bytes;
  void (*quantize_x)(const float* x, BlockQ8x* out, int64_t nb);       // x for `dot`
  float (*dot)(const uint8_t* row, const BlockQ8x* x, int64_t nb);     // row . x
  void (*axpy)(float c, const uint8_t* row, float* acc, int64_t nb);   // acc += c * row
  void (*axpy4)(const float* c, const uint8_t* const* rows, float* acc,
                int64_t nb);                                          // the same, 4 rows
  void (*dequant)(const uint8_t* row, float* out, int64_t nb);         // out = row
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
  RowOps ops{static_cast<int64_t>(sizeof(B)), quantize_x_scalar, dot_row_scalar<B>,
             axpy_row_scalar<B>, axpy4_scalar<B>, dequant_row_scalar<B>};
#ifdef __AVX2__
  if (isa == Isa::kAvx2) {
    ops.dot = dot_row_q8<B, false>;
    ops.axpy = axpy_row_avx2<B>;
    ops.axpy4 = axpy4_avx2<B>;
  }
#endif
#ifdef __AVX512F__
  if (isa == Isa::kAvx512) {
    ops.quantize_x = quantize_x_avx512;
    ops.dot = dot_row_q8<B, true>;  // VNNI where the CPU has it (dot_u8s8)
    ops.axpy = axpy_row_avx512<B>;
    ops.axpy4 = axpy4_avx512<B>;
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
    default: return {0, nullptr, nullptr, nullptr, nullptr, nullptr};
  }
}

// Names of the paths this build has, best last.
inline std::string isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "scalar";
}

}  // namespace quant
