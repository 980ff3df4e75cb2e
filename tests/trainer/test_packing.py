"""Packing (data.packing) on a real tiny llama: no attention and no loss across the rows packed together."""

import numpy as np
import pytest
import torch

from trainer.data import Encoded
from trainer.packing import Packed, collate_packed, epoch_batches, pack, sequence_count, token_mask
from trainer.worker import Worker, batches_per_rank
from zerotune.errors import ZerotuneError

TEXTS = ["hello there how are you", "fine thanks and you", "the weather is nice today", "what a day it was"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("pack-llama"), TEXTS)


def _encoded(lengths, *, pack_to=24, seed=0, prompt=2):
    """Rows of random ids whose first `prompt` tokens are outside the loss (a prompt), packed up to `pack_to`."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, 300, size=n).astype(np.int32) for n in lengths]
    masks = [np.arange(n) >= min(prompt, n - 1) for n in lengths]
    return Encoded(input_ids=ids, labels=None, loss_mask=masks, pad_id=0, label_names=None, pack_to=pack_to)


def test_best_fit_decreasing_fills_bins_and_its_count_ignores_the_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=200)
    bins = pack(lengths, 32)
    assert sorted(np.concatenate(bins).tolist()) == list(range(200))  # every row once
    assert all(lengths[b].sum() <= 32 for b in bins)
    assert len(bins) <= np.ceil(lengths.sum() / 32) * 1.25  # near the bound (first-fit decreasing: 11/9 OPT + 1)
    for seed in range(5):  # the step count of an epoch must not depend on its shuffle
        assert len(pack(np.random.default_rng(seed).permutation(lengths), 32)) == len(bins)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("flat", [False, True], ids=["rows", "flat"])
def test_each_packed_row_sees_only_itself(llama_dir, attn, flat):
    """A crafted batch: the logits of every row inside a packed sequence equal its logits run alone, and the loss
    is the mean over the rows' own labels (no row's first token predicted from the previous row's last)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation=attn).eval()
    encoded = _encoded(_LENGTHS)
    packed = Packed((np.array([0, 1, 3]), np.array([2, 4])))  # 15 and 15 tokens: the 2nd row is padded by 0
    inputs = collate_packed(encoded, packed, flat=flat)
    assert inputs["input_ids"].shape == ((1, 30) if flat else (2, 15))
    with torch.no_grad():
        out = model(**inputs)
        alone = {r: model(input_ids=torch.from_numpy(encoded.input_ids[r]).long()[None]).logits[0] for r in range(5)}
    where = _where(packed, flat)
    for r, (j, start) in where.items():
        n = len(encoded.input_ids[r])
        torch.testing.assert_close(out.logits[j, start : start + n], alone[r], atol=1e-5, rtol=1e-4)
        labels = inputs["labels"][j, start : start + n]
        assert labels[0] == -100  # not predicted from the row before it
        expected = torch.from_numpy(np.where(encoded.loss_mask[r], encoded.input_ids[r], -100)).long()
        assert torch.equal(labels[1:], expected[1:])
    # The model's own loss on the packed batch is the mean over the rows' own label tokens.
    total, count = 0.0, 0
    for r in range(5):
        labels = torch.from_numpy(np.where(encoded.loss_mask[r], encoded.input_ids[r], -100)).long()
        loss = torch.nn.functional.cross_entropy(alone[r][:-1], labels[1:], ignore_index=-100, reduction="sum")
        total, count = total + float(loss), count + int((labels[1:] != -100).sum())
    assert float(out.loss) == pytest.approx(total / count, rel=1e-5)


def test_the_cache_would_let_rows_see_each_other(llama_dir):
    """Why the packed inputs turn the cache off: with it, transformers builds a plain causal mask over the row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="sdpa").eval()
    encoded = _encoded([7, 5])
    inputs = collate_packed(encoded, Packed((np.array([0, 1]),)), flat=False)
    with torch.no_grad():
        alone = model(input_ids=torch.from_numpy(encoded.input_ids[1]).long()[None]).logits[0]
        cached = model(**{**inputs, "use_cache": True}).logits[0, 7:]
    assert not torch.allclose(cached, alone, atol=1e-4)


_LENGTHS = [7, 5, 9, 3, 6]


def _where(packed, flat):
    """row -> (batch row, first position) in collate_packed's layout: one row per sequence, or all in one."""
    where, flat_start = {}, 0
    for j, rows in enumerate(packed.sequences):
        start = flat_start if flat else 0
        for r in rows:
            where[int(r)] = (0 if flat else j, start)
            start += _LENGTHS[int(r)]
        flat_start = start
    return where


def test_epochs_repack_with_the_same_count_on_every_rank():
    rng = np.random.default_rng(1)
    encoded = _encoded(rng.integers(2, 20, size=90).tolist(), pack_to=32)
    train_rows = np.arange(0, 90, dtype=np.int64)
    n = batches_per_rank(sequence_count(encoded, train_rows), 2, 3)
    seen_by_epoch = []
    for epoch in range(3):
        per_rank = [
            epoch_batches(encoded, train_rows, seed=4, fold=1, epoch=epoch, rank=r, world=2, batch=3) for r in (0, 1)
        ]
        assert [len(b) for b in per_rank] == [n, n]  # every rank runs the same forwards, as the schedule expects
        rows = np.concatenate([s for batches in per_rank for b in batches for s in b.sequences])
        assert len(set(rows.tolist())) == len(rows)  # a row at most once an epoch
        assert len(rows) >= 90 - 2 * 20  # at most one sequence per rank left over
        seen_by_epoch.append({tuple(sorted(s.tolist())) for batches in per_rank for b in batches for s in b.sequences})
        again = epoch_batches(encoded, train_rows, seed=4, fold=1, epoch=epoch, rank=0, world=2, batch=3)
        assert [[s.tolist() for s in b.sequences] for b in again] == [
            [s.tolist() for s in b.sequences] for b in per_rank[0]
        ]
    assert seen_by_epoch[0] != seen_by_epoch[1]  # repacked each epoch


def test_token_mask_counts_rows_not_padding():
    encoded = _encoded(_LENGTHS)
    packed = Packed((np.array([0, 1, 3]), np.array([2, 4])))
    for flat in (False, True):
        inputs = collate_packed(encoded, packed, flat=flat)
        mask = token_mask(encoded, packed, inputs)
        assert int(mask.sum()) == sum(_LENGTHS) and mask.shape == inputs["input_ids"].shape


def test_fewer_packed_sequences_than_ranks_is_refused_not_trained_as_nothing():
    """6 rows of 20 tokens pack into 2 sequences of 64: 4 ranks would each get none, train nothing and report a
    loss of 0. The worker refuses, with an error that survives the trip to the driver (pickled)."""
    import pickle
    from types import SimpleNamespace

    encoded = _encoded([20] * 6, pack_to=64)
    rows = np.arange(6)
    assert sequence_count(encoded, rows) == 2

    def worker(world):
        spec = SimpleNamespace(train=SimpleNamespace(batch_size=1))
        return Worker(0, spec, encoded, [], 0, world, None, False, None, None, 0.0)

    assert worker(2).batches_per_epoch(rows) == 1
    with pytest.raises(ZerotuneError) as err:
        worker(4).batches_per_epoch(rows)
    again = pickle.loads(pickle.dumps(err.value))
    assert again.field == "data.packing" and "2 packed sequences of up to 64 tokens cannot feed 4 ranks" in str(again)
    assert "data.packing: false" in again.fix and "max_length" in again.fix
