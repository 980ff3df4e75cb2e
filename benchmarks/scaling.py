"""Row 5 of issue #7: data-parallel scaling on CPU, 1 vs 2 Ray Train workers (gloo), ZeRO 0/1/2/3.

Both sides get the machine's 2 cores (1 worker x 2 CPUs, 2 workers x 1 CPU) and the same global batch
(samples per optimizer step), so the ratio is what data parallelism buys on one box. Each worker's resident
memory above its own start (after imports, before the model) is compared with what ZeRO's partitioning of
fp32 model states predicts.
"""

from __future__ import annotations

import time

CONFIG = "examples/classification.vader-tweets.yaml"
GLOBAL_BATCH = 16
STEPS = 8


def expected_model_state_mb(params: int, stage: int, world: int) -> float:
    """fp32 AdamW model states per worker under DeepSpeed, in MiB.

    Weights 4 B, gradients 4 B, Adam moments 8 B per parameter; DeepSpeed's ZeRO-1/2/3 optimizers also keep an
    fp32 copy of their partition (4 B). Stage 1 partitions moments+copy, stage 2 adds gradients, stage 3 weights.
    """
    per_param = {
        0: 4 + 4 + 8,
        1: 4 + 4 + (4 + 8) / world,
        2: 4 + (4 + 4 + 8) / world,
        3: (4 + 4 + 4 + 8) / world,
    }[stage]
    return params * per_param / 2**20


def one_fit(*, stage: int, workers: int, stamp: str) -> dict:
    import ray

    from sweeps.config import load_config
    from sweeps.final.train import run_fit

    cfg = load_config(
        CONFIG,
        [
            f"name=bench-scaling-{stamp}-z{stage}-w{workers}",
            "storage.path=./results/bench",
            "data.max_rows=600",
            "model.max_length=48",
            f"train.batch_size={GLOBAL_BATCH // workers}",
            f"train.max_steps_per_epoch={STEPS}",
            "train.epochs=1",
            "train.learning_rate=1e-4",
            f"deepspeed.zero_stage={stage}",
            f"scaling.num_workers={workers}",
            f"scaling.cpus_per_worker={2 // workers}",
            "split.validation_fraction=0.05",
        ],
    )
    started = time.time()
    summary = run_fit(cfg, export=False, worker_logs=False)
    ray.shutdown()  # a fresh cluster per fit: worker memory is measured per process lifetime
    memory = summary["memory"]
    above = [peak - start for start, peak in zip(memory["rss_start_mb"], memory["peak_rss_mb"], strict=True)]
    epoch = summary["history"][-1]
    return {
        "stage": stage,
        "workers": workers,
        "samples_per_s": epoch["samples_per_s"],
        "step_s": epoch["step_s"],
        "peak_rss_mb": memory["peak_rss_mb"],
        "rss_above_start_mb": [round(a, 1) for a in above],
        "expected_model_states_mb": round(expected_model_state_mb(summary["trainable_params"], stage, workers), 1),
        "params": summary["trainable_params"],
        "fit_wall_s": round(time.time() - started, 1),
    }


def scaling(*, stages=(0, 1, 2, 3)) -> dict:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for stage in stages:
        for workers in (1, 2):  # side by side, stage by stage: the ratio comes from adjacent runs
            row = one_fit(stage=stage, workers=workers, stamp=stamp)
            print(
                f"ZeRO-{stage} x{workers}: {row['samples_per_s']} samples/s, "
                f"memory above start {row['rss_above_start_mb']} MiB "
                f"(model states expected {row['expected_model_states_mb']} MiB)",
                flush=True,
            )
            rows.append(row)
    by = {(r["stage"], r["workers"]): r for r in rows}
    ratios = {
        f"zero{s}": {
            "throughput_2_vs_1": round(by[s, 2]["samples_per_s"] / by[s, 1]["samples_per_s"], 3),
            "memory_2_vs_1_measured": round(
                max(by[s, 2]["rss_above_start_mb"]) / max(by[s, 1]["rss_above_start_mb"]), 3
            ),
            "memory_2_vs_1_expected": round(
                by[s, 2]["expected_model_states_mb"] / by[s, 1]["expected_model_states_mb"], 3
            ),
        }
        for s in stages
    }
    return {"global_batch": GLOBAL_BATCH, "steps": STEPS, "runs": rows, "ratios": ratios}
