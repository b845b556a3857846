"""R2ec's prompts and model wrapper on a real tiny Qwen2, and the trainer's hooks: the same tokens give
the same user vector at training, reward and evaluation time; rollouts are scored on their sampled
token ids, never on re-tokenised text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reczero.config import R2ecPromptOptions, R2ecRecipe
from reczero.data.schema import RatingScale
from reczero.r2ec import prompts
from reczero.r2ec.model import R2ecModel, add_answer_token, answer_token_id


@pytest.fixture(scope="module")
def tiny(r2ec_model):
    from reczero.models import load_model

    model, tokenizer = load_model(r2ec_model)
    torch.manual_seed(0)
    add_answer_token(model, tokenizer)
    return model, tokenizer


def _sample(n=3, rating=True):
    day = 86400
    history = [{"item_id": f"i{k}", "title": f"Film {k}", "attributes": np.array(["drama", f"tag{k}"]),
                "rating": float(k + 2) if rating else None, "review": f"review {k} " + "word " * 40,
                "timestamp": 1000 * day + k * day} for k in range(n)]
    return {"sample_id": "s1", "user_id": "u1", "item_id": "i9", "timestamp": 1000 * day + 10 * day,
            "user_history": np.array(history, dtype=object)}


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def test_user_prompt_lines_oldest_first_with_time_and_rating_out_of_the_scale():
    text = prompts.user_text(_sample(), R2ecPromptOptions(), RatingScale(1, 5))
    lines = text.split("\n")
    assert lines[-3:] == ["- 10 days before: Film 0, rated 2 out of 5", "- 9 days before: Film 1, rated 3 out of 5",
                          "- 8 days before: Film 2, rated 4 out of 5"]
    assert "<answer>" in lines[0] and "rating they gave" in lines[0]
    assert "tag0" not in text and "review 0" not in text           # titles only by default (the reference)


def test_user_prompt_options_add_attributes_and_reviews_and_implicit_data_has_no_ratings():
    opts = R2ecPromptOptions(history_attributes=True, history_reviews=True, review_chars=20, history_window=2)
    text = prompts.user_text(_sample(), opts, RatingScale(1, 5))
    assert "Film 0" not in text                                     # the window keeps the last 2
    assert "- 9 days before: Film 1 [drama, tag1], rated 3 out of 5. Review: review 1 word word" in text
    implicit = prompts.user_text(_sample(rating=False), R2ecPromptOptions(), None)
    assert "rated" not in implicit and "rating" not in implicit


def test_user_prompt_token_budget_drops_the_oldest_lines(tiny):
    _, tokenizer = tiny
    sample = _sample(n=12)
    full = prompts.user_prompt(sample, R2ecPromptOptions(), tokenizer, RatingScale(1, 5))
    n_full = len(tokenizer(full, add_special_tokens=False)["input_ids"])
    cut = prompts.user_prompt(sample, R2ecPromptOptions(max_prompt_tokens=n_full - 5), tokenizer, RatingScale(1, 5))
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= n_full - 5
    assert "Film 0," not in cut and "Film 11," in cut
    assert prompts.user_prompt(sample, R2ecPromptOptions(), tokenizer, RatingScale(1, 5), no_reasoning=True) == full + "<answer>"


def test_item_prompt_prefills_exactly_answer_and_caps_the_description_in_source_order(tiny):
    _, tokenizer = tiny
    words = [f"w{k}" for k in range(150)]
    item = {"title": "Orbit Nine", "description": " ".join(words), "avg_rating": 4.25, "n_ratings": 7}
    text = prompts.item_prompt(item, R2ecPromptOptions(), tokenizer)
    assert text.endswith("<|im_start|>assistant\n<answer>")
    assert "Description: " + " ".join(words[:100]) + "\n" not in text      # it is the last line
    assert text.split("Description: ")[1].split("<|im_end|>")[0] == " ".join(words[:100])
    assert "Title: Orbit Nine" in text and "Average rating: 4.2" in text and "Number of ratings: 7" in text
    implicit = prompts.item_text({"title": "X", "description": None, "avg_rating": None, "n_ratings": 3},
                                 R2ecPromptOptions())
    assert "Average rating" not in implicit and "Number of interactions: 3" in implicit


# ----------------------------------------------------------------------------------------------
# The model wrapper
# ----------------------------------------------------------------------------------------------


def test_answer_is_one_added_token_and_adding_it_twice_changes_nothing(tiny):
    model, tokenizer = tiny
    answer = answer_token_id(tokenizer)
    assert tokenizer("x <answer>", add_special_tokens=False)["input_ids"][-1] == answer
    rows = model.get_input_embeddings().weight.shape[0]
    assert add_answer_token(model, tokenizer) == answer
    assert model.get_input_embeddings().weight.shape[0] == rows >= len(tokenizer)


def test_vectors_do_not_depend_on_batch_padding(tiny):
    model, tokenizer = tiny
    r2ec = R2ecModel(model, tokenizer)
    texts = [prompts.item_prompt({"title": f"Item {k}", "description": "word " * (3 * k), "avg_rating": 3.0,
                                  "n_ratings": k}, R2ecPromptOptions(), tokenizer) for k in range(5)]
    ids = r2ec.tokenize(texts)
    together = r2ec.vectors(ids, batch_size=5)
    alone = torch.cat([r2ec.vectors([i], batch_size=1) for i in ids])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert together.dtype == torch.float32 and not torch.allclose(together[0], together[1])


def test_reasoning_is_closed_with_answer(tiny):
    model, tokenizer = tiny
    r2ec = R2ecModel(model, tokenizer)
    prompt = r2ec.tokenize([prompts.user_prompt(_sample(), R2ecPromptOptions(), tokenizer, RatingScale(1, 5))])
    ids, sampled = r2ec.reason(prompt, max_new_tokens=5, greedy=True)
    assert ids[0][-1] == r2ec.answer_id and len(ids[0]) <= 6 and len(sampled[0]) == len(ids[0])


# ----------------------------------------------------------------------------------------------
# The trainer's hooks
# ----------------------------------------------------------------------------------------------


def _trainer(r2ec_world, r2ec_model, tmp_path, **overrides):
    """A RecPOTrainer as train_r2ec builds it (tiny model, 2 users x 2 rollouts)."""
    from datasets import Dataset

    from reczero.data import schema
    from reczero.models import load_model
    from reczero.r2ec.item_table import item_prompt_ids, item_records
    from reczero.rankings import ItemCatalog
    from reczero.train import r2ec as T

    recipe = R2ecRecipe(data=str(r2ec_world), model=str(r2ec_model), out=str(tmp_path / "run"), num_generations=2,
                        per_device_train_batch_size=4, max_completion_length=6, history_window=4,
                        max_prompt_tokens=256, eval_steps=0, **overrides)
    model, tokenizer = load_model(r2ec_model)
    torch.manual_seed(0)
    answer = add_answer_token(model, tokenizer)
    model.generation_config.eos_token_id = [answer, tokenizer.eos_token_id]
    catalog = ItemCatalog.from_data(r2ec_world)
    scale = schema.rating_scale(r2ec_world)
    records = T.train_records(recipe, tokenizer, catalog, scale, limit=4)
    items = item_prompt_ids(R2ecModel(model, tokenizer), item_records(r2ec_world, catalog), recipe)
    trainer = T._trainer_class()(model=model, args=T.grpo_args(recipe, str(tmp_path / "ckpt"), True, answer),
                                 train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                                 recipe=recipe, item_prompts=items, item_ids=list(catalog.ids))
    inputs = [records[0], records[0], records[1], records[1]]
    return trainer, inputs


def test_same_user_vector_at_training_reward_and_evaluation(r2ec_world, r2ec_model, tmp_path):
    trainer, inputs = _trainer(r2ec_world, r2ec_model, tmp_path)
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    reward_time = out["user_vector"]
    # training: a shuffled sub-batch, as TRL's split gives _compute_loss, read by the hook
    rows = torch.tensor([3, 1])
    part = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in out.items()}
    _, _, train_time = trainer.policy_forward(trainer.model, part)
    torch.testing.assert_close(train_time, reward_time[rows], rtol=1e-5, atol=1e-6)
    assert train_time.requires_grad
    # evaluation: R2ecModel.vectors on each unpadded sequence alone
    r2ec = R2ecModel(trainer.model, trainer.processing_class)
    prompt_ids = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"], strict=True)]
    completions = [c[m.bool()].tolist() for c, m in zip(out["completion_ids"], out["completion_mask"], strict=True)]
    eval_time = torch.cat([r2ec.vectors([p], [c], batch_size=1) for p, c in zip(prompt_ids, completions, strict=True)])
    torch.testing.assert_close(eval_time, reward_time, rtol=1e-4, atol=1e-5)
    # the vector is the final-normed hidden state at the sequence's last token (<answer>), not the
    # token before it, where the reference reads at training time
    from reczero.r2ec.model import backbone

    with torch.no_grad():
        hidden = backbone(trainer.model)(input_ids=torch.tensor([prompt_ids[0] + completions[0]])).last_hidden_state[0]
    assert completions[0][-1] == r2ec.answer_id
    torch.testing.assert_close(hidden[-1], reward_time[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(hidden[-2], reward_time[0], atol=1e-3)


def test_rollouts_are_scored_on_the_sampled_ids_not_retokenised_text(r2ec_world, r2ec_model, tmp_path, monkeypatch):
    trainer, inputs = _trainer(r2ec_world, r2ec_model, tmp_path)
    tok = trainer.processing_class
    vocab = tok.get_vocab()
    # two tokens whose text re-tokenises as one merged token: decoding and encoding again would change them
    merged = next(t for t in vocab if len(t) >= 3 and t.isalpha() and t[:1] in vocab and t[1:] in vocab)
    pieces = [vocab[merged[:1]], vocab[merged[1:]]]
    assert tok(tok.decode(pieces), add_special_tokens=False)["input_ids"] != pieces
    sampled = [pieces + pieces, pieces, [vocab[merged]], pieces + [trainer.r2ec.answer_id, 5, 5]]
    monkeypatch.setattr(trainer, "_generate_single_turn", lambda ids, *a, **k: (sampled, None))
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    answer = trainer.r2ec.answer_id
    got = [c[m.bool()].tolist() for c, m in zip(out["completion_ids"], out["completion_mask"], strict=True)]
    assert got == [pieces + pieces + [answer], pieces + [answer], [vocab[merged], answer], pieces + [answer]]
    assert [m[m_c.bool()].tolist() for m, m_c in zip(out["loss_mask"], out["completion_mask"], strict=True)] == \
        [[1, 1, 1, 1, 0], [1, 1, 0], [1, 0], [1, 1, 1]]
    # the rewarded vector is the one of exactly these ids
    r2ec = R2ecModel(trainer.model, tok)
    prompt = [out["prompt_ids"][1][out["prompt_mask"][1].bool()].tolist()]
    torch.testing.assert_close(r2ec.vectors(prompt, [got[1]]), out["user_vector"][1:2], rtol=1e-4, atol=1e-5)
    retok = tok(tok.decode(pieces), add_special_tokens=False)["input_ids"] + [answer]
    assert not torch.allclose(r2ec.vectors(prompt, [retok]), out["user_vector"][1:2], atol=1e-4)


def test_rewards_and_advantages_of_a_group(r2ec_world, r2ec_model, tmp_path):
    trainer, inputs = _trainer(r2ec_world, r2ec_model, tmp_path)
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    adv = out["advantages"].view(-1, 2)
    # a z-score of two different rewards is +-1/sqrt(2) (unbiased std); equal rewards give 0
    for row in adv:
        assert row.sum().abs() < 1e-5
        assert row.abs().max() == pytest.approx(1 / math.sqrt(2), abs=1e-4) or row.abs().max() < 1e-6
    assert out["item_mark"].view(-1, 2).sum(dim=1).tolist() == [2, 2]      # top 2 of a group of 2
    metrics = trainer._metrics["train"]
    assert 0 <= metrics["reward"][-1] <= 1 and metrics["reasoning_length"][-1] <= 6
