"""Row 4 of issue #7: the peer users would pick, `transformers.Trainer.hyperparameter_search` (optuna backend).

Same model, rows, search space, trial budget, seed and training settings as the unpruned zerotune sweep of
`benchmarks.sweep_costs`. The Trainer has no k-fold: it trains on fold 0's training rows and scores fold 0's
validation rows. Beside it: zerotune's cross-validated estimate of its own best configuration.
"""

from __future__ import annotations

import tempfile
import time


def hf_search(*, zerotune_summary: dict | None = None) -> dict:
    import numpy as np
    import optuna
    import torch
    from sklearn.metrics import f1_score
    from transformers import Trainer, TrainingArguments

    from benchmarks.sweep_costs import sweep_config
    from sweeps.preflight.data import encode, prepare_sweep
    from trainer.data import collate
    from trainer.model import load_base_model

    if zerotune_summary is None:  # run alone: make the zerotune side first
        from benchmarks.sweep_costs import run_pair

        zerotune_summary = run_pair()["none"]
    cfg = sweep_config("none", stamp="hf")
    examples, folds = prepare_sweep(cfg)
    encoded = encode(cfg, examples)
    train_rows, val_rows = folds.folds[0]
    space = cfg.search.space
    torch.set_num_threads(2)  # the zerotune worker's cpus_per_worker

    def model_init(trial=None):
        torch.manual_seed(cfg.seed)
        return load_base_model(cfg.model, cfg.task, label_names=encoded.label_names)

    def hp_space(trial: optuna.Trial) -> dict:
        return {
            "learning_rate": trial.suggest_float(
                "learning_rate", space.learning_rate.low, space.learning_rate.high, log=space.learning_rate.log
            ),
            "per_device_train_batch_size": trial.suggest_categorical(
                "per_device_train_batch_size", list(space.batch_size)
            ),
            "num_train_epochs": trial.suggest_int("num_train_epochs", space.epochs.low, space.epochs.high),
        }

    def collator(feats):
        return collate(encoded, np.array([f["row"] for f in feats]), cfg.task)

    def metrics(pred):
        return {
            "f1_macro": float(
                f1_score(
                    pred.label_ids,
                    pred.predictions.argmax(-1),
                    average="macro",
                    labels=list(range(len(encoded.label_names))),
                    zero_division=0,
                )
            )
        }

    trial_log = []

    def objective(m: dict) -> float:
        trial_log.append(m["eval_f1_macro"])
        print(f"  HF trial {len(trial_log)}/{cfg.search.num_trials}: macro-F1 {m['eval_f1_macro']:.4f}", flush=True)
        return m["eval_f1_macro"]

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_eval_batch_size=cfg.train.eval_batch_size,
            learning_rate=cfg.train.learning_rate,
            weight_decay=cfg.train.weight_decay,
            warmup_steps=cfg.train.warmup_ratio,
            max_grad_norm=cfg.train.max_grad_norm,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=cfg.seed,
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model_init=model_init,
            args=args,
            data_collator=collator,
            compute_metrics=metrics,
            train_dataset=[{"row": int(r)} for r in train_rows],
            eval_dataset=[{"row": int(r)} for r in val_rows],
        )
        started = time.time()
        best = trainer.hyperparameter_search(
            hp_space=hp_space,
            compute_objective=objective,
            n_trials=cfg.search.num_trials,
            direction="maximize",
            backend="optuna",
            sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        )
        hf_wall = time.time() - started

    zt_best = zerotune_summary["best"]
    return {
        "trials": cfg.search.num_trials,
        "rows": len(examples),
        "fold0_train": len(train_rows),
        "fold0_val": len(val_rows),
        "hf_trainer": {
            "wall_s": round(hf_wall, 1),
            "fits": cfg.search.num_trials,
            "best_fold0_f1_macro": round(best.objective, 4),
            "best_params": best.hyperparameters,
            "trial_scores": [round(x, 4) for x in trial_log],
        },
        "zerotune": {
            "wall_s": zerotune_summary["wall_s"],
            "fold_fits": zerotune_summary["fold_fits"],
            "best_fold0_f1_macro": round(zt_best["fold_scores"][0], 4),
            "best_cv_mean": round(zt_best["mean"], 4),
            "best_cv_std": round(zt_best["std"], 4),
            "best_params": zt_best["params"],
        },
        "wall_ratio_zerotune_vs_hf": round(zerotune_summary["wall_s"] / hf_wall, 2),
    }
