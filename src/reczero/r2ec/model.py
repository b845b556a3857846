"""One wrapper that reads any Hugging Face causal LM as a recommender (no per-architecture copies).

What this module chose, and why:

* ``<answer>`` is **one added token** (:func:`add_answer_token` resizes the embeddings and sets the
  new row to the vocabulary's mean; a tokenizer that already has it, e.g. a saved R2ec run, is left
  alone). Every vector is read at its position. With LoRA the row stays at that mean (the
  reference trains LoRA on the projections only); full fine-tuning trains it.
* **The vector is the backbone's ``last_hidden_state``** (the decoder's output after its final norm;
  ``model.get_decoder()`` finds the backbone of any ``*ForCausalLM``, through a PEFT wrapper too).
  Reading it from the backbone's forward is architecture-independent and skips the LM head (Gemma's
  256k-row head would dominate the cost). During the loss TRL replaces the model's ``forward`` by a
  fused LM-head path that never returns hidden states, so the trainer reads them with
  :class:`HiddenCapture`, a forward hook on the same backbone: training, rewards and evaluation
  all read the same tensor at the same position.
* **The position is the last ``<answer>`` token of the sequence** (:func:`answer_positions`), found
  from the token ids, never from lengths or text; the reference reads one token early at training
  time (R2EC.md, defect 2).
* **Rollouts are closed on their sampled ids** (:func:`close_rollouts`): kept up to the first stop
  token (``<answer>`` or EOS); a rollout that did not end in ``<answer>`` (EOS or the length limit)
  gets ``<answer>`` appended, marked as not sampled, so it carries no token loss. Nothing is
  decoded and re-tokenised.
* **Scores are cosine / τ in float32** (:func:`cosine_scores`), whatever the model's dtype
  (bf16 similarities tie; R2EC.md, defect 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reczero.errors import ReczeroError
from reczero.r2ec.prompts import ANSWER


def answer_token_id(tokenizer: Any) -> int:
    """The id of ``<answer>``; an error when the tokenizer does not hold it as one token."""
    ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ReczeroError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} does not hold {ANSWER} as one token "
                           "(an R2ec model adds it; see reczero.r2ec.model.add_answer_token)")
    return int(ids[0])


def add_answer_token(model: Any, tokenizer: Any) -> int:
    """Add ``<answer>`` as one token unless present; returns its id.

    Its embedding row (and its LM-head row when not tied) is set to the **mean of the existing
    vocabulary's rows**: a deterministic function of the base weights, so the same row is rebuilt
    wherever a base is extended (a LoRA adapter trained on top, a resumed run). transformers' own
    mean resizing adds random noise, which would differ between two loads."""
    if ANSWER in tokenizer.get_vocab():
        return answer_token_id(tokenizer)
    old = len(tokenizer)
    tokenizer.add_tokens([ANSWER])
    answer = answer_token_id(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        rows = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not rows[0]:
            rows.append(output.weight)
        for weight in rows:
            weight[answer] = weight[:old].float().mean(dim=0).to(weight.dtype)
    return answer


def backbone(model: Any) -> torch.nn.Module:
    """The decoder whose output ``last_hidden_state`` is the final-normed hidden state."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return model.get_decoder()


class HiddenCapture:
    """Records the backbone's ``last_hidden_state`` of every forward inside a ``with`` block.

    ``states`` concatenates the calls along the batch (TRL scores a batch in chunks, in order).
    The tensors keep their autograd graph, so a loss on them trains the model."""

    def __init__(self, model: Any) -> None:
        self.module = backbone(model)
        self.calls: list[torch.Tensor] = []
        self._handle = None

    def _hook(self, module, args, output) -> None:
        self.calls.append(output.last_hidden_state)

    def __enter__(self) -> HiddenCapture:
        self.calls = []
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    @property
    def states(self) -> torch.Tensor:
        if not self.calls:
            raise RuntimeError("no forward pass of the backbone was recorded")
        width = max(c.shape[1] for c in self.calls)
        if any(c.shape[1] != width for c in self.calls):
            raise RuntimeError("recorded forwards differ in sequence length")
        return torch.cat(self.calls, dim=0)


def answer_positions(input_ids: torch.Tensor, answer_id: int) -> torch.Tensor:
    """Index of the last ``<answer>`` token in each row of ``input_ids`` (B, L) -> (B,).

    >>> answer_positions(torch.tensor([[0, 7, 3, 7, 0], [7, 1, 1, 0, 0]]), 7).tolist()
    [3, 0]
    """
    is_answer = input_ids == answer_id
    missing = ~is_answer.any(dim=1)
    if missing.any():
        raise ReczeroError(f"{int(missing.sum())} sequence(s) hold no {ANSWER} token to read a vector at")
    width = input_ids.shape[1]
    # argmax returns the first maximum: flip to find the last occurrence
    return width - 1 - is_answer.flip(dims=[1]).int().argmax(dim=1)


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``hidden[b, positions[b]]`` for each row: (B, L, H), (B,) -> (B, H), in float32."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions.to(hidden.device)].float()


def cosine_scores(users: torch.Tensor, items: torch.Tensor, tau: float) -> torch.Tensor:
    """``cos(u, i) / τ`` for every pair: (B, H), (N, H) -> (B, N) float32."""
    u = torch.nn.functional.normalize(users.float(), dim=-1)
    v = torch.nn.functional.normalize(items.float().to(u.device), dim=-1)
    return u @ v.T / tau


def pad_sequences(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]] | None,
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` in TRL's layout: prompts left-padded, completions right-padded
    after them (so every completion starts at one column)."""
    width_p = max(len(p) for p in prompts)
    width_c = max((len(c) for c in completions), default=0) if completions is not None else 0
    ids = torch.full((len(prompts), width_p + width_c), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width_p - len(prompt):width_p] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width_p - len(prompt):width_p] = 1
        if completions is not None and len(completions[row]):
            comp = completions[row]
            ids[row, width_p:width_p + len(comp)] = torch.tensor(list(comp), dtype=torch.long)
            mask[row, width_p:width_p + len(comp)] = 1
    return ids, mask


def close_rollouts(completions: Sequence[Sequence[int]], answer_id: int,
                   stop_ids: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    """Each sampled completion cut after its first stop token and ended by ``<answer>``.

    Returns ``(ids, sampled)``: ``sampled[i][t]`` is 1 for a token the policy sampled, 0 for the
    ``<answer>`` appended to a rollout that stopped otherwise (EOS or the length limit).

    >>> close_rollouts([[5, 9, 6, 8], [5, 2, 6], [5, 5]], answer_id=9, stop_ids=[2])
    ([[5, 9], [5, 2, 9], [5, 5, 9]], [[1, 1], [1, 1, 0], [1, 1, 0]])
    """
    stops = {answer_id, *stop_ids}
    ids, sampled = [], []
    for completion in completions:
        seq = list(completion)
        cut = next((t for t, tok in enumerate(seq) if tok in stops), None)
        if cut is not None:
            seq = seq[:cut + 1]
        mask = [1] * len(seq)
        if not seq or seq[-1] != answer_id:
            seq.append(answer_id)
            mask.append(0)
        ids.append(seq)
        sampled.append(mask)
    return ids, sampled


class R2ecModel:
    """A causal LM with ``<answer>``: user vectors after its reasoning, item vectors from item prompts.

    ``model`` may be a plain ``*ForCausalLM`` or a PEFT model around one; it is used as given (the
    caller chooses device and dtype). ``tau`` is the temperature of :func:`cosine_scores`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, tau: float = 0.02) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tau = tau
        self.answer_id = answer_token_id(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stop_ids(self) -> list[int]:
        """EOS ids that end generation besides ``<answer>`` (generation config and tokenizer)."""
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        return eos

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Rendered prompts -> ids (the chat template already wrote any BOS)."""
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    @torch.no_grad()
    def vectors(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]] | None = None,
                *, batch_size: int = 32) -> torch.Tensor:
        """Hidden state at the last ``<answer>`` of each prompt (+ completion): (B, H) float32 on CPU.

        Batches are formed in input order, so the same rows give the same batches."""
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for start in range(0, len(prompts), batch_size):
                part_c = completions[start:start + batch_size] if completions is not None else None
                ids, mask = pad_sequences(prompts[start:start + batch_size], part_c, self.pad_id)
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = backbone(self.model)(input_ids=ids, attention_mask=mask).last_hidden_state
                out.append(gather_positions(hidden, answer_positions(ids, self.answer_id)).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(out, dim=0)

    @torch.no_grad()
    def reason(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, batch_size: int = 16,
               greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0) -> tuple[list[list[int]], list[list[int]]]:
        """Reasoning for each prompt, stopped at ``<answer>``: ``close_rollouts`` of the samples.

        Greedy for evaluation; with ``greedy=False`` it samples with the given knobs and torch's RNG."""
        from transformers import GenerationConfig

        stops = [self.answer_id, *self.stop_ids()]
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=not greedy, eos_token_id=stops,
                                  pad_token_id=self.pad_id, bos_token_id=None,
                                  **({} if greedy else {"temperature": temperature, "top_k": top_k, "top_p": top_p}))
        was_training = self.model.training
        self.model.eval()
        sampled: list[list[int]] = []
        try:
            for start in range(0, len(prompts), batch_size):
                ids, mask = pad_sequences(prompts[start:start + batch_size], None, self.pad_id)
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          generation_config=config)
                sampled += [row.tolist() for row in out[:, ids.shape[1]:].cpu()]
        finally:
            self.model.train(was_training)
        return close_rollouts(sampled, self.answer_id, self.stop_ids())

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return cosine_scores(users, items, self.tau)
