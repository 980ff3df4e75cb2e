"""sweeps/preflight/memory: the per-GPU estimate agrees with DeepSpeed's own estimators, and pre-flight refuses a
trial that cannot fit its GPU with the fixes that make it fit. Models are configs only (meta device, no weights)."""

import json
import re
from dataclasses import replace

import pytest

from sweeps.config import load_config
from sweeps.preflight.checks import check_fit
from sweeps.preflight.memory import GIB, estimate, model_states, worst_setup
from zerotune.errors import ConfigError

# Llama-style sizes: (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings)
LLAMAS = {
    "0.1B": (768, 2048, 8, 12, 12, 32000, False),
    "1B": (2048, 8192, 16, 32, 8, 128256, True),  # Llama-3.2-1B
    "7B": (4096, 11008, 32, 32, 32, 32000, False),  # Llama-2-7B
    "70B": (8192, 28672, 80, 64, 8, 32000, False),  # Llama-2-70B
}


def _llama_dir(tmp_path, size):
    from transformers import LlamaConfig

    h, inter, layers, heads, kv, vocab, tied = LLAMAS[size]
    config = LlamaConfig(
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    )
    path = tmp_path / f"llama-{size}"
    config.save_pretrained(path)  # config.json only
    return path, config


def _on_meta(config):
    """(total parameters, largest single module's own parameters) of the model built on the meta device, counted
    as DeepSpeed's `model_to_params` does (tied weights once)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def _cfg(tmp_path, model_dir, *, gpus, stage=2, offload_optimizer=False, offload_params=False, **over):
    raw = {
        "name": "m",
        "task": "causal-lm",
        "model": {"path": str(model_dir), "max_length": 2048},
        "data": {"path": str(tmp_path / "unused.csv")},
        "train": {"batch_size": 4},
        "deepspeed": {"zero_stage": stage, "offload_optimizer": offload_optimizer, "offload_params": offload_params},
        "scaling": {"num_workers": gpus, "use_gpu": True, "cpus_per_worker": 1},
        "search": {"space": {"learning_rate": [1e-5, 1e-4]}},
        "storage": {"path": str(tmp_path)},
    }
    for group, values in over.items():
        raw[group] = {**raw.get(group, {}), **values}
    return load_config(raw=raw)


def _deepspeed_rows(capsys, fn, **kwargs) -> dict[str, float]:
    """DeepSpeed's `..._all_cold` table (it prints, returns nothing): per-GPU GiB by its options column."""
    capsys.readouterr()
    fn(**kwargs)
    rows = re.findall(r"\|\s*([\d.]+)GB \| (.+)", capsys.readouterr().out)
    # its padding and (Python >= 3.11 formats a str enum by name) the enum's class name left out
    return {re.sub(r"\s|OffloadDeviceEnum\.", "", options): float(gpu) for gpu, options in rows}


# (ZeRO stage, offload optimizer, offload params) -> the options column of DeepSpeed's table
DS_OPTIONS = {
    (2, False, False): "offload_optimizer=none",
    (2, True, False): "offload_optimizer=cpu",
    (3, False, False): "offload_param=none,offload_optimizer=none,zero_init=1",
    (3, True, False): "offload_param=none,offload_optimizer=cpu,zero_init=1",
    (3, True, True): "offload_param=cpu,offload_optimizer=cpu,zero_init=1",
}


@pytest.mark.parametrize("size", list(LLAMAS))
def test_model_states_agree_with_deepspeeds_estimators(tmp_path, capsys, size):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    model_dir, config = _llama_dir(tmp_path, size)
    total, largest = _on_meta(config)
    for per_node, nodes in [(1, 1), (8, 1), (8, 4)]:
        zero2 = _deepspeed_rows(
            capsys, estimate_zero2_model_states_mem_needs_all_cold, total_params=total, num_gpus_per_node=per_node,
            num_nodes=nodes,
        )  # fmt: skip
        zero3 = _deepspeed_rows(
            capsys, estimate_zero3_model_states_mem_needs_all_cold, total_params=total,
            largest_layer_params=largest, num_gpus_per_node=per_node, num_nodes=nodes,
        )  # fmt: skip
        for (stage, opt, par), options in DS_OPTIONS.items():
            theirs = (zero2 if stage == 2 else zero3)[options]
            s = worst_setup(_cfg(tmp_path, model_dir, gpus=per_node * nodes, stage=stage, offload_optimizer=opt,
                                 offload_params=par))  # fmt: skip
            ours = sum(model_states(s).values()) / GIB
            # DeepSpeed prints two decimals: half a hundredth of slack on top of the 10 %
            assert abs(ours - theirs) <= 0.1 * theirs + 0.005, (size, per_node, nodes, stage, opt, par, ours, theirs)


def test_checkpointing_keeps_fewer_activations(tmp_path):
    s = worst_setup(_cfg(tmp_path, _llama_dir(tmp_path, "7B")[0], gpus=1))
    without, with_ = estimate(s), estimate(replace(s, checkpointing=True))
    assert with_["activations"] < without["activations"] / 4, (with_["activations"], without["activations"])
    assert with_["total"] < without["total"]


def test_7b_on_one_80gb_gpu_is_refused_with_the_fixes_and_fits_on_eight_with_zero3_offload(tmp_path):
    model_dir = _llama_dir(tmp_path, "7B")[0]
    h100 = lambda gpus: {"CPU": 64.0, "GPU": float(gpus), "memory": 2e12, "accelerator_type:H100": 1.0}  # noqa: E731

    with pytest.raises(ConfigError) as err:
        check_fit(_cfg(tmp_path, model_dir, gpus=1), resources=h100(1), n_train=1000, model=False)
    [(field, why, fix)] = err.value.problems
    assert field == "deepspeed.zero_stage" and "H100" in why and "80 GiB" in why
    steps = re.findall(r"([\w.]+): ([^;]+?) -> ([\d.]+) GiB", fix)
    assert [f for f, _, _ in steps] == ["deepspeed.zero_stage", "deepspeed.offload_optimizer", "scaling.num_workers"]
    # ZeRO-3 alone still does not fit; with the optimizer offloaded it does; so would 4 GPUs at ZeRO-2
    # (12.5 GiB of 16-bit weights + 113 GiB / 4 of sharded states + 37.4 GiB of activations and logits + 1)
    assert float(steps[0][2]) > 80 >= float(steps[1][2]) and steps[2][1].startswith("4 GPUs")
    assert float(steps[2][2]) <= 80

    fits = _cfg(tmp_path, model_dir, gpus=8, stage=3, offload_optimizer=True, offload_params=True)
    check_fit(fits, resources=h100(8), n_train=1000, model=False)  # no error


def test_no_refusal_on_cpu_or_an_unknown_gpu_and_the_config_field_overrides(tmp_path):
    model_dir = _llama_dir(tmp_path, "7B")[0]
    check_fit(_cfg(tmp_path, model_dir, gpus=1), resources={"CPU": 8.0, "GPU": 1.0}, n_train=1000, model=False)
    on_cpu = _cfg(tmp_path, model_dir, gpus=1, scaling={"use_gpu": False, "gpu_memory_gb": 80})
    check_fit(on_cpu, resources={"CPU": 8.0}, n_train=1000, model=False)
    told = _cfg(tmp_path, model_dir, gpus=1, scaling={"gpu_memory_gb": 80})
    with pytest.raises(ConfigError) as err:
        check_fit(told, resources={"CPU": 8.0, "GPU": 1.0}, n_train=1000, model=False)
    assert "scaling.gpu_memory_gb have 80 GiB" in err.value.problems[0][1]


def test_the_worst_trial_of_a_search_is_estimated(tmp_path):
    model_dir = _llama_dir(tmp_path, "1B")[0]
    searched = _cfg(tmp_path, model_dir, gpus=2, search={"space": {"zero_stage": [2, 3], "batch_size": [1, 8]}})
    s = worst_setup(searched)
    assert (s.stage, s.batch) == (2, 8)


def test_explain_memory_prints_the_table_and_json(tmp_path, capsys, tiny_gpt2_dir, keyword_csv):
    from sweeps.cli import main

    path = tmp_path / "sweep.yaml"
    raw = {
        "name": "x",
        "task": "causal-lm",
        "model": {"path": str(tiny_gpt2_dir), "max_length": 32},
        "data": {"path": str(keyword_csv)},
        "folds": {"k": 2},
        "scaling": {"num_workers": 1},
        "search": {"space": {"batch_size": [2, 4]}},
        "storage": {"path": str(tmp_path / "results")},
    }
    path.write_text(json.dumps(raw))  # JSON is YAML
    capsys.readouterr()
    assert main(["sweep", "validate", str(path), "--explain-memory"]) == 0
    out = capsys.readouterr().out
    for component in ("parameters", "gradients", "optimizer states", "activations", "logits", "total"):
        assert re.search(rf"^{component}\s+\d+\.\d\d$", out, re.M), (component, out)
    assert "micro_batch 4" in out and "ok: " in out

    assert main(["sweep", "validate", str(path), "--explain-memory", "--format", "json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["gib_per_gpu"]["total"] > 0 and memory["gpu_gib"] is None  # CPU: shown, nothing refused


# -- the issue 20 fields the estimate reads --------------------------------------------------------------------


def test_checkpointing_and_the_attention_kernel_are_read_from_their_fields(tmp_path):
    model_dir = _llama_dir(tmp_path, "1B")[0]
    assert worst_setup(_cfg(tmp_path, model_dir, gpus=1)).checkpointing is False
    on = worst_setup(_cfg(tmp_path, model_dir, gpus=1, train={"gradient_checkpointing": True}))
    assert on.checkpointing is True
    either = {"space": {"train.gradient_checkpointing": [True, False]}}
    assert worst_setup(_cfg(tmp_path, model_dir, gpus=1, search=either)).checkpointing is False  # the worse one
    eager = worst_setup(_cfg(tmp_path, model_dir, gpus=1, model={"attn_implementation": "eager"}))
    assert eager.eager_attention and estimate(eager)["activations"] > estimate(on)["activations"]
    # activations dominate (32 x 2048 tokens): after ZeRO-3 and offload, checkpointing is the fix named
    h100 = {"CPU": 64.0, "GPU": 1.0, "memory": 2e12, "accelerator_type:H100": 1.0}
    with pytest.raises(ConfigError) as err:
        check_fit(
            _cfg(tmp_path, model_dir, gpus=1, train={"batch_size": 32}), resources=h100, n_train=1000, model=False
        )
    assert "train.gradient_checkpointing: true ->" in err.value.problems[0][2]


def test_lora_presets_and_a_4bit_base_are_counted(tmp_path):
    model_dir = _llama_dir(tmp_path, "7B")[0]
    lora = lambda **lo: worst_setup(_cfg(tmp_path, model_dir, gpus=1, model={"method": "lora", **lo}))  # noqa: E731
    h, layers, rank = 4096, 32, 8
    assert lora(lora={"target_modules": "attention"}).trainable == 2 * rank * h * 4 * layers
    assert lora(lora={"target_modules": "attention+mlp"}).trainable == 2 * rank * h * 7 * layers
    assert lora(lora={"target_modules": "all-linear"}).trainable == 2 * rank * h * 7 * layers
    s16, s4 = lora(), lora(quantization="4bit")
    assert s4.quantized and not s16.quantized
    base16, base4 = model_states(s16)["parameters"], model_states(s4)["parameters"]
    assert base4 < base16 / 3.5 and base4 / GIB == pytest.approx(s4.params * 4.127 / 8 / GIB, rel=0.01)
