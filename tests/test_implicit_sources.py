"""Implicit (next-item) data: the `sequences` and `recbole` sources, the source registry, and the
rating commands that refuse a dataset without ratings.

Fixtures are written here in the real raw formats (SASRec-style `user item item ...` lines; RecBole
atomic `.inter` / `.item` files with typed headers), damaged on purpose; every count is checked
against what was written, and histories against a brute-force reading of the input.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero import cli, config
from reczero.data import schema as S
from reczero.data.sources import registry
from reczero.errors import DataError

ML_SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def prepare(*args) -> int:
    return cli.main(["-q", "data", "prepare", *map(str, args)])


def manifest(out: Path) -> dict:
    m = json.loads((out / S.MANIFEST).read_text())
    c = m["counts"]
    assert c["read"] == c["kept"] + sum(c["rejected"].values())
    return m


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / S.REJECTS).read_text().splitlines()]


def split(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / f"{name}.parquet").to_pylist()


# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------


def test_registry_and_config_list_the_same_sources():
    assert tuple(registry.SOURCES) == config.SOURCES
    field = config.fields_of(config.PrepareConfig)["source"]
    assert field.metadata["choices"] == list(registry.SOURCES)
    for name, source in registry.SOURCES.items():
        assert source.name == name and source.expected and callable(source.read_interactions)
    assert registry.SOURCES["sequences"].read_items is None
    with pytest.raises(DataError, match="unknown source 'nope'.*sequences, recbole"):
        registry.get_source("nope")


def test_config_lists_the_names_without_importing_the_readers():
    code = "import sys, reczero.config; assert 'pyarrow' not in sys.modules, 'config imported pyarrow'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# sequences
# ----------------------------------------------------------------------------------------------

LONG_ITEMS = 200_000          # one line of ~1.3 MB: over sequences.MAX_LINE_BYTES (1 MiB)


def write_sequences(path: Path) -> None:
    """Eight good users and every kind of damage, each at a known line."""
    good = {f"u{k}": [f"i{(k * 3 + j) % 13}" for j in range(4 + k % 4)] for k in range(8)}
    for items in good.values():             # no repeated item within a line (would be `duplicate`)
        assert len(set(items)) == len(items)
    lines = [f"{u} {' '.join(items)}".encode() for u, items in good.items()]   # lines 1-8
    lines += [b"",                                          # 9: empty_line
              b"u99",                                       # 10: no_items
              b"u1 i1 i2 i3",                               # 11: duplicate_user (3 records)
              b"\xff\xfeuser i1 i2",                        # 12: bad_user (2 records)
              b"u50 i1 \x01junk i2\tbad\x7fid i3",          # 13: bad_item x2, i1 i2 i3 kept at positions 0, 2, 4
              b"u51 " + b" ".join(b"%d" % k for k in range(LONG_ITEMS)),   # 14: line_too_long
              b"   \t ",                                    # 15: empty_line (whitespace only)
              b"u52 i5 i6 i5"]                              # 16: a repeated item -> `duplicate` downstream
    path.write_bytes(b"\n".join(lines) + b"\n")
    return good


def test_sequences_every_line_kept_or_rejected_with_its_reason(tmp_path):
    good = write_sequences(tmp_path / "Beauty.txt")
    out = tmp_path / "out"
    assert prepare("--source", "sequences", "--input", tmp_path / "Beauty.txt", "--split", "leave-last",
                   "--out", out) == 0
    m = manifest(out)
    n_good = sum(map(len, good.values()))
    assert m["implicit"] is True and m["rating_scale"] is None
    assert m["counts"] == {"read": n_good + 1 + 1 + 3 + 2 + 5 + LONG_ITEMS + 1 + 3,
                           "kept": n_good + 3 + 2,
                           "rejected": {"empty_line": 2, "no_items": 1, "duplicate_user": 3, "bad_user": 2,
                                        "bad_item": 2, "line_too_long": LONG_ITEMS, "duplicate": 1}}
    listed = [(r["line"], r["reason"], r.get("records", 1)) for r in rejects(out) if r["line"] is not None]
    assert listed == [(9, "empty_line", 1), (10, "no_items", 1), (11, "duplicate_user", 3), (12, "bad_user", 2),
                      (13, "bad_item", 1), (13, "bad_item", 1), (14, "line_too_long", LONG_ITEMS), (15, "empty_line", 1)]
    assert all(r["file"] == str(tmp_path / "Beauty.txt") for r in rejects(out))
    rows = pq.read_table(out / S.INTERACTIONS).to_pylist()
    assert [(r["item_id"], r["timestamp"]) for r in rows if r["user_id"] == "u50"] == [("i1", 0), ("i2", 2), ("i3", 4)]
    assert [(r["item_id"], r["timestamp"]) for r in rows if r["user_id"] == "u1"] == \
        [(item, k) for k, item in enumerate(good["u1"])]               # the duplicate line did not replace it
    assert all(r["rating"] is None for r in rows)
    items = pq.read_table(out / S.ITEMS).to_pylist()
    assert m["items_synthesised"] == len(items) and {i["item_id"] for i in items} >= {"i1", "i5"}


def test_sequences_splits_and_histories_never_see_the_target_or_later(tmp_path):
    lines = {f"u{k}": [f"i{(k * 7 + j * 5) % 23}" for j in range(3 + k % 9)] for k in range(40)}
    (tmp_path / "seq.txt").write_text("".join(f"{u} {' '.join(items)}\n" for u, items in lines.items()))
    for how in ("leave-last", "temporal"):
        out = tmp_path / how
        assert prepare("--source", "sequences", "--input", tmp_path / "seq.txt", "--split", how, "--history", 4,
                       "--out", out) == 0
        m = manifest(out)
        assert m["counts"]["kept"] == sum(map(len, lines.values())) == sum(m["splits"].values())
        for name in S.SPLITS:
            for row in split(out, name):
                seq = lines[row["user_id"]]
                pos = row["timestamp"]
                assert seq[pos] == row["item_id"]
                assert [h["item_id"] for h in row["user_history"]] == seq[max(0, pos - 4):pos]
                assert row["user_n"] == pos and row["rating"] is None
                assert row["user_avg"] is None and row["item_avg"] is None
                assert all(h["rating"] is None for h in row["user_history"] + row["item_history"])
                assert all(h["timestamp"] < pos for h in row["item_history"])
                if how == "leave-last":
                    expected = {len(seq) - 1: "test", len(seq) - 2: "valid"}.get(pos, "train")
                    assert name == expected, (row["sample_id"], name)


def test_sequences_refuses_meta_and_scale(tmp_path, capsys):
    (tmp_path / "seq.txt").write_text("u1 a b c\n")
    (tmp_path / "meta.csv").write_text("item,title\na,A\n")
    assert prepare("--source", "sequences", "--input", tmp_path / "seq.txt", "--scale", "1,5",
                   "--out", tmp_path / "o") == 2
    assert "no ratings" in capsys.readouterr().err
    assert prepare("--source", "sequences", "--input", tmp_path / "seq.txt", "--meta", tmp_path / "meta.csv",
                   "--out", tmp_path / "o") == 2
    assert "reads no item metadata" in capsys.readouterr().err
    (tmp_path / "json.txt").write_text("\n".join('{"user": 1}' for _ in range(5)) + "\n")
    assert prepare("--source", "sequences", "--input", tmp_path / "json.txt", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "none of its 5 lines holds an interaction" in err and len(err.strip().splitlines()) == 1


def test_write_prepared_refuses_ratings_in_an_implicit_dataset(tmp_path):
    from reczero.data.samples import write_prepared

    rows = pa.table({"user_id": ["u"], "item_id": ["a"], "rating": [4.0], "timestamp": [1],
                     "review": pa.nulls(1, pa.string()), "summary": pa.nulls(1, pa.string())})
    with pytest.raises(DataError, match="carry a rating, but the dataset is prepared as implicit"):
        write_prepared(tmp_path / "o", rows, None, config.SampleOptions(), scale=None, source="sequences",
                       rejects=None, inputs=[])


# ----------------------------------------------------------------------------------------------
# RecBole atomic files
# ----------------------------------------------------------------------------------------------

INTER = ("timestamp:float\titem_id:token\tuser_id:token\trating:float\tcomment:token_seq\n"   # 1: any order
         "100\t10\tu1\t4\tnice one\n"              # 2
         "50\t11\tu1\t5\t\n"                       # 3
         "10\t10\tu2\tfive\t\n"                    # 4: bad_rating (not a number)
         "20\t11\tu2\t3\n"                         # 5: malformed_row (4 fields)
         "\n"                                      # 6: blank: not a record
         "yesterday\t12\tu2\t2\t\n"                # 7: bad_timestamp
         "30\t13\t\t1\t\n"                         # 8: missing_field (empty user)
         "40\t12\tu3\t2\t\n"                       # 9
         "41\t10\tu3\t1\t\n"                       # 10
         "42\t11\tu3\t3.5\t\n"                     # 11: kept, so the scale has half steps
         "43\t13\tu3\t2\t\n"                       # 12: unknown_item (no line in .item)
         "44\t12\tu1\t9\t\n"                       # 13: bad_rating with --scale 1,5
         "45\t10\tu1\t3\t\n")                      # 14: u1 saw 10 at 100 too: that one is the `duplicate`

ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\tavg_rating:float\n"
        "10\tToy Story\t1995\tAnimation Comedy\t3.9\n"
        "11\tHeat\t1995\tAction Crime Thriller\t3.8\n"
        "12\tJumanji\t1995\n"                       # malformed_row
        "\tNo id\t1990\tDrama\t1\n"                 # missing_field
        "12\tJumanji\t\tAdventure\t3.2\n")


def test_recbole_pair_with_bad_lines_and_detected_scale(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ml.inter").write_text(INTER)
    (folder / "ml.item").write_text(ITEM)
    out = tmp_path / "out"
    assert prepare("--source", "recbole", "--input", folder, "--out", out) == 0      # the folder: ml/ml.inter
    m = manifest(out)
    assert m["implicit"] is False and m["rating_scale"] == {"min": 1.0, "max": 9.0, "step": 0.5}
    assert m["counts"] == {"read": 12, "kept": 6,
                           "rejected": {"bad_rating": 1, "malformed_row": 1, "bad_timestamp": 1, "missing_field": 1,
                                        "unknown_item": 1, "duplicate": 1}}
    assert m["items_counts"] == {"read": 5, "kept": 3, "rejected": {"malformed_row": 1, "missing_field": 1}}
    assert [i["path"] for i in m["inputs"]] == [str(folder / "ml.inter"), str(folder / "ml.item")]
    by_line = {(r["stream"], r["line"]): r["reason"] for r in rejects(out) if r["line"] is not None}
    assert by_line == {("interactions", 4): "bad_rating", ("interactions", 5): "malformed_row",
                       ("interactions", 7): "bad_timestamp", ("interactions", 8): "missing_field",
                       ("items", 4): "malformed_row", ("items", 5): "missing_field"}
    items = {i["item_id"]: i for i in pq.read_table(out / S.ITEMS).to_pylist()}
    assert items["10"] == {"item_id": "10", "title": "Toy Story", "description": None,
                           "attributes": ["release_year: 1995", "Animation", "Comedy"]}     # floats not carried
    assert items["12"]["attributes"] == ["Adventure"]
    rows = pq.read_table(out / S.INTERACTIONS).to_pylist()
    assert [(r["user_id"], r["item_id"], r["rating"], r["timestamp"]) for r in rows[:2]] == \
        [("u3", "12", 2.0, 40), ("u3", "10", 1.0, 41)]

    out2 = tmp_path / "out2"                     # the file itself, a scale given: 9 is now off it
    assert prepare("--source", "recbole", "--input", folder / "ml.inter", "--scale", "1,5,0.5", "--out", out2) == 0
    assert manifest(out2)["counts"]["rejected"]["bad_rating"] == 2
    assert any(r["line"] == 13 and r["reason"] == "bad_rating" for r in rejects(out2))


def test_recbole_without_rating_or_time_is_implicit_in_file_order(tmp_path):
    (tmp_path / "clicks.inter").write_text("item_id:token\tuser_id:token\n"
                                           "a\tu1\nb\tu2\nc\tu1\nd\tu1\na\tu2\nb\tu1\n")
    out = tmp_path / "out"
    assert prepare("--source", "recbole", "--input", tmp_path / "clicks.inter", "--split", "leave-last",
                   "--out", out) == 0
    m = manifest(out)
    assert m["implicit"] is True and m["rating_scale"] is None and m["items_synthesised"] == 4
    rows = {(r["user_id"], r["item_id"]): r["timestamp"] for r in pq.read_table(out / S.INTERACTIONS).to_pylist()}
    assert rows == {("u1", "a"): 0, ("u1", "c"): 1, ("u1", "d"): 2, ("u1", "b"): 3, ("u2", "b"): 0, ("u2", "a"): 1}
    test = {r["user_id"]: r for r in split(out, "test")}
    assert test["u1"]["item_id"] == "b" and [h["item_id"] for h in test["u1"]["user_history"]] == ["a", "c", "d"]
    assert test["u2"]["item_id"] == "a" and test["u2"]["user_avg"] is None


@pytest.mark.parametrize("header,args,message", [
    ("user_id item_id\n", (), r"header field 'user_id item_id' is not 'name:type'"),
    ("user_id:token\titem:token\n", (), r"no field 'item_id' \(item; --columns item=COL"),
    ("user_id:float\titem_id:token\n", (), r"field 'user_id' is float; the user field must be token"),
    ("user_id:token\titem_id:token\trating:token\n", (), r"field 'rating' is token; the rating field must be float"),
    ("user_id:token\titem_id:token\n", ("--columns", "rating=stars"), r"no field 'stars' \(rating"),
    ("user_id:token\titem_id:token\n", ("--scale", "1,5"), r"has no ratings .*leave --scale out"),
    ("user_id:token\titem_id:token\trating:float\n", (), r"the rating field 'rating' holds one value"),
])
def test_recbole_header_errors_are_one_line(tmp_path, capsys, header, args, message):
    n = header.count("\t") + 1
    (tmp_path / "x.inter").write_text(header + "".join("\t".join([u, "i1", "1"][:n]) + "\n" for u in ("u1", "u2")))
    assert prepare("--source", "recbole", "--input", tmp_path / "x.inter", "--out", tmp_path / "o", *args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_recbole_named_fields_as_yelp_names_them(tmp_path):
    (tmp_path / "yelp.inter").write_text(
        "review_id:token\tuser_id:token\tbusiness_id:token\tstars:float\tuseful:float\tdate:float\n"
        "r1\tu1\tb1\t5\t0\t1500000000\nr2\tu1\tb2\t3\t2\t1500000100\nr3\tu2\tb1\t4\t0\t1500000200\n")
    (tmp_path / "yelp.item").write_text("business_id:token\tname:token_seq\tcategories:token_seq\tcity:token\n"
                                        "b1\tTaco Place\tMexican Bars\tPhoenix\nb2\tNoodles\tAsian\tTempe\n")
    out = tmp_path / "out"
    assert prepare("--source", "recbole", "--input", tmp_path / "yelp.inter",
                   "--columns", "item=business_id,rating=stars,time=date", "--out", out) == 0
    m = manifest(out)
    assert m["counts"]["kept"] == 3 and m["rating_scale"] == {"min": 3.0, "max": 5.0, "step": 1.0}
    items = {i["item_id"]: i for i in pq.read_table(out / S.ITEMS).to_pylist()}
    assert items["b1"]["title"] == "Taco Place" and items["b1"]["attributes"] == ["Mexican", "Bars", "city: Phoenix"]
    out2 = tmp_path / "out2"                       # --item-columns picks instead of the defaults
    assert prepare("--source", "recbole", "--input", tmp_path / "yelp.inter", "--columns",
                   "item=business_id,rating=stars,time=date", "--item-columns", "item=business_id,attributes=city",
                   "--out", out2) == 0
    items = {i["item_id"]: i for i in pq.read_table(out2 / S.ITEMS).to_pylist()}
    assert items["b2"] == {"item_id": "b2", "title": None, "attributes": ["Tempe"], "description": None}


@pytest.mark.skipif(not (ML_SMALL / "ratings.csv").is_file(), reason="ml-latest-small is not in ../shared/data")
def test_ml_latest_small_as_recbole_atomic_files(tmp_path):
    """The real MovieLens ratings written as RecBole writes them (ml-latest-small.inter/.item)."""
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    with open(ML_SMALL / "ratings.csv", newline="") as src, open(folder / "ml-latest-small.inter", "w") as dst:
        reader = csv.reader(src)
        next(reader)
        dst.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        n = 0
        for user, item, rating, ts in reader:
            dst.write(f"{user}\t{item}\t{rating}\t{ts}\n")
            n += 1
    with open(ML_SMALL / "movies.csv", newline="") as src, open(folder / "ml-latest-small.item", "w") as dst:
        reader = csv.reader(src)
        next(reader)
        dst.write("item_id:token\tmovie_title:token_seq\tgenre:token_seq\n")
        for item, title, genres in reader:
            dst.write(f"{item}\t{title}\t{genres.replace('|', ' ')}\n")
    out = tmp_path / "out"
    assert prepare("--source", "recbole", "--input", folder, "--split", "leave-last", "--history", 20,
                   "--out", out) == 0
    m = manifest(out)
    assert m["counts"] == {"read": n, "kept": n, "rejected": {}} and n > 100_000
    assert m["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5} and m["implicit"] is False
    assert m["splits"]["test"] == m["n_users"] == 610
    test = split(out, "test")
    assert all(len(r["user_history"]) == min(20, r["user_n"]) for r in test)
    assert all((r["user_avg"] is None) == (r["user_n"] == 0) for r in test)


# ----------------------------------------------------------------------------------------------
# Rating commands refuse an implicit dataset, naming it
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def implicit_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("implicit")
    (folder / "seq.txt").write_text("".join(f"u{k} {' '.join(f'i{(k + j) % 9}' for j in range(5))}\n" for k in range(12)))
    assert prepare("--source", "sequences", "--input", folder / "seq.txt", "--split", "leave-last",
                   "--out", folder / "data") == 0
    return folder / "data"


@pytest.mark.parametrize("command,args", [
    ("baseline --method mf", ["baseline", "--method", "mf"]),
    ("baseline --method global", ["baseline", "--method", "global"]),
    ("eval", ["eval", "--model", "Qwen/Qwen2.5-0.5B-Instruct"]),
    ("train grpo", ["train", "grpo", "--model", "Qwen/Qwen2.5-0.5B-Instruct"]),
    ("train sft", ["train", "sft", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--teacher-data", "t.jsonl"]),
    ("teacher", ["teacher", "--heuristic"]),
    ("base", ["base"]),
])
def test_rating_commands_refuse_an_implicit_dataset(implicit_data, tmp_path, capsys, command, args):
    out = tmp_path / ("run.jsonl" if command == "teacher" else "run")
    assert cli.main(["-q", *args, "--data", str(implicit_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{implicit_data} is an implicit (next-item) dataset without ratings" in err, err
    assert f"`reczero {command}` predicts ratings" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
