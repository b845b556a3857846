"""Model loading, the local tokenizer (round trip, tags as ordinary single tokens) and the test model
(``tiny_model``, from conftest.py)."""

import pytest

from reczero.data.schema import RatingScale
from reczero.errors import ReczeroError
from reczero.models import load_model, load_tokenizer, train_tokenizer
from reczero.models.tokenizer import check_round_trip
from reczero.prompts import TAG_TOKENS, format_answer


def test_tokenizer_round_trips_through_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    texts = ["The Silent Harbor [drama] rated 4: quiet and moving.", "Ça coûte cher, naïve café", "rated 2: loud"] * 5
    tokenizer = train_tokenizer(texts, 300, scale=RatingScale(1, 5), min_frequency=1)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')  # what a saved model folder holds
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(tokenizer)
    probes = [*texts, "<|im_start|>user\nUser average: 3.7 (12 ratings)<|im_end|>", " ".join(TAG_TOKENS), "日本 🎬 x\ty"]
    for text in probes:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    check_round_trip(tokenizer, tmp_path, probes)


def test_tags_are_single_ordinary_tokens_that_survive_decoding(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    special = set(tokenizer.all_special_tokens)
    for tag in TAG_TOKENS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (tag, ids)
        assert tag not in special
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tokenizer(token)["input_ids"]) == 1
    answer = format_answer("structured", {"analyze user": "likes drama", "analyze item": "a drama", "match": "good"}, 4)
    ids = tokenizer(answer + "<|im_end|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == answer          # TRL decodes like this
    assert tokenizer("rated 4")["input_ids"][-1] == tokenizer("<rate>4</rate>")["input_ids"][1]  # same digit token
    assert len(tokenizer("3.7")["input_ids"]) == 1                              # averages are one token


def test_chat_template_marks_exactly_the_generated_part(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": "<rate>4</rate>"}],
                                        return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "<rate>4</rate><|im_end|>"
    first = mask.index(1)
    assert tokenizer.decode(ids[:first]) == prompt


def test_load_model_generates_and_resolves_run_dirs(tiny_model, tmp_path):
    import torch

    model, tokenizer = load_model(tiny_model)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|endoftext|>"
    assert not model.training and next(model.parameters()).dtype == torch.float32
    batch = tokenizer(["rated 4", "a much longer prompt about films"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > batch["input_ids"].shape[1]

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    again, _ = load_model(run, dtype="bfloat16")
    assert next(again.parameters()).dtype == torch.bfloat16


def test_load_model_errors_name_the_path(tmp_path):
    with pytest.raises(ReczeroError, match="no such model folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReczeroError, match="neither a model folder"):
        load_model(tmp_path / "empty")
