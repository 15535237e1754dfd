import pytest

from inference.config import SHAPES, ModelShape, shape_named


def test_table_has_the_named_shapes():
    llama = SHAPES["llama-70b"]
    assert (llama.hidden_size, llama.intermediate_size, llama.num_layers) == (8192, 28672, 80)
    assert (llama.num_heads, llama.num_kv_heads, llama.vocab_size) == (64, 8, 32000)
    assert {"llama-2-7b", "smollm2-135m", "tiny"} <= set(SHAPES)


def test_llama_2_7b_parameter_count_and_mlp_share():
    shape = shape_named("llama-2-7b")
    assert shape.total_params == pytest.approx(6.74e9, rel=0.01)
    assert 0.6 < shape.mlp_fraction < 0.7  # RESEARCH.md: the MLP is ~65-75 % of the bytes


def test_tinyllama_shape_has_its_published_parameter_count():
    assert SHAPES["tinyllama-1.1b"].total_params == pytest.approx(1.1e9, rel=0.01)


def test_smollm2_shape_counts_tied_embeddings_once():
    assert SHAPES["smollm2-135m"].total_params == pytest.approx(134.5e6, rel=0.01)


def test_unknown_shape_and_bad_dimensions():
    with pytest.raises(ValueError, match="known: llama-70b"):
        shape_named("gpt-5")
    with pytest.raises(ValueError, match="heads"):
        ModelShape("bad", 100, 10, 1, 3, 1, 10)
