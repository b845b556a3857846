"""The base model's card (``BASE/README.md``): what it is, how it was made, what it was never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reczero.models.tiny import SIZES


def _row(name: str, m: dict[str, Any] | None) -> str:
    if not m:
        return f"| {name} | – | – | – | – | – |"
    fmt = f"{m['format_rate']:.0%}" if "format_rate" in m else "–"
    corr = "–" if m.get("correlation") is None else f"{m['correlation']:.2f}"
    return f"| {name} | {m['mae']:.3f} | {m['parse_rate']:.0%} | {fmt} | {m['distinct']} | {corr} |"


def _stage(name: str, s: dict[str, Any] | None, lr: float) -> str:
    if not s:
        return f"| {name} | 0 | – | – | – | – |"
    return (f"| {name} | {s['steps']} | {s['tokens']:,} | {s['first_loss']:.3f} → {s['last_loss']:.3f} | {lr:g} | "
            f"{s['seconds']:.0f} s |")


def _r2ec_warmup(cfg: Any, report: dict[str, Any]) -> str:
    shows = "attributes" if cfg.history_attributes else "titles"
    return (f"2. **Format warm-up for R2ec** on {report.get('warmup_examples', 0):,} training samples: R2ec's user "
            f"prompt (the newest {cfg.history_window} history items{', their attributes' if cfg.history_attributes else ''}"
            f"{', their review snippets' if cfg.history_reviews else ''}) answered by a reasoning that quotes the "
            f"{shows} of the newest history items and ends in `<answer>` (one added token), after which it quotes "
            f"the newest item again; and the {report.get('warmup_item_examples', 0):,} item prompts, each followed "
            "after its `<answer>` by the attributes its description names — so that the hidden state at `<answer>`, "
            "the vector, holds what was read rather than a constant 'end of turn'. The prompts carry no loss, and "
            "each step replays pretraining text. R2ec's item prompts are in the pretraining text. Nothing about "
            "which item comes next is taught: that is RecPO's to learn.")


def write_model_card(out: Path, cfg: Any, report: dict[str, Any]) -> Path:
    hidden, layers, heads, kv, inter = SIZES[cfg.size]
    consts = report.get("constants", {})
    lines = [
        f"# reczero tiny base ({cfg.size})",
        "",
        "A small Qwen2-architecture causal language model built by `reczero base` as a stand-in for a "
        "pretrained instruct model: it knows the language of its dataset and the answer format, not the "
        "rating task. RecZero's reinforcement learning starts from here.",
        "",
        "## Model",
        "",
        f"- Qwen2ForCausalLM, {report['parameters']:,} parameters (tied embeddings): hidden {hidden}, {layers} layers, "
        f"{heads} attention heads ({kv} key/value), MLP {inter}.",
        f"- Tokenizer: byte-level BPE trained on the dataset's text, {report['vocab']:,} tokens; ChatML chat template "
        "with `{% generation %}` markers; the reasoning tags are ordinary (non-special) added tokens, "
        "one-decimal averages are single tokens, digits are single tokens.",
        f"- Rating scale {report['scale']['min']:g}–{report['scale']['max']:g} (step {report['scale']['step']:g}).",
        "",
        "## How it was made",
        "",
        "| stage | steps | tokens | loss (first → last 10%) | peak lr | time |",
        "|---|---|---|---|---|---|",
        _stage("pretraining", report.get("pretrain"), cfg.pretrain_lr),
        _stage("format warm-up", report.get("warmup"), cfg.format_warmup_lr),
        "",
        f"1. **Pretraining** on {report['documents']:,} documents ({report['pretrain_tokens']:,} tokens packed in "
        f"blocks of {cfg.seq_len}), loss on every token: user pages (each user's *training-split* interactions, "
        "oldest first, as `- Title [attributes] rated 4: review` lines with running averages) and item pages "
        "(title, attributes, description, training-split reviews with ratings, running average), in the prompt's "
        "own line formats" + ("; and the same pages without their review text (ratings lists, dense in "
                              "(average, rating) pairs)." if cfg.rating_lists else "."),
        _r2ec_warmup(cfg, report) if cfg.format_warmup == "r2ec" else
        f"2. **Format warm-up** on {report.get('warmup_examples', 0):,} training prompts answered in the "
        f"`{cfg.template}` template, whose steps quote the sample's own prompt (its average lines, the item's "
        "attributes and quality word, the two averages again in the step before the rating) and compute nothing; "
        "the prompt carries no loss. At the rating's position the target is the model's *own* rating prior after "
        "pretraining, read in the pretraining layout (the user page and the item page of the sample, combined as a "
        "product of experts `p(r|user) p(r|item) / p(r)`): self-distillation that carries the prior into the answer "
        "slot, never the true rating.",
        "",
        "**Never shown**: any validation or test target (rating or review text) — the pretraining text is exactly "
        "the training split's targets (removed by key if a held-out target were among them) and the item table. "
        "No true rating was ever trained as an *answer*.",
        "",
        f"Data: `{cfg.data}` (content {report.get('provenance', {}).get('data_hash', 'not recorded')}). Seed "
        f"{cfg.seed}. Built in {report['seconds']:.0f} s on CPU. Recipe: "
        f"{report.get('provenance', {}).get('recipe', 'config.yaml')}; full settings: `config.yaml`; what it was made "
        "from: `provenance.json`; losses: `log.jsonl`.",
        "",
        f"## Measured on {consts and report['greedy']['n'] or 0} validation samples",
        "",
        "| reading | MAE | parsed | format | distinct ratings | correlation |",
        "|---|---|---|---|---|---|",
        _row("prior after pretraining (history lines, then `- Target [attributes] rated `; argmax over ratings)",
             report.get("after_pretrain")),
        _row("item prior after pretraining (the item's page up to `- rated `)", report.get("after_pretrain_item_prior")),
        _row("both priors combined (product of experts; the warm-up's slot target)", report.get("after_pretrain_both_prior")),
        _row("prior after the warm-up (history lines read-off)", report.get("after_warmup")),
        _row("both priors combined after the warm-up", report.get("after_warmup_both_prior")),
        _row("answer slot after the warm-up (prompt + answer up to `<rate>`; argmax over ratings)", report.get("slot")),
        _row("greedy answers (unparsable → user average, else item average, else training mean)", report.get("greedy")),
        "",
    ]
    probe = report.get("r2ec_probe")
    if probe:
        lines += [f"R2ec user prompts of {probe['n']} validation samples, greedy reasoning (at most "
                  f"{probe['max_new_tokens']} tokens): closed by `<answer>` {probe['closed_rate']:.0%}, exactly the "
                  f"warm-up's quote {probe['quote_rate']:.0%}, {probe['mean_tokens']:.1f} tokens on average. Example:",
                  "", "```", probe["example"], "```", ""]
    if consts:
        lines += [f"Constants on the same samples: training mean ({report['train_mean']:.2f}) MAE "
                  f"{consts['mae_train_mean']:.3f}, training median ({report['train_median']:g}) MAE "
                  f"{consts['mae_train_median']:.3f}.", "",
                  "Example greedy answer:", "", "```", report["greedy"]["example"], "```", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
