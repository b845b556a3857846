"""`/v1/recommend` against a real uvicorn serving fitted ranking baselines, and the top-k search.

The server holds a popularity and an item-kNN run (``reczero baseline``) on a small RecWorld, and a
tiny rating run beside them. Every list is checked against the ranker's own scores, masked and
sorted here by brute force; the FAISS index (when installed) against the exact search.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from test_serve import LiveServer, make_world, metric

from reczero import cli
from reczero.serve.recommenders import Retriever, Scored
from reczero.serve.topk import ExactIndex, top_k


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-rank")
    data, rating = make_world(root)
    out = {"data": data, "tiny": rating}
    for method in ("popularity", "itemknn"):
        out[method] = root / method
        assert cli.main(["-q", "baseline", "--method", method, "--data", str(data), "--out", str(out[method]),
                         "--splits", "test"]) == 0
    return out


@pytest.fixture(scope="module")
def server(runs):
    from reczero.serve import create_app

    app = create_app([f"pop={runs['popularity']}", f"knn={runs['itemknn']}", str(runs["tiny"])],
                     max_k=15, max_history=40, max_wait_ms=50.0, max_new_tokens=4)
    with LiveServer(app) as live:
        yield live


def user_history(data: Path, user: str) -> list[str]:
    inter = pd.read_parquet(data / "interactions.parquet")
    return list(inter[inter["user_id"] == user].sort_values("timestamp", kind="stable")["item_id"])


def reference(run: Path, history: list[str], k: int, exclude: bool) -> list[str]:
    """Brute force: the ranker's scores, history masked, sorted by (-score, catalogue order)."""
    from reczero.baselines import load_ranker

    ranker = load_ranker(run)
    scores = ranker.score([history])[0].astype(np.float64)
    if exclude:
        idx = ranker.catalog.index(history)
        scores[idx[idx >= 0]] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [ranker.catalog.ids[i] for i in order if np.isfinite(scores[i])][:k]


@pytest.mark.parametrize("model,method", [("pop", "popularity"), ("knn", "itemknn")])
def test_recommend_for_a_known_user_matches_brute_force(server, runs, model, method):
    data = runs["data"]
    user = pd.read_parquet(data / "interactions.parquet")["user_id"].iloc[7]
    history = user_history(data, user)
    items = pd.read_parquet(data / "items.parquet").set_index("item_id")["title"]
    for exclude in (True, False):
        r = httpx.post(f"{server.url}/v1/recommend", json={"model": model, "user_id": user, "k": 8,
                                                           "exclude_history": exclude}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        ids = [it["item_id"] for it in body["items"]]
        assert ids == reference(runs[method], history, 8, exclude)
        assert [it["title"] for it in body["items"]] == [items[i] for i in ids]
        scores = [it["score"] for it in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert body["reasoning"] is None and body["user_id"] == user
        if exclude:
            assert not set(ids) & set(history)


def test_explicit_history_gives_the_known_users_list(server, runs):
    data = runs["data"]
    user = pd.read_parquet(data / "interactions.parquet")["user_id"].iloc[3]
    history = user_history(data, user)
    by_id = httpx.post(f"{server.url}/v1/recommend", json={"model": "knn", "user_id": user, "k": 5}).json()
    by_history = httpx.post(f"{server.url}/v1/recommend", json={"model": "knn", "history": history, "k": 5}).json()
    assert by_history["items"] == by_id["items"] and by_history["user_id"] is None
    default_k = httpx.post(f"{server.url}/v1/recommend", json={"model": "pop", "history": history[:2]}).json()
    assert len(default_k["items"]) == 10


def test_bad_recommend_requests(server, runs):
    data = runs["data"]
    user = pd.read_parquet(data / "interactions.parquet")["user_id"].iloc[0]
    item = pd.read_parquet(data / "items.parquet")["item_id"].iloc[0]
    cases = [
        ({"model": "pop", "user_id": "nobody"}, 404, "'nobody'"),
        ({"model": "pop", "history": [item, "ghost"]}, 404, "history[1]"),
        ({"model": "pop", "user_id": user, "k": 16}, 422, "limit of 15"),
        ({"model": "pop", "history": [item] * 41}, 422, "limit of 40"),
        ({"model": "pop", "user_id": user, "history": [item]}, 422, "exactly one"),
        ({"model": "pop", "user_id": user, "k": "many"}, 422, "k"),
        ({"model": "tiny", "user_id": user}, 400, "rating run"),
    ]
    for body, status, needle in cases:
        r = httpx.post(f"{server.url}/v1/recommend", json=body)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert needle in error["message"] or needle == error["param"], error
    r = httpx.post(f"{server.url}/v1/predict", json={"model": "pop", "user_id": user, "item_id": item})
    assert r.status_code == 400 and "ranking run" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "knn", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert httpx.post(f"{server.url}/v1/recommend", json={"model": "pop", "user_id": user}).status_code == 200


def test_models_lists_both_kinds(server):
    data = httpx.get(f"{server.url}/v1/models").json()["data"]
    assert {m["id"]: m["kind"] for m in data} == {"pop": "ranking", "knn": "ranking", "tiny": "rating"}


def test_concurrent_recommends_are_batched(server, runs):
    users = pd.read_parquet(runs["data"] / "interactions.parquet")["user_id"].unique()[:20]
    before = metric(server, "reczero_batch_size_count", model="knn")

    async def many():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/recommend", json={"model": "knn", "user_id": u, "k": 3})
                                          for u in users))

    responses = asyncio.run(many())
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["user_id"] for r in responses] == list(users)
    assert metric(server, "reczero_batch_size_count", model="knn") - before < len(users)


# ----------------------------------------------------------------------------------------------
# Top-k search
# ----------------------------------------------------------------------------------------------


def brute_top_k(scores: np.ndarray, k: int, exclude: list[np.ndarray]) -> list[list[int]]:
    out = []
    for row, ex in zip(scores, exclude, strict=True):
        keep = [i for i in range(len(row)) if i not in set(ex.tolist())]
        out.append(sorted(keep, key=lambda i: (-row[i], i))[:k])
    return out


@pytest.mark.parametrize("k", [1, 3, 7, 12, 40])
def test_top_k_against_brute_force_with_ties_and_masks(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(20, 12)).astype(np.float32)          # many ties
    exclude = [rng.choice(12, size=rng.integers(0, 12), replace=False) for _ in range(20)]
    got = top_k(scores, k, exclude)
    assert [idx.tolist() for idx, _ in got] == brute_top_k(scores, k, exclude)
    for (idx, values), row in zip(got, scores, strict=True):
        assert values.tolist() == row[idx].tolist()


def test_exact_index_is_the_matrix_product():
    rng = np.random.default_rng(0)
    items, users = rng.normal(size=(300, 8)), rng.normal(size=(5, 8))
    got = ExactIndex(items).search(users, 10)
    expected = brute_top_k((users @ items.T).astype(np.float32), 10, [np.empty(0, np.int64)] * 5)
    assert [idx.tolist() for idx, _ in got] == expected


def test_faiss_index_finds_what_the_exact_search_finds():
    pytest.importorskip("faiss")
    from reczero.serve.topk import FaissIndex

    rng = np.random.default_rng(1)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    users = rng.normal(size=(50, 16)).astype(np.float32)
    exclude = [rng.choice(2000, size=5, replace=False) for _ in range(50)]
    exact = ExactIndex(items).search(users, 10, exclude)
    approx = FaissIndex(items).search(users, 10, exclude)
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for (a, _), (e, _) in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    assert all(not set(a.tolist()) & set(ex.tolist()) and len(a) == 10 for (a, _), ex in zip(approx, exclude, strict=True))


class MeanVectorRecommender:
    """A recommender in vector form (as R2ec is): the user vector is the mean of the history's item
    vectors, and it explains itself."""

    def __init__(self, n_items: int = 50, dim: int = 4) -> None:
        self.item_ids = [f"i{j}" for j in range(n_items)]
        self.item_vectors = np.random.default_rng(2).normal(size=(n_items, dim)).astype(np.float32)

    def index_of(self, ids):
        return np.array([self.item_ids.index(i) if i in self.item_ids else -1 for i in ids], np.int64)

    def score(self, histories):
        vectors = np.stack([self.item_vectors[self.index_of(h)].mean(axis=0) for h in histories])
        return Scored(user_vectors=vectors, reasoning=[f"read {len(h)} items" for h in histories])


@pytest.mark.parametrize("index", ["exact", "faiss"])
def test_a_vector_recommender_plugs_into_the_retriever(index):
    if index == "faiss":
        pytest.importorskip("faiss")
    rec = MeanVectorRecommender()
    histories = [["i1", "i2"], ["i7"]]
    got = Retriever(rec, index).recommend(histories, 5, [True, False])
    users = rec.score(histories).user_vectors
    masks = [rec.index_of(histories[0]), np.empty(0, np.int64)]
    expected = brute_top_k(users @ rec.item_vectors.T, 5, masks)
    assert [ids for ids, _, _ in got] == [[f"i{j}" for j in row] for row in expected]
    assert [text for _, _, text in got] == ["read 2 items", "read 1 items"]
