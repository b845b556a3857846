"""MovieLens folders (100k, 1m, latest layouts) through `reczero data prepare`, and the real ml-latest-small."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reczero import cli
from reczero.data import schema as S

ML_SMALL = Path(__file__).resolve().parents[2] / "shared/data/ml-latest-small"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def run(*args):
    return cli.main(["-q", "data", "prepare", "--source", "movielens", *map(str, args)])


def manifest(out):
    return json.loads((out / S.MANIFEST).read_text())


def write_100k(folder: Path) -> None:
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n"
                                   "2\t20\t9\t881250952\n3\t10\n\n3\t20\t2\t881250953\n2\t10\t1\t881250999\n")
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    flags = lambda *on: "|".join("1" if k in on else "0" for k in range(19))  # noqa: E731
    (folder / "u.item").write_bytes(
        f"10|Am\xe9lie (2001)|01-Jan-2001||http://x|{flags(5, 14)}\n".encode("latin-1")
        + f"20|Toy Story (1995)|01-Jan-1995||http://y|{flags(3, 4, 5)}\n".encode("latin-1"))


def write_latest(folder: Path) -> None:
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982704\n"
                                        "2,1,0.5,964982705\n2,2,abc,964982706\n3,1,5.0,964982707\n3,3,4.5,964982708\n")
    (folder / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                       '2,"American President, The (1995)",Comedy|Drama|Romance\n'
                                       "3,Nothing (2000),(no genres listed)\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n3,1,fun,3\n")


def test_100k_layout(tmp_path):
    write_100k(tmp_path / "ml-100k")
    out = tmp_path / "out"
    assert run("--input", tmp_path / "ml-100k", "--out", out) == 0
    m = manifest(out)
    assert m["rating_scale"] == {"min": 1.0, "max": 5.0, "step": 1.0}
    assert m["counts"] == {"read": 7, "kept": 4, "rejected": {"malformed_row": 1, "bad_rating": 1, "duplicate": 1}}
    rejected = {r["reason"]: r for r in map(json.loads, (out / S.REJECTS).read_text().splitlines())}
    assert len(rejected) == 3 and all(r["stream"] == "interactions" for r in rejected.values())
    assert rejected["malformed_row"]["line"] == 5 and rejected["bad_rating"]["line"] == 4
    items = {r["item_id"]: r for r in pq.read_table(out / S.ITEMS).to_pylist()}
    assert items["10"]["title"] == "Amélie (2001)" and items["10"]["attributes"] == ["Comedy", "Romance"]
    assert items["20"]["attributes"] == ["Animation", "Children's", "Comedy"]
    assert {Path(i["path"]).name for i in m["inputs"]} == {"u.data", "u.item", "u.genre"}


def test_latest_layout_with_tags(tmp_path):
    write_latest(tmp_path / "ml-latest")
    out = tmp_path / "out"
    assert run("--input", tmp_path / "ml-latest", "--out", out) == 0
    m = manifest(out)
    assert m["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    assert m["counts"] == {"read": 6, "kept": 5, "rejected": {"bad_rating": 1}}
    assert m["items_counts"] == {"read": 3, "kept": 3, "rejected": {}}
    items = {r["item_id"]: r for r in pq.read_table(out / S.ITEMS).to_pylist()}
    assert items["1"]["attributes"] == ["Adventure", "Animation", "pixar", "fun"]
    assert items["2"]["title"] == "American President, The (1995)" and items["3"]["attributes"] == []


def test_1m_layout(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Caf\xe9 (1996)::Animation|Musical\n"
                                        .encode("latin-1"))
    out = tmp_path / "out"
    assert run("--input", folder, "--out", out) == 0
    m = manifest(out)
    assert m["counts"]["kept"] == 3 and m["n_items"] == 2
    items = {r["item_id"]: r for r in pq.read_table(out / S.ITEMS).to_pylist()}
    assert items["661"] == {"item_id": "661", "title": "Café (1996)", "attributes": ["Animation", "Musical"],
                            "description": None}


def test_not_a_movielens_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("--input", tmp_path / "empty", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "empty: not a MovieLens folder" in err and "ratings.csv" in err and "Traceback" not in err
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    assert run("--input", tmp_path / "ratings.csv", "--out", tmp_path / "out") == 2
    assert "is a file; --input for movielens is the dataset folder" in capsys.readouterr().err


@pytest.mark.skipif(not ML_SMALL.is_dir(), reason="../shared/data/ml-latest-small is not present")
def test_real_ml_latest_small_counts(tmp_path):
    out = tmp_path / "ml-small"
    assert run("--input", ML_SMALL, "--out", out) == 0
    m = manifest(out)
    assert m["counts"] == {"read": 100_836, "kept": 100_836, "rejected": {}}
    assert m["n_users"] == 610 and m["n_items"] == 9_742 and m["n_interactions"] == 100_836
    assert sum(m["splits"].values()) == 100_836
