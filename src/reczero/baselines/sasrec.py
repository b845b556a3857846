"""``sasrec``: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), in PyTorch.

The model reads the last ``max_len`` items of a history (left-padded) and predicts the next item
from the hidden state at the last position: ``score(j) = h_L . e_j`` with the input item table
``e`` shared as output table, as in the paper.

What this module chose, and why:

* **Architecture as the paper**: item embedding scaled by ``sqrt(hidden)`` plus a learned
  positional embedding, dropout, ``blocks`` causal self-attention blocks
  (:class:`torch.nn.TransformerEncoderLayer`, pre-LayerNorm, point-wise feed-forward of width
  ``hidden``) and a final LayerNorm. The attention mask is causal and also hides padding keys;
  each position may always attend to itself, so a padding query never sees a fully masked row.
* **Cross-entropy over all items** at every position (as RecBole's ``SASRec`` with
  ``loss_type=CE``), instead of the paper's one sampled negative: full softmax is what the
  evaluation measures (full ranking) and converges in fewer epochs; on catalogs of ~10^4 items it
  is one ``(positions, hidden) x (hidden, items)`` product per batch.
* **Training sequences** come from the train split only (:func:`training_sequences`: targets and
  train histories, no valid/test target). A sequence longer than ``max_len + 1`` is cut into
  consecutive windows, so every transition of the user is trained on, not only the last 50.
* **Defaults from the SASRec literature**: hidden 64, 2 blocks, 2 heads, dropout 0.5 (the paper's
  value for sparse data), max length 50, Adam lr 1e-3 (betas 0.9, 0.98 as the paper).
* **Batch: 32 windows** (each up to ``max_len`` targets, so ~1,600 targets per Adam step, near
  RecBole's 2,048), not the paper's 128 sequences. Every position of a window is a target, so a
  batch of 128 windows is ~6,400 targets and an epoch of ml-latest-small only ~17 optimiser steps;
  the model then needs many epochs to move. The cost of an epoch hardly depends on the batch (the
  same targets go through the same products), so a smaller batch buys Adam steps for free. Chosen
  on ml-latest-small's **valid** split (leave-last, ``--history 50``, seed 0, 3 epochs each, 2
  shared cores, 2026-12-07): valid NDCG@10 after epochs 1/2/3 — batch 128: 0.0105 after epoch 1
  (the one epoch measured); batch 32: 0.0156 / 0.0182 / 0.0200; batch 16: 0.0153 / 0.0206 /
  0.0171 (train loss 8.34 / 7.94 / 7.83 vs 8.52 / 8.02 / 7.92 for 32). 16 and 32 are within
  the noise of 610 valid users; 32 rose steadily, keeps larger products per step and is nearer
  the batch the literature uses. With it, on the test split after 12 epochs (956 s, 2 shared
  cores), NDCG@10 0.0312 against RecBole SASRec's 0.0101 after its one epoch (1,810 s); neither
  converged (``bench/RESULTS.md``, "Ranking: reczero vs RecBole").
* **Early stopping on the valid split's NDCG@10**, full ranking through
  :func:`reczero.rankings.full_ranking` (the same protocol as the final evaluation), after each
  epoch; ``patience`` epochs without gain stop training and the best epoch's weights are kept.
* **Seeded**: ``torch.manual_seed(seed)`` before the weights are made; a seeded generator shuffles
  the windows. On CPU two fits with one seed are identical. A GPU is used when present.
* Scoring reads the row's history window: prepare with ``--history >= max_len`` for the model to
  see as much as it was trained on.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np

from reczero.baselines.ranker import Ranker

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"


def _net(n_items: int, hidden: int, blocks: int, heads: int, dropout: float, max_len: int):
    import torch
    from torch import nn

    class SASRecNet(nn.Module):
        """Item index 0 is padding; catalog item ``j`` is row ``j + 1`` of ``item_emb``."""

        def __init__(self) -> None:
            super().__init__()
            self.heads = heads
            self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
            self.pos_emb = nn.Embedding(max_len, hidden)
            self.dropout = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, blocks, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
            nn.init.xavier_normal_(self.item_emb.weight)
            nn.init.xavier_normal_(self.pos_emb.weight)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

        def forward(self, seq):                       # seq: (B, L) int64, left-padded with 0
            b, length = seq.shape
            x = self.item_emb(seq) * math.sqrt(hidden) + self.pos_emb.weight[-length:]
            x = self.dropout(x)
            eye = torch.eye(length, dtype=torch.bool, device=seq.device)
            causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
            blocked = (causal | (seq == 0)[:, None, :]) & ~eye      # True = may not attend
            mask = blocked.repeat_interleave(self.heads, dim=0)     # (B * heads, L, L)
            return self.encoder(x, mask=mask)         # (B, L, hidden)

        def output_table(self):
            return self.item_emb.weight[1:]          # (n_items, hidden)

    return SASRecNet()


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)``, each ``(n_windows, max_len)`` of item index + 1 (0 = padding, left):
    consecutive windows of ``max_len + 1`` items cover every transition of every sequence."""
    inputs, targets = [], []
    for seq in sequences:
        for end in range(len(seq), 1, -max_len):
            chunk = seq[max(0, end - max_len - 1):end] + 1
            row_in = np.zeros(max_len, np.int64)
            row_out = np.zeros(max_len, np.int64)
            row_in[max_len - len(chunk) + 1:] = chunk[:-1]
            row_out[max_len - len(chunk) + 1:] = chunk[1:]
            inputs.append(row_in)
            targets.append(row_out)
    if not inputs:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.stack(inputs), np.stack(targets)


def left_pad(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len`` items of each history as index + 1, left-padded with 0."""
    out = np.zeros((len(histories), max_len), np.int64)
    for row, h in enumerate(histories):
        h = h[-max_len:]
        if len(h):
            out[row, max_len - len(h):] = h + 1
    return out


class SASRec(Ranker):
    name = "sasrec"
    uses_valid = True
    HPARAMS = ("hidden", "blocks", "heads", "dropout", "max_len", "epochs", "lr", "batch_size", "patience")

    def __init__(self, *, hidden: int = 64, blocks: int = 2, heads: int = 2, dropout: float = 0.5, max_len: int = 50,
                 epochs: int = 200, lr: float = 1e-3, batch_size: int = 32, patience: int = 10, **kw) -> None:
        super().__init__(**kw)
        if min(hidden, blocks, heads, max_len, epochs, batch_size, patience) < 1 or lr <= 0 or not 0 <= dropout < 1:
            raise ValueError(f"{self.name}: need hidden, blocks, heads, max_len, epochs, batch_size, patience >= 1, "
                             "lr > 0 and 0 <= dropout < 1")
        if hidden % heads:
            raise ValueError(f"{self.name}: hidden ({hidden}) must be divisible by heads ({heads})")
        self.hidden, self.blocks, self.heads, self.dropout = hidden, blocks, heads, dropout
        self.max_len, self.epochs, self.lr, self.batch_size, self.patience = max_len, epochs, lr, batch_size, patience
        self.net = None

    def _build(self):
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = _net(len(self.catalog), self.hidden, self.blocks, self.heads, self.dropout, self.max_len).to(self.device)

    # -- training -------------------------------------------------------------------------------

    def _fit(self, sequences, valid_rows) -> None:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self._build()
        inputs, targets = (torch.from_numpy(a) for a in training_windows(sequences, self.max_len))
        if len(inputs) == 0:
            raise ValueError(f"{self.name}: no user has two training interactions; nothing to learn from")
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr, betas=(0.9, 0.98))
        best, best_epoch, best_state = -1.0, 0, None
        started = time.perf_counter()
        bar = tqdm(range(1, self.epochs + 1), desc=f"fit {self.name}", unit="epoch", leave=False, disable=None)
        for epoch in bar:
            self.net.train()
            total, positions = 0.0, 0
            for idx in torch.randperm(len(inputs), generator=generator).split(self.batch_size):
                seq, tgt = inputs[idx].to(self.device), targets[idx].to(self.device)
                hidden = self.net(seq)
                keep = tgt > 0
                logits = hidden[keep] @ self.net.output_table().T          # (positions, n_items)
                loss = F.cross_entropy(logits, tgt[keep] - 1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * int(keep.sum())
                positions += int(keep.sum())
            entry = {"epoch": epoch, "train_loss": total / positions}
            if not math.isfinite(entry["train_loss"]):
                raise FloatingPointError(f"{self.name}: training diverged at epoch {epoch}; lower lr (now {self.lr})")
            if valid_rows is not None:
                entry["valid_ndcg@10"], entry["valid_hit@10"] = self._validate(valid_rows)
                if entry["valid_ndcg@10"] > best:
                    best, best_epoch = entry["valid_ndcg@10"], epoch
                    best_state = copy.deepcopy(self.net.state_dict())
            entry["seconds"] = round(time.perf_counter() - started, 3)
            self.history_.append(entry)
            bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k in ("train_loss", "valid_ndcg@10")})
            log.debug("%s epoch %d: %s", self.name, epoch, entry)
            if valid_rows is not None and epoch - best_epoch >= self.patience:
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.best_epoch_ = best_epoch or len(self.history_)
        log.info("%s: %d epochs in %.1f s, kept epoch %d%s", self.name, len(self.history_), time.perf_counter() - started,
                 self.best_epoch_, f" (valid NDCG@10 {best:.4f})" if best_state is not None else "")

    def _validate(self, valid_rows) -> tuple[float, float]:
        from reczero import metrics as M
        from reczero.rankings import full_ranking

        histories = list(valid_rows["history"])
        ranked = full_ranking(lambda rows: self.score([histories[i] for i in rows]), histories,
                              list(valid_rows["item_id"]), self.catalog, mask_history=self.mask_history, top_k=10)
        ranks = M.miss_ranks(ranked["rank"])
        return M.ndcg_at_k(ranks, 10), M.hit_at_k(ranks, 10)

    # -- scoring and state ----------------------------------------------------------------------

    def _score(self, histories) -> np.ndarray:
        import torch

        self.net.eval()
        out = np.empty((len(histories), len(self.catalog)), np.float32)
        padded = torch.from_numpy(left_pad(histories, self.max_len))
        with torch.no_grad():
            for start in range(0, len(histories), 1024):
                seq = padded[start:start + 1024].to(self.device)
                last = self.net(seq)[:, -1]                                 # (B, hidden)
                out[start:start + len(seq)] = (last @ self.net.output_table().T).float().cpu().numpy()
        return out

    def _save(self, directory: Path) -> None:
        import torch

        torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, directory / WEIGHTS)

    def _load(self, directory: Path) -> None:
        import torch

        self._build()
        self.net.load_state_dict(torch.load(directory / WEIGHTS, map_location=self.device, weights_only=True))
        self.net.eval()
