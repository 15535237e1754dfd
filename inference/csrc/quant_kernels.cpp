// The kernels of one decoded token on GGUF blocks (Q4_0, Q4_1, Q8_0; quant_formats.h): the
// dense GEMV in the file's row-major layout (quant_matvec: x rounded to 8 bits per block, then
// an integer dot per block, as llama.cpp computes it) and in the
// transposed layout (quant_rows_axpy: blocks along the output dimension, a row per input), and
// the three threshold sites as kernels.cpp computes them on fp32 (quant_input_matvec,
// quant_h_ffn, quant_gate_ffn: select the kept inputs or neurons, then read only their rows).
//
// A matrix is `blocks` [R, row bytes] uint8 (as gguf's reader maps it) and its GGML type.
#include "kernels.h"
#include "quant_formats.h"

namespace {

struct QMatrix {
  const uint8_t* data;
  int64_t rows, cols, row_bytes, nb;  // nb: blocks a row
  quant::RowOps ops;

  const uint8_t* row(int64_t i) const { return data + i * row_bytes; }
};

QMatrix checked(const torch::Tensor& blocks, int64_t type, const char* name) {
  TORCH_CHECK(blocks.dim() == 2 && blocks.is_contiguous() &&
                  blocks.scalar_type() == torch::kUInt8 && blocks.device().is_cpu(),
              name, " must be contiguous uint8 blocks [rows, row bytes] on the CPU");
  const quant::RowOps ops = quant::row_ops(type);
  TORCH_CHECK(ops.block_bytes > 0, name, ": GGML type ", type, " is not supported");
  const int64_t row_bytes = blocks.size(1);
  TORCH_CHECK(row_bytes % ops.block_bytes == 0, name, ": ", row_bytes,
              " bytes a row is not whole blocks of type ", type);
  const int64_t nb = row_bytes / ops.block_bytes;
  return {blocks.data_ptr<uint8_t>(), blocks.size(0), nb * quant::kBlock, row_bytes, nb, ops};
}

const float* checked_x(const torch::Tensor& x, int64_t n) {
  TORCH_CHECK(x.is_contiguous() && x.numel() == n && x.scalar_type() == torch::kFloat32,
              "x must be fp32 [", n, "]");
  return x.data_ptr<float>();
}

inline void prefetch_bytes(const uint8_t* p, int64_t n) {
  for (int64_t k = 0; k < n; k += 64) __builtin_prefetch(p + k, 0, 2);
}

// x rounded to 8 bits per block, once for every row that reads it (quant_formats.h).
std::vector<quant::BlockQ8x> quantized_x(const QMatrix& w, const float* x) {
  std::vector<quant::BlockQ8x> xq(w.nb);
  w.ops.quantize_x(x, xq.data(), w.nb);
  return xq;
}

// out[r] = row_r . x for rows [begin, end).
void rows_dot(const QMatrix& w, const quant::BlockQ8x* x, float* out, int64_t begin,
              int64_t end) {
  for (int64_t r = begin; r < end; ++r) out[r] = w.ops.dot(w.row(r), x, w.nb);
}

// acc += sum_j coef[j] * row(index[j]) (index: nullptr for rows 0..n-1), four rows a pass
// (acc read and written once for four), the next pass's rows prefetched (four streams defeat
// the hardware prefetcher even where the rows are consecutive).
void axpy_rows(const QMatrix& w, const int64_t* index, const float* coef, int64_t n,
               float* acc) {
  auto row = [&](int64_t j) { return w.row(index ? index[j] : j); };
  for (int64_t j = 0; j < std::min<int64_t>(n, 4); ++j) prefetch_bytes(row(j), w.row_bytes);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int64_t k = j + 4; k < std::min(n, j + 8); ++k) prefetch_bytes(row(k), w.row_bytes);
    const uint8_t* rows[4] = {row(j), row(j + 1), row(j + 2), row(j + 3)};
    w.ops.axpy4(coef + j, rows, acc, w.nb);
  }
  for (; j < n; ++j) w.ops.axpy(coef[j], row(j), acc, w.nb);
}

// Neurons (or outputs) a thread takes at least: ~16 K weights of work.
int64_t min_rows(int64_t cols) { return std::max<int64_t>(16, 16384 / cols); }

}  // namespace

// W x with W row-major ([O, D] blocks along D, the file's layout). -> [O]
torch::Tensor quant_matvec(torch::Tensor blocks, int64_t type, torch::Tensor x) {
  const QMatrix w = checked(blocks, type, "weight");
  const auto xq = quantized_x(w, checked_x(x, w.cols));
  auto out = torch::empty({w.rows}, x.options());
  float* out_p = out.data_ptr<float>();
  at::parallel_for(0, w.rows, min_rows(w.cols), [&](int64_t begin, int64_t end) {
    rows_dot(w, xq.data(), out_p, begin, end);
  });
  return out;
}

// W x with W stored transposed (`blocks`: W.t() [D, O], blocks along O): sum_i x_i * row_i,
// the rows split over the threads, one partial output each. -> [O]
torch::Tensor quant_rows_axpy(torch::Tensor blocks, int64_t type, torch::Tensor x) {
  const QMatrix w = checked(blocks, type, "weight_t");
  const float* x_p = checked_x(x, w.rows);
  return std::get<0>(chunked(w.rows, w.cols, min_rows(w.cols), x.options(),
                             [&](int64_t begin, int64_t end, float* acc) {
    axpy_rows(QMatrix{w.row(begin), end - begin, w.cols, w.row_bytes, w.nb, w.ops}, nullptr,
              x_p + begin, end - begin, acc);
    return end - begin;
  }));
}

// TEAL on blocks: sum over |x_i| >= threshold of x_i * row_i (`blocks`: W.t()).
// -> (out [O], kept inputs)
std::tuple<torch::Tensor, int64_t> quant_input_matvec(torch::Tensor blocks, int64_t type,
                                                      torch::Tensor x, double threshold) {
  const QMatrix w = checked(blocks, type, "weight_t");
  const float* x_p = checked_x(x, w.rows);
  std::vector<int64_t> index;
  std::vector<float> coef;
  select_kept(x_p, w.rows, static_cast<float>(threshold), &index, &coef);
  return chunked(static_cast<int64_t>(index.size()), w.cols, min_rows(w.cols), x.options(),
                 [&](int64_t begin, int64_t end, float* acc) {
    axpy_rows(w, index.data() + begin, coef.data() + begin, end - begin, acc);
    return end - begin;
  });
}

namespace {

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

struct QFfn {
  QMatrix gate, up, down_t;  // gate, up: [F, D] rows; down_t: down.t() [F, D]
  std::vector<quant::BlockQ8x> x;  // rounded for gate's and up's dot products
};

QFfn checked_ffn(const torch::Tensor& gate, int64_t gate_type, const torch::Tensor& up,
                 int64_t up_type, const torch::Tensor& down_t, int64_t down_type,
                 const torch::Tensor& x) {
  QFfn w{checked(gate, gate_type, "gate"), checked(up, up_type, "up"),
         checked(down_t, down_type, "down_t"), {}};
  TORCH_CHECK(w.up.rows == w.gate.rows && w.up.cols == w.gate.cols &&
                  w.down_t.rows == w.gate.rows && w.down_t.cols == w.gate.cols,
              "gate, up and down_t must all be [F, D]");
  w.x = quantized_x(w.gate, checked_x(x, w.gate.cols));
  return w;
}

// kernels.cpp's threshold_ffn on blocks: values of every neuron (split by neuron), the kept ones
// selected, then coef(kept neuron, value) times its down_t row (split by kept neuron).
template <typename Values, typename Coef>
std::tuple<torch::Tensor, int64_t> threshold_ffn(const QFfn& w, double threshold,
                                                 const torch::TensorOptions& options,
                                                 Values values_of, Coef coef_of) {
  const int64_t f = w.gate.rows, d = w.gate.cols;
  std::vector<float> values(f);
  at::parallel_for(0, f, min_rows(d), [&](int64_t begin, int64_t end) {
    values_of(begin, end, values.data());
  });
  std::vector<int64_t> index;
  std::vector<float> coef;
  select_kept(values.data(), f, static_cast<float>(threshold), &index, &coef);
  return chunked(static_cast<int64_t>(index.size()), d, min_rows(d), options,
                 [&](int64_t begin, int64_t end, float* acc) {
    for (int64_t j = begin; j < end; ++j) coef[j] = coef_of(index[j], coef[j]);
    axpy_rows(w.down_t, index.data() + begin, coef.data() + begin, end - begin, acc);
    return end - begin;
  });
}

}  // namespace

// The h site on blocks: h = silu(gate x) * (up x) (gate, up read whole), then the down_t rows of
// |h_i| >= threshold. -> (out [D], kept neurons)
std::tuple<torch::Tensor, int64_t> quant_h_ffn(torch::Tensor gate, int64_t gate_type,
                                               torch::Tensor up, int64_t up_type,
                                               torch::Tensor down_t, int64_t down_type,
                                               torch::Tensor x, double threshold) {
  const QFfn w = checked_ffn(gate, gate_type, up, up_type, down_t, down_type, x);
  std::vector<float> up_x(w.gate.rows);
  return threshold_ffn(
      w, threshold, x.options(),
      [&](int64_t begin, int64_t end, float* h) {
        rows_dot(w.gate, w.x.data(), h, begin, end);
        rows_dot(w.up, w.x.data(), up_x.data(), begin, end);
        for (int64_t i = begin; i < end; ++i) h[i] = silu(h[i]) * up_x[i];
      },
      [](int64_t, float h) { return h; });
}

// CATS on blocks: a = silu(gate x) (gate read whole); for |a_i| >= threshold, a_i * (up_i . x)
// times down_t row i (up and down rows of the kept neurons only). -> (out [D], kept neurons)
std::tuple<torch::Tensor, int64_t> quant_gate_ffn(torch::Tensor gate, int64_t gate_type,
                                                  torch::Tensor up, int64_t up_type,
                                                  torch::Tensor down_t, int64_t down_type,
                                                  torch::Tensor x, double threshold) {
  const QFfn w = checked_ffn(gate, gate_type, up, up_type, down_t, down_type, x);
  return threshold_ffn(
      w, threshold, x.options(),
      [&](int64_t begin, int64_t end, float* a) {
        rows_dot(w.gate, w.x.data(), a, begin, end);
        for (int64_t i = begin; i < end; ++i) a[i] = silu(a[i]);
      },
      [&](int64_t i, float a) { return a * w.up.ops.dot(w.up.row(i), w.x.data(), w.up.nb); });
}

namespace {

// The whole matrix as fp32 [R, C] (a prompt's GEMM, the masked references).
torch::Tensor quant_dequantize(torch::Tensor blocks, int64_t type) {
  const QMatrix w = checked(blocks, type, "blocks");
  auto out = torch::empty({w.rows, w.cols}, torch::kFloat32);
  float* out_p = out.data_ptr<float>();
  at::parallel_for(0, w.rows, min_rows(w.cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) w.ops.dequant(w.row(r), out_p + r * w.cols, w.nb);
  });
  return out;
}

// Rows `index` as fp32 [n, C] (an embedding lookup).
torch::Tensor quant_dequantize_rows(torch::Tensor blocks, int64_t type, torch::Tensor index) {
  const QMatrix w = checked(blocks, type, "blocks");
  TORCH_CHECK(index.scalar_type() == torch::kInt64 && index.is_contiguous(), "index: int64");
  const int64_t n = index.numel();
  const int64_t* idx = index.data_ptr<int64_t>();
  auto out = torch::empty({n, w.cols}, torch::kFloat32);
  float* out_p = out.data_ptr<float>();
  for (int64_t j = 0; j < n; ++j) {
    TORCH_CHECK(idx[j] >= 0 && idx[j] < w.rows, "index ", idx[j], " out of range");
    w.ops.dequant(w.row(idx[j]), out_p + j * w.cols, w.nb);
  }
  return out;
}

// Force an instruction-set path ("scalar", "avx2", "avx512"; the tests compare them); returns
// the path in force before. Refuses one this build lacks.
std::string set_quant_isa(const std::string& name) {
  const std::string before = quant::isa_name(quant::current_isa());
  quant::Isa isa;
  if (name == "scalar") {
    isa = quant::Isa::kScalar;
  } else if (name == "avx2") {
#ifndef __AVX2__
    TORCH_CHECK(false, "this build has no AVX2 path");
#endif
    isa = quant::Isa::kAvx2;
  } else if (name == "avx512") {
#ifndef __AVX512F__
    TORCH_CHECK(false, "this build has no AVX-512 path");
#endif
    isa = quant::Isa::kAvx512;
  } else {
    TORCH_CHECK(false, "unknown instruction set ", name);
  }
  quant::current_isa() = isa;
  return before;
}

std::vector<std::string> quant_isas() {
  std::vector<std::string> names{"scalar"};
#ifdef __AVX2__
  names.push_back("avx2");
#endif
#ifdef __AVX512F__
  names.push_back("avx512");
#endif
  return names;
}

}  // namespace

void bind_quant_kernels(pybind11::module& m) {
  m.def("quant_matvec", &quant_matvec, "W x on GGUF blocks, W row-major (one token, CPU)");
  m.def("quant_rows_axpy", &quant_rows_axpy, "W x on GGUF blocks of W.t() (one token, CPU)");
  m.def("quant_input_matvec", &quant_input_matvec, "TEAL on GGUF blocks of W.t()");
  m.def("quant_h_ffn", &quant_h_ffn, "SwiGLU FFN thresholded on |h|, GGUF blocks");
  m.def("quant_gate_ffn", &quant_gate_ffn, "CATS on GGUF blocks");
  m.def("quant_dequantize", &quant_dequantize, "GGUF blocks [R, bytes] -> fp32 [R, C]");
  m.def("quant_dequantize_rows", &quant_dequantize_rows, "some rows of GGUF blocks as fp32");
  m.def("set_quant_isa", &set_quant_isa, "force an instruction-set path; returns the old one");
  m.def("quant_isas", &quant_isas, "the instruction-set paths this build has");
}
