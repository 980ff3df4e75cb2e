"""Export a trained engine as a plain Hugging Face model directory (weights gathered from ZeRO partitions)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainer.data import Encoded, collate
from trainer.methods import strip_virtual_tokens
from trainer.spec import FitSpec
from zerotune.errors import ZerotuneError

PROBE_ROWS = 16
CARD = "README.md"
META = "zerotune.json"  # what predict, the card and `zerotune push` read back from an export


def full_state_dict(engine) -> dict | None:
    """Every rank must call this (ZeRO-3 gathers collectively); rank 0 gets the weights, others None."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    # clone: on CPU .cpu() aliases the live parameters, and a snapshot must not follow later steps
    return {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()} if rank == 0 else None


def snapshot(engine, *, spec: FitSpec, encoded: Encoded) -> dict:
    """The engine's weights (rank 0; gathered under ZeRO-3) and its logits on the probe rows, as of now.

    Every rank must call this. Early stopping keeps the best epoch's snapshot so
    the export holds the weights the fold was scored with, not the last epoch's.
    """
    import torch

    rows = probe_rows_for(spec, encoded)
    engine.eval()
    with torch.no_grad():
        device = next(engine.module.parameters()).device
        inputs = {k: v.to(device) for k, v in collate(encoded, rows, spec.task).items()}
        logits = engine(**inputs).logits
        if spec.task == "causal-lm":
            logits = strip_virtual_tokens(logits, inputs["input_ids"].size(1))
        logits = logits.float().cpu().numpy()
    engine.train()
    return {"state": full_state_dict(engine), "logits": logits, "rows": rows}


def probe_rows_for(spec: FitSpec, encoded: Encoded) -> np.ndarray:
    """The spec's probe rows (a refit: its test rows), else the first rows."""
    if spec.probe_rows:
        return np.asarray(spec.probe_rows, dtype=np.int64)
    return np.arange(min(PROBE_ROWS, len(encoded)))


def export_model(engine, *, spec: FitSpec, encoded: Encoded, rank: int, best: dict | None = None) -> None:
    """Write model + tokenizer + label mapping + the engine's own predictions on a probe batch to spec.export_uri.

    Every rank calls this (ZeRO-3 gathers the weights collectively); rank 0 writes.
    `best`: a `snapshot` to export instead of the engine's current weights (early stopping).
    """
    from trainer.model import load_tokenizer

    snap = best or snapshot(engine, spec=spec, encoded=encoded)
    if rank != 0:
        return
    with tempfile.TemporaryDirectory(prefix="zt-export-") as tmp:
        out = Path(tmp)
        fmt, dtype = export_format(spec.model), export_dtype(spec.model, engine.module)
        if fmt == "full":
            save_full(engine.module, snap["state"], out=out, dtype=dtype)
        else:
            save_peft(snap["state"], spec=spec, label_names=encoded.label_names, out=out, fmt=fmt, dtype=dtype)
        tokenizer = load_tokenizer(spec.model)
        tokenizer.save_pretrained(out)
        if encoded.label_names is not None:
            (out / "labels.json").write_text(json.dumps({"labels": encoded.label_names}, indent=2))
        model_eos = getattr(getattr(engine.module, "generation_config", None), "eos_token_id", None)
        meta = _meta(spec, encoded, fmt, tokenizer=tokenizer, model_eos=model_eos)
        (out / META).write_text(json.dumps(meta, indent=2))
        (out / "engine_predictions.json").write_text(json.dumps(_probe(spec, encoded, snap)))
        (out / CARD).write_text(model_card(spec, encoded, environment=meta["environment"]))
        _copy_out(out, spec.export_uri)


def _meta(spec: FitSpec, encoded: Encoded, fmt: str, *, tokenizer, model_eos=None) -> dict:
    """What `zerotune predict` needs to load the model and treat new rows as training did (the preprocessing
    record), and the runtime of the worker that trained it."""
    from trainer.model import locate
    from trainer.preprocessing import with_tokenizer
    from zerotune.environment import runtime

    base, gguf = locate(spec.model)
    stops = None
    if spec.task == "causal-lm":
        from trainer.generate import stop_ids

        stops = stop_ids(encoded, tokenizer, model_eos)
    return {
        "task": spec.task,
        "max_length": spec.model.max_length,
        "labels": encoded.label_names,
        "paired": encoded.paired,  # trained on text + text_pair: predict needs both columns
        "method": spec.model.method,
        "format": fmt,
        "base_model": base,
        "gguf_file": gguf,
        "preprocessing": with_tokenizer(spec.preprocessing, tokenizer, stop_token_ids=stops)
        if spec.preprocessing
        else None,
        "environment": runtime(),
    }


def _probe(spec: FitSpec, encoded: Encoded, snap: dict) -> dict:
    """The probe rows' tokens and the engine's outputs on them: a reload must reproduce these."""
    logits, rows = snap["logits"], snap["rows"]
    return {
        "task": spec.task,
        "row_ids": [int(i) for i in rows],
        "rows": [encoded.input_ids[i].tolist() for i in rows],
        "logits_shape": list(logits.shape),
        # causal-lm logits span the vocabulary at every position: the probe keeps each position's argmax token
        "values": logits.argmax(-1).tolist() if spec.task == "causal-lm" else logits.tolist(),
    }


def _copy_out(out: Path, target: str) -> None:
    """Replace `target` (a local directory or a URI) with the directory `out`."""
    if "://" not in target:
        dest = Path(target).expanduser()
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(out, dest)
        return
    import pyarrow.fs as pafs

    from trainer.storage import filesystem

    fs, path = filesystem(target)
    pafs.copy_files(str(out), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def export_format(cfg) -> str:
    """full (plain model), merged (LoRA folded into the weights) or adapter (PEFT adapter + head)."""
    if cfg.method in ("full", "partial"):
        return "full"
    if cfg.export_format == "auto":
        return "merged" if cfg.method == "lora" else "adapter"
    return cfg.export_format


def export_dtype(cfg, module):
    """model.export_dtype as a torch dtype; auto: the dtype the engine trained the weights in."""
    import torch

    if cfg.export_dtype == "auto":
        return next(module.parameters()).dtype
    return getattr(torch, cfg.export_dtype)


def save_full(module, state: dict, *, out: Path, dtype) -> None:
    """The engine's module saved with `state` (the gathered weights) in `dtype`; config.json names that dtype."""
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    trained_in, cached = module.config.dtype, getattr(module.config, "use_cache", None)
    module.config.dtype = dtype  # what `from_pretrained(dir, dtype="auto")` reads back
    if cached is not None:
        # Gradient checkpointing turned the KV cache off for training; generation with the exported model wants it.
        module.config.use_cache = True
    try:
        module.save_pretrained(out, state_dict=cast, safe_serialization=True)
    finally:
        module.config.dtype = trained_in
        if cached is not None:
            module.config.use_cache = cached


def save_peft(state: dict, *, spec: FitSpec, label_names, out: Path, fmt: str, dtype) -> None:
    """Load the gathered weights into a fresh fp32 PEFT model on rank 0 (the merge's arithmetic in fp32), then merge
    or keep the adapter, in `dtype`. A 4-bit base is merged into the base model's own (unquantized) weights: only the
    adapters and the head are taken from the fit."""
    from trainer.model import load_model

    fresh = load_model(
        spec.model.model_copy(update={"torch_dtype": "float32", "quantization": "none"}),
        spec.task,
        label_names=label_names,
    )
    if spec.model.quantization == "none":
        fresh.load_state_dict(state)
    else:
        trained = {k: v for k, v in state.items() if "lora_" in k or "modules_to_save" in k}
        load_trained_only(fresh, trained)
    model = fresh.merge_and_unload() if fmt == "merged" else fresh
    model.to(dtype).save_pretrained(out, safe_serialization=True)


def load_trained_only(model, trained: dict) -> None:
    """Load the fit's adapters (and saved heads) into `model`, whose other weights stay the base's. Non-strict, so
    it must check itself: a key the model lacks, or no adapter at all, would otherwise export the bare base."""
    result = model.load_state_dict(trained, strict=False)
    loaded = [k for k in trained if k not in result.unexpected_keys]
    if result.unexpected_keys or not any("lora_" in k for k in loaded):
        shown = ", ".join(result.unexpected_keys[:3]) or "none"
        raise ZerotuneError(
            f"the export would lose the trained adapters: {len(loaded)} of {len(trained)} trained weights match the "
            f"model (unmatched: {shown})",
            field="model.quantization",
            fix="the fit's module names differ from a fresh model of model.path: export with model.quantization: none",
        )


def load_exported(model_dir, *, task: str | None = None):
    """(model in eval mode, zerotune.json metadata) from an exported directory: full, merged or adapter."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    path = Path(model_dir)
    meta = json.loads((path / META).read_text()) if (path / META).is_file() else {}
    task = task or meta.get("task", "classification")
    cls = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    if not (path / "adapter_config.json").is_file():
        return cls.from_pretrained(path).eval(), meta
    from peft import PeftModel

    base_path = (
        meta.get("base_model") or json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    gguf = {"gguf_file": meta["gguf_file"]} if meta.get("gguf_file") else {}
    config = AutoConfig.from_pretrained(base_path, **gguf)
    if task == "regression":
        config.num_labels, config.problem_type = 1, "regression"
    elif task == "classification":
        labels = meta.get("labels") or []
        config.num_labels, config.id2label = len(labels), dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    extra = {} if task == "causal-lm" else {"ignore_mismatched_sizes": True}  # the adapter carries the trained head
    base = cls.from_pretrained(base_path, config=config, **gguf, **extra)
    return PeftModel.from_pretrained(base, path).eval(), meta


def write_model_card(spec: FitSpec, encoded: Encoded, *, results: dict | None = None, environment=None) -> None:
    """(Re)write the exported model's card, e.g. once the refit's test metrics are known (`results`, see
    trainer.card.build_card); `environment` defaults to the runtime the export recorded."""
    from trainer.storage import exists, join, read_json, write_bytes

    meta_uri = join(spec.export_uri, META)
    if environment is None and exists(meta_uri):
        environment = read_json(meta_uri).get("environment")
    card = model_card(spec, encoded, results=results, environment=environment)
    write_bytes(join(spec.export_uri, CARD), card.encode("utf-8"))


def model_card(spec: FitSpec, encoded: Encoded, *, results: dict | None = None, environment=None) -> str:
    """The model card (README.md) as text: hub metadata and body (trainer.card)."""
    from trainer.card import build_card

    card = build_card(
        spec, encoded.label_names, fmt=export_format(spec.model), results=results, environment=environment
    )
    return str(card)
