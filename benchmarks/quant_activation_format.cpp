// Microbenchmark (issue 26): the Q4_1 GEMV with fp32 activations (the engine's AVX-512 path,
// inference/csrc/quant_formats.h) against activations quantized to 8 bits per block of 32 and
// VNNI integer dot products (llama.cpp's way), one thread, on 64 matrices of the shipped model's
// gate shape (56 MiB, past the caches). Build and run from the repository root:
//   g++ -O3 -march=native -I inference/csrc -o /tmp/quant_activation_format \
//       benchmarks/quant_activation_format.cpp && /tmp/quant_activation_format
// Results: docs/engine.md (weights as stored: activations).
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cmath>
#include "quant_formats.h"
using namespace quant;

struct BlockQ8 { float d; int8_t qs[32]; float sum; };  // x quantized (d * sum of qs kept)

void quantize_x(const float* x, BlockQ8* out, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    float amax = 0; for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[b*32+k]));
    float d = amax / 127.f, id = d ? 1.f / d : 0.f; int s = 0;
    for (int k = 0; k < 32; ++k) { int q = (int)std::lrintf(x[b*32+k] * id); out[b].qs[k] = q; s += q; }
    out[b].d = d; out[b].sum = d * s;
  }
}

float dot_q4_1_q8(const uint8_t* row, const BlockQ8* x, int64_t nb) {
  const BlockQ4_1* w = reinterpret_cast<const BlockQ4_1*>(row);
  __m256 acc = _mm256_setzero_ps(); float off = 0;
  const __m128i nib = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    __m128i raw = _mm_loadu_si128((const __m128i*)w[b].qs);
    __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), nib), _mm_and_si128(raw, nib));
    __m256i xq = _mm256_loadu_si256((const __m256i*)x[b].qs);
    __m256i dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, xq);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(dp), acc);
    off += _cvtsh_ss(w[b].m) * x[b].sum;
  }
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_hadd_ps(s, s); s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s) + off;
}

int main() {
  const int64_t rows = 1536, cols = 576, nb = cols / 32, mats = 64;  // > L2: streams from memory
  std::vector<uint8_t> w(mats * rows * nb * 20);
  for (auto& b : w) b = rand();
  for (int64_t i = 0; i < mats * rows * nb; ++i) { uint16_t h = 0x2000 + (rand() & 0xff); memcpy(&w[i*20], &h, 2); memcpy(&w[i*20+2], &h, 2); }
  std::vector<float> x(cols), out(rows);
  for (auto& v : x) v = (rand() / (float)RAND_MAX) - 0.5f;
  std::vector<BlockQ8> xq(nb);
  const int64_t rb = nb * 20;
  double best_f = 1e9, best_q = 1e9; float chk = 0, err = 0;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t m = 0; m < mats; ++m) for (int64_t r = 0; r < rows; ++r) out[r] = dot_row_avx512<BlockQ4_1>(&w[(m*rows + r) * rb], x.data(), nb);
    auto t1 = std::chrono::steady_clock::now();
    float ref = out[7];
    for (int64_t m = 0; m < mats; ++m) { quantize_x(x.data(), xq.data(), nb); for (int64_t r = 0; r < rows; ++r) out[r] = dot_q4_1_q8(&w[(m*rows + r) * rb], xq.data(), nb); }
    auto t2 = std::chrono::steady_clock::now();
    err = std::fabs(out[7] - ref) / std::fabs(ref); chk += out[3];
    best_f = std::min(best_f, std::chrono::duration<double>(t1 - t0).count());
    best_q = std::min(best_q, std::chrono::duration<double>(t2 - t1).count());
  }
  double gb = mats * rows * rb / 1e9;
  printf("Q4_1 GEMV, 1 thread, %lld matrices %lldx%lld: fp32 activations %.2f GB/s, q8 activations (VNNI) %.2f GB/s, ratio %.2f; rel. error of one q8 output %.1e (%g)\n",
         (long long)mats, (long long)rows, (long long)cols, gb / best_f, gb / best_q, best_f / best_q, err, chk);
}
