// The compiled kernels' entry points, shared by kernels.cpp (the fp32 per-projection and per-MLP
// kernels, and the Python module), quant_kernels.cpp (the same on GGUF blocks) and
// decode_step.cpp (one decoded token through every layer).
#pragma once
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

torch::Tensor gathered_ffn(torch::Tensor gu, torch::Tensor down_t, torch::Tensor x,
                           torch::Tensor idx);
torch::Tensor dense_matvec(torch::Tensor weight, torch::Tensor x);
std::tuple<torch::Tensor, int64_t> input_matvec(torch::Tensor rows, torch::Tensor x,
                                                double threshold);
std::tuple<torch::Tensor, int64_t> h_ffn(torch::Tensor gate, torch::Tensor up,
                                         torch::Tensor down_t, torch::Tensor x, double threshold);
std::tuple<torch::Tensor, int64_t> gate_ffn(torch::Tensor gate, torch::Tensor up,
                                            torch::Tensor down_t, torch::Tensor x,
                                            double threshold);

// Quantized blocks (quant_kernels.cpp): `blocks` [R, row bytes] uint8 of GGML type `type`.
torch::Tensor quant_matvec(torch::Tensor blocks, int64_t type, torch::Tensor x);
torch::Tensor quant_rows_axpy(torch::Tensor blocks, int64_t type, torch::Tensor x);
std::tuple<torch::Tensor, int64_t> quant_input_matvec(torch::Tensor blocks, int64_t type,
                                                      torch::Tensor x, double threshold);
std::tuple<torch::Tensor, int64_t> quant_h_ffn(torch::Tensor gate, int64_t gate_type,
                                               torch::Tensor up, int64_t up_type,
                                               torch::Tensor down_t, int64_t down_type,
                                               torch::Tensor x, double threshold);
std::tuple<torch::Tensor, int64_t> quant_gate_ffn(torch::Tensor gate, int64_t gate_type,
                                                  torch::Tensor up, int64_t up_type,
                                                  torch::Tensor down_t, int64_t down_type,
                                                  torch::Tensor x, double threshold);
void bind_quant_kernels(pybind11::module& m);

// `chunks` contiguous ranges of [0, n) run in parallel (at most one per `min_work` items);
// `body(begin, end, acc)` adds its range's contribution into its partial output `acc` [width]
// and returns how many rows it kept. Returns the summed output and the total kept.
template <typename Body>
inline
std::tuple<torch::Tensor, int64_t> chunked(int64_t n, int64_t width, int64_t min_work,
                                           const torch::TensorOptions& options, Body body) {
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / min_work));
  auto partial = torch::zeros({chunks, width}, options);
  float* partial_p = partial.data_ptr<float>();
  std::vector<int64_t> kept(chunks, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      kept[c] = body(n * c / chunks, n * (c + 1) / chunks, partial_p + c * width);
    }
  });
  int64_t total = 0;
  for (int64_t k : kept) total += k;
  return {chunks == 1 ? partial[0] : partial.sum(0), total};
}

// Where |values[i]| >= t, in order: the kept rows and their values.
inline void select_kept(const float* values, int64_t n, float t, std::vector<int64_t>* index,
                 std::vector<float>* coef) {
  index->reserve(n);
  coef->reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(values[i]) >= t) {
      index->push_back(i);
      coef->push_back(values[i]);
    }
  }
}

// Registers the DecodeStep class on the extension module.
void bind_decode_step(pybind11::module& m);
