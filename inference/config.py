"""Model shapes: a frozen dataclass and a named table (gpt-fast style), for planning and tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a LLaMA-family decoder (SwiGLU MLP, grouped-query attention)."""

    name: str
    hidden_size: int  # d
    intermediate_size: int  # f, MLP neurons per layer
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        for field in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{self.name}: {field} must be positive")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: heads do not divide hidden size / kv heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_params_per_neuron(self) -> int:
        """One row of gate and up plus one column of down."""
        return 3 * self.hidden_size

    @property
    def mlp_params_per_layer(self) -> int:
        return self.intermediate_size * self.mlp_params_per_neuron

    @property
    def attention_params_per_layer(self) -> int:
        kv = self.num_kv_heads * self.head_dim
        return 2 * self.hidden_size * self.hidden_size + 2 * self.hidden_size * kv

    @property
    def embedding_params(self) -> int:
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden_size
        per_layer = self.mlp_params_per_layer + self.attention_params_per_layer
        return self.num_layers * per_layer + self.embedding_params + norms

    @property
    def mlp_fraction(self) -> float:
        """Share of weight bytes in MLPs: the most activation sparsity can skip."""
        return self.num_layers * self.mlp_params_per_layer / self.total_params

    @classmethod
    def from_hf_config(cls, config, name: str | None = None) -> ModelShape:
        """Shape of a ``transformers`` LLaMA-style config."""
        return cls(
            name=name or getattr(config, "name_or_path", "") or config.model_type,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            vocab_size=config.vocab_size,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llama-70b", 8192, 28672, 80, 64, 8, 32000),
        ModelShape("llama-2-7b", 4096, 11008, 32, 32, 32, 32000),
        ModelShape("tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000),
        ModelShape("smollm2-135m", 576, 1536, 30, 9, 3, 49152, tie_word_embeddings=True),
        ModelShape("tiny", 32, 96, 3, 4, 2, 64),  # the tests' model (inference.random_model)
    )
}


def shape_named(name: str) -> ModelShape:
    """Look up ``SHAPES[name]`` with a message listing the known names."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}") from None
