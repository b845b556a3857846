"""The teacher: heuristic rationales, the LLM client against a real local server with injected
faults, rationalisation, the append-only store, and a kill -9 in the middle of a run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from teacher_fixtures import make_dataset
from teacher_server import TeacherServer, cycle

from reczero.config import TeacherConfig
from reczero.data.schema import RatingScale
from reczero.prompts import format_answer
from reczero.rewards import check_format, parse_rating
from reczero.teacher import choose_samples, run_teacher
from reczero.teacher.client import MAX_RETRY_AFTER, RetryPolicy, retry_after
from reczero.teacher.heuristic import HeuristicTeacher, sentence_score, stances
from reczero.teacher.store import ENDPOINT_ERROR, TeacherStore

SCALE = RatingScale(1, 5)
TOLD = re.compile(r"actually rated this item (\d+(?:\.\d+)?)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("teacher") / "data")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def llm_answer(first: str = "3"):
    """A fake teacher: rates ``first`` unless told the true rating, which it then follows."""
    def answer(messages: list[dict]) -> str:
        told = TOLD.search(messages[-1]["content"])
        y = told.group(1) if told else first
        return format_answer("structured", {"analyze user": "likes jazz", "analyze item": "a jazz record",
                                            "match": f"jazz fits, so about {y}"}, y)
    return answer


def llm_config(data: Path, out: Path, server: TeacherServer, **kw) -> TeacherConfig:
    opts = dict(data=str(data), out=str(out), base_url=server.base_url, model="fake-teacher", n=8,
                concurrency=4, request_timeout=0.3, retry_delay=0.001, max_retries=8)
    return TeacherConfig(**{**opts, **kw})


# -- heuristic teacher ---------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["structured", "think-answer", "rate-only"])
def test_heuristic_records_are_well_formed_and_rationalised(data, tmp_path, template):
    out = tmp_path / "t.jsonl"
    assert run_teacher(TeacherConfig(data=str(data), out=str(out), heuristic=True, n=40, template=template)) == 0
    records = read(out)
    assert len(records) == 40 and len({r["sample_id"] for r in records}) == 40
    assert all(r["status"] == "accepted" and r["teacher"] == "heuristic" for r in records)
    for r in records:
        assert check_format(r["completion"], template, SCALE), r["completion"]
        assert abs(parse_rating(r["completion"], SCALE, template) - r["rating"]) <= 0.5
        assert r["rationalised"] == (abs(r["prediction"] - r["rating"]) > 0.5)
        assert r["tries"] == (2 if r["rationalised"] else 1)
        assert [m["role"] for m in r["messages"]] == ["system", "user"]
    rationalised = sum(r["rationalised"] for r in records)
    assert 0 < rationalised < 40            # both paths really run
    if template != "rate-only":
        assert max(len(r["completion"].split()) for r in records) <= 60   # short, for tiny models


def test_heuristic_rationale_cites_attributes_from_the_history(data, tmp_path):
    """Each like/dislike in <analyze user> is what the history says of it: the fixture's reviews
    ("loved this jazz one" / "meh this jazz one") where they name it, else the ratings."""
    out = tmp_path / "t.jsonl"
    run_teacher(TeacherConfig(data=str(data), out=str(out), heuristic=True, n=40))
    samples = {s["sample_id"]: s for s in choose_samples(str(data), "train", 40, 0)}
    cited = 0
    for r in read(out):
        sample = samples[r["sample_id"]]
        user = r["completion"].split("</analyze user>")[0]
        for side, attrs in re.findall(r"(Loved|Hated) ([\w, ]+?)[;.]", user):
            for attr in attrs.split(", "):
                if attr == "nothing":
                    continue
                said = [h["review"].startswith("loved") for h in sample["user_history"]
                        if re.search(rf"\b{attr}\b", h["review"])]
                rated = [h["rating"] for h in sample["user_history"] if attr in h["attributes"]]
                assert said or rated, f"{attr} is not in the user's history"
                liked = (2 * sum(said) > len(said)) if said else sum(rated) / len(rated) > sample["user_avg"]
                assert liked == (side == "Loved"), (attr, side, said, rated, sample["user_avg"])
                cited += 1
        match = r["completion"].split("<match>")[1]
        assert all(re.search(rf"; {a} (Loved|Hated|fine|none)\b", match) for a in sample["item_attributes"])   # every target attribute's stance
    assert cited >= 20


def test_stance_reader_scores_the_lexicon():
    assert stances(["Loved the epic feel."], ["epic"]) == {"epic": 1}
    assert stances(["I can't stand epic stories."], ["epic"]) == {"epic": -1}
    assert stances(["Glad it had no noir moments. I wish it had more war moments. The drama side was fine."],
                   ["noir", "war", "drama", "space"]) == {"noir": -1, "war": 1, "drama": 0}   # space: never named
    assert stances(["Hated it. Loved the jazz feel."], ["jazz"]) == {"jazz": 1}   # only sentences naming it
    assert stances(["A warm tale, loved it."], ["war"]) == {}                      # whole words only
    assert stances(["Loved the folk feel.", "The folk bits dragged.", "I always enjoy folk stories."],
                   ["folk"]) == {"folk": 1}                                        # the sign of the mean
    assert sentence_score("I didn't enjoy the drama") == -1                        # negatives come first
    assert sentence_score("A long book") is None


def test_heuristic_reads_reviews_and_description():
    """Text stances win over ratings (every entry is rated at the average here); inputs come before
    what is derived from them, and "total" is the sum of the terms named."""
    reviews = ["Loved the jazz feel.", "I can't stand noir stories.", "The folk side was fine."]
    hist = [{"title": f"T{i}", "attributes": [a], "rating": 3.0, "review": text, "timestamp": i}
            for i, (a, text) in enumerate(zip(["jazz", "noir", "folk"], reviews, strict=True))]
    sample = {"sample_id": "s2", "rating": 2.0, "user_history": hist, "user_avg": 3.0, "user_n": 3,
              "item_title": "Blue", "item_attributes": ["jazz", "noir", "space"], "item_description": "A weak jazz story.",
              "item_history": [{"rating": 4.0, "review": ""}], "item_avg": 3.4, "item_n": 1}
    text = HeuristicTeacher("structured", SCALE, seed=0, noise=0.0).write(sample)
    assert text == ("<analyze user>User average: 3.0 (3 ratings). Loved jazz. Hated noir.</analyze user>\n"
                    "<analyze item>Item average: 3.4 (1 ratings). jazz, noir, space; weak.</analyze item>\n"
                    "<match>user 3.0, item 3.4, average 3.2; weak; jazz Loved; noir Hated; "
                    "space none; total 2.2.</match>\n<rate>2</rate>")    # 3.2 - 0.5 + 0.8 - 1.3


def test_heuristic_match_brings_the_evidence_next_to_the_rate():
    """Without review text, the ratings give the stances (deviations from the user's average)."""
    hist = [{"title": f"T{i}", "attributes": [g], "rating": r, "review": "", "timestamp": i}
            for i, (g, r) in enumerate([("jazz", 5.0), ("jazz", 5.0), ("noir", 1.0), ("noir", 1.0), ("folk", 3.0)])]
    sample = {"sample_id": "s1", "rating": 4.0, "user_history": hist, "user_avg": 3.0, "user_n": 5,
              "item_title": "Blue", "item_attributes": ["jazz", "noir"], "item_history": [], "item_avg": None}
    teacher = HeuristicTeacher("structured", SCALE, seed=0, noise=0.0)
    text = teacher.write(sample)
    match = text.split("<match>")[1].split("</match>")[0]
    assert match == "user 3.0, item none, average 3.0; jazz Loved; noir Hated; total 2.5."
    assert "Loved jazz. Hated noir." in text and "folk" not in text and parse_rating(text, SCALE) == 3.0
    told = teacher.write(sample, true_rating=5.0)       # rationalised: the same steps, what pulls up, ends at 5
    match = told.split("<match>")[1].split("</match>")[0]
    assert match == ("user 3.0, item none, average 3.0; jazz Loved; noir Hated; "
                     "yet the user has rated 5; total 5.0.")
    assert parse_rating(told, SCALE) == 5.0


def test_heuristic_quotes_the_averages_as_the_prompt_writes_them(data):
    """The student can copy its inputs: each average the answer quotes is a line of its prompt (a user
    without history gets "no history yet." instead)."""
    from reczero.config import PromptOptions
    from reczero.prompts import build_messages

    teacher = HeuristicTeacher("structured", SCALE, seed=0)
    for sample in choose_samples(str(data), "train", 20, 0):
        prompt = build_messages(sample, PromptOptions())[1]["content"].split("\n")
        quotes = re.findall(r"(?:User|Item) average: (?:none yet|\d\.\d(?: \(\d+ ratings\))?)", teacher.write(sample))
        assert len(quotes) == 1 + bool(sample["user_history"]) and all(q in prompt for q in quotes), quotes


def test_heuristic_is_deterministic_under_the_seed(data, tmp_path):
    for name in ("a", "b"):
        run_teacher(TeacherConfig(data=str(data), out=str(tmp_path / f"{name}.jsonl"), heuristic=True, n=15, seed=3))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


# -- the store -----------------------------------------------------------------------------------


def test_store_cuts_a_torn_last_line_and_skips_recorded_samples(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sample_id": "a", "status": "accepted"}\n{"sample_id": "b", "sta')
    with TeacherStore(path) as store:
        assert store.open() == {"a"}
        store.append({"sample_id": "b", "status": "accepted"})
    assert "torn last line" in caplog.text
    assert [r["sample_id"] for r in read(path)] == ["a", "b"]


def test_store_refuses_garbage_and_duplicates(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sample_id": "a"}\nnot json\n{"sample_id": "b"}\n')
    with pytest.raises(Exception, match=r"t.jsonl:2: not a JSON record"):
        TeacherStore(path).open()
    path.write_text('{"sample_id": "a"}\n{"sample_id": "a"}\n')
    with pytest.raises(Exception, match=r"t.jsonl:2: sample_id 'a' is recorded twice"):
        TeacherStore(path).open()


def test_store_asks_endpoint_failures_again(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sample_id": "a", "reason": null}\n{"sample_id": "b", "reason": "endpoint_error"}\n'
                    '{"sample_id": "c", "reason": "format"}\n')
    with TeacherStore(path) as store:
        assert store.open() == {"a", "c"}
    assert [r["sample_id"] for r in read(path)] == ["a", "c"]


def test_store_allows_one_writer_at_a_time(tmp_path):
    path = tmp_path / "t.jsonl"
    with TeacherStore(path) as first:
        first.open()
        with pytest.raises(Exception, match="another run is writing this file"):
            TeacherStore(path).open()
    with TeacherStore(path) as again:             # released on close
        assert again.open() == set()


# -- the client's retry policy -------------------------------------------------------------------


def test_retry_after_headers_and_backoff_bounds():
    import random

    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0   # a date in the past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
    policy, rng = RetryPolicy(max_retries=5, base_delay=1.0, max_delay=8.0), random.Random(0)
    delays = [policy.delay(k, rng) for k in range(6)]
    assert all(0.5 * min(8, 2**k) <= d <= min(8, 2**k) for k, d in enumerate(delays))
    assert policy.delay(0, rng, retry_after=30.0) == 30.0
    assert policy.delay(0, rng, retry_after=1e6) == MAX_RETRY_AFTER


# -- the LLM teacher against a real local server -------------------------------------------------


def test_every_fault_is_retried_and_every_sample_recorded_once(data, tmp_path, capsys):
    kinds = ["500", "429", "slow", "malformed", "no_choices", "empty", "drop", "503"]
    with TeacherServer(llm_answer(), fault=cycle(kinds), slow_s=0.6, faults_per_conversation=3) as server:
        rc = run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=10))
    assert rc == 0
    assert set(kinds) <= set(server.served)
    records = read(tmp_path / "t.jsonl")
    assert sorted(r["sample_id"] for r in records) == sorted(s["sample_id"] for s in choose_samples(str(data), "train", 10, 0))
    assert all(r["status"] == "accepted" for r in records)
    out = capsys.readouterr().out
    assert "10 accepted" in out and "endpoint faults retried:" in out and "http_429" in out and "timeout" in out


def test_wrong_ratings_are_rationalised_with_the_true_rating(data, tmp_path):
    with TeacherServer(llm_answer("3")) as server:
        run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=20))
    records = read(tmp_path / "t.jsonl")
    assert all(r["status"] == "accepted" and r["prediction"] == 3.0 for r in records)
    wrong = [r for r in records if r["rating"] != 3.0]
    assert wrong and all(r["rationalised"] and r["tries"] == 2 for r in wrong)
    assert all(parse_rating(r["completion"], SCALE) == r["rating"] for r in records)
    assert all(not r["rationalised"] and r["tries"] == 1 for r in records if r["rating"] == 3.0)
    asked_again = [b["messages"] for b in server.requests if len(b["messages"]) == 4]
    assert len(asked_again) == len(wrong)
    assert all(m[2]["role"] == "assistant" and "<rate>3</rate>" in m[2]["content"] for m in asked_again)
    assert all(len(r["messages"]) == 2 for r in records)      # the record keeps the original prompt


def test_answers_without_the_format_are_rejected_after_max_tries(data, tmp_path):
    with TeacherServer(llm_answer(), fault=lambda i: "no_tags") as server:
        rc = run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=4, max_tries=3))
    assert rc == 0
    records = read(tmp_path / "t.jsonl")
    assert [(r["status"], r["reason"], r["tries"], r["prediction"]) for r in records] == [("rejected", "format", 3, None)] * 4
    assert "did not follow the required format" in server.requests[-1]["messages"][-1]["content"]


def test_a_format_slip_gets_a_reminder_and_then_passes(data, tmp_path):
    with TeacherServer(llm_answer("4"), fault=lambda i: "no_tags" if i == 0 else None) as server:
        run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=1, concurrency=1, tolerance=4.0))
    (record,) = read(tmp_path / "t.jsonl")
    assert (record["status"], record["tries"], record["prediction"], record["rationalised"]) == ("accepted", 2, 4.0, False)


def test_429_waits_at_least_retry_after(data, tmp_path):
    with TeacherServer(llm_answer(), fault=lambda i: "429" if i == 0 else None, retry_after=0.3) as server:
        run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=1, concurrency=1, tolerance=4.0))
    assert server.request_times[1] - server.request_times[0] >= 0.29    # the backoff alone would be ~1 ms (0.01: clock slack)


def test_client_errors_are_not_retried(data, tmp_path):
    with TeacherServer(llm_answer(), fault=lambda i: "400") as server:
        rc = run_teacher(llm_config(data, tmp_path / "t.jsonl", server, n=3, concurrency=1))
    assert rc == 1 and len(server.requests) == 3
    assert {r["reason"] for r in read(tmp_path / "t.jsonl")} == {ENDPOINT_ERROR}


def test_dead_endpoint_exits_non_zero_and_a_rerun_completes(data, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    with TeacherServer(llm_answer()) as server:
        dead_url = server.base_url
    cfg = TeacherConfig(data=str(data), out=str(out), base_url=dead_url, model="m", n=6, max_retries=1, retry_delay=0.001)
    assert run_teacher(cfg) == 1
    assert "nothing could be done" in capsys.readouterr().err
    assert {r["reason"] for r in read(out)} == {ENDPOINT_ERROR}
    with TeacherServer(llm_answer()) as server:
        assert run_teacher(llm_config(data, out, server, n=6)) == 0
    records = read(out)
    assert len(records) == 6 and len({r["sample_id"] for r in records}) == 6
    assert all(r["status"] == "accepted" for r in records)


def test_a_dead_endpoint_stops_the_run_early(data, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    with TeacherServer(llm_answer()) as server:
        dead_url = server.base_url
    cfg = TeacherConfig(data=str(data), out=str(out), base_url=dead_url, model="m", n=60, concurrency=2,
                        max_retries=0)
    assert run_teacher(cfg) == 1
    assert 10 <= len(read(out)) <= 11              # stops after 10 endpoint failures in a row
    assert "stopped early" in capsys.readouterr().out


def test_kill_9_mid_run_then_resume_records_every_sample_exactly_once(data, tmp_path):
    out, n = tmp_path / "t.jsonl", 40
    faults = cycle(["500", "429", None, "empty", None, "malformed", None, None, "slow"])
    with TeacherServer(llm_answer(), fault=faults, delay_s=0.03, slow_s=0.6, faults_per_conversation=3) as server:
        cmd = [sys.executable, "-m", "reczero.cli", "-q", "teacher", "--data", str(data), "--n", str(n),
               "--out", str(out), "--base-url", server.base_url, "--model", "fake", "--concurrency", "4",
               "--request-timeout", "0.3", "--retry-delay", "0.001", "--max-retries", "8"]
        env = {**os.environ, "OPENAI_API_KEY": ""}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while (not out.exists() or len(out.read_bytes().splitlines()) < 8) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = len(read(out))
        assert 8 <= killed_at < n
        with open(out, "ab") as fh:                 # what a kill between write and newline would leave
            fh.write(b'{"sample_id": "train-u1-i2-3", "comp')
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = read(out)
    ids = Counter(r["sample_id"] for r in records)
    requested = {s["sample_id"] for s in choose_samples(str(data), "train", n, 0)}
    assert set(ids) == requested and set(ids.values()) == {1}
    assert all(r["status"] == "accepted" for r in records)
    assert f"{n} of {n} requested samples recorded" in done.stdout
