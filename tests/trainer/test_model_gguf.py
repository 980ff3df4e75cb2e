"""trainer.model on a GGUF file (tiny_models.tiny_gguf: a tiny random llama as llama.cpp's converter writes one)."""

import pytest


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from tiny_models import keyword_rows, tiny_gguf

    return tiny_gguf(tmp_path_factory.mktemp("gguf"), list(keyword_rows()["text"]))


def test_a_gguf_file_loads_as_the_dense_trainable_model_it_was_written_from(gguf, tmp_path):
    """Config, vocabulary and weights all come from the one file (llama.cpp's q/k row order undone on load), as
    plain dense weights: not marked quantized, so they train and `save_pretrained` exports them (a GGUF model left
    marked quantized refuses to save, and every export of a GGUF fit failed)."""
    import torch

    from trainer.config import ModelConfig
    from trainer.model import load_base_model, load_tokenizer

    path, written = gguf
    cfg = ModelConfig(path=str(path))
    tok = load_tokenizer(cfg)
    ids = torch.tensor([tok("the wonderful film")["input_ids"]])
    assert tok.decode(ids[0]) == "the wonderful film"
    model = load_base_model(cfg, "causal-lm").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, written.eval()(input_ids=ids).logits)
    clf = load_base_model(cfg, "classification", label_names=["a", "b", "c"])
    assert not clf.is_quantized and all(p.requires_grad and p.dtype == torch.float32 for p in clf.parameters())
    clf.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
