// One decoded token through every LLaMA layer in one call (CPU, fp32, batch 1): the same ATen
// operations and threshold kernels, in the same order, as the Python lean decoder
// (inference/decoder.py) and the modules it calls (inference/sparse_mlp.py), so the output is
// the same bit for bit; what goes is the Python around each operation (~40 a layer, a few
// microseconds each: about a fifth of a token's time on the shipped 135M model).
//
// Built once per generation from the layers' weights as the modules hold them (each projection's
// `weight`, a transposed view where the layout is transposed) and each layer's site; called per
// token with the layers' thresholds. Returns the new hidden state and, per layer, seven kept
// counts for the telemetry: the kept inputs of q, k, v, o, gate, up, down (input site; the
// input width where a threshold is 0), or the kept neurons first (h and gate sites; -1 where the
// threshold is 0 and the MLP ran dense).
#include "kernels.h"

#include <vector>

namespace {

enum Site : int64_t { kH = 0, kGate = 1, kInput = 2 };
constexpr int64_t kPerLayer = 9;  // in_norm, q, k, v, o, post_norm, gate, up, down
constexpr int64_t kCounts = 7;

struct Projection {
  torch::Tensor weight;  // [out, in] as the module holds it (a transposed view at the input site)
  torch::Tensor rows;    // weight.t() (contiguous [in, out]) at the input site, else undefined
};

struct Layer {
  torch::Tensor in_norm, post_norm;
  Projection q, k, v, o, gate, up, down;
  torch::Tensor down_t;  // down's weight.t() ([F, D], contiguous: down is stored transposed)
  int64_t site;
};

// LlamaRMSNorm on fp32 as decoder._rms_norm computes it.
torch::Tensor rms_norm(const torch::Tensor& weight, const torch::Tensor& x, double eps) {
  return weight * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

// W x for x [1, 1, in], as kernels.dense_linear computes it for one token.
torch::Tensor matvec(const torch::Tensor& x, const torch::Tensor& weight) {
  return dense_matvec(weight, x.reshape(-1).contiguous()).view({1, 1, -1});
}

// A projection of x [1, 1, in] as nn.Linear / SparseLinear computes it for one token.
torch::Tensor project(const Projection& p, const torch::Tensor& x, double threshold,
                      int64_t* kept) {
  if (!p.rows.defined() || threshold <= 0.0) {
    *kept = p.weight.size(1);
    return matvec(x, p.weight);
  }
  auto [out, n] = input_matvec(p.rows, x.reshape(-1), threshold);
  *kept = n;
  return out.view({1, 1, -1});
}

}  // namespace

class DecodeStep {
 public:
  DecodeStep(const std::vector<torch::Tensor>& weights, const std::vector<int64_t>& sites,
             torch::Tensor cache, torch::Tensor cos, torch::Tensor sin, torch::Tensor rotation,
             double eps, double scaling, int64_t heads, int64_t kv_heads)
      : cache_(std::move(cache)), cos_(std::move(cos)), sin_(std::move(sin)),
        rotation_(std::move(rotation)), eps_(eps), scaling_(scaling), heads_(heads),
        kv_heads_(kv_heads), head_dim_(rotation_.size(0)) {
    TORCH_CHECK(weights.size() == sites.size() * kPerLayer, "expected ", kPerLayer,
                " weights per layer");
    for (size_t i = 0; i < sites.size(); ++i) {
      const torch::Tensor* w = weights.data() + i * kPerLayer;
      for (int64_t j = 0; j < kPerLayer; ++j) {
        TORCH_CHECK(w[j].scalar_type() == torch::kFloat32 && w[j].device().is_cpu(),
                    "the decode step runs fp32 weights on the CPU");
      }
      TORCH_CHECK(sites[i] >= kH && sites[i] <= kInput, "unknown site ", sites[i]);
      const bool input = sites[i] == kInput;
      auto proj = [&](const torch::Tensor& weight) {
        return Projection{weight, input ? weight.t() : torch::Tensor()};
      };
      Layer layer{w[0], w[5], proj(w[1]), proj(w[2]), proj(w[3]), proj(w[4]),
                  proj(w[6]), proj(w[7]), proj(w[8]), w[8].t(), sites[i]};
      TORCH_CHECK(layer.down_t.is_contiguous(), "down must be stored transposed");
      if (input) {
        for (const Projection* p : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate,
                                    &layer.up, &layer.down}) {
          TORCH_CHECK(p->rows.is_contiguous(), "input-site weights must be stored transposed");
        }
      } else {
        TORCH_CHECK(layer.gate.weight.is_contiguous() && layer.up.weight.is_contiguous(),
                    "gate and up must be row-major at the h and gate sites");
      }
      layers_.push_back(std::move(layer));
    }
  }

  // h: [1, 1, D] (the token's embedding); pos: its position; thresholds: 4 per layer (the
  // input site's qkv, o, gate_up, down; the first alone at the h and gate sites).
  // Returns (the last layer's output [1, 1, D], kept counts: 7 per layer).
  std::tuple<torch::Tensor, std::vector<int64_t>> operator()(
      torch::Tensor h, int64_t pos, const std::vector<double>& thresholds) {
    const int64_t n_layers = static_cast<int64_t>(layers_.size());
    TORCH_CHECK(static_cast<int64_t>(thresholds.size()) == 4 * n_layers,
                "expected 4 thresholds per layer");
    TORCH_CHECK(pos >= 0 && pos < cache_.size(3), "position ", pos, " past the cache");
    const int64_t hd = head_dim_;
    const auto rope = at::diag(cos_[pos]) + rotation_ * sin_[pos];  // [hd, hd]
    std::vector<int64_t> kept(kCounts * n_layers, 0);
    for (int64_t i = 0; i < n_layers; ++i) {
      const Layer& l = layers_[i];
      const double* t = thresholds.data() + 4 * i;
      int64_t* counts = kept.data() + kCounts * i;
      const bool input = l.site == kInput;
      const double t_qkv = input ? t[0] : 0.0, t_o = input ? t[1] : 0.0;

      // Attention (decoder.LeanDecoder._attention, one fp32 token).
      auto x = rms_norm(l.in_norm, h, eps_);
      auto q = project(l.q, x, t_qkv, counts + 0);
      auto k = project(l.k, x, t_qkv, counts + 1);
      auto v = project(l.v, x, t_qkv, counts + 2).view({1, kv_heads_, hd}).transpose(0, 1);
      auto qk = at::cat({q, k}, -1).view({-1, hd}).matmul(rope);  // [H + KV, hd]
      q = qk.slice(0, 0, heads_).unsqueeze(1);
      k = qk.slice(0, heads_).unsqueeze(1);
      auto keys = cache_[i][0], values = cache_[i][1];  // [KV, T, hd]
      keys.slice(1, pos, pos + 1).copy_(k);
      values.slice(1, pos, pos + 1).copy_(v);
      auto attended = at::scaled_dot_product_attention(
          q.unsqueeze(0), keys.slice(1, 0, pos + 1).unsqueeze(0),
          values.slice(1, 0, pos + 1).unsqueeze(0), std::nullopt, 0.0, false, scaling_,
          heads_ != kv_heads_);  // [1, H, 1, hd]
      h = h + project(l.o, attended.transpose(1, 2).reshape({1, 1, heads_ * hd}), t_o,
                      counts + 3);

      // MLP (sparse_mlp.SparseMLP.forward for one token).
      x = rms_norm(l.post_norm, h, eps_);
      if (input) {
        auto a = at::silu(project(l.gate, x, t[2], counts + 4)) * project(l.up, x, t[2],
                                                                          counts + 5);
        h = h + project(l.down, a, t[3], counts + 6);
      } else if (t[0] <= 0.0) {
        auto a = at::silu(matvec(x, l.gate.weight)) * matvec(x, l.up.weight);
        h = h + matvec(a, l.down.weight);
        counts[0] = -1;
      } else {
        auto x1 = x.reshape(-1);
        auto [out, n] = l.site == kH
                            ? h_ffn(l.gate.weight, l.up.weight, l.down_t, x1, t[0])
                            : gate_ffn(l.gate.weight, l.up.weight, l.down_t, x1, t[0]);
        h = h + out.view(x.sizes());
        counts[0] = n;
      }
    }
    return {h, kept};
  }

 private:
  std::vector<Layer> layers_;
  torch::Tensor cache_, cos_, sin_, rotation_;
  double eps_, scaling_;
  int64_t heads_, kv_heads_, head_dim_;
};

void bind_decode_step(pybind11::module& m) {
  pybind11::class_<DecodeStep>(m, "DecodeStep",
                               "every layer of one decoded token (fp32, CPU, batch 1)")
      .def(pybind11::init<const std::vector<torch::Tensor>&, const std::vector<int64_t>&,
                          torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, double,
                          double, int64_t, int64_t>())
      .def("__call__", &DecodeStep::operator(), pybind11::call_guard<pybind11::gil_scoped_release>());
}
