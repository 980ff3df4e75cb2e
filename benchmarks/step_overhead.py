"""Training-step throughput, side by side: a plain PyTorch loop, the Hugging Face Trainer, and a zerotune
fold fit (Ray Train, 1 worker, ZeRO-0, DeepSpeed) on the same model, rows, batch and step count.

Each contender's figure is the median step time after warm-up steps; the headline is the ratio of
zerotune's samples/s to the plain loop's, repeated `repeats` times (median and spread).
"""

from __future__ import annotations

import statistics
import tempfile
import time

CONFIG = "examples/classification.vader-tweets.yaml"


def _setup(rows: int, max_length: int):
    from sweeps.config import load_config
    from sweeps.preflight.data import encode, load_examples

    cfg = load_config(CONFIG, [f"data.max_rows={rows}", f"model.max_length={max_length}"])
    examples = load_examples(cfg, min_per_class=2)
    return cfg, encode(cfg, examples)


def _row_batches(encoded, *, steps: int, batch: int):
    import numpy as np

    order = np.random.default_rng(0).permutation(len(encoded))
    return [order[(i * batch) % (len(order) - batch) :][:batch] for i in range(steps)]


def plain_loop(cfg, encoded, *, steps: int, batch: int, warmup: int) -> float:
    """Median seconds per step of model -> loss -> backward -> AdamW (fused) -> scheduler."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from trainer.data import collate
    from trainer.model import load_base_model

    torch.manual_seed(0)
    model = load_base_model(cfg.model, "classification", label_names=encoded.label_names).train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.01, fused=True
    )  # as zerotune's DeepSpeed config
    sched = get_linear_schedule_with_warmup(opt, 1, steps)
    times = []
    for rows in _row_batches(encoded, steps=steps, batch=batch):
        t = time.perf_counter()  # collation included, as in zerotune's step
        loss = model(**collate(encoded, rows, "classification")).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times[warmup:])


def hf_trainer(cfg, encoded, *, steps: int, batch: int, warmup: int) -> float:
    """Median seconds per step of `transformers.Trainer` (CPU, no eval, no saving, no logging)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainer.model import load_base_model

    class Steps(TrainerCallback):
        def __init__(self):
            self.times, self.t = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t)

    import numpy as np

    from trainer.data import collate

    rows = [{"row": int(r)} for b in _row_batches(encoded, steps=steps, batch=batch) for r in b]
    torch.manual_seed(0)
    model = load_base_model(cfg.model, "classification", label_names=encoded.label_names)
    timer = Steps()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-4,
            weight_decay=0.01,
            warmup_steps=1,
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
            remove_unused_columns=False,
        )
        # Our own collation (dynamic padding per batch), as zerotune and the plain loop use.
        collator = lambda feats: collate(encoded, np.array([f["row"] for f in feats]), "classification")  # noqa: E731
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[timer]).train()
    return statistics.median(timer.times[warmup:])


def zerotune_fit(cfg, *, rows: int, steps: int, batch: int, max_length: int) -> float:
    """Median seconds per step inside a `zerotune train` fit: 1 Ray Train worker with both CPUs, ZeRO-0."""
    from sweeps.config import load_config
    from sweeps.final.train import run_fit

    fit_cfg = load_config(
        CONFIG,
        [
            "name=bench-step-overhead",
            "storage.path=./results/bench",
            f"data.max_rows={rows}",
            f"model.max_length={max_length}",
            f"train.batch_size={batch}",
            f"train.max_steps_per_epoch={steps}",
            "train.epochs=1",
            "train.learning_rate=1e-4",
            "deepspeed.zero_stage=0",
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=2",
            "split.validation_fraction=0.05",
        ],
    )
    summary = run_fit(fit_cfg, export=False, worker_logs=False)
    return summary["history"][-1]["step_s"]


def step_overhead(
    *, rows: int = 400, steps: int = 24, batch: int = 16, max_length: int = 64, warmup: int = 4, repeats: int = 3
) -> dict:
    import torch

    torch.set_num_threads(2)  # what the zerotune worker gets (cpus_per_worker=2)
    cfg, encoded = _setup(rows, max_length)
    runs = []
    for r in range(repeats):
        plain = plain_loop(cfg, encoded, steps=steps, batch=batch, warmup=warmup)
        hf = hf_trainer(cfg, encoded, steps=steps, batch=batch, warmup=warmup)
        zt = zerotune_fit(cfg, rows=rows, steps=steps, batch=batch, max_length=max_length)
        runs.append(
            {
                "plain_step_s": plain,
                "hf_trainer_step_s": hf,
                "zerotune_step_s": zt,
                "zerotune_vs_plain": plain / zt,
                "hf_vs_plain": plain / hf,
            }
        )
        print(
            f"repeat {r + 1}/{repeats}: plain {plain:.3f} s/step, HF Trainer {hf:.3f}, zerotune {zt:.3f} "
            f"(zerotune/plain throughput {plain / zt:.3f})",
            flush=True,
        )
    ratios = [r["zerotune_vs_plain"] for r in runs]
    return {
        "model": cfg.model.path,
        "batch": batch,
        "max_length": max_length,
        "steps": steps,
        "warmup_steps_excluded": warmup,
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        "zerotune_vs_plain_spread": [min(ratios), max(ratios)],
        "goal": "zerotune throughput within 5% of the plain loop (ratio >= 0.95)",
        "goal_met": statistics.median(ratios) >= 0.95,
    }
