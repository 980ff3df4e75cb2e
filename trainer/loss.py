"""The loss a training step backpropagates, per task.

Classification and causal LM take the model's own cross-entropy (transformers upcasts causal-LM logits to fp32
itself). Regression computes its MSE here, in fp32, whatever the model's dtype: under bf16 (the default precision
on GPUs) the head predicts in bf16 against fp32 targets, and the model's own MSE would then depend on how torch
promotes mixed dtypes in the loss and its backward, and on squeezing (batch, 1) logits to (batch,).
"""

from __future__ import annotations

from trainer.config import Task


def training_loss(model, inputs: dict, task: Task):
    """`model`'s loss on one batch (`inputs` as trainer.data.collate makes them), an fp32 scalar for regression."""
    if task != "regression":
        return model(**inputs).loss
    features = {k: v for k, v in inputs.items() if k != "labels"}
    return regression_loss(model(**features).logits, inputs["labels"])


def regression_loss(predictions, targets):
    """Mean squared error of (batch, 1) or (batch,) predictions against (batch,) targets, computed in fp32."""
    import torch

    return torch.nn.functional.mse_loss(predictions.float().reshape(-1), targets.float().reshape(-1))
