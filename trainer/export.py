"""Export a trained engine as a plain Hugging Face model directory (weights gathered from ZeRO partitions)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainer.data import Encoded, collate
from trainer.spec import FitSpec

PROBE_ROWS = 16


def full_state_dict(engine) -> dict | None:
    """Every rank must call this (ZeRO-3 gathers collectively); rank 0 gets the weights, others None."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()} if rank == 0 else None


def export_model(engine, *, spec: FitSpec, encoded: Encoded, rank: int, probe_rows: np.ndarray | None = None, card: dict | None = None) -> None:
    """Write model + tokenizer + label mapping + the engine's own predictions on a probe batch."""
    import torch

    from trainer.model import load_tokenizer
    from trainer.storage import filesystem

    # A refit passes its test rows (and the card) through spec.tags: the loop calls this with defaults.
    if probe_rows is None and spec.tags.get("probe_rows") is not None:
        probe_rows = np.asarray(spec.tags["probe_rows"], dtype=np.int64)
    card = card if card is not None else spec.tags.get("card")
    rows = probe_rows if probe_rows is not None else np.arange(min(PROBE_ROWS, len(encoded)))
    engine.eval()
    with torch.no_grad():
        device = next(engine.module.parameters()).device
        inputs = {k: v.to(device) for k, v in collate(encoded, rows, spec.task).items()}
        logits = engine(**inputs).logits.float().cpu().numpy()
    state = full_state_dict(engine)
    if rank != 0:
        return
    with tempfile.TemporaryDirectory(prefix="zt-export-") as tmp:
        out = Path(tmp)
        model = engine.module
        model.save_pretrained(out, state_dict=state, safe_serialization=True)
        load_tokenizer(spec.model).save_pretrained(out)
        if encoded.label_names is not None:
            (out / "labels.json").write_text(json.dumps({"labels": encoded.label_names}, indent=2))
        # What `zerotune predict` needs to tokenize new rows as training did.
        (out / "zerotune.json").write_text(json.dumps({"task": spec.task, "max_length": spec.model.max_length, "labels": encoded.label_names}, indent=2))
        probe = {
            "task": spec.task,
            "row_ids": [int(i) for i in rows],
            "rows": [encoded.input_ids[i].tolist() for i in rows],
            "logits_shape": list(logits.shape),
            # causal-lm logits are large; the probe keeps the last position's argmax per row
            "values": (logits.argmax(-1)[:, :].tolist() if spec.task == "causal-lm" else logits.tolist()),
        }
        (out / "engine_predictions.json").write_text(json.dumps(probe))
        (out / "README.md").write_text(model_card(spec, encoded, card or {}))
        target = spec.export_uri
        if "://" not in target:
            dest = Path(target).expanduser()
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(out, dest)
        else:
            import pyarrow.fs as pafs

            fs, path = filesystem(target)
            pafs.copy_files(str(out), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def model_card(spec: FitSpec, encoded: Encoded, card: dict) -> str:
    lines = [
        "---",
        "library_name: transformers",
        f"tags: [zerotune, {spec.task}]",
        "---",
        f"# Fine-tuned with zerotune ({spec.task})",
        "",
        f"- base model: `{spec.model.path}`",
        f"- hyperparameters: learning_rate={spec.train.learning_rate:g}, batch_size={spec.train.batch_size}, "
        f"epochs={spec.train.epochs}, weight_decay={spec.train.weight_decay:g}, optimizer={spec.train.optimizer}, "
        f"zero_stage={spec.deepspeed.zero_stage}",
    ]
    if encoded.label_names:
        lines.append(f"- labels: {', '.join(encoded.label_names)}")
    for key, value in card.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Reload with `AutoModelForSequenceClassification.from_pretrained(dir)` (or `AutoModelForCausalLM`).", ""]
    return "\n".join(lines)
