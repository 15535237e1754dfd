// Kernels for one decoded token (CPU, fp32) that read only the weights of active neurons or of
// kept inputs: gathered_ffn (predictor), gated_ffn (CATS, gate site), rows_matvec (TEAL input
// site, and the down rows of the h site).
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
// Built on first use by torch.utils.cpp_extension.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>

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

// The active items split into one contiguous chunk per thread (at most one per `min_work`
// items); `body(i, next, acc)` adds item i into its chunk's partial output `acc` [width] and may
// prefetch item `next` (-1 at a chunk's end). The partials are summed at the end: no atomics,
// one parallel region.
template <typename Body>
torch::Tensor sum_over_active(int64_t n, int64_t width, int64_t min_work,
                              const torch::TensorOptions& options, Body body) {
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / min_work));
  auto partial = torch::zeros({chunks, width}, options);
  float* partial_p = partial.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t stop = n * (c + 1) / chunks;
      for (int64_t i = n * c / chunks; i < stop; ++i) {
        body(i, i + 1 < stop ? i + 1 : -1, partial_p + c * width);
      }
    }
  });
  return chunks == 1 ? partial[0] : partial.sum(0);
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
  return sum_over_active(idx.numel(), d, 1, x.options(), [&](int64_t i, int64_t next, float* acc) {
    if (next >= 0) {  // the next neuron's rows start at unrelated addresses
      const float* g_next = gu_p + idx_p[next] * 2 * d;
      __builtin_prefetch(g_next);
      __builtin_prefetch(g_next + d);
      __builtin_prefetch(down_p + idx_p[next] * d);
    }
    const float* g = gu_p + idx_p[i] * 2 * d;
    float au;
    const float ag = dot2(g, g + d, x_p, d, &au);
    axpy(ag / (1.f + std::exp(-ag)) * au, down_p + idx_p[i] * d, acc, d);
  });
}

// Sparse input times transposed weights, for one token: out [C] = sum_i coef_i * rows[idx_i].
//
//   rows:  [R, C]  a weight stored transposed (W.t(): the column of input i as row i), or down_t
//   idx:   [n]     int64, kept inputs (TEAL) or active neurons
//   coef:  [n]     the kept input values (or h of the active neurons)
torch::Tensor rows_matvec(torch::Tensor rows, torch::Tensor idx, torch::Tensor coef) {
  TORCH_CHECK(rows.dim() == 2 && rows.is_contiguous() && rows.scalar_type() == torch::kFloat32,
              "rows must be a contiguous fp32 [R, C]");
  TORCH_CHECK(coef.is_contiguous() && coef.numel() == idx.numel() &&
                  coef.scalar_type() == torch::kFloat32, "coef must be fp32 [n]");
  check_indices(idx, rows.size(0));
  const int64_t c = rows.size(1);
  const float* rows_p = rows.data_ptr<float>();
  const float* coef_p = coef.data_ptr<float>();
  const int64_t* idx_p = idx.data_ptr<int64_t>();
  // Short rows: fewer threads, so that each reads enough to pay for its start.
  const int64_t min_rows = std::max<int64_t>(1, 16384 / c);
  return sum_over_active(idx.numel(), c, min_rows, rows.options(),
                         [&](int64_t i, int64_t next, float* acc) {
    if (next >= 0) __builtin_prefetch(rows_p + idx_p[next] * c);
    axpy(coef_p[i], rows_p + idx_p[i] * c, acc, c);
  });
}

// CATS for one token: out [D] = sum_i a_i * (up_i . x) * down_t[idx_i], where a = silu(gate x)
// of the active neurons was computed densely (gate is read whole). Reads 2 * n * D weights.
torch::Tensor gated_ffn(torch::Tensor up, torch::Tensor down_t, torch::Tensor x,
                        torch::Tensor idx, torch::Tensor a) {
  TORCH_CHECK(up.dim() == 2 && up.is_contiguous() && up.scalar_type() == torch::kFloat32,
              "up must be a contiguous fp32 [F, D]");
  TORCH_CHECK(down_t.is_contiguous() && down_t.sizes() == up.sizes(), "down_t must be [F, D]");
  TORCH_CHECK(x.is_contiguous() && x.numel() == up.size(1), "x must be [D]");
  TORCH_CHECK(a.is_contiguous() && a.numel() == idx.numel(), "a must be [n]");
  check_indices(idx, up.size(0));
  const int64_t d = up.size(1);
  const float* up_p = up.data_ptr<float>();
  const float* down_p = down_t.data_ptr<float>();
  const float* x_p = x.data_ptr<float>();
  const float* a_p = a.data_ptr<float>();
  const int64_t* idx_p = idx.data_ptr<int64_t>();
  const int64_t min_neurons = std::max<int64_t>(1, 8192 / d);
  return sum_over_active(idx.numel(), d, min_neurons, x.options(),
                         [&](int64_t i, int64_t next, float* acc) {
    if (next >= 0) {
      __builtin_prefetch(up_p + idx_p[next] * d);
      __builtin_prefetch(down_p + idx_p[next] * d);
    }
    const float* u = up_p + idx_p[i] * d;
    float au = 0.f;
    for (int64_t p = 0; p < d; p += kPage) {
      const int64_t e = std::min(d, p + kPage);
      prefetch_next_page(u + p, u + d);
#pragma omp simd reduction(+ : au)
      for (int64_t q = p; q < e; ++q) au += u[q] * x_p[q];
    }
    axpy(a_p[i] * au, down_p + idx_p[i] * d, acc, d);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gathered_ffn", &gathered_ffn, "gathered SwiGLU FFN for one token (fp32, CPU)");
  m.def("rows_matvec", &rows_matvec, "sum of coef_i * rows[idx_i] (fp32, CPU)");
  m.def("gated_ffn", &gated_ffn, "CATS FFN for one token, gate given (fp32, CPU)");
}
