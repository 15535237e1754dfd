"""A GGUF's weights kept in the file's own block formats (Q4_0, Q4_1, Q8_0), never as fp32.

- ``QuantLinear``: a bias-free projection held as the file's blocks (``[out, row bytes]``
  uint8, read from the file's memory map); one decoded token runs the compiled GEMV on the
  blocks (``csrc/quant_kernels.cpp``), a prompt dequantizes one matrix at a time for a GEMM.
  ``set_layout("transposed")`` re-lays it out with blocks along the output dimension (a row
  per input), which the sites that skip rows need; that requantizes (``gguf.quants``), so the
  file's blocks are kept and ``set_layout("file")`` returns to them exactly.
- ``QuantEmbedding``: the token embedding as blocks, rows dequantized on lookup (and, tied,
  the LM head's blocks).
- ``load_gguf_quantized(path)``: a ``transformers`` LLaMA built on the meta device, its
  projections and embedding swapped for these, its norms read as fp32: resident memory is about
  the file's size.

A decoded token's activation is rounded to Q8_0 (8 bits per block of 32, as ``gguf.quants``
rounds it) before each projection in the file's layout, whose kernel then takes an integer dot
per block, as llama.cpp does; the transposed layout's kernels take it in fp32 (docs/engine.md
says why). A prompt's GEMM takes fp32 activations.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType, GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from torch import nn

from inference.kernels import compiled_kernels

# The block formats the kernels read, by the names a user gives them.
FORMATS = {
    "q4_0": GGMLQuantizationType.Q4_0,
    "q4_1": GGMLQuantizationType.Q4_1,
    "q8_0": GGMLQuantizationType.Q8_0,
}
FLOAT_TYPES = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)
LAYOUTS = ("file", "transposed")


def bytes_per_weight(qtype: int) -> float:
    """Stored bytes per weight of GGML type ``qtype`` (Q4_1: 20 bytes a block of 32 = 0.625)."""
    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    return block_bytes / block


def _dequantize(blocks: torch.Tensor, qtype: int) -> torch.Tensor:
    """Blocks ``[R, row bytes]`` -> fp32 ``[R, C]`` (compiled, or gguf's numpy reference)."""
    module = compiled_kernels()
    if module is not None:
        return module.quant_dequantize(blocks, int(qtype))
    return torch.from_numpy(dequantize(blocks.numpy(), GGMLQuantizationType(qtype)))


def rounded_activation(x: torch.Tensor) -> torch.Tensor:
    """``x`` [..., in] rounded to Q8_0 per block of 32 and back to fp32: what one decoded token's
    GEMV in the file's layout multiplies (``quant_matvec`` rounds it so in C++)."""
    stored = quantize(x.detach().to(torch.float32).numpy(), GGMLQuantizationType.Q8_0)
    return torch.from_numpy(dequantize(stored, GGMLQuantizationType.Q8_0)).view(x.shape)


def _quantize(weight: torch.Tensor, qtype: int) -> torch.Tensor:
    """fp32 ``[R, C]`` -> blocks ``[R, row bytes]`` with gguf's own quantizer."""
    return torch.from_numpy(quantize(weight.numpy(), GGMLQuantizationType(qtype)))


class QuantLinear(nn.Module):
    """``W x`` (no bias) with ``W [out, in]`` held as GGUF blocks of type ``qtype``.

    ``blocks`` is the layout in use: the file's ``[out, in]`` rows (``layout == "file"``) or
    ``W.t()`` requantized, ``[in, out]`` rows (``"transposed"``). ``file_blocks`` is the
    file's, kept to return to exactly.
    """

    def __init__(self, blocks: torch.Tensor, qtype: int, in_features: int, out_features: int):
        super().__init__()
        qtype = int(qtype)
        if GGMLQuantizationType(qtype) not in FORMATS.values():
            raise ValueError(f"no kernels for GGML type {GGMLQuantizationType(qtype).name}")
        expected = (out_features, round(in_features * bytes_per_weight(qtype)))
        if tuple(blocks.shape) != expected or blocks.dtype != torch.uint8:
            raise ValueError(
                f"blocks {tuple(blocks.shape)} {blocks.dtype}, expected {expected} uint8"
            )
        self.in_features, self.out_features, self.qtype = in_features, out_features, qtype
        self.file_blocks = blocks
        self.register_buffer("blocks", blocks, persistent=False)
        self.layout = "file"
        self._transposed: torch.Tensor | None = None

    @property
    def stored_bytes(self) -> int:
        return self.blocks.numel()

    @property
    def bytes_per_weight(self) -> float:
        return bytes_per_weight(self.qtype)

    def set_layout(self, layout: str) -> None:
        """Hold the blocks in ``layout`` (``LAYOUTS``); ``"transposed"`` requantizes ``W.t()``
        from the file's blocks (never from an earlier requantization)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == self.layout:
            return
        if layout == "file":
            self.blocks = self.file_blocks
        else:
            self.blocks = self.transposed_blocks()
        self.layout = layout

    def transposed_blocks(self) -> torch.Tensor:
        """``W.t()`` requantized from the file's blocks, made once and kept (gguf's quantizer is
        deterministic; making it costs seconds per model, at every switch of site)."""
        if self._transposed is None:
            if self.out_features % 32:
                raise ValueError(f"{self.out_features} outputs are not whole blocks of 32")
            weight_t = _dequantize(self.file_blocks, self.qtype).t().contiguous()  # [in, out]
            self._transposed = _quantize(weight_t, self.qtype)
        return self._transposed

    def dequantized(self) -> torch.Tensor:
        """``W`` as fp32 ``[out, in]`` from the blocks in use (a temporary: prompts and the
        masked references)."""
        weight = _dequantize(self.blocks, self.qtype)
        return weight.t() if self.layout == "transposed" else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        module = compiled_kernels()
        one_token = x.shape[:-1].numel() == 1 and x.dtype == torch.float32
        if one_token and module is not None:
            x1 = x.reshape(-1).contiguous()
            if self.layout == "file":
                out = module.quant_matvec(self.blocks, self.qtype, x1)
            else:
                out = module.quant_rows_axpy(self.blocks, self.qtype, x1)
            return out.view(*x.shape[:-1], self.out_features)
        if one_token and self.layout == "file":
            x = rounded_activation(x)
        return F.linear(x, self.dequantized().to(x.dtype))

    def extra_repr(self) -> str:
        name = GGMLQuantizationType(self.qtype).name
        return f"{self.in_features}, {self.out_features}, {name}, layout={self.layout}"


class QuantEmbedding(nn.Module):
    """A token embedding held as GGUF blocks ``[vocab, row bytes]``; rows dequantized on lookup."""

    def __init__(self, blocks: torch.Tensor, qtype: int, num_embeddings: int, dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.qtype = num_embeddings, dim, int(qtype)
        self.register_buffer("blocks", blocks, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [B, S] -> [B, S, dim]
        flat = ids.reshape(-1).contiguous().to(torch.int64)
        module = compiled_kernels()
        if module is not None:
            rows = module.quant_dequantize_rows(self.blocks, self.qtype, flat)
        else:
            rows = _dequantize(self.blocks[flat], self.qtype)
        return rows.view(*ids.shape, self.embedding_dim)

    def as_linear(self) -> QuantLinear:
        """The LM head tied to this embedding: the same blocks."""
        return QuantLinear(self.blocks, self.qtype, self.embedding_dim, self.num_embeddings)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds any projection as GGUF blocks."""
    return any(isinstance(m, QuantLinear) for m in model.modules())


def block_formats(model: nn.Module) -> list[str]:
    """The GGUF block formats ``model``'s projections and embedding are held in, most weights
    first (``["Q4_1", "Q8_0"]`` for the shipped file); empty for a float model."""
    weights: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, QuantLinear | QuantEmbedding):
            name = GGMLQuantizationType(module.qtype).name
            weights[name] = weights.get(name, 0) + module.blocks.numel()
    return sorted(weights, key=weights.get, reverse=True)


def quantize_model(model: nn.Module, fmt: str) -> nn.Module:
    """``model`` (a float ``transformers`` LLaMA, e.g. a Hugging Face directory as stored) with
    its projections, embedding and LM head quantized to block format ``fmt`` (``FORMATS``) by
    ``gguf.quants`` and held as blocks (``QuantLinear``, ``QuantEmbedding``; a tied head reads
    the embedding's blocks), the norms as fp32. In place, one matrix at a time: only that one
    matrix is ever copied to fp32. Returns ``model``."""
    qtype = FORMATS[fmt]
    embed = model.get_input_embeddings()
    tied = model.lm_head.weight is embed.weight
    swaps = [
        (parent, attr, child)
        for parent in model.modules()
        for attr, child in parent.named_children()
        if isinstance(child, nn.Linear | nn.Embedding) and not (tied and child is model.lm_head)
    ]
    for parent, attr, child in swaps:
        if isinstance(child, nn.Linear) and child.bias is not None:
            raise ValueError(f"{attr} has a bias; the block formats hold bias-free projections")
        blocks = _quantize(child.weight.detach().to(torch.float32), qtype)
        if isinstance(child, nn.Embedding):
            module = QuantEmbedding(blocks, qtype, child.num_embeddings, child.embedding_dim)
        else:
            module = QuantLinear(blocks, qtype, child.in_features, child.out_features)
        setattr(parent, attr, module)
    if tied:
        model.lm_head = model.get_input_embeddings().as_linear()
    model.float()  # the norms (blocks are uint8: untouched)
    return model


# GGUF tensor names -> the module of a transformers LLaMA that holds them.
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.weight$")


def load_gguf_quantized(path: Path, config, convert: str | None = None) -> nn.Module:
    """A LLaMA ``transformers`` model of ``config`` holding ``path``'s weights as stored.

    Quantized projections (Q4_0, Q4_1, Q8_0) become ``QuantLinear`` over the file's memory map
    (q and k rows un-permuted as transformers does, which moves whole rows: no requantization);
    float tensors are read as fp32. ``convert`` (a ``FORMATS`` name) converts every matrix
    stored otherwise (Q4_K, Q6_K, F16, ...) to that format, one at a time, with ``gguf.quants``.
    Raises ``ValueError`` for an architecture other than LLaMA or, without ``convert``, a
    format without kernels (``MODEL_DTYPE=float32`` dequantizes those).
    """
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    reader = GGUFReader(str(path), "c")  # copy-on-write map: writable views, file pages shared
    arch_name = reader.fields["general.architecture"].contents()
    if arch_name != "llama":
        raise ValueError(f"{path.name}: architecture {arch_name!r}; stored formats need LLaMA")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    permute = LlamaTensorProcessor(config.to_dict())._reverse_permute_weights
    tied = True
    for tensor in reader.tensors:
        name, qtype = tensor.name, int(tensor.tensor_type)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.from_numpy(tensor.data)
        match = _LAYER_NAME.match(name)
        if match:
            layer, kind = int(match.group(1)), match.group(2)
            if kind not in _LAYER_TENSORS:
                raise ValueError(f"{path.name}: unexpected tensor {name}")
            owner_path = f"model.layers.{layer}.{_LAYER_TENSORS[kind]}"
        elif name == "token_embd.weight":
            owner_path = "model.embed_tokens"
        elif name == "output_norm.weight":
            owner_path = "model.norm"
        elif name == "output.weight":
            owner_path, tied = "lm_head", False
        else:
            continue  # e.g. rope_freqs: transformers computes its own
        parent_path, _, attr = owner_path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, attr)
        if data.dim() == 1:  # a norm
            old.weight = nn.Parameter(data.to(torch.float32).clone(), requires_grad=False)
            continue
        if kind_is_qk(name):
            heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
            rows = np.arange(data.shape[0])[:, None]
            order = permute(rows, heads, heads if ".attn_q." in name else kv_heads)[:, 0]
            data = data[torch.from_numpy(np.ascontiguousarray(order))]
        setattr(parent, attr, _stored_module(old, data, qtype, name, convert))
    if tied:
        embed = model.model.embed_tokens
        model.lm_head = (
            embed.as_linear() if isinstance(embed, QuantEmbedding) else _tied_linear(embed)
        )
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{path.name}: no weights for {left[:4]}")
    model.eval()
    return model


def kind_is_qk(name: str) -> bool:
    return ".attn_q." in name or ".attn_k." in name


def _stored_module(
    old: nn.Module, data: torch.Tensor, qtype: int, name: str, convert: str | None = None
) -> nn.Module:
    """The module holding ``data`` (a GGUF tensor of type ``qtype``) in place of ``old``; a
    matrix of a format without kernels converted to ``convert``'s blocks where given."""
    ggml = GGMLQuantizationType(qtype)
    if convert is not None and ggml not in FORMATS.values() and data.dim() == 2:
        weight = dequantize(data.numpy(), ggml).astype(np.float32)
        ggml = FORMATS[convert]
        qtype, data = int(ggml), torch.from_numpy(quantize(weight, ggml))
    if ggml in FLOAT_TYPES:
        weight = torch.from_numpy(dequantize(data.numpy(), ggml).astype(np.float32))
        if isinstance(old, nn.Embedding):
            return nn.Embedding.from_pretrained(weight, freeze=True)
        linear = nn.Linear(old.in_features, old.out_features, bias=False)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        return linear
    if ggml not in FORMATS.values():
        raise ValueError(
            f"{name} is {ggml.name}, which has no kernels here (supported: "
            f"{', '.join(f.upper() for f in FORMATS)}); set MODEL_DTYPE=float32 to dequantize, "
            "or MODEL_QUANTIZE=q8_0 (--quantize) to convert such matrices at load"
        )
    if isinstance(old, nn.Embedding):
        return QuantEmbedding(data, qtype, old.num_embeddings, old.embedding_dim)
    return QuantLinear(data, qtype, old.in_features, old.out_features)


def _tied_linear(embed: nn.Embedding) -> nn.Linear:
    linear = nn.Linear(embed.embedding_dim, embed.num_embeddings, bias=False)
    linear.weight = embed.weight
    return linear


def write_gguf(model: nn.Module, path: Path, fmt: str) -> Path:
    """Write a ``transformers`` LLaMA to ``path`` as a GGUF whose matrices are in block format
    ``fmt`` (``FORMATS``), quantized by ``gguf.quants``, norms in F32; q and k rows permuted as
    llama.cpp's converter stores them. For tests and benchmarks (random models): no tokenizer."""
    state = model.state_dict()

    def draw(name: str) -> np.ndarray:
        array = state[name].detach().to(torch.float32).contiguous().numpy()
        return quantize(array, FORMATS[fmt]) if array.ndim == 2 else array

    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    return write_tensors(model.config, shapes, draw, path, FORMATS[fmt])


def write_tensors(config, shapes: dict, draw, path: Path, qtype: GGMLQuantizationType) -> Path:
    """A LLaMA state dict as a GGUF at ``path``, with the metadata llama.cpp reads, streamed:
    ``shapes`` maps each name to its weights' shape and ``draw(name)`` gives that tensor when
    it is written (a matrix as blocks of GGML type ``qtype``, a norm fp32), so only one is held
    at a time. Any block type gguf knows (tests write Q4_K and Q6_K blocks they make)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    names = {hf: gg for gg, hf in _LAYER_TENSORS.items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    written = []  # (hf name, heads to permute q/k rows by, or 0)
    for name, shape in shapes.items():
        permute = 0
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        elif name == "lm_head.weight":
            if config.tie_word_embeddings:
                continue
            gguf_name = "output.weight"
        else:
            layer, _, rest = name.removeprefix("model.layers.").partition(".")
            kind = names[rest.removesuffix(".weight")]
            gguf_name = f"blk.{layer}.{kind}.weight"
            if kind in ("attn_q", "attn_k"):
                permute = heads if kind == "attn_q" else kv_heads
        if len(shape) == 1:
            writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), 4 * shape[0])
        else:
            row_bytes = round(shape[1] * bytes_per_weight(qtype))
            writer.add_tensor_info(
                gguf_name, (shape[0], row_bytes), np.dtype(np.uint8), shape[0] * row_bytes,
                raw_dtype=qtype,
            )  # fmt: skip
        written.append((name, permute))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, permute in written:
        array = draw(name)
        if permute:  # whole rows move: blocks stay intact
            rows = array.shape[0]
            array = array.reshape(permute, 2, rows // permute // 2, -1).swapaxes(1, 2)
            array = array.reshape(rows, -1)
        writer.write_tensor_data(np.ascontiguousarray(array))
    writer.close()
    return path


def stored_reference(model: nn.Module, fmt: str) -> nn.Module:
    """``model`` with every matrix replaced by its ``fmt`` round trip (quantized, then
    dequantized): the fp32 model holding what ``write_gguf`` stores (tests' reference)."""
    qtype = FORMATS[fmt]
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                stored = quantize(parameter.detach().numpy(), qtype)
                parameter.copy_(torch.from_numpy(dequantize(stored, qtype)))
    return model


def write_random_gguf(shape, path: Path, fmt: str, *, seed: int = 0) -> Path:
    """A LLaMA of ``shape`` (``config.ModelShape``) with seeded random weights, streamed tensor
    by tensor to ``path`` in block format ``fmt`` (a 7B-shaped Q4_0 file is never held whole,
    in fp32 or in blocks: each matrix is drawn, quantized and written). Matrices are
    N(0, 1/fan-in) as ``random_model.random_llama`` draws them; norms are 1. For benchmarks."""
    from transformers import LlamaForCausalLM

    from inference.random_model import llama_config

    config = llama_config(shape)
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    shapes = {name: tuple(meta.shape) for name, meta in skeleton.state_dict().items()}

    def draw(name: str) -> np.ndarray:
        rows, *cols = shapes[name]
        if not cols:
            return np.ones(rows, dtype=np.float32)
        weight = torch.empty(rows, cols[0]).normal_(0.0, cols[0] ** -0.5, generator=generator)
        return quantize(weight.numpy(), FORMATS[fmt])

    return write_tensors(config, shapes, draw, path, FORMATS[fmt])
