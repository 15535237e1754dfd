// One decoded token through every LLaMA layer in one call (CPU, fp32 activations on fp32 weights
// or on a GGUF's blocks, batch 1): the same ATen
// operations and threshold kernels, in the same order, as the Python lean decoder
// (inference/decoder.py) and the modules it calls (inference/sparse_mlp.py), so the output is
// the same bit for bit; what goes is the Python around each operation (~40 a layer, a few
// microseconds each: about a fifth of a token's time on the shipped 135M model).
//
// Built once per generation from the layers' weights as the modules hold them (each projection's
// `weight`, a transposed view where the layout is transposed; or its GGUF blocks, with their
// GGML type and whether they hold W.t(): quant_kernels.cpp) and each layer's site; called per
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
                         // or GGUF blocks (uint8: [out, bytes], or [in, bytes] if transposed)
  torch::Tensor rows;    // weight.t() (contiguous [in, out]) at the input site, else undefined
                         // (blocks: the same blocks, transposed, at the input site)
  int64_t type = 0;      // GGML type of the blocks; 0 (F32): an fp32 weight
  bool transposed = false;
};

struct Layer {
  torch::Tensor in_norm, post_norm;
  Projection q, k, v, o, gate, up, down;
  torch::Tensor down_t;  // down's weight.t() ([F, D], contiguous: down is stored transposed),
                         // or down's blocks (which then hold W.t())
  int64_t site;
};

// LlamaRMSNorm on fp32 as decoder._rms_norm computes it.
torch::Tensor rms_norm(const torch::Tensor& weight, const torch::Tensor& x, double eps) {
  return weight * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

// W x for x [1, 1, in], as kernels.dense_linear (fp32) or QuantLinear (blocks) computes it for
// one token.
torch::Tensor matvec(const torch::Tensor& x, const Projection& p) {
  const auto x1 = x.reshape(-1).contiguous();
  if (p.type == 0) return dense_matvec(p.weight, x1).view({1, 1, -1});
  return (p.transposed ? quant_rows_axpy(p.weight, p.type, x1)
                       : quant_matvec(p.weight, p.type, x1)).view({1, 1, -1});
}

// The h or gate site's kernel for one token (fp32 or blocks).
std::tuple<torch::Tensor, int64_t> ffn_site(const Layer& l, const torch::Tensor& x1, double t) {
  if (l.gate.type == 0) {
    return l.site == kH ? h_ffn(l.gate.weight, l.up.weight, l.down_t, x1, t)
                        : gate_ffn(l.gate.weight, l.up.weight, l.down_t, x1, t);
  }
  TORCH_CHECK(l.down.transposed, "the h and gate sites need down's blocks transposed");
  const auto& g = l.gate;
  const auto& u = l.up;
  return l.site == kH
             ? quant_h_ffn(g.weight, g.type, u.weight, u.type, l.down_t, l.down.type, x1, t)
             : quant_gate_ffn(g.weight, g.type, u.weight, u.type, l.down_t, l.down.type, x1, t);
}

// A projection of x [1, 1, in] as nn.Linear / SparseLinear computes it for one token.
torch::Tensor project(const Projection& p, const torch::Tensor& x, double threshold,
                      int64_t* kept) {
  if (!p.rows.defined() || threshold <= 0.0) {
    *kept = p.type == 0 ? p.weight.size(1) : x.numel();
    return matvec(x, p);
  }
  auto [out, n] = p.type == 0
                      ? input_matvec(p.rows, x.reshape(-1), threshold)
                      : quant_input_matvec(p.rows, p.type, x.reshape(-1).contiguous(), threshold);
  *kept = n;
  return out.view({1, 1, -1});
}

}  // namespace

class DecodeStep {
 public:
  DecodeStep(const std::vector<torch::Tensor>& weights, const std::vector<int64_t>& sites,
             const std::vector<int64_t>& types, const std::vector<int64_t>& transposed,
             torch::Tensor cache, torch::Tensor cos, torch::Tensor sin, torch::Tensor rotation,
             double eps, double scaling, int64_t heads, int64_t kv_heads)
      : cache_(std::move(cache)), cos_(std::move(cos)), sin_(std::move(sin)),
        rotation_(std::move(rotation)), eps_(eps), scaling_(scaling), heads_(heads),
        kv_heads_(kv_heads), head_dim_(rotation_.size(0)) {
    TORCH_CHECK(weights.size() == sites.size() * kPerLayer, "expected ", kPerLayer,
                " weights per layer");
    TORCH_CHECK(types.size() == sites.size() * kCounts && transposed.size() == types.size(),
                "expected ", kCounts, " projection types and layouts per layer");
    for (size_t i = 0; i < sites.size(); ++i) {
      const torch::Tensor* w = weights.data() + i * kPerLayer;
      const int64_t* type = types.data() + i * kCounts;
      const int64_t* t_flag = transposed.data() + i * kCounts;
      TORCH_CHECK(sites[i] >= kH && sites[i] <= kInput, "unknown site ", sites[i]);
      const bool input = sites[i] == kInput;
      int64_t j = 0;  // the projection's index among q, k, v, o, gate, up, down
      auto proj = [&](const torch::Tensor& weight) {
        Projection p{weight, torch::Tensor(), type[j], t_flag[j] != 0};
        ++j;
        TORCH_CHECK(weight.device().is_cpu(), "the decode step runs on the CPU");
        if (p.type == 0) {
          TORCH_CHECK(weight.scalar_type() == torch::kFloat32, "the decode step runs fp32");
          if (input) p.rows = weight.t();
        } else {
          TORCH_CHECK(weight.scalar_type() == torch::kUInt8 && weight.is_contiguous(),
                      "GGUF blocks must be contiguous uint8");
          if (input) p.rows = weight;
        }
        return p;
      };
      for (int64_t n : {0, 5}) {
        TORCH_CHECK(w[n].scalar_type() == torch::kFloat32 && w[n].device().is_cpu(),
                    "norms must be fp32 on the CPU");
      }
      auto q = proj(w[1]), k = proj(w[2]), v = proj(w[3]), o = proj(w[4]);
      auto gate = proj(w[6]), up = proj(w[7]), down = proj(w[8]);
      Layer layer{w[0], w[5], q, k, v, o, gate, up, down,
                  down.type == 0 ? w[8].t() : w[8], sites[i]};
      // (Blocks: down transposed where a threshold skips its rows; a dense policy keeps the
      // file's layout, checked in ffn_site.)
      TORCH_CHECK(down.type != 0 || layer.down_t.is_contiguous(), "down must be stored transposed");
      for (const Projection* p : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate,
                                  &layer.up, &layer.down}) {
        if (input) {
          TORCH_CHECK(p->type == 0 ? p->rows.is_contiguous() : p->transposed,
                      "input-site weights must be stored transposed");
        } else if (p != &layer.down) {  // (down: either layout, above)
          TORCH_CHECK(p->type == 0 ? p->weight.is_contiguous() : !p->transposed,
                      "projections other than down must be row-major at the h and gate sites");
        }
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
        auto a = at::silu(matvec(x, l.gate)) * matvec(x, l.up);
        h = h + matvec(a, l.down);
        counts[0] = -1;
      } else {
        auto x1 = x.reshape(-1).contiguous();
        auto [out, n] = ffn_site(l, x1, t[0]);
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
                               "every layer of one decoded token (fp32 or GGUF blocks, CPU, batch 1)")
      .def(pybind11::init<const std::vector<torch::Tensor>&, const std::vector<int64_t>&,
                          const std::vector<int64_t>&, const std::vector<int64_t>&, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, double,
                          double, int64_t, int64_t>())
      .def("__call__", &DecodeStep::operator(), pybind11::call_guard<pybind11::gil_scoped_release>());
}
