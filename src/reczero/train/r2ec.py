"""RecPO: R2ec trained by reinforcement learning from recommendation labels, on TRL's GRPOTrainer.

What this chose (R2EC.md; the reference's settings are the recipe defaults):

* **On TRL, no hand-written loop**: :class:`RecPOTrainer` subclasses ``GRPOTrainer`` and overrides
  two hooks. ``_generate_and_score_completions``: G reasoning rollouts per user sampled by TRL's own
  generation (transformers or vLLM) and stopped at ``<answer>``, closed on their sampled ids
  (:func:`reczero.r2ec.model.close_rollouts`), then scored with the **policy's hidden state**: the
  user vector at ``<answer>`` against the item-vector table, reward
  ``(1 − w)·NDCG@k + w·softmax(scores)[target]`` over every item, history masked
  (:mod:`reczero.r2ec.rewards`). ``_compute_loss``: the token loss (clipped policy gradient, each
  rollout weighted by its own advantage) plus the item loss (advantage-weighted in-batch
  contrastive, top rollouts of each group) from :mod:`reczero.r2ec.losses`. No KL, no reference
  model (``beta = 0``); TRL's sampler, batching, accumulation, checkpoints and logging are kept.
* **logQ correction of the item loss** (``--item-loss-logq``, off by default as in the reference):
  the item loss's softmax runs over the batch's own targets, drawn by popularity, so without it
  popularity cancels out of what the user vector learns (Yi et al., RecSys 2019). With it each
  in-batch logit loses ``log q_j``, item j's share of the training interactions
  (:func:`item_log_q`: the popularity baseline's counts, computed once per run; the batches draw
  training samples uniformly, so their targets arrive with these odds).
* **Mixed negatives** (``--item-loss-uniform-negatives N``, default 0; Yang et al., WWW 2020
  companion, "Mixed negative sampling"): N catalogue items drawn uniformly, none of them a batch
  target, join the softmax as negatives read with gradient, so that rare items, never a popular
  batch's target, are pushed away too. Drawn by a generator seeded by the seed and the step (a
  resumed run draws the same ones). With logQ their q is the mixture's: item j is expected
  ``U·p_j + N/|catalogue|`` times among the candidates of a mini-batch of U users.
* **One hidden state for all three uses**: the loss reads the user vector with a forward hook on the
  backbone during TRL's fused log-prob forward, the reward with the same backbone on the same token
  ids, evaluation with :meth:`R2ecModel.vectors`, all at the last ``<answer>`` token (the reference
  reads one token early in training: defect 2). Dropout is disabled so that they agree exactly.
* **Fresh item vectors for the rewards**: the table is recomputed every ``item_refresh_steps``
  optimiser steps with the current weights (the reference refreshes it only at evaluation).
* **Ablations**: ``--no-token-loss`` keeps only the item loss on sampled reasoning (what the
  reference's broadcasting effectively trained, defect 1); ``--no-reasoning`` generates nothing,
  reads the user vector right after the prompt and trains with the item loss alone (advantage 1,
  one rollout per user marked: a plain in-batch contrastive loss).
* **Batch**: ``per_device_train_batch_size`` counts rollouts (TRL), so a step sees
  ``batch × accumulation × world / G`` users; generation happens once per optimiser step, so the
  loss is on-policy (ratio 1) unless TRL's ``steps_per_generation`` says otherwise.
* **Validation and the best model**: greedy reasoning and full ranking of ``eval_samples`` valid
  samples every ``eval_steps`` steps (:func:`reczero.r2ec.evaluate.rank_split`, the function
  ``reczero eval`` uses); the best valid NDCG@10 is saved to ``RUN/best`` and becomes ``RUN/model``
  at the end; training stops after ``early_stopping_patience`` validations without gain.
  ``RUN/model/item_vectors.pt`` holds the final model's item table.
* **Logged** (``RUN/log.jsonl``): reward, rollout NDCG@k and NDCG@10, target probability, advantage
  spread (mean within-group reward std, share of groups with none), reasoning length, share of
  rollouts closed by the length limit, entropy, token and item loss, the step's sample ids, and
  ``valid_ndcg@10`` at each validation.
* **Built and run along** :class:`reczero.train.common.TrainerRun`, as GRPO and SFT are: the
  validation callback is built from the trainer (it ranks with the trainer's model and item table)
  through ``late_callbacks``, and ``finish(save=...)`` makes the best checkpoint ``RUN/model``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from reczero.config import R2ecRecipe
from reczero.errors import ReczeroError
from reczero.io import atomic_write_text
from reczero.train import common

log = logging.getLogger(__name__)


def plan(recipe: R2ecRecipe) -> dict[str, Any]:
    """The resolved plan of a run: batch arithmetic, step count and RecPO's settings (no data loaded)."""
    group = common.GroupSteps.of(recipe)
    loss = "item loss only (no reasoning)" if not recipe.reasoning else (
        "token loss + item loss" if recipe.token_loss else "item loss only (token loss off)")
    if recipe.item_loss_logq:
        loss += ", item loss logQ-corrected"
    if recipe.item_loss_uniform_negatives:
        loss += f", {recipe.item_loss_uniform_negatives} uniform negatives"
    return {
        "model": recipe.model, "data": recipe.data, "out": recipe.out, "world_size": group.world_size,
        "rollouts_per_step": group.completions_per_step, "users_per_step": group.prompts_per_step,
        "generations_per_user": recipe.num_generations, "train_samples": group.train_samples, "steps": group.steps,
        "learning_rate": recipe.learning_rate, "lr_scheduler": recipe.lr_scheduler_type,
        "lora": f"r={recipe.lora_r} alpha={recipe.lora_alpha} on {recipe.lora_target_modules}" if recipe.use_lora else False,
        "sampling": f"temperature={recipe.temperature} top_k={recipe.top_k} top_p={recipe.top_p}",
        "max_reasoning_tokens": 0 if not recipe.reasoning else recipe.max_completion_length,
        "reward": f"(1-{recipe.reward_weight})*NDCG@{recipe.reward_k} + {recipe.reward_weight}*softmax, tau={recipe.tau}",
        "loss": loss, "clip": f"[1-{recipe.epsilon_low}, 1+{recipe.epsilon_high}]",
        "item_loss_top": recipe.item_loss_top,
        "item_loss_logq": "log share of training interactions (Yi et al. 2019)" if recipe.item_loss_logq else False,
        "item_loss_negatives": "the batch's targets" + (f" + {recipe.item_loss_uniform_negatives} uniform (Yang et al. 2020)"
                                                         if recipe.item_loss_uniform_negatives else ""),
        "item_refresh_steps": recipe.item_refresh_steps,
        "history_window": recipe.history_window,
        "user_prompt": "titles, ratings, time before" + (", attributes" if recipe.history_attributes else "")
                       + (", reviews" if recipe.history_reviews else ""),
        "validation": f"NDCG@10 on {recipe.eval_samples} valid samples every {recipe.eval_steps} steps"
                      if recipe.eval_steps > 0 else "off",
        "vllm": recipe.use_vllm and recipe.vllm_mode,
    }


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def _trainer_class():
    """RecPOTrainer, defined on first use so that importing this module does not import TRL."""
    global RecPOTrainer
    if "RecPOTrainer" in globals():
        return RecPOTrainer

    import torch
    from trl import GRPOTrainer
    from trl.trainer.utils import pad

    from reczero.r2ec import losses
    from reczero.r2ec import rewards as R
    from reczero.r2ec.item_table import ItemTable, compute_item_table
    from reczero.r2ec.model import (
        HiddenCapture,
        R2ecModel,
        answer_positions,
        backbone,
        close_rollouts,
        gather_positions,
        pad_sequences,
    )

    class _RecPOTrainer(GRPOTrainer):
        """GRPOTrainer whose rewards come from the policy's hidden state and whose loss adds the item loss.

        Dataset rows: ``prompt`` (the rendered user prompt), ``sample_id``, ``target`` (catalog
        index) and ``history`` (catalog indices of the history window). ``item_prompts`` are the
        token ids of every catalog item's prompt, ``item_ids`` the catalog's ids, in catalog order.
        ``samples`` collects each step's sample ids for log.jsonl. ``log_q`` (catalog order), when
        given, is the item loss's logQ correction (:func:`item_log_q`).
        """

        def __init__(self, *args, recipe: R2ecRecipe, item_prompts: list[list[int]], item_ids: list[str],
                     samples: common.StepSamples | None = None, log_q: torch.Tensor | None = None, **kwargs):
            self.recipe = recipe
            self.fused_reward = R.FusedRankingReward(tau=recipe.tau, w=recipe.reward_weight, k=recipe.reward_k,
                                                     mask_history=recipe.mask_history)
            super().__init__(*args, reward_funcs=[self.fused_reward], **kwargs)
            self.r2ec = R2ecModel(self.model, self.processing_class, tau=recipe.tau)
            self.item_prompts = item_prompts
            self.item_ids = list(item_ids)
            if log_q is not None and log_q.shape != (len(self.item_ids),):
                raise ValueError(f"log_q must hold one value per catalog item ({len(self.item_ids)}); "
                                 f"got shape {tuple(log_q.shape)}")
            self.log_q = log_q
            self.negatives_rng, self.negatives_step = torch.Generator(), None
            self.item_table: ItemTable | None = None
            self.item_table_step = -1
            self.samples = samples if samples is not None else common.StepSamples()

        # -- the item table ------------------------------------------------------------------

        def item_vectors(self, *, force: bool = False) -> ItemTable:
            """The item table of the current weights (recomputed every ``item_refresh_steps`` steps)."""
            step = self.state.global_step
            stale = self.item_table is None or step - self.item_table_step >= self.recipe.item_refresh_steps
            if force and step != self.item_table_step:
                stale = True
            if stale:
                self.item_table = compute_item_table(self.r2ec, self.item_prompts, self.item_ids, f"step-{step}",
                                                     batch_size=self.recipe.item_batch_size)
                self.item_table_step = step
            self.fused_reward.items = self.item_table.vectors
            return self.item_table

        # -- hidden states -------------------------------------------------------------------

        def backbone_vectors(self, model, input_ids, attention_mask) -> torch.Tensor:
            """User vectors at the last ``<answer>``, from the backbone alone (no LM head), in
            chunks of the training batch size as TRL's log-prob forward does."""
            module = backbone(self.accelerator.unwrap_model(model))
            size = self.args.per_device_train_batch_size
            out = []
            for start in range(0, input_ids.shape[0], size):
                ids, mask = input_ids[start:start + size], attention_mask[start:start + size]
                with self.accelerator.autocast():
                    hidden = module(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                out.append(gather_positions(hidden, answer_positions(ids, self.r2ec.answer_id)))
            return torch.cat(out, dim=0)

        def policy_forward(self, model, inputs):
            """TRL's per-token log-probs and entropies of the completions, and the user vectors read
            by a hook on the backbone during that same forward (with their autograd graph)."""
            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            with HiddenCapture(self.accelerator.unwrap_model(model)) as capture:
                logps, entropies, _ = self._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=True)
            users = gather_positions(capture.states, answer_positions(input_ids, self.r2ec.answer_id))
            return logps, entropies, users

        # -- rollouts and rewards ------------------------------------------------------------

        def _generate_and_score_completions(self, inputs):
            device = self.accelerator.device
            mode = "train" if self.model.training else "eval"
            group = self.num_generations if mode == "train" else self.num_generations_eval
            recipe = self.recipe
            prompt_ids = self.r2ec.tokenize([x["prompt"] for x in inputs])
            if not recipe.reasoning:
                sampled_ids = [[] for _ in prompt_ids]
            else:
                sampled_ids, _ = self._generate_single_turn(prompt_ids, None, {}, group)
            completion_ids, sampled = close_rollouts(sampled_ids, self.r2ec.answer_id, self.eos_token_ids)

            pad_id = self.r2ec.pad_id
            prompt_t = pad([torch.tensor(p) for p in prompt_ids], padding_value=pad_id, padding_side="left").to(device)
            prompt_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompt_ids], padding_value=0,
                              padding_side="left").to(device)
            completion_t = pad([torch.tensor(c) for c in completion_ids], padding_value=pad_id,
                               padding_side="right").to(device)
            completion_mask = pad([torch.ones(len(c), dtype=torch.long) for c in completion_ids], padding_value=0,
                                  padding_side="right").to(device)
            loss_mask = pad([torch.tensor(s, dtype=torch.long) for s in sampled], padding_value=0,
                            padding_side="right").to(device)
            input_ids = torch.cat([prompt_t, completion_t], dim=1)
            attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)

            old_logps = None
            with torch.no_grad():
                users = self.backbone_vectors(self.model, input_ids, attention_mask)
                generate_every = self.args.steps_per_generation * self.num_iterations
                if mode == "train" and self.args.gradient_accumulation_steps % generate_every != 0:
                    old_logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, completion_t.size(1),
                        batch_size=self.args.per_device_train_batch_size)

            self.item_vectors()
            targets = torch.tensor([int(x["target"]) for x in inputs])
            scored = self.fused_reward.score(users.cpu(), targets, [x["history"] for x in inputs])
            # group statistics need every process's rollouts (a group may span processes, as in TRL)
            local = torch.stack([scored["reward"], scored["ndcg"], scored["prob"],
                                 R.ndcg_at(scored["rank"], 10)], dim=1).to(device)
            gathered = self.accelerator.gather(local)
            all_rewards = gathered[:, 0].cpu()
            if not recipe.reasoning:
                advantages_all = torch.ones_like(all_rewards)
                marks_all = torch.arange(len(all_rewards)) % group == 0
            else:
                advantages_all = R.group_advantages(all_rewards, group)
                marks_all = R.top_in_group(advantages_all, group, recipe.item_loss_top)
            part = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))

            grouped = all_rewards.view(-1, group)
            group_std = grouped.std(dim=1) if group > 1 else torch.zeros(grouped.shape[0])
            lengths = torch.tensor([float(sum(s)) for s in sampled], device=device)
            closed = torch.tensor([float(s[-1] == 0) for s in sampled], device=device)
            metrics = self._metrics[mode]
            metrics["reward"].append(all_rewards.mean().item())
            metrics["reward_std"].append(all_rewards.std().item() if len(all_rewards) > 1 else 0.0)
            metrics["rollout_ndcg"].append(gathered[:, 1].mean().item())
            metrics["rollout_ndcg@10"].append(gathered[:, 3].mean().item())
            metrics["target_prob"].append(gathered[:, 2].mean().item())
            metrics["advantage_spread"].append(group_std.mean().item())
            metrics["frac_reward_zero_std"].append((group_std < 1e-8).float().mean().item())
            metrics["reasoning_length"].append(self.accelerator.gather(lengths).mean().item())
            metrics["closed_ratio"].append(self.accelerator.gather(closed).mean().item())
            if mode == "train":
                self.samples.add(x["sample_id"] for x in inputs)

            output = {
                "prompt_ids": prompt_t, "prompt_mask": prompt_mask,
                "completion_ids": completion_t, "completion_mask": completion_mask, "loss_mask": loss_mask,
                "advantages": advantages_all[part].to(device), "item_mark": marks_all[part].to(device),
                "target": targets.to(device), "user_vector": users.detach(),
                "num_items_in_batch": self.accelerator.gather((completion_mask * loss_mask).sum()).sum(),
            }
            if old_logps is not None:
                output["old_per_token_logps"] = old_logps
            return output

        # -- the loss ------------------------------------------------------------------------

        def _compute_loss(self, model, inputs):
            recipe = self.recipe
            mode = "train" if self.model.training else "eval"
            logps, entropies, users = self.policy_forward(model, inputs)
            mask = inputs["completion_mask"] * inputs["loss_mask"]
            advantages = inputs["advantages"]
            total = users.new_zeros(())
            if recipe.token_loss and recipe.reasoning:
                old = inputs.get("old_per_token_logps")
                t_loss = losses.token_loss(logps, logps.detach() if old is None else old, advantages, mask,
                                           eps_low=recipe.epsilon_low, eps_high=recipe.epsilon_high)
                total = total + t_loss
                self._metrics[mode]["token_loss"].append(t_loss.item())
            i_loss = self.item_loss(model, users, inputs)
            total = total + i_loss
            self._metrics[mode]["item_loss"].append(i_loss.item())
            tokens = mask.sum()
            entropy = (entropies * mask).sum() / tokens.clamp(min=1)
            totals = self.accelerator.reduce(torch.stack([entropy.detach() * tokens, tokens.float()]), reduction="sum")
            self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1)).item())
            if mode == "train":
                total = total / self.current_gradient_accumulation_steps
            return total

        def uniform_negatives(self, exclude: torch.Tensor) -> torch.Tensor:
            """``item_loss_uniform_negatives`` catalogue indices drawn uniformly, none in ``exclude``;
            the generator is reseeded at each step from the seed and the step."""
            n = self.recipe.item_loss_uniform_negatives
            if n == 0:
                return exclude.new_empty(0)
            step = self.state.global_step
            if step != self.negatives_step:
                self.negatives_rng.manual_seed(self.recipe.seed * 1_000_003 + step)
                self.negatives_step = step
            order = torch.randperm(len(self.item_ids), generator=self.negatives_rng)
            return order[~torch.isin(order, exclude)][:n]

        def item_loss(self, model, users, inputs):
            """The item loss of one mini-batch: its distinct targets, and any uniform negatives,
            read by the model with gradient."""
            recipe = self.recipe
            targets = inputs["target"].cpu()
            distinct, labels = torch.unique(targets, return_inverse=True)
            candidates = torch.cat([distinct, self.uniform_negatives(distinct)])
            ids, mask = pad_sequences([self.item_prompts[j] for j in candidates.tolist()], None, self.r2ec.pad_id)
            ids, mask = ids.to(users.device), mask.to(users.device)
            with self.accelerator.autocast():
                hidden = backbone(self.accelerator.unwrap_model(model))(
                    input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            items = gather_positions(hidden, answer_positions(ids, self.r2ec.answer_id))
            log_q = None if self.log_q is None else self.log_q[candidates]
            if log_q is not None and recipe.item_loss_uniform_negatives:   # the mixture's expected counts
                n_users = len(targets) / self.num_generations
                log_q = torch.log(n_users * log_q.exp() + recipe.item_loss_uniform_negatives / len(self.item_ids))
            return losses.item_loss(users, items, labels, inputs["advantages"], inputs["item_mark"], tau=recipe.tau,
                                    log_q=log_q)

    RecPOTrainer = _RecPOTrainer
    return RecPOTrainer


# ----------------------------------------------------------------------------------------------
# Data, validation and the command
# ----------------------------------------------------------------------------------------------


def train_records(recipe: R2ecRecipe, tokenizer, catalog, scale, *, limit: int | None = None, shuffle: bool = False):
    """Training rows: the rendered user prompt, ``sample_id``, ``target`` and ``history`` (catalog indices)."""
    from reczero.r2ec.prompts import user_prompt
    from reczero.rankings import load_ranking_rows

    df, order = common.split_rows(recipe.data, "train", limit=limit, seed=recipe.seed, shuffle=shuffle)
    rows = load_ranking_rows(recipe.data, "train")
    records = []
    for i in order:
        row = df.iloc[int(i)].to_dict()
        records.append({"prompt": user_prompt(row, recipe, tokenizer, scale), "sample_id": row["sample_id"],
                        "target": int(catalog.index([row["item_id"]])[0]),
                        "history": catalog.index(list(rows["history"].iloc[int(i)])).tolist()})
    return records


def item_log_q(data_dir: str | Path, catalog):
    """``log q_j`` of every catalog item, in catalog order (a float32 tensor): its share of the
    training interactions, counted by the popularity baseline (one count, not a second one). The
    batches draw training samples uniformly, so their targets arrive with these odds. An item seen
    only in histories (never a target, so never in a batch) counts as 1 to keep its log finite."""
    import numpy as np
    import torch

    from reczero.baselines import make_ranker
    from reczero.rankings import load_ranking_rows

    popularity = make_ranker("popularity").fit(load_ranking_rows(data_dir, "train", timestamps=True))
    if not popularity.catalog.ids.equals(catalog.ids):
        raise ReczeroError(f"{data_dir}: the popularity counts' item catalog differs from RecPO's (both are the train split's)")
    counts = np.maximum(popularity.counts_.astype(np.float64), 1.0)
    return torch.from_numpy(np.log(counts / counts.sum()).astype(np.float32))


class BestState:
    """``RUN/best.json``: the best valid NDCG@10 so far, its step, and validations since (survives
    --resume); the best weights are in ``RUN/best``."""

    def __init__(self, root: Path) -> None:
        self.path, self.dir = root / "best.json", root / "best"
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.step = data.get("step")
        self.ndcg = data.get("valid_ndcg@10", -1.0)
        self.since = data.get("evals_since_best", 0)

    def update(self, step: int, ndcg: float) -> bool:
        better = ndcg > self.ndcg
        if better:
            self.step, self.ndcg, self.since = step, ndcg, 0
        else:
            self.since += 1
        atomic_write_text(self.path, json.dumps({"step": self.step, "valid_ndcg@10": self.ndcg,
                                                 "evals_since_best": self.since}) + "\n")
        return better


def make_validation_callback(trainer, paths: common.RunPaths, recipe: R2ecRecipe, catalog, scale, best: BestState):
    """Valid NDCG@10 every ``eval_steps`` steps and at the end; the best model saved to ``best.dir``."""
    from transformers import TrainerCallback

    from reczero.data import schema
    from reczero.r2ec.evaluate import rank_split
    from reczero.rankings import load_ranking_rows, per_sample_ndcg

    df = schema.load_split(recipe.data, "valid", limit=recipe.eval_samples)
    rows = load_ranking_rows(recipe.data, "valid").head(len(df)).reset_index(drop=True)

    class ValidationCallback(TrainerCallback):
        last_step = -1

        def run(self, step: int, control) -> None:
            if step == self.last_step or len(df) == 0:
                return
            self.last_step = step
            t0 = time.time()
            frame = rank_split(trainer.r2ec, df, rows, catalog, trainer.item_vectors(force=True), recipe, scale,
                               max_new_tokens=recipe.max_completion_length, no_reasoning=not recipe.reasoning,
                               mask_history=recipe.mask_history)
            ndcg = float(per_sample_ndcg(frame["rank"], 10).mean())
            hit = float((frame["rank"].fillna(10**9) <= 10).mean())
            better = best.update(step, ndcg)
            if better:
                trainer.save_model(str(best.dir))
                trainer.processing_class.save_pretrained(str(best.dir))
            common.append_jsonl(paths.log, {"step": step, "valid_ndcg@10": ndcg, "valid_hit@10": hit,
                                            "valid_reasoning_tokens": frame.attrs["reasoning_tokens"],
                                            "valid_best": better, "valid_seconds": round(time.time() - t0, 2)})
            log.info("step %d: valid NDCG@10 %.4f (Hit@10 %.3f)%s", step, ndcg, hit, " best" if better else "")
            if recipe.early_stopping_patience and best.since >= recipe.early_stopping_patience:
                log.info("no better valid NDCG@10 in %d validations: stopping", best.since)
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kwargs):
            if recipe.eval_steps > 0 and state.global_step % recipe.eval_steps == 0 and state.is_world_process_zero:
                self.run(state.global_step, control)

        def on_train_end(self, args, state, control, **kwargs):
            if recipe.eval_steps > 0 and state.is_world_process_zero:
                self.run(state.global_step, control)

    return ValidationCallback()


def save_best(trainer, paths: common.RunPaths, recipe: R2ecRecipe, catalog, best: BestState) -> str:
    """RecPO's save step (``TrainerRun.finish(save=...)``): the best valid NDCG@10's weights (the last
    ones without validation) become ``RUN/model``, a LoRA adapter merged into its base, with the
    model's item table; returns the note for the last line."""
    import torch

    from reczero.models import load_model
    from reczero.r2ec.item_table import load_or_compute_table
    from reczero.r2ec.model import R2ecModel

    dtype = torch.bfloat16 if recipe.bf16 else torch.float32
    validated = recipe.eval_steps > 0
    if paths.model.exists():
        shutil.rmtree(paths.model)
    if not validated or not best.dir.is_dir():          # no validation: the last weights
        trainer.save_model(str(best.dir))
        trainer.processing_class.save_pretrained(str(best.dir))
    if recipe.use_lora:                                 # the best valid NDCG@10 is the run's model
        save_merged(best.dir, recipe.model, paths.model, dtype=dtype)
        shutil.rmtree(best.dir)
    else:
        best.dir.rename(paths.model)
    final, final_tok = load_model(paths.model, dtype=dtype)
    load_or_compute_table(R2ecModel(final, final_tok, tau=recipe.tau), paths.model, recipe.data, catalog, recipe,
                          batch_size=recipe.item_batch_size)
    return f"(best valid NDCG@10 {best.ndcg:.4f} at step {best.step})" if validated and best.step is not None else ""


def save_merged(adapter_dir: Path, base: str, out: Path, *, dtype) -> None:
    """A LoRA run's adapter merged into its base (extended by the same ``<answer>`` row) and saved
    as a plain model, loadable by path like any other."""
    from peft import PeftModel

    from reczero.models import load_model
    from reczero.r2ec.model import add_answer_token

    model, tokenizer = load_model(base, dtype=dtype)
    add_answer_token(model, tokenizer)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<answer>"),
                                             *[i for i in _ids(merged.generation_config.eos_token_id)]]
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _ids(value) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def grpo_args(recipe: R2ecRecipe, output_dir: str, use_cpu: bool, answer_id: int):
    """TRL's ``GRPOConfig`` of RecPO: no KL, the asymmetric clip, dropout off (the three reads of the
    user vector agree), the dataset's columns kept for the hooks, vLLM stopped at ``<answer>``."""
    return common.grpo_config(
        recipe, output_dir, use_cpu,
        top_k=recipe.top_k, max_completion_length=max(recipe.max_completion_length, 1), beta=0.0,
        epsilon=recipe.epsilon_low, epsilon_high=recipe.epsilon_high, disable_dropout=True,
        remove_unused_columns=False,
        **({"generation_kwargs": {"stop_token_ids": [answer_id]}} if recipe.use_vllm else {}),
    )


def train_r2ec(recipe: R2ecRecipe) -> int:
    """`reczero train r2ec`: run (or resume) RecPO; returns 0 on success."""
    run = common.TrainerRun.start(recipe, plan, stage="r2ec", title="R2ec (RecPO)")
    if run is None:
        return 0

    from reczero.data import schema
    from reczero.r2ec.item_table import item_prompt_ids, item_records
    from reczero.r2ec.model import R2ecModel, add_answer_token
    from reczero.rankings import ItemCatalog

    model, tokenizer = run.load_model()
    answer_id = add_answer_token(model, tokenizer)
    model.generation_config.eos_token_id = [answer_id, *[s for s in _ids(model.generation_config.eos_token_id)
                                                         if s != answer_id]]
    scale = schema.rating_scale(recipe.data)
    catalog = ItemCatalog.from_data(recipe.data)
    limit = common.reachable_samples(recipe, run.plan["users_per_step"])
    records = train_records(recipe, tokenizer, catalog, scale, limit=limit, shuffle=limit is not None)
    probe = R2ecModel(model, tokenizer, tau=recipe.tau)
    item_prompts = item_prompt_ids(probe, item_records(recipe.data, catalog), recipe)

    samples, best, validated = common.StepSamples(), BestState(run.paths.root), recipe.eval_steps > 0
    trainer = run.build_trainer(
        _trainer_class(), grpo_args(recipe, str(run.paths.checkpoints), run.use_cpu, answer_id), model, tokenizer,
        records, log_extra=samples.drain,
        late_callbacks=lambda t: [make_validation_callback(t, run.paths, recipe, catalog, scale, best)] if validated else [],
        recipe=recipe, item_prompts=item_prompts, item_ids=list(catalog.ids), samples=samples,
        log_q=item_log_q(recipe.data, catalog) if recipe.item_loss_logq else None,
    )
    result = run.train(trainer)
    return run.finish(trainer, tokenizer, result, save=lambda: save_best(trainer, run.paths, recipe, catalog, best),
                      best_step=best.step if validated else None,
                      **{"best_valid_ndcg@10": best.ndcg if validated else None}, plan=run.plan)
