// Gathered SwiGLU FFN for one token (CPU, fp32): reads only the active neurons' weights.
//
//   gu:     [F, 2, D]  gate and up rows of each neuron side by side (one contiguous 2*D block)
//   down_t: [F, D]     down_proj.weight transposed (a neuron's down column as a row)
//   x:      [D]        the MLP input
//   idx:    [n] int64  active neurons
// returns out [D] = sum_i silu(gate_i . x) * (up_i . x) * down_t[idx_i]
//
// Step 1 runs over neurons in parallel (each reads its 2*D block once); step 2 over slices of
// the output, so every thread reads a contiguous slice of each active down row and no
// reduction between threads is needed. Built on first use by torch.utils.cpp_extension.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

torch::Tensor gathered_ffn(torch::Tensor gu, torch::Tensor down_t, torch::Tensor x,
                           torch::Tensor idx) {
  TORCH_CHECK(gu.dim() == 3 && gu.size(1) == 2 && gu.is_contiguous(), "gu must be [F, 2, D]");
  TORCH_CHECK(gu.scalar_type() == torch::kFloat32, "fp32 only");
  TORCH_CHECK(down_t.is_contiguous() && down_t.size(0) == gu.size(0) &&
                  down_t.size(1) == gu.size(2), "down_t must be [F, D]");
  TORCH_CHECK(x.is_contiguous() && x.numel() == gu.size(2), "x must be [D]");
  TORCH_CHECK(idx.scalar_type() == torch::kInt64 && idx.is_contiguous(), "idx must be int64");
  const int64_t n = idx.numel(), d = gu.size(2), f = gu.size(0);
  const float* gu_p = gu.data_ptr<float>();
  const float* down_p = down_t.data_ptr<float>();
  const float* x_p = x.data_ptr<float>();
  const int64_t* idx_p = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(idx_p[i] >= 0 && idx_p[i] < f, "index out of range");
  auto h = torch::empty({n}, x.options());
  float* h_p = h.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* g = gu_p + idx_p[i] * 2 * d;
      const float* u = g + d;
      float ag = 0.f, au = 0.f;
#pragma omp simd reduction(+ : ag, au)
      for (int64_t k = 0; k < d; ++k) {
        ag += g[k] * x_p[k];
        au += u[k] * x_p[k];
      }
      h_p[i] = ag / (1.f + std::exp(-ag)) * au;
    }
  });
  auto out = torch::zeros({d}, x.options());
  float* out_p = out.data_ptr<float>();
  at::parallel_for(0, d, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = 0; i < n; ++i) {
      const float* row = down_p + idx_p[i] * d;
      const float hi = h_p[i];
#pragma omp simd
      for (int64_t k = begin; k < end; ++k) out_p[k] += hi * row[k];
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gathered_ffn", &gathered_ffn, "gathered SwiGLU FFN for one token (fp32, CPU)");
}
