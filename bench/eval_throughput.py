"""Eval throughput: batched generation (sorted by length, left padded) against one prompt at a time.

Both use the same model, the same prompts and greedy decoding with exactly ``--new-tokens`` new
tokens per prompt (``min_new_tokens = max_new_tokens``, so EOS cannot end one earlier than the
other; 256 is `reczero eval`'s default budget). They are timed interleaved, group by group, so that
a shared machine's drifting load hits both alike. Reports samples/s of each and their ratio.
Target (issue 5): >= 5x at batch 32 on 2 cores.

    python bench/eval_throughput.py                        # tiny random Qwen2 (~1M params), 200 prompts
    python bench/eval_throughput.py --data DATA            # prompts rendered from DATA's test split
    python bench/eval_throughput.py --base RUN_OR_MODEL    # a base model instead of a random one
"""

from __future__ import annotations

import argparse
import logging
import platform
import random
import tempfile
import time
from pathlib import Path

WORDS = ("great acting slow plot loved the ending boring middle strong cast weak script music was "
         "wonderful too long would watch again not for me classic drama funny moments").split()


def synthetic_prompts(tokenizer, n: int, seed: int) -> list[str]:
    """Chat-rendered prompts of varied length (about 20 to 200 words), like rating prompts."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        history = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200)))
        messages = [{"role": "system", "content": "Predict the rating the user will give the target item."},
                    {"role": "user", "content": f"User history: {history}\nHow will this user rate the item?"}]
        prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return prompts


def dataset_prompts(tokenizer, data: str, n: int) -> list[str]:
    from reczero.config import PromptOptions
    from reczero.data import schema
    from reczero.evaluate import render_prompts

    return render_prompts(schema.load_split(data, "test", n), PromptOptions(), tokenizer)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="Model (run dir, local path) to use instead of a tiny random Qwen2.")
    parser.add_argument("--data", help="Prepared dataset: prompts from its test split instead of synthetic text.")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256, help="Exact new tokens per prompt in both runs.")
    parser.add_argument("--hidden-size", type=int, default=128, help="Random model's hidden size.")
    parser.add_argument("--layers", type=int, default=4, help="Random model's layers.")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import sys

    import torch
    from tqdm import tqdm

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_test_model  # the tests' random-init Qwen2 (tests/conftest.py)

    from reczero.generation import generate, length_order
    from reczero.models import count_parameters, load_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.base or make_test_model(Path(tmp) / "model", hidden_size=args.hidden_size,
                                            num_layers=args.layers, seed=args.seed)
        model, tokenizer = load_model(path)
    params = count_parameters(model)
    prompts = (dataset_prompts(tokenizer, args.data, args.samples) if args.data
               else synthetic_prompts(tokenizer, args.samples, args.seed))
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, greedy=True, progress=False)

    generate(model, tokenizer, prompts[:4], batch_size=4, **kw)          # warm-up (allocator, kernels)
    # Interleaved, one batch-sized group at a time (longest prompts first, as generate orders them):
    # on a shared machine the load drifts, and both methods then see the same drift.
    order = length_order(lengths)
    t_batched = t_single = 0.0
    batched, single = {}, {}
    for start in tqdm(range(0, len(order), args.batch_size), desc="groups", unit="group"):
        group = order[start:start + args.batch_size]
        texts = [prompts[i] for i in group]
        t, out = timed(lambda texts=texts: generate(model, tokenizer, texts, batch_size=args.batch_size, **kw))
        t_batched += t
        batched.update(zip(group, out, strict=True))
        t, out = timed(lambda texts=texts: generate(model, tokenizer, texts, batch_size=1, **kw))
        t_single += t
        single.update(zip(group, out, strict=True))
    same = sum(batched[i] == single[i] for i in range(len(prompts)))

    print(f"model: {path if args.base else 'random Qwen2'} ({params / 1e6:.2f}M params, "
          f"hidden {model.config.hidden_size}, {model.config.num_hidden_layers} layers), "
          f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"prompts: {len(prompts)} ({'test split of ' + args.data if args.data else 'synthetic'}), "
          f"tokens min/mean/max {min(lengths)}/{sum(lengths) / len(lengths):.0f}/{max(lengths)}, "
          f"{args.new_tokens} new tokens each, greedy")
    print(f"batched (batch {args.batch_size}): {t_batched:7.2f} s  {len(prompts) / t_batched:8.2f} samples/s")
    print(f"one at a time:        {t_single:7.2f} s  {len(prompts) / t_single:8.2f} samples/s")
    print(f"speed-up: {t_single / t_batched:.1f}x   identical greedy completions: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
