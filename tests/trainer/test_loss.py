"""The training loss (trainer.loss) with bf16 predictions on CPU: what a bf16 GPU fit's regression head produces."""

import numpy as np
import pytest
import torch

from trainer.config import ModelConfig
from trainer.data import Encoded, collate
from trainer.loss import regression_loss, training_loss


def test_regression_loss_of_bf16_predictions_is_fp32_and_exact():
    # 257 is not a bf16 number (it rounds to 256): a loss computed in bf16 would see a perfect prediction here.
    predictions = torch.tensor([[256.0], [1.0], [-3.0]], dtype=torch.bfloat16, requires_grad=True)
    targets = torch.tensor([257.0, 1.5, -3.0])
    loss = regression_loss(predictions, targets)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx((1.0**2 + 0.5**2 + 0.0) / 3, rel=1e-6)
    loss.backward()
    assert predictions.grad.dtype == torch.bfloat16 and torch.isfinite(predictions.grad).all()
    # d/dp mean((p - t)^2) = 2 (p - t) / n: each prediction is pushed toward its own target
    assert predictions.grad.float().reshape(-1).tolist() == pytest.approx([-2 / 3, -1 / 3, 0.0], rel=1e-2)


def test_regression_loss_takes_a_batch_of_one():
    assert float(regression_loss(torch.tensor([[2.0]], dtype=torch.bfloat16), torch.tensor([0.0]))) == 4.0


def test_a_bf16_regression_model_trains_on_an_fp32_loss(tiny_bert_dir):
    """A real tiny BERT regression head cast to bf16 (as DeepSpeed's bf16 engine holds it), on a collated batch."""
    from trainer.model import load_model

    torch.manual_seed(0)
    model = load_model(ModelConfig(path=str(tiny_bert_dir), dropout=0.0), "regression").to(torch.bfloat16)
    rng = np.random.default_rng(0)
    encoded = Encoded(
        input_ids=[rng.integers(1000, 2000, size=6).astype(np.int32) for _ in range(4)],
        labels=np.array([0.25, -1.0, 1.0, 0.5], dtype=np.float32),
        loss_mask=None,
        pad_id=0,
        label_names=None,
    )
    batch = collate(encoded, np.arange(4), "regression")
    loss = training_loss(model, batch, "regression")

    assert loss.dtype == torch.float32
    with torch.no_grad():
        predictions = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = np.mean((predictions.float().numpy().reshape(-1) - encoded.labels) ** 2)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
