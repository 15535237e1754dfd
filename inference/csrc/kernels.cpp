// The fp32 kernels for one decoded token (CPU) that read only the weights of active neurons or of
// kept inputs: gathered_ffn (predictor), input_matvec (TEAL, input site), h_ffn (h site),
// gate_ffn (CATS, gate site).
//
// gathered_ffn: reads only the active neurons' weights.
//
//   gu:     [F, 2, D]  gate and up rows of each neuron side by side (one contiguous 2*D block)
//   down_t: [F, D]     down_proj.weight transposed (a neuron's down column as a row)
//   x:      [D]        the MLP input
//   idx:    [n] int64  active neurons
// returns out [D] = sum_i silu(gate_i . x) * (up_i . x) * down_t[idx_i]
//
// One pass: the active neurons are split into one contiguous chunk per thread; a thread reads
// each of its neurons' 3*D weights once, front to back (gate/up block, then the down row), and
// adds h_i * down_row into its own partial output; the partials are summed at the end (no
// atomics, one parallel region). Rows sit at scattered addresses, and hardware prefetchers stop
// at page boundaries, so the next page of the stream is prefetched in software a page ahead.
//
// The threshold kernels (input_matvec, h_ffn, gate_ffn) take the input and the threshold and
// do the selection themselves: one call per projection or MLP instead of the five or six small
// torch ops (abs, compare, nonzero, gather, ...) that would otherwise surround each kernel and
// cost as much as the bytes they save at 135M. Each returns its output and how many rows it
// kept (|value| >= threshold), for the telemetry.
// decode_step.cpp runs one token through every layer with these kernels in one call.
// Built on first use by torch.utils.cpp_extension.
#include "kernels.h"

#include <ATen/Parallel.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kPage = 1024;  // floats per 4 KiB page
constexpr int64_t kLine = 16;    // floats per 64-byte cache line

// Prefetch the first lines of the page after `p` (one page of lookahead in a row stream).
inline void prefetch_next_page(const float* p, const float* end) {
  const float* next = p + kPage;
  for (int64_t l = 0; l < 4 && next + l * kLine < end; ++l) __builtin_prefetch(next + l * kLine);
}

inline float dot2(const float* g, const float* u, const float* x, int64_t d, float* au_out) {
  float ag = 0.f, au = 0.f;
  for (int64_t p = 0; p < d; p += kPage) {
    const int64_t e = std::min(d, p + kPage);
    prefetch_next_page(g + p, g + d);
    prefetch_next_page(u + p, u + d);
#pragma omp simd reduction(+ : ag, au)
    for (int64_t k = p; k < e; ++k) {
      ag += g[k] * x[k];
      au += u[k] * x[k];
    }
  }
  *au_out = au;
  return ag;
}

inline void axpy(float h, const float* row, float* acc, int64_t d) {
  for (int64_t p = 0; p < d; p += kPage) {
    const int64_t e = std::min(d, p + kPage);
    prefetch_next_page(row + p, row + d);
#pragma omp simd
    for (int64_t k = p; k < e; ++k) acc[k] += h * row[k];
  }
}

// acc += c[0]*r[0] + c[1]*r[1] + c[2]*r[2] + c[3]*r[3]: four rows per pass over the accumulator,
// so that it is loaded and stored once per four rows read.
inline void axpy4(const float* c, const float* const* r, float* acc, int64_t d) {
  const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
  for (int64_t p = 0; p < d; p += kPage) {
    const int64_t e = std::min(d, p + kPage);
    prefetch_next_page(r0 + p, r0 + d);
    prefetch_next_page(r1 + p, r1 + d);
    prefetch_next_page(r2 + p, r2 + d);
    prefetch_next_page(r3 + p, r3 + d);
#pragma omp simd
    for (int64_t k = p; k < e; ++k) acc[k] += c0 * r0[k] + c1 * r1[k] + c2 * r2[k] + c3 * r3[k];
  }
}

// acc += sum of c[j] * r[j] over eight rows: one pass over the accumulator per eight rows, two
// chains of four products (on the shipped model's transposed matrices, one thread: 18.1 GB/s
// against 15.2 for four rows a pass).
inline void axpy8(const float* c, const float* const* r, float* acc, int64_t d) {
  const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6],
              c7 = c[7];
  const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5],
              *r6 = r[6], *r7 = r[7];
  for (int64_t p = 0; p < d; p += kPage) {
    const int64_t e = std::min(d, p + kPage);
    for (int64_t j = 0; j < 8; ++j) prefetch_next_page(r[j] + p, r[j] + d);
#pragma omp simd
    for (int64_t k = p; k < e; ++k) {
      acc[k] += (c0 * r0[k] + c2 * r2[k] + c4 * r4[k] + c6 * r6[k]) +
                (c1 * r1[k] + c3 * r3[k] + c5 * r5[k] + c7 * r7[k]);
    }
  }
}

// Prefetch a row's first page (a longer row's later pages are prefetched as it is read).
inline void prefetch_row(const float* row, int64_t d) {
  const int64_t end = std::min(d, kPage);
  for (int64_t k = 0; k < end; k += kLine) __builtin_prefetch(row + k, 0, 2);
}

// acc += sum_j coef[j] * (base + index[j] * d)[0:d] over n rows, eight at a time. The rows sit
// at scattered addresses and are short (a few KiB), too short for the hardware prefetcher to
// get going, so each group's rows are prefetched whole while the group before is summed.
inline void axpy_rows(const float* base, const int64_t* index, const float* coef, int64_t n,
                      float* acc, int64_t d) {
  for (int64_t j = 0; j < std::min<int64_t>(n, 16); ++j) prefetch_row(base + index[j] * d, d);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const float* r[8];
    for (int64_t q = 0; q < 8; ++q) r[q] = base + index[j + q] * d;
    for (int64_t p = j + 16; p < std::min(n, j + 24); ++p) prefetch_row(base + index[p] * d, d);
    axpy8(coef + j, r, acc, d);
  }
  for (; j + 4 <= n; j += 4) {
    const float* r[4] = {base + index[j] * d, base + index[j + 1] * d, base + index[j + 2] * d,
                         base + index[j + 3] * d};
    axpy4(coef + j, r, acc, d);
  }
  for (; j < n; ++j) axpy(coef[j], base + index[j] * d, acc, d);
}

inline float dot(const float* a, const float* x, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += a[k] * x[k];
  return s;
}

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

// out[r] = w[r] . x for rows [begin, end) of a row-major [O, D] matrix, one row after the
// other with four accumulators (64 floats a step): a single sequential stream, which the
// hardware prefetcher follows best. Measured on the shipped model's matrices (one thread):
// 22.6 GB/s, against 14.8 GB/s for four rows at a time (four interleaved streams), with or
// without software prefetch, and 11.4 GB/s for ATen's GEMV (docs/benchmarks.md).
void rows_dot(const float* w, const float* x, float* out, int64_t begin, int64_t end,
              int64_t d) {
  for (int64_t r = begin; r < end; ++r) {
    const float* row = w + r * d;
    int64_t k = 0;
    float s = 0.f;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; k + 64 <= d; k += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(x + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(x + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 32), _mm512_loadu_ps(x + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 48), _mm512_loadu_ps(x + k + 48), a3);
    }
    for (; k + 16 <= d; k += 16) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(x + k), a0);
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#endif
    for (; k < d; ++k) s += row[k] * x[k];
    out[r] = s;
  }
}

// acc[0:c] += sum over rows i in [begin, end) of x[i] * rows[i] ([R, C] row-major), eight rows
// a pass over the accumulator (contiguous rows: the hardware prefetcher follows them).
void rows_axpy(const float* rows, const float* x, float* acc, int64_t begin, int64_t end,
               int64_t c) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const float* r[8];
    for (int64_t j = 0; j < 8; ++j) r[j] = rows + (i + j) * c;
    axpy8(x + i, r, acc, c);
  }
  for (; i < end; ++i) axpy(x[i], rows + i * c, acc, c);
}

void check_fp32_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.scalar_type() == torch::kFloat32, name,
              " must be a contiguous fp32 matrix");
}

// A SwiGLU FFN's operands for one token, checked: gate, up, down_t [F, D] fp32, x [D].
struct Ffn {
  int64_t f, d;
  const float *gate, *up, *down, *x;
};

Ffn checked_ffn(const torch::Tensor& gate, const torch::Tensor& up, const torch::Tensor& down_t,
                const torch::Tensor& x) {
  check_fp32_rows(gate, "gate");
  check_fp32_rows(up, "up");
  check_fp32_rows(down_t, "down_t");
  TORCH_CHECK(up.sizes() == gate.sizes() && down_t.sizes() == gate.sizes(),
              "gate, up and down_t must all be [F, D]");
  TORCH_CHECK(x.is_contiguous() && x.numel() == gate.size(1) &&
                  x.scalar_type() == torch::kFloat32, "x must be fp32 [D]");
  return {gate.size(0), gate.size(1), gate.data_ptr<float>(), up.data_ptr<float>(),
          down_t.data_ptr<float>(), x.data_ptr<float>()};
}

void check_indices(const torch::Tensor& idx, int64_t rows) {
  TORCH_CHECK(idx.scalar_type() == torch::kInt64 && idx.is_contiguous(), "idx must be int64");
  const int64_t* p = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < rows, "index out of range");
  }
}

}  // namespace

torch::Tensor gathered_ffn(torch::Tensor gu, torch::Tensor down_t, torch::Tensor x,
                           torch::Tensor idx) {
  TORCH_CHECK(gu.dim() == 3 && gu.size(1) == 2 && gu.is_contiguous(), "gu must be [F, 2, D]");
  TORCH_CHECK(gu.scalar_type() == torch::kFloat32, "fp32 only");
  TORCH_CHECK(down_t.is_contiguous() && down_t.size(0) == gu.size(0) &&
                  down_t.size(1) == gu.size(2), "down_t must be [F, D]");
  TORCH_CHECK(x.is_contiguous() && x.numel() == gu.size(2), "x must be [D]");
  check_indices(idx, gu.size(0));
  const int64_t d = gu.size(2);
  const float* gu_p = gu.data_ptr<float>();
  const float* down_p = down_t.data_ptr<float>();
  const float* x_p = x.data_ptr<float>();
  const int64_t* idx_p = idx.data_ptr<int64_t>();
  return std::get<0>(chunked(idx.numel(), d, 1, x.options(),
                             [&](int64_t begin, int64_t end, float* acc) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + 1 < end) {  // the next neuron's rows start at unrelated addresses
        const float* g_next = gu_p + idx_p[i + 1] * 2 * d;
        __builtin_prefetch(g_next);
        __builtin_prefetch(g_next + d);
        __builtin_prefetch(down_p + idx_p[i + 1] * d);
      }
      const float* g = gu_p + idx_p[i] * 2 * d;
      float au;
      const float ag = dot2(g, g + d, x_p, d, &au);
      axpy(silu(ag) * au, down_p + idx_p[i] * d, acc, d);
    }
    return end - begin;
  }));
}

// TEAL for one token: out [C] = sum over inputs i with |x_i| >= threshold of x_i * rows[i],
// rows = W.t() [R, C] (the column of input i stored as row i). Returns (out, kept inputs).
std::tuple<torch::Tensor, int64_t> input_matvec(torch::Tensor rows, torch::Tensor x,
                                                double threshold) {
  check_fp32_rows(rows, "rows");
  TORCH_CHECK(x.is_contiguous() && x.numel() == rows.size(0) &&
                  x.scalar_type() == torch::kFloat32, "x must be fp32 [R]");
  const int64_t r = rows.size(0), c = rows.size(1);
  const float* rows_p = rows.data_ptr<float>();
  const float* x_p = x.data_ptr<float>();
  const float t = static_cast<float>(threshold);
  // Select first (R comparisons), then split the kept rows evenly over the threads: a split of
  // the input range would give one thread more rows to read wherever the kept ones cluster.
  std::vector<int64_t> index;
  std::vector<float> coef;
  select_kept(x_p, r, t, &index, &coef);
  const int64_t n = static_cast<int64_t>(index.size());
  const int64_t min_rows = std::max<int64_t>(16, 16384 / c);
  return chunked(n, c, min_rows, rows.options(), [&](int64_t begin, int64_t end, float* acc) {
    axpy_rows(rows_p, index.data() + begin, coef.data() + begin, end - begin, acc, c);
    return end - begin;
  });
}

// A dense projection of one token, W x, for W as a module holds it: row-major [O, D] (each
// output a dot product, the rows split over the threads), or a transposed view of a contiguous
// [D, O] (the layout of the input site and of down: x_i times row i, summed; the rows split
// over the threads, one partial output each). Faster than ATen's GEMV for the shipped model's
// small matrices (benchmarks/bench_gemv.py), and the one dense GEMV of the one-token paths,
// Python and compiled alike, so they give the same numbers.
torch::Tensor dense_matvec(torch::Tensor weight, torch::Tensor x) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32, "fp32 [O, D] weight");
  TORCH_CHECK(x.is_contiguous() && x.numel() == weight.size(1) &&
                  x.scalar_type() == torch::kFloat32, "x must be fp32 [D]");
  const float* x_p = x.data_ptr<float>();
  if (weight.t().is_contiguous() && !weight.is_contiguous()) {
    const auto rows = weight.t();  // [D, O]
    const int64_t r = rows.size(0), c = rows.size(1);
    const float* rows_p = rows.data_ptr<float>();
    return std::get<0>(chunked(r, c, std::max<int64_t>(16, 16384 / c), x.options(),
                               [&](int64_t begin, int64_t end, float* acc) {
      rows_axpy(rows_p, x_p, acc, begin, end, c);
      return end - begin;
    }));
  }
  TORCH_CHECK(weight.is_contiguous(), "weight must be row-major or a transposed contiguous view");
  const int64_t o = weight.size(0), d = weight.size(1);
  auto out = torch::empty({o}, x.options());
  const float* w_p = weight.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  at::parallel_for(0, o, std::max<int64_t>(4, 16384 / d), [&](int64_t begin, int64_t end) {
    rows_dot(w_p, x_p, out_p, begin, end, d);
  });
  return out;
}

// The two FFN sites, one shape: `values(begin, end, out)` fills out[i] for the neurons
// [begin, end) from rows read whole (dense GEMV rows, split by neurons over the threads), the
// neurons with |value| >= threshold kept, then each kept neuron's `coef(i, value)` times its
// down row (split evenly by kept neuron: where the kept ones cluster, a split by neurons would
// not be even). Returns (out [D], kept neurons).
template <typename Values, typename Coef>
std::tuple<torch::Tensor, int64_t> threshold_ffn(const Ffn& w, double threshold,
                                                 const torch::TensorOptions& options,
                                                 Values values_of, Coef coef_of) {
  const int64_t min_neurons = std::max<int64_t>(16, 16384 / w.d);
  std::vector<float> values(w.f);
  at::parallel_for(0, w.f, min_neurons, [&](int64_t begin, int64_t end) {
    values_of(begin, end, values.data());
  });
  std::vector<int64_t> index;
  std::vector<float> coef;
  select_kept(values.data(), w.f, static_cast<float>(threshold), &index, &coef);
  return chunked(static_cast<int64_t>(index.size()), w.d, min_neurons, options,
                 [&](int64_t begin, int64_t end, float* acc) {
    for (int64_t j = begin; j < end; ++j) coef[j] = coef_of(index, j, end, coef[j]);
    axpy_rows(w.down, index.data() + begin, coef.data() + begin, end - begin, acc, w.d);
    return end - begin;
  });
}

// The h site for one token: h_i = silu(gate_i . x) * (up_i . x) for every neuron (gate and up
// read whole), then out [D] = sum over |h_i| >= threshold of h_i * down_t[i].
std::tuple<torch::Tensor, int64_t> h_ffn(torch::Tensor gate, torch::Tensor up,
                                         torch::Tensor down_t, torch::Tensor x,
                                         double threshold) {
  const Ffn w = checked_ffn(gate, up, down_t, x);
  std::vector<float> up_x(w.f);
  return threshold_ffn(
      w, threshold, x.options(),
      [&](int64_t begin, int64_t end, float* h) {
        rows_dot(w.gate, w.x, h, begin, end, w.d);
        rows_dot(w.up, w.x, up_x.data(), begin, end, w.d);
        for (int64_t i = begin; i < end; ++i) h[i] = silu(h[i]) * up_x[i];
      },
      [](const std::vector<int64_t>&, int64_t, int64_t, float h) { return h; });
}

// CATS for one token: a_i = silu(gate_i . x) for every neuron (gate read whole); for |a_i| >=
// threshold, out [D] += a_i * (up_i . x) * down_t[i] (up and down read for those only).
std::tuple<torch::Tensor, int64_t> gate_ffn(torch::Tensor gate, torch::Tensor up,
                                            torch::Tensor down_t, torch::Tensor x,
                                            double threshold) {
  const Ffn w = checked_ffn(gate, up, down_t, x);
  const int64_t d = w.d;
  return threshold_ffn(
      w, threshold, x.options(),
      [&](int64_t begin, int64_t end, float* a) {
        rows_dot(w.gate, w.x, a, begin, end, d);
        for (int64_t i = begin; i < end; ++i) a[i] = silu(a[i]);
      },
      [&](const std::vector<int64_t>& index, int64_t j, int64_t end, float a) {
        if (j + 1 < end) prefetch_row(w.up + index[j + 1] * d, d);
        return a * dot(w.up + index[j] * d, w.x, d);
      });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gathered_ffn", &gathered_ffn, "gathered SwiGLU FFN for one token (fp32, CPU)");
  m.def("input_matvec", &input_matvec, "TEAL: thresholded input times W.t() rows (fp32, CPU)");
  m.def("h_ffn", &h_ffn, "SwiGLU FFN thresholded on |h| for one token (fp32, CPU)");
  m.def("gate_ffn", &gate_ffn, "SwiGLU FFN thresholded on |silu(gate x)| (fp32, CPU)");
  m.def("dense_matvec", &dense_matvec, "W x for one token, W row-major or transposed (fp32, CPU)");
  bind_quant_kernels(m);
  bind_decode_step(m);
}
