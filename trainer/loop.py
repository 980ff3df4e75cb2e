"""The Ray Train worker function: setup, then per fold (model, engine, train, evaluate, report), then cleanup.

Every rank runs the same number of forward passes and `ray.train.report`
calls (ZeRO-3 and Train V2 both need that). Metrics are reported each epoch
with a checkpoint; the checkpoint's `state.json` says which fold and epoch it
belongs to, so a restarted worker group resumes mid-sweep-trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainer.data import Encoded, collate
from trainer.ds_config import build_deepspeed_config
from trainer.methods import strip_virtual_tokens
from trainer.metrics import causal_lm_metrics, classification_metrics, regression_metrics, scalar_metrics
from trainer.spec import FitSpec

log = logging.getLogger("zerotune.trainer")
ENGINE_TAG = "engine"


def train_loop_per_worker(config: dict) -> None:
    # --- setup -----------------------------------------------------------
    # Library chatter (DeepSpeed logs to stdout) goes to stderr: the driver's stdout carries data (--format json).
    sys.stdout.flush()
    os.dup2(2, 1)
    import deepspeed
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    spec: FitSpec = config["spec"]
    encoded: Encoded = config["encoded"]
    if isinstance(encoded, ray.ObjectRef):
        encoded = ray.get(encoded)
    folds: list[tuple[np.ndarray, np.ndarray]] = config["folds"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device(f"cuda:{ctx.get_local_rank()}") if spec.use_gpu else torch.device("cpu")
    if spec.use_gpu:
        torch.cuda.set_device(device)
    else:
        _skip_cpu_inference_kernel()
    bf16_ok = spec.use_gpu and torch.cuda.is_bf16_supported()
    state = _resume_state(ray.train.get_checkpoint())
    oom = read_oom(spec.records_uri)
    if oom is not None:
        # The same batch would run out of memory again: end this fit, the driver fails it as out-of-memory.
        if rank == 0:
            log.warning("not retrying: out of memory at fold %s epoch %s step %s", oom["fold"], oom["epoch"], oom["step"])
        return
    rss_start_mb = _rss_mb()  # after imports, before any model: the baseline the memory figures are above
    fold_results: list[dict] = state["fold_results"]
    timings = {"train_s": 0.0, "eval_s": 0.0, "setup_s": 0.0, "checkpoint_s": 0.0}
    if rank == 0 and state["fold"] is not None:
        log.warning("resuming at fold %d after epoch %d", state["fold"], state["epoch"])

    if fold_results and len(fold_results) == len(folds):
        # Restored after the last fold was recorded (the driver died before it saw the end): report the
        # final result again, because Tune expects every trial's last result to carry the objective.
        last = fold_results[-1]
        report = completed_report(fold_results, spec, len(folds))
        _report(None, report, spec, last["fold"], last["epochs_run"] - 1, fold_results, last["history"], state["resumes"], save=False, name=f"checkpoint_f{last['fold']:02d}_final")
        return
    for fold, (train_rows, val_rows) in enumerate(folds):
        if fold < len(fold_results):
            continue  # finished before a restart
        # --- model and engine ---------------------------------------------
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed * 1009 + fold)
        from trainer.model import load_model

        model = load_model(spec.model, spec.task, label_names=encoded.label_names)
        micro_batches = _batches_per_rank(len(train_rows), world, spec.train.batch_size)
        if spec.train.max_steps_per_epoch:
            micro_batches = min(micro_batches, spec.train.max_steps_per_epoch * spec.train.grad_accum)
        steps_per_epoch = max(1, micro_batches // spec.train.grad_accum)
        ds_config = build_deepspeed_config(
            ds=spec.deepspeed, train=spec.train, world_size=world,
            steps_per_epoch=steps_per_epoch, device=device.type, bf16_supported=bf16_ok,
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in trainable)
        n_total = sum(p.numel() for p in model.parameters())
        engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
        if world == 1 and spec.deepspeed.zero_stage == 0:
            # An all-reduce over one rank is the identity, yet DeepSpeed still flattens, reduces and copies back
            # every gradient each step (~90 MB for MiniLM): skip it, as a single-process loop would.
            engine.enable_backward_allreduce = False
        start_epoch, history = 0, []
        if state["fold"] == fold:
            engine.load_checkpoint(state["dir"], tag=ENGINE_TAG)
            start_epoch, history = state["epoch"] + 1, state["history"]
        resumes = state["resumes"] if state["fold"] == fold or state["resumed_between_folds"] == fold else 0
        if rank == 0 and spec.records_uri:
            from trainer.storage import join, write_json

            if fold == 0:
                write_json(join(spec.records_uri, "deepspeed.json"), ds_config)
            # One marker per fold fit started: an audit trail that shows re-runs (and, by pid, which worker group).
            write_json(join(spec.records_uri, "starts", f"fold-{fold}-{time.time_ns()}.json"), {
                "fold": fold, "start_epoch": start_epoch, "pid": os.getpid(), "time": time.time(),
                "setup_s": round(time.perf_counter() - t0, 3),  # model load + DeepSpeed engine init
            })
        timings["setup_s"] += time.perf_counter() - t0

        before = None
        if spec.train.eval_before and start_epoch == 0:
            before = scalar_metrics(evaluate(engine, encoded, val_rows, spec, device, rank, world))

        # --- train and evaluate each epoch ----------------------------------
        best, best_snapshot = None, None
        # Early stopping exports the best epoch's weights: keep a snapshot of them (fits that export only).
        keep_best = bool(spec.export_uri and spec.train.early_stopping_patience and fold == len(folds) - 1)
        for epoch in range(start_epoch, spec.train.epochs):
            t_epoch = t0 = time.perf_counter()
            rows = _epoch_rows(train_rows, spec.seed, fold, epoch, rank, world)[: micro_batches * spec.train.batch_size]
            try:
                step_times, tokens = [], [0, 0]
                train_loss, diverged_at = _train_epoch(engine, encoded, rows, spec, device, fold, epoch, step_times, tokens)
                timings["train_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                metrics = evaluate(engine, encoded, val_rows, spec, device, rank, world)
                timings["eval_s"] += time.perf_counter() - t0
            except Exception as exc:
                if is_oom(exc):
                    _record_oom(spec, exc, fold=fold, epoch=epoch, rank=rank)
                raise
            metrics["train_loss"] = train_loss
            # Throughput of the steps themselves (median step, whole worker group): what the benchmarks compare.
            step_s = float(np.median(step_times)) if step_times else float("nan")
            history.append({
                "epoch": epoch, **scalar_metrics(metrics), "steps": len(step_times), "time": round(time.perf_counter() - t_epoch, 2),
                "step_s": round(step_s, 4), "samples_per_s": round(world * spec.train.batch_size / step_s, 2) if step_times else None,
                "tokens_per_s": round(world * tokens[0] / sum(step_times), 1) if step_times else None,
                "padded_tokens_per_s": round(world * tokens[1] / sum(step_times), 1) if step_times else None,
            })
            score = metrics.get(spec.metric, float("nan"))
            if best is None or _better(score, best[1], spec.mode):
                best = (epoch, score, metrics)
                if keep_best:
                    from trainer.export import snapshot

                    best_snapshot = snapshot(engine, spec=spec, encoded=encoded)
            stalled = _stalled(history, spec)
            last = epoch == spec.train.epochs - 1 or stalled or diverged_at is not None
            if last:
                scored = best[2] if spec.train.early_stopping_patience else metrics
                fold_results.append(
                    {
                        "fold": fold, "epochs_run": epoch + 1, "best_epoch": best[0] if spec.train.early_stopping_patience else epoch,
                        "stopped_early": bool(stalled and epoch < spec.train.epochs - 1),
                        "trainable_params": n_trainable, "total_params": n_total,
                        "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
                        "val_sha": rows_sha(val_rows),
                        "metrics": scored, "history": history,
                        "diverged": diverged_at, "resumes": resumes, "before": before,
                        "memory": _memory_by_rank(rss_start_mb, world),
                    }
                )
                if rank == 0 and spec.records_uri:
                    from trainer.storage import join, write_json

                    write_json(join(spec.records_uri, f"fold-{fold}.json"), fold_results[-1])
            if rank == 0:
                print(
                    f"fold {fold + 1}/{len(folds)} epoch {epoch + 1}/{spec.train.epochs}: train_loss {train_loss:.4f} "
                    f"{spec.metric} {score:.4f}, {history[-1]['samples_per_s'] or 0:.1f} samples/s"
                    + (" (early stop)" if stalled and not diverged_at else ""),
                    file=sys.stderr, flush=True,  # stdout stays clean for --format json
                )
            report = _report_metrics(fold_results, metrics, spec, fold, epoch, len(folds), timings, n_trainable, n_total)
            if diverged_at is not None:
                report["diverged"] = 1
                report["diverged_at"] = json.dumps(diverged_at)
            t0 = time.perf_counter()
            _report(engine, report, spec, fold, epoch, fold_results, history, resumes, save=spec.checkpoint_every_epoch or last)
            timings["checkpoint_s"] += time.perf_counter() - t0
            if diverged_at is not None:
                return  # every rank saw the same all-reduced loss, so every rank stops here
            if last:
                break
        # --- export (one fold fits only: `zerotune train` and refits) --------
        if spec.export_uri and fold == len(folds) - 1:
            from trainer.export import export_model

            if keep_best and best_snapshot is None and rank == 0:
                log.warning("the best epoch was before a restart: exporting the last epoch's weights")
            export_model(engine, spec=spec, encoded=encoded, rank=rank, best=best_snapshot)
        del engine, model
        state = {**_EMPTY, "fold_results": fold_results}
    if dist.is_initialized():
        dist.barrier()


# --- helpers: each a step of the recipe above -------------------------------


def _skip_cpu_inference_kernel() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shared-memory all-reduce kernel.

    DeepSpeed's torch backend builds it at init on CPU, but only `inference_all_reduce` uses it; training
    all-reduces go through torch.distributed (gloo). The build needs a C++ toolchain and took 63 s on the
    first fit of every fresh virtualenv here. Marking the op incompatible is DeepSpeed's own "skip" path.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _memory_by_rank(rss_start_mb: float, world: int) -> dict:
    """Each rank's resident memory at start and its peak so far (MiB): what ZeRO partitioning should shrink."""
    import resource

    import torch.distributed as dist

    mine = [round(rss_start_mb, 1), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)]
    everyone = [mine] * world
    if dist.is_initialized() and world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    return {"rss_start_mb": [m[0] for m in everyone], "peak_rss_mb": [m[1] for m in everyone]}


def _batches_per_rank(n_rows: int, world: int, batch: int) -> int:
    per_rank = n_rows // world
    return max(1, math.ceil(per_rank / batch)) if per_rank else 0


def _epoch_rows(train_rows: np.ndarray, seed: int, fold: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's shard of a seeded shuffle; every rank gets the same count."""
    perm = np.random.default_rng([seed, fold, epoch]).permutation(train_rows)
    per_rank = len(perm) // world
    return perm[rank::world][:per_rank]


def _fault_applies(spec: FitSpec) -> bool:
    """Test hooks fire only for fits whose records path contains ZEROTUNE_FAULT_ONLY (when set)."""
    only = os.environ.get("ZEROTUNE_FAULT_ONLY")
    return not only or only in (spec.records_uri or "")


def _maybe_inject_fault(spec: FitSpec, fold: int, epoch: int, step: int) -> None:
    """Test hook: ZEROTUNE_FAULT_KILL_AT='fold:epoch:step:marker' SIGKILLs this process once."""
    plan = os.environ.get("ZEROTUNE_FAULT_KILL_AT")
    if not plan or not _fault_applies(spec):
        return
    f, e, s, marker = plan.split(":", 3)
    if (fold, epoch, step) == (int(f), int(e), int(s)) and not Path(marker).exists():
        import ray.train

        if ray.train.get_context().get_world_rank() == 0:
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def _maybe_limit_memory(batch: int) -> None:
    """Test hook: ZEROTUNE_FAULT_OOM_BATCH=N caps the address space at its current size once a
    batch of N or more rows trains, so the step's next allocation fails as a real OOM would."""
    limit = os.environ.get("ZEROTUNE_FAULT_OOM_BATCH")
    if limit and batch >= int(limit):
        import resource

        import torch

        # oneDNN's kernels would fail first, with a generic "could not create a primitive"; the
        # plain kernels allocate through torch's CPU allocator, whose failure names memory.
        torch.backends.mkldnn.enabled = False
        size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (size, resource.RLIM_INFINITY))


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM, Python MemoryError, or the CPU allocator's failure (a RuntimeError)."""
    import torch

    text = str(exc)
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text or "out of memory" in text.lower()


def _record_oom(spec: FitSpec, exc: BaseException, *, fold: int, epoch: int, rank: int) -> None:
    """Write records/oom-rank<r>.json so that the restart stops and the trial is failed as out-of-memory."""
    import resource

    import torch

    # Give back what an allocation limit (or a full GPU) took, so the record can be written.
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    where = {"fold": fold, "epoch": epoch, "step": getattr(exc, "zerotune_step", None), "rank": rank,
             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    log.error("out of memory at fold %d epoch %d step %s (rank %d): %s", fold, epoch, where["step"], rank, where["error"])
    if spec.records_uri:
        from trainer.storage import join, write_json

        write_json(join(spec.records_uri, f"oom-rank{rank}.json"), where)


def read_oom(records_uri: str | None) -> dict | None:
    """The first out-of-memory record of a fit, or None."""
    if not records_uri:
        return None
    from trainer.storage import join, list_dir, read_json

    names = sorted(n for n in list_dir(records_uri) if n.startswith("oom-") and n.endswith(".json"))
    return read_json(join(records_uri, names[0])) if names else None


def _train_epoch(engine, encoded: Encoded, rows: np.ndarray, spec: FitSpec, device, fold: int, epoch: int, step_times: list, tokens: list):
    """One epoch; returns (mean loss, None) or (nan, where it diverged).

    Appends each step's seconds to `step_times` and adds this rank's (real, padded) token counts to `tokens`.
    """
    import torch
    import torch.distributed as dist

    engine.train()
    batch = spec.train.batch_size
    total, count = 0.0, 0
    for step, start in enumerate(range(0, len(rows), batch)):
        t_step = time.perf_counter()
        _maybe_inject_fault(spec, fold, epoch, step)
        _maybe_limit_memory(batch)
        inputs = {k: v.to(device) for k, v in collate(encoded, rows[start : start + batch], spec.task).items()}
        try:
            loss = engine(**inputs).loss
            engine.backward(loss)
            engine.step()
        except Exception as exc:
            exc.zerotune_step = step  # where, for the out-of-memory record
            raise
        seen = loss.detach().float().reshape(1).clone()
        if dist.is_initialized():
            dist.all_reduce(seen)
            seen /= dist.get_world_size()
        value = float(seen.item())
        if not math.isfinite(value):
            return float("nan"), {"fold": fold, "epoch": epoch, "step": step, "loss": str(value)}
        total += value
        count += 1
        step_times.append(time.perf_counter() - t_step)
        tokens[0] += int(inputs["attention_mask"].sum())
        tokens[1] += int(inputs["attention_mask"].numel())
    return total / max(count, 1), None


def evaluate(engine, encoded: Encoded, val_rows: np.ndarray, spec: FitSpec, device, rank: int, world: int) -> dict:
    """Each rank scores its shard; shards are padded so all ranks run the same forwards; results gathered."""
    import torch
    import torch.distributed as dist

    engine.eval()
    mine = val_rows[rank::world]
    bs = spec.train.eval_batch_size
    n_batches = math.ceil(math.ceil(len(val_rows) / world) / bs)
    outputs, rows_seen = [], []
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for b in range(n_batches):
            rows = mine[b * bs : (b + 1) * bs]
            real = len(rows)
            if real == 0:
                rows = val_rows[:1]  # a dummy forward keeps ZeRO-3's collectives in step
            inputs = {k: v.to(device) for k, v in collate(encoded, rows, spec.task).items()}
            out = engine(**inputs)
            if real == 0:
                continue
            if spec.task == "causal-lm":
                logits = strip_virtual_tokens(out.logits, inputs["labels"].size(1))[:, :-1].float()
                labels = inputs["labels"][:, 1:]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum")
                loss_sum += float(loss)
                tokens += int((labels != -100).sum())
            else:
                outputs.append(out.logits.float().cpu().numpy())
                rows_seen.append(rows)
    engine.train()
    if spec.task == "causal-lm":
        totals = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(totals)
        return causal_lm_metrics(float(totals[0]), int(totals[1]))
    local = (np.concatenate(rows_seen) if rows_seen else np.zeros(0, dtype=np.int64),
             np.concatenate(outputs) if outputs else None)
    gathered = [None] * world
    if dist.is_initialized() and world > 1:
        dist.all_gather_object(gathered, local)
    else:
        gathered = [local]
    idx = np.concatenate([g[0] for g in gathered])
    logits = np.concatenate([g[1] for g in gathered if g[1] is not None])
    order = np.argsort(idx, kind="stable")
    idx, logits = idx[order], logits[order]
    labels = encoded.labels[idx]
    if spec.task == "regression":
        preds = logits.reshape(-1)
        return regression_metrics(preds, labels, eval_loss=float(np.mean((preds - labels) ** 2)))
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    eval_loss = float(-logp[np.arange(len(labels)), labels].mean())
    return classification_metrics(logits, labels, encoded.label_names, eval_loss=eval_loss)


def _better(a: float, b: float, mode: str) -> bool:
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return a > b if mode == "max" else a < b


def _stalled(history: list[dict], spec: FitSpec) -> bool:
    patience = spec.train.early_stopping_patience
    if not patience or len(history) <= patience:
        return False
    scores = [h.get(spec.metric, float("nan")) for h in history]
    best_at = max(range(len(scores)), key=lambda i: (scores[i] if spec.mode == "max" else -scores[i]) if math.isfinite(scores[i]) else -math.inf)
    return len(scores) - 1 - best_at >= patience


def _report_metrics(fold_results, metrics, spec: FitSpec, fold, epoch, k, timings, n_trainable, n_total) -> dict:
    """Flat scalars for Tune: this epoch, the finished folds' running mean (the objective) and costs."""
    done = [r["metrics"].get(spec.metric, float("nan")) for r in fold_results]
    current = metrics.get(spec.metric, float("nan"))
    # Before the first fold ends, the running mean is the current epoch's score so that
    # Tune always sees the objective; schedulers only act on folds_done milestones.
    running = float(np.mean(done)) if done else float(current)
    out = {f"epoch_{k_}": v for k_, v in scalar_metrics(metrics).items()}
    out.update(
        {
            "fold": fold, "epoch": epoch, "folds_done": len(fold_results), "folds_total": k,
            "objective": running,
            "objective_std": float(np.std(done)) if len(done) > 1 else 0.0,
            "trainable_params": n_trainable, "total_params": n_total,
            **{f"time_{k_}": v for k_, v in timings.items()},
        }
    )
    for i, r in enumerate(fold_results):
        out[f"fold{i}_{spec.metric}"] = r["metrics"].get(spec.metric, float("nan"))
    return out


def rows_sha(rows) -> str:
    """Which rows a fold validated on: a record from another split never counts as this fold's."""
    return hashlib.sha1(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def completed_report(fold_results: list[dict], spec: FitSpec, k: int) -> dict:
    """The last report of a fit whose every fold is recorded, for Tune to see again after a restart."""
    last = fold_results[-1]
    timings = {"train_s": 0.0, "eval_s": 0.0, "setup_s": 0.0, "checkpoint_s": 0.0}  # nothing ran in this session
    return _report_metrics(fold_results, last["metrics"], spec, last["fold"], last["epochs_run"] - 1, k, timings, last["trainable_params"], last["total_params"])


def _report(engine, metrics: dict, spec: FitSpec, fold: int, epoch: int, fold_results, history, resumes: int, *, save: bool, name: str | None = None) -> None:
    """Report with a checkpoint (Train V2 keeps metrics only with one). Every rank calls this."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="zt-ckpt-") as tmp:
        if save:
            engine.save_checkpoint(tmp, tag=ENGINE_TAG)
        if ray.train.get_context().get_world_rank() == 0:
            state = {"fold": fold, "epoch": epoch, "engine_saved": save, "fold_results": fold_results, "history": history, "resumes": resumes}
            Path(tmp, "state.json").write_text(json.dumps(state, default=float))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name or f"checkpoint_f{fold:02d}_e{epoch:03d}")


_EMPTY = {"fold": None, "epoch": None, "dir": None, "history": [], "fold_results": [], "resumes": 0, "resumed_between_folds": None}


def _resume_state(checkpoint) -> dict:
    """Where to restart from; a checkpoint without a complete state.json is ignored."""
    if checkpoint is None:
        return dict(_EMPTY)
    local = Path(tempfile.mkdtemp(prefix="zt-restore-"))
    checkpoint.to_directory(str(local))
    try:
        state = json.loads((local / "state.json").read_text())
    except (OSError, ValueError):
        log.warning("ignoring a checkpoint without a readable state.json: %s", checkpoint.path)
        return dict(_EMPTY)
    fold_results = state["fold_results"]
    resumes = state.get("resumes", 0) + 1
    fold_done = len(fold_results) > state["fold"]  # the checkpoint was taken as its fold ended
    if fold_done or not state.get("engine_saved") or not (local / ENGINE_TAG).is_dir():
        # Restart at the first unfinished fold, from scratch.
        return {**_EMPTY, "fold_results": fold_results, "resumes": resumes, "resumed_between_folds": len(fold_results)}
    return {**_EMPTY, "fold": state["fold"], "epoch": state["epoch"], "dir": str(local), "history": state["history"], "fold_results": fold_results, "resumes": resumes}
