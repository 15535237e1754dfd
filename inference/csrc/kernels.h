// The compiled kernels' entry points, shared by gathered_ffn.cpp (the per-projection and per-MLP
// kernels, and the Python module) and decode_step.cpp (one decoded token through every layer).
#pragma once
#include <torch/extension.h>
#include <tuple>

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

// Registers the DecodeStep class on the extension module.
void bind_decode_step(pybind11::module& m);
