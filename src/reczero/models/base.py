"""`reczero base`: the tiny base model, our stand-in for a pretrained instruct model.

What this command chose, and why (DESIGN.md, "The embedded default"):

1. **Tokenizer** trained on the dataset's own text (``tokenizer.py``: byte-level BPE, ChatML with
   ``{% generation %}`` markers, the tags as ordinary added tokens, one token per average).
2. **Pretraining** of a Qwen2-architecture model (``--size``: ~0.3M / 5M / 30M parameters) on
   the training split's text laid out like the prompt (``corpus.py``: user pages, item pages and,
   by default, the same pages without review text), loss on every token, a rating token counting
   ``--rating-weight`` times (default 10). It is never shown a validation or test target. Both
   defaults are measured levers (``bench/base_levers.py``, RESULTS.md "base levers"): without them
   the tiny model's rating prior correlated 0.12–0.19 with the truth, with them 0.35.
3. **Format warm-up** (``--format-warmup-steps``): real prompts with four-tag answers whose steps
   *quote* the sample's own prompt — its two average lines, the item's attributes and quality word,
   the two averages again in ``<match>`` — and compute nothing: reading, which every pretrained
   instruct model can do and the tiny base could not (students distilled from a base warmed up on
   another sample's steps quoted the user's average right 8% of the time, 92% from this one;
   RESULTS.md). Never a sum, a stance or the rating: the prompt carries no loss; at the rating's
   position the target is the model's *own* prior read in the pretraining layout (user page and
   item page combined) — never the true rating; each step also replays pretraining text. A warm-up
   with random ratings *in* the loss erased the prior in a trial here (read-off MAE 0.55 -> 2.18).
   What does not work yet: the slot keeps only part of the prior and greedy answers are near the
   median.
   One template (``--template``) only: a tiny model warmed up on a mix of templates did not learn
   which one its system prompt asked for; build one base per template for the ablations.
   **For R2ec** (``--format-warmup r2ec``) the warm-up holds R2ec's user prompts (``--history-*``)
   answered by a short reasoning that quotes the newest history items (``corpus.r2ec_reasoning``)
   and ends in ``<answer>``, one added token, so that RecPO starts from a model that closes its
   reasoning; R2ec's item prompts join the pretraining text (the layout of every item vector).
   After ``<answer>`` each warm-up answer quotes once more (the newest history item; for item
   prompts, the item's attributes): the vector is the state at ``<answer>``, and a warm-up that
   closed the turn there made it a constant (``corpus.r2ec_user_vector_quote``). It quotes and
   computes nothing, like the rating warm-up: which item comes next is RecPO's to learn.
4. **Measured and described**: the rating prior read off in the pretraining layout (user page,
   item page, both) after pretraining and after the warm-up, the read-off at the answer's
   ``<rate>``, the greedy answers' format rate, MAE and distinct predictions on validation samples,
   next to the constant predictors — all in ``BASE/README.md`` (the model card) and
   ``BASE/log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from reczero import __version__
from reczero.config import BaseConfig, save_config
from reczero.data import schema
from reczero.io import atomic_write_text
from reczero.models import corpus, probe
from reczero.models.card import write_model_card
from reczero.models.pretrain import (
    check_pieces,
    pack_documents,
    pretraining_batches,
    run_steps,
    warmup_batches,
    warmup_example,
)
from reczero.models.tiny import count_parameters, new_model, qwen2_config
from reczero.models.tokenizer import save_tokenizer, train_tokenizer
from reczero.predictions import fallback_prediction
from reczero.prompts import TEMPLATE_TAGS, build_messages, system_prompt
from reczero.r2ec import prompts as r2ec_prompts

log = logging.getLogger(__name__)
PROVENANCE = "provenance.json"   # what the base was made from: recipe, data directory, data content hash


def _records(df, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = rng.sample(range(len(df)), min(n, len(df)))
    return [df.iloc[i].to_dict() for i in rows]


def _prompt(sample: dict[str, Any], cfg: Any, tokenizer: Any, scale: schema.RatingScale) -> str:
    messages = build_messages(sample, cfg, tokenizer, scale)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _prior(model, tokenizer, cfg, scale, samples, marginal) -> dict[str, Any]:
    """The rating prior in the pretraining layout: log-probabilities on the grid after the user page
    and after the item page of each sample, and their product of experts (probabilities)."""
    user = probe.grid_logprobs(model, tokenizer, [corpus.prior_text(s, cfg, scale) for s in samples], scale)
    item = probe.grid_logprobs(model, tokenizer, [corpus.item_prior_text(s, cfg, scale) for s in samples], scale)
    return {"user": user, "item": item, "both": probe.prior_of_experts(user, item, marginal)}


def _measure(model, tokenizer, cfg, scale, samples, answers, fallbacks, marginal, slot: bool = True) -> dict[str, Any]:
    """Read-offs on validation samples: in the pretraining layout ("prior": user page, item page and
    both combined) and at ``<rate>`` ("slot")."""
    targets = [float(s["rating"]) for s in samples]
    grid = probe.rating_grid(scale)
    prior = _prior(model, tokenizer, cfg, scale, samples, marginal)
    result = {name: probe.summarise([grid[k] for k in prior[key].argmax(-1)], targets, fallbacks)
              for name, key in (("prior", "user"), ("item_prior", "item"), ("both_prior", "both"))}
    result["targets"] = targets
    if slot:
        result["prompts"] = [_prompt(s, cfg, tokenizer, scale) for s in samples]
        texts = [p + a[0] for p, a in zip(result["prompts"], answers, strict=True)]
        result["slot"] = probe.summarise(probe.read_off(model, tokenizer, texts, scale), targets, fallbacks)
    return result


def _marginal(ratings, scale: schema.RatingScale) -> list[float]:
    """The training ratings' share of each grid value (add-one smoothed)."""
    import numpy as np

    index = np.clip(np.rint((np.asarray(ratings, dtype=float) - scale.lo) / scale.step), 0, len(probe.rating_grid(scale)) - 1)
    counts = 1 + np.bincount(index.astype(int), minlength=len(probe.rating_grid(scale)))
    return (counts / counts.sum()).tolist()


def r2ec_warmup_examples(samples: list[dict[str, Any]], cfg: BaseConfig, tokenizer: Any,
                         scale: schema.RatingScale) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of R2ec's warm-up, the prompts carrying no loss: each user prompt answered
    by the quoting reasoning, ``<answer>`` and the newest history item quoted after it; each item
    prompt (which ends in ``<answer>``) followed by the attributes its description names. Each ends
    in ``<|im_end|>``, which closes the turn in the chat template."""
    pairs = [(r2ec_prompts.user_prompt(s, cfg, tokenizer, scale),
              corpus.r2ec_reasoning(s, cfg) + r2ec_prompts.ANSWER + corpus.r2ec_user_vector_quote(s, cfg))
             for s in samples]
    pairs += [(r2ec_prompts.item_prompt(record, cfg, tokenizer), quote)
              for record, quote in corpus.r2ec_item_examples(cfg.data, cfg)]
    check_pieces(tokenizer, *pairs[0], "", "")
    check_pieces(tokenizer, *pairs[-1], "", "")
    return [warmup_example(tokenizer, prompt, answer, "", "") for prompt, answer in pairs]


def r2ec_probe(model: Any, tokenizer: Any, cfg: BaseConfig, scale: schema.RatingScale,
               samples: list[dict[str, Any]], max_new_tokens: int = 64) -> dict[str, Any]:
    """Greedy reasoning on R2ec user prompts of validation samples: the share closed by
    ``<answer>`` within ``max_new_tokens``, the share that is exactly the warm-up's quote, the mean
    length, and an example."""
    from reczero.r2ec.model import R2ecModel

    r2ec = R2ecModel(model, tokenizer)
    prompts = r2ec.tokenize([r2ec_prompts.user_prompt(s, cfg, tokenizer, scale) for s in samples])
    ids, sampled = r2ec.reason(prompts, max_new_tokens=max_new_tokens, batch_size=16)
    texts = [tokenizer.decode(i[:-1] if i and i[-1] == r2ec.answer_id else i) for i in ids]
    closed = [bool(m) and m[-1] == 1 and i[-1] == r2ec.answer_id for i, m in zip(ids, sampled, strict=True)]
    quoted = [t.strip() == corpus.r2ec_reasoning(s, cfg) for t, s in zip(texts, samples, strict=True)]
    return {"n": len(samples), "closed_rate": sum(closed) / len(samples), "quote_rate": sum(quoted) / len(samples),
            "mean_tokens": sum(sum(m) for m in sampled) / len(samples), "max_new_tokens": max_new_tokens,
            "example": texts[0]}


def base_provenance(cfg: BaseConfig, recipe: str | None = None) -> dict[str, Any]:
    """What a base is made from (``BASE/provenance.json``): recipe, data directory, data content hash."""
    return {"recipe": recipe or "config.yaml (the resolved settings)", "data": str(Path(cfg.data).resolve()),
            "data_hash": schema.content_hash(cfg.data), "seed": cfg.seed, "reczero": __version__}


def build_base(cfg: BaseConfig, recipe: str | None = None) -> int:
    """Build the base model in ``cfg.out`` from the prepared dataset ``cfg.data``.

    ``BASE/provenance.json`` records what it was made from: ``recipe`` (the recipe file's name,
    when the caller knows it; the resolved settings are ``BASE/config.yaml`` in any case), the data
    directory and the content hash of what the base read (:func:`schema.content_hash`)."""
    import numpy as np
    import torch

    schema.require_ratings(cfg.data, "base")   # the pretraining pages and the rating warm-up are ratings
    r2ec = cfg.format_warmup == "r2ec"
    started = time.perf_counter()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    threads = cfg.threads or (1 if cfg.size == "tiny" else 0)
    if threads:  # a hidden size of 64 gains nothing from intra-op threads; on a busy machine they cost 2-10x
        torch.set_num_threads(threads)
    out = Path(cfg.out)
    if (out / "config.json").is_file():
        log.warning("%s already holds a model; it is replaced", out)
    out.mkdir(parents=True, exist_ok=True)
    scale = schema.rating_scale(cfg.data)
    provenance = base_provenance(cfg, recipe)

    docs = corpus.pretraining_documents(cfg.data, cfg, cfg.seed)
    if r2ec:
        docs += corpus.r2ec_item_documents(cfg.data, cfg)
        random.Random(cfg.seed).shuffle(docs)
    train_df, valid_df = schema.load_split(cfg.data, "train"), schema.load_split(cfg.data, "valid")
    if len(train_df) == 0:
        raise schema.DataError(f"{cfg.data}: the train split is empty; nothing to pretrain on")
    train_ratings = train_df["rating"].to_numpy(dtype=float)
    train_mean, train_median = float(train_ratings.mean()), float(np.median(train_ratings))
    marginal = _marginal(train_ratings, scale)

    warm_samples = _records(train_df, max(cfg.format_warmup_steps * cfg.batch_size, 1), rng)
    eval_samples = _records(valid_df, cfg.eval_samples, random.Random(cfg.seed + 1)) if len(valid_df) else []
    fallbacks = [fallback_prediction(s, train_mean)[0] for s in eval_samples]   # what `reczero eval` would score
    chat_words = ["<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n"] * 50
    if r2ec:
        answers = []
        texts = [*(r2ec_prompts.user_text(s, cfg, scale) for s in warm_samples[:500]),
                 *(corpus.r2ec_reasoning(s, cfg) for s in warm_samples[:500])]
        tokenizer = train_tokenizer([*docs, *texts, *chat_words], cfg.vocab_size, scale=scale,
                                    extra_tokens=[r2ec_prompts.ANSWER])
    else:
        prompt_texts = [build_messages(s, cfg, None, scale)[1]["content"] for s in warm_samples[:500]]
        answers = corpus.warmup_answers(warm_samples, cfg.template, scale)
        tokenizer = train_tokenizer([*docs, *prompt_texts, *chat_words, *(system_prompt(t, scale) for t in TEMPLATE_TAGS),
                                     *(b + r + a for b, r, a in answers[:500])], cfg.vocab_size, scale=scale)

    config = qwen2_config(cfg.size, vocab_size=len(tokenizer), tokenizer=tokenizer,
                          max_position_embeddings=max(4096, cfg.max_prompt_tokens + 1024))
    model = new_model(config, tokenizer, cfg.seed)
    n_params = count_parameters(model)
    log.info("base %s: Qwen2 %d parameters, vocabulary %d", cfg.size, n_params, len(tokenizer))
    blocks = pack_documents(docs, tokenizer, cfg.seq_len)
    pre_steps = math.ceil(cfg.pretrain_epochs * len(blocks) / cfg.batch_size)
    report: dict[str, Any] = {"size": cfg.size, "parameters": n_params, "vocab": len(tokenizer), "documents": len(docs),
                              "pretrain_tokens": int(blocks.numel()), "train_mean": train_mean,
                              "train_median": train_median, "scale": scale.to_dict()}
    eval_answers = [] if r2ec else corpus.warmup_answers(eval_samples, cfg.template, scale)

    with open(out / "log.jsonl", "w") as log_file:
        def note(stage: str, record: dict[str, Any]) -> None:
            log_file.write(json.dumps({"stage": stage, **record}) + "\n")

        if pre_steps:
            weight = None
            if cfg.rating_weight != 1:
                weight = {"weight": cfg.rating_weight, "rating_tokens": probe.grid_token_ids(tokenizer, scale),
                          "after": tokenizer.convert_tokens_to_ids("Ġ")}
            report["pretrain"] = run_steps(model, pretraining_batches(blocks, cfg.batch_size, pre_steps, cfg.seed, weight),
                                           pre_steps, cfg.pretrain_lr, "pretrain", log_file)
        if eval_samples:
            measured = _measure(model, tokenizer, cfg, scale, eval_samples, eval_answers, fallbacks, marginal, slot=False)
            for key in ("prior", "item_prior", "both_prior"):
                report[f"after_pretrain_{key}"] = measured[key]
                note(f"eval_after_pretrain_{key}", measured[key])
            report["after_pretrain"] = report["after_pretrain_prior"]
        if cfg.format_warmup_steps and r2ec:
            examples = r2ec_warmup_examples(warm_samples, cfg, tokenizer, scale)
            report["warmup_examples"] = len(warm_samples)
            report["warmup_item_examples"] = len(examples) - len(warm_samples)
            warm = warmup_batches(examples, cfg.batch_size,
                                  cfg.format_warmup_steps, tokenizer.pad_token_id, cfg.seed)
            replay = pretraining_batches(blocks, max(1, cfg.batch_size // 2), cfg.format_warmup_steps, cfg.seed + 1)
            report["warmup"] = run_steps(model, ([w, r] for w, r in zip(warm, replay, strict=True)),
                                         cfg.format_warmup_steps, cfg.format_warmup_lr, "warmup", log_file)
        elif cfg.format_warmup_steps:
            examples = []
            for sample, (before, rating, after) in zip(warm_samples, answers, strict=True):
                prompt = _prompt(sample, cfg, tokenizer, scale)
                if not examples:
                    check_pieces(tokenizer, prompt, before, rating, after)
                examples.append(warmup_example(tokenizer, prompt, before, rating, after))
            report["warmup_examples"] = len(examples)
            model.eval()
            targets = _prior(model, tokenizer, cfg, scale, warm_samples, marginal)["both"]
            report["slot_target"] = {"kind": "prior", "mean_max_prob": float(targets.max(-1).mean())}
            log.info("warm-up slot targets: the pretrained model's own rating prior (mean top probability %.2f)",
                     report["slot_target"]["mean_max_prob"])
            warm = warmup_batches(examples, cfg.batch_size, cfg.format_warmup_steps, tokenizer.pad_token_id, cfg.seed,
                                  probe.grid_token_ids(tokenizer, scale), targets)
            replay = pretraining_batches(blocks, max(1, cfg.batch_size // 2), cfg.format_warmup_steps, cfg.seed + 1)
            batches = ([w, r] for w, r in zip(warm, replay, strict=True))
            report["warmup"] = run_steps(model, batches, cfg.format_warmup_steps, cfg.format_warmup_lr, "warmup",
                                         log_file)
        if eval_samples and r2ec:
            report["r2ec_probe"] = r2ec_probe(model, tokenizer, cfg, scale, eval_samples)
            note("eval_r2ec_probe", report["r2ec_probe"])
        elif eval_samples:
            measured = _measure(model, tokenizer, cfg, scale, eval_samples, eval_answers, fallbacks, marginal)
            report["after_warmup"], report["slot"] = measured["prior"], measured["slot"]
            report["after_warmup_both_prior"] = measured["both_prior"]
            report["greedy"] = probe.greedy_eval(model, tokenizer, measured["prompts"], measured["targets"], scale,
                                                 cfg.template, fallbacks)
            report["constants"] = probe.constants(measured["targets"], train_mean, train_median)
            for stage in ("after_warmup", "slot", "greedy", "constants"):
                note(f"eval_{stage}", report[stage])

    model.save_pretrained(out)
    save_tokenizer(tokenizer, out, docs[:5])
    save_config(cfg, out)
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=2) + "\n")
    report["seconds"] = time.perf_counter() - started
    report["provenance"] = provenance
    write_model_card(out, cfg, report)
    greedy, closed = report.get("greedy", {}), report.get("r2ec_probe", {})
    print(f"base {cfg.size} ({n_params / 1e6:.2f}M parameters) -> {out} in {report['seconds']:.0f} s"
          + (f"; greedy on {greedy['n']} valid samples: format {greedy['format_rate']:.0%}, MAE {greedy['mae']:.3f}, "
             f"{greedy['distinct']} distinct ratings" if greedy else "")
          + (f"; greedy R2ec reasoning on {closed['n']} valid samples: closed by <answer> {closed['closed_rate']:.0%}, "
             f"quoted exactly {closed['quote_rate']:.0%}" if closed else ""))
    return 0
