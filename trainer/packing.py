"""Sequence packing (data.packing): training rows concatenated into sequences of up to model.max_length tokens.

Each epoch, the fold's training rows (shuffled as unpacked epochs are) are packed best-fit decreasing: longest
first, each into the fullest sequence it still fits. The number of sequences depends only on the rows' lengths,
not on their order, so every epoch has the same number of steps (the learning-rate schedule is sized from it
before the first one) while which rows share a sequence changes. The sequences are then shuffled and dealt to
the ranks, every rank the same count (ZeRO-3 and Train V2 need the same forwards on every rank).

Inside a packed sequence the position ids restart at 0 with each row, and the model is given no attention mask:
transformers then reads the restarts as boundaries (masking_utils.find_packed_sequence_indices) and builds a
block-diagonal causal mask for sdpa and eager attention, or runs flash-attention's varlen kernel on one
flattened row (batch size 1: modeling_flash_attention_utils._is_packed_sequence). A row's first token is never
a label, so no row is predicted from the one before it. The cache must be off (use_cache False): with one,
transformers skips the packed-sequence mask.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from trainer.data import Encoded


@dataclass(frozen=True)
class Packed:
    """One micro-batch of packed sequences, each the row ids concatenated into it."""

    sequences: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.sequences)


def pack(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Best-fit decreasing: indices into `lengths`, grouped into bins of at most `capacity` tokens.

    Ties keep the input order, and the choice of bin depends only on lengths: the bin count is the same for any
    order of the same lengths."""
    lengths = np.asarray(lengths)
    bins: list[list[int]] = []
    rooms: list[int] = []  # distinct free capacities of the open bins, sorted
    by_room: dict[int, list[int]] = {}  # free capacity -> bins with that much room
    for i in np.argsort(-lengths, kind="stable"):
        need = int(lengths[i])
        at = bisect.bisect_left(rooms, need)
        if at < len(rooms):
            room = rooms[at]
            b = by_room[room].pop()
            if not by_room[room]:
                del by_room[room], rooms[at]
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(int(i))
        left = room - need
        if left not in by_room:
            by_room[left] = []
            bisect.insort(rooms, left)
        by_room[left].append(b)
    return [np.asarray(b, dtype=np.int64) for b in bins]


def _lengths(encoded: Encoded, rows: np.ndarray) -> np.ndarray:
    return np.array([len(encoded.input_ids[r]) for r in rows], dtype=np.int64)


def sequence_count(encoded: Encoded, train_rows: np.ndarray) -> int:
    """Packed sequences in each epoch over `train_rows` (the same every epoch: see pack). trainer.worker deals them
    to the ranks as it deals unpacked rows (batches_per_rank)."""
    return len(pack(_lengths(encoded, train_rows), encoded.pack_to))


def epoch_batches(
    encoded: Encoded, train_rows: np.ndarray, *, seed: int, fold: int, epoch: int, rank: int, world: int, batch: int
) -> list[Packed]:
    """This rank's packed micro-batches of one epoch (seeded: a resumed epoch gets the same ones)."""
    rng = np.random.default_rng([seed, fold, epoch])
    order = rng.permutation(train_rows)
    sequences = [order[b] for b in pack(_lengths(encoded, order), encoded.pack_to)]
    # Shuffled: best-fit decreasing opens sequences longest rows first, and the batches should not run that order.
    sequences = [sequences[i] for i in rng.permutation(len(sequences))]
    mine = sequences[rank::world][: len(sequences) // world]
    return [Packed(tuple(mine[i : i + batch])) for i in range(0, len(mine), batch)]


def collate_packed(encoded: Encoded, packed: Packed, *, flat: bool) -> dict:
    """The model inputs of one packed micro-batch: one row per sequence, padded to the longest (its padding a
    segment of its own that no real token sees), or all sequences in one row (`flat`: flash-attention's varlen)."""
    import torch

    parts = [_sequence(encoded, rows) for rows in packed.sequences]
    if flat:
        parts = [tuple(np.concatenate(column) for column in zip(*parts, strict=True))]
    width = max(len(ids) for ids, _, _ in parts)
    ids = torch.full((len(parts), width), encoded.pad_id, dtype=torch.long)
    labels = torch.full((len(parts), width), -100, dtype=torch.long)
    positions = torch.arange(width).repeat(len(parts), 1)
    for j, (seq_ids, seq_labels, seq_positions) in enumerate(parts):
        n = len(seq_ids)
        ids[j, :n] = torch.from_numpy(seq_ids)
        labels[j, :n] = torch.from_numpy(seq_labels)
        positions[j, :n] = torch.from_numpy(seq_positions)
        positions[j, n:] = torch.arange(width - n)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False}


def _sequence(encoded: Encoded, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, position ids) of rows concatenated: each row's loss tokens are labels but its first."""
    ids, labels, positions = [], [], []
    for r in rows:
        row_ids = encoded.input_ids[r].astype(np.int64)
        row_labels = np.where(encoded.loss_mask[r], row_ids, -100)
        row_labels[0] = -100  # its first token would be predicted from the previous row's last
        ids.append(row_ids)
        labels.append(row_labels)
        positions.append(np.arange(len(row_ids), dtype=np.int64))
    return np.concatenate(ids), np.concatenate(labels), np.concatenate(positions)


def token_mask(encoded: Encoded, packed: Packed, inputs: dict) -> torch.Tensor:
    """Which positions of `inputs` (collate_packed's) hold rows' tokens rather than padding."""
    import torch

    ids = inputs["input_ids"]
    real = torch.zeros(ids.shape, dtype=torch.bool)
    if ids.size(0) == 1:  # one row: flat, or a single sequence
        real[0, : sum(int(_lengths(encoded, rows).sum()) for rows in packed.sequences)] = True
        return real
    for j, rows in enumerate(packed.sequences):
        real[j, : int(_lengths(encoded, rows).sum())] = True
    return real
