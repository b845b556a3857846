"""Raw-dump readers: exact rows and rejects for every format, gzip, truncated gzip, non-UTF-8,
wrong source, and the vectorised path agreeing with the line-by-line reference."""

from __future__ import annotations

import gzip
import importlib
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pytest
from fixtures_raw import CLEAN_TITLES, GOOD, WRITERS

from reczero.data.sources import RejectLog, iter_line_bytes, line_blocks
from reczero.errors import DataError

FORMATS = sorted(WRITERS)


def read(source: str, kind: str, path: Path, rejects: RejectLog, **options) -> pa.Table:
    module = importlib.import_module(f"reczero.data.sources.{source}")
    reader = module.read_interactions if kind == "interactions" else module.read_items
    batches = list(reader(path, rejects, **options))
    schema = batches[0].schema if batches else None
    return pa.Table.from_batches(batches, schema=schema)


def rejects_of(log: RejectLog, stream: str) -> dict[int, str]:
    log.close()
    entries = [json.loads(line) for line in log.path.read_text().splitlines()]
    return {e["line"]: e["reason"] for e in entries if e["stream"] == stream}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("source", FORMATS)
def test_reviews_exact_rows_and_rejects(tmp_path, source, gz):
    dump = WRITERS[source](tmp_path, gz=gz)
    log = RejectLog(tmp_path / "rejects.jsonl")
    table = read(source, "interactions", dump.reviews, log)
    rows = [(r["user_id"], r["item_id"], r["rating"], r["timestamp"]) for r in table.to_pylist()]
    assert rows == dump.reviews_kept
    assert rows[0] == ("U1", "B001", 5.0, 1_400_000_000)
    assert rejects_of(log, "interactions") == dump.reviews_rejected
    assert log.read["interactions"] == len(rows) + sum(log.rejected["interactions"].values()) == 15
    assert not log.truncated
    # the non-UTF-8 review is kept, its bad bytes replaced
    odd = [r["review"] for r in table.to_pylist() if (r["user_id"], r["item_id"]) == ("U2", "B001")]
    assert odd == ["Read it in a caf\ufffd\ufffd over two days."]
    assert table.schema.field("timestamp").type == pa.int64()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("source", FORMATS)
def test_items_exact_rows_and_rejects(tmp_path, source, gz):
    dump = WRITERS[source](tmp_path, gz=gz)
    log = RejectLog(tmp_path / "rejects.jsonl")
    table = read(source, "items", dump.meta, log)
    assert table.column("item_id").to_pylist() == dump.items_kept == ["B001", "B002", "B003", "B004"]
    assert dict(zip(table.column("item_id").to_pylist(), table.column("title").to_pylist(), strict=True)) == CLEAN_TITLES
    assert rejects_of(log, "items") == dump.items_rejected
    assert log.read["items"] == 4 + 3


@pytest.mark.parametrize("source", FORMATS)
def test_line_numbers_option(tmp_path, source):
    dump = WRITERS[source](tmp_path, gz=True)
    reviews = read(source, "interactions", dump.reviews, RejectLog(), line_numbers=True).to_pylist()
    lines = {(r["user_id"], r["item_id"], r["timestamp"]): r["line"] for r in reviews}
    u, i, _, t = dump.reviews_kept[6]
    assert lines[(u, i, t)] == dump.duplicate_line
    assert [r["line"] for r in reviews if r["item_id"] == dump.dangling_item] == [dump.dangling_line]
    items = read(source, "items", dump.meta, RejectLog(), line_numbers=True)
    assert items.column("line").to_pylist() == [1, 2, 3, 5] and items.schema.names[-1] == "line"


def test_format_specific_fields(tmp_path):
    t14 = read("amazon2014", "items", WRITERS["amazon2014"](tmp_path / "a").meta, RejectLog()).to_pylist()
    assert t14[0]["attributes"] == ["Books", "Fiction", "brand: Acme"]
    assert t14[0]["description"] == "A novel about a journey."

    dump18 = WRITERS["amazon2018"](tmp_path / "b")
    r18 = read("amazon2018", "interactions", dump18.reviews, RejectLog()).to_pylist()
    assert r18[4]["review"] is None and r18[4]["summary"] == "Broken"        # a rating-only line
    m18 = read("amazon2018", "items", dump18.meta, RejectLog()).to_pylist()
    assert m18[1]["description"] == "Soft fleece. More. Feature one"
    assert m18[1]["attributes"] == ["Home", "Bedding", "brand: Acme"]
    # --item-filter's check columns: the raw title where cleaning changed it; "$9.99" as a number, "" as none
    assert [(r["raw_title"] is not None, r["price"]) for r in m18] == [
        (False, None), (True, "9.99"), (False, None), (False, "9.99")]
    assert m18[1]["raw_title"].startswith('<span class="t">') and m18[1]["title"] == "Cozy & Warm Blanket"
    assert [(r["raw_title"] is not None, r["price"]) for r in t14] == [(False, "9.99"), (True, "9.99"),
                                                                       (False, "9.99"), (False, "9.99")]

    r23 = read("amazon2023", "interactions", WRITERS["amazon2023"](tmp_path / "c").reviews, RejectLog()).to_pylist()
    assert [(r["item_id"], r["timestamp"], r["summary"]) for r in r23[:2]] == [
        ("B001", 1_400_000_000, "Loved it"), ("B002", 1_400_086_400, "Fine")]     # parent_asin; ms floored

    dumpy = WRITERS["yelp"](tmp_path / "d")
    ry = read("yelp", "interactions", dumpy.reviews, RejectLog()).to_pylist()
    assert [r["timestamp"] for r in ry] == [t for _, _, _, t, _, _ in GOOD]
    assert all(r["summary"] is None for r in ry)
    my = read("yelp", "items", dumpy.meta, RejectLog()).to_pylist()
    assert my[0]["attributes"] == ["Books", "Fiction"]
    assert my[0]["description"] == "A business in Phoenix, AZ. Categories: Books, Fiction."
    assert my[3]["attributes"] == [] and my[3]["description"] == "A business in Phoenix, AZ."


@pytest.mark.parametrize("source", FORMATS)
def test_truncated_gzip_keeps_complete_records(tmp_path, source):
    dump = WRITERS[source](tmp_path, truncate=True)
    with pytest.raises(EOFError):
        gzip.decompress(dump.reviews.read_bytes())            # really truncated, for the gzip module too
    log = RejectLog(tmp_path / "rejects.jsonl")
    table = read(source, "interactions", dump.reviews, log)
    assert [(r["user_id"], r["item_id"]) for r in table.to_pylist()] == [k[:2] for k in dump.reviews_kept]
    assert len(dump.reviews_kept) == len(GOOD) - 1
    assert rejects_of(log, "interactions")[dump.truncated_line] == "truncated"
    assert log.truncated == [str(dump.reviews)]
    assert log.read["interactions"] == table.num_rows + sum(log.rejected["interactions"].values())


def _numbered_lines(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"reviewerID": f"U{i}", "asin": f"B{rng.randrange(999)}", "overall": rng.randint(1, 5),
                        "unixReviewTime": 1_300_000_000 + i, "reviewText": f"{rng.getrandbits(128):x} " * rng.randrange(5)}).encode()
            for i in range(n)]


def test_truncated_gzip_at_any_offset(tmp_path):
    """Cut a real gzip at many offsets: the reader yields exactly the complete lines that zlib can
    recover from the prefix, the partial one is rejected, nothing crashes."""
    lines = _numbered_lines(3000)
    data = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    for cut in sorted({20, 200, *range(1000, len(data) - 8, len(data) // 17), len(data) - 5}):
        path = tmp_path / f"cut{cut}.json.gz"
        path.write_bytes(data[:cut])
        recovered = zlib.decompressobj(31).decompress(data[:cut])
        complete = recovered.count(b"\n")
        log = RejectLog()
        got = [line for _, line in iter_line_bytes(path, log, "interactions")]
        assert got == lines[:complete], cut
        assert log.truncated == [str(path)]
        partial = bool(recovered.rsplit(b"\n", 1)[-1])
        assert log.rejected["interactions"]["truncated"] == log.read["interactions"] == partial
        if complete:
            table = read("amazon2018", "interactions", path, RejectLog())
            assert table.column("user_id").to_pylist() == [f"U{i}" for i in range(complete)]
    assert complete > 2900


def test_multimember_padded_and_corrupt_gzip(tmp_path):
    lines = _numbered_lines(50)
    half = [b"\n".join(lines[:20]) + b"\n", b"\n".join(lines[20:]) + b"\n"]
    path = tmp_path / "multi.json.gz"
    path.write_bytes(gzip.compress(half[0]) + gzip.compress(half[1]) + b"\0" * 16)
    log = RejectLog()
    assert [line for _, line in iter_line_bytes(path, log, "interactions")] == lines
    assert not log.truncated
    # damage past the middle: no crash, the lines before the damage are kept, the file is flagged
    lines = _numbered_lines(6000)
    data = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    assert len(data) > 2 * (1 << 16)             # the damage lies past the first 64 KiB inflate step
    data[len(data) * 3 // 4: len(data) * 3 // 4 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    log = RejectLog()
    got = [line for _, line in iter_line_bytes(path, log, "interactions")]
    assert len(got) >= 1000 and got[:1000] == lines[:1000]
    assert log.truncated == [str(path)]


def test_line_blocks_on_truncated_gzip(tmp_path):
    rows = [f"{i},item{i},{i % 5 + 1}" for i in range(2000)]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    path = tmp_path / "r.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    log = RejectLog()
    got = b"".join(line_blocks(path, log, "interactions")).decode().splitlines()
    assert got == rows[:len(got)] and 0 < len(got) < len(rows)          # every complete line, then the tail
    assert log.truncated == [str(path)] and log.rejected["interactions"]["truncated"] == log.read["interactions"]
    with pytest.raises(DataError, match="truncated"):                   # no reject log: an error, not a quiet stop
        list(line_blocks(path, None, "interactions"))


def test_non_utf8_unparseable_line_is_rejected_not_crashing(tmp_path):
    path = tmp_path / "r.json"
    good = json.dumps({"reviewerID": "U1", "asin": "B1", "overall": 4, "unixReviewTime": 1_400_000_000})
    path.write_bytes(good.encode() + b'\n{"reviewerID": "\xff\xfe, broken\n' + b'{"reviewerID": "\xe9t\xe9", "asin": "B2", '
                     b'"overall": 3.0, "unixReviewTime": 1400000001, "summary": "\\ud800 lone"}\n')
    log = RejectLog(tmp_path / "rejects.jsonl")
    rows = read("amazon2018", "interactions", path, log).to_pylist()
    assert [r["user_id"] for r in rows] == ["U1", "\ufffdt\ufffd"]
    assert rows[1]["summary"] == "\ufffd lone"
    assert rejects_of(log, "interactions") == {2: "malformed_json"}


def test_literal_eval_only(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text("{'asin': 'B1', 'title': 'ok'}\n__import__('os').system('touch " + str(tmp_path / "pwned") + "')\n")
    log = RejectLog(tmp_path / "rejects.jsonl")
    assert read("amazon2014", "items", path, log).column("item_id").to_pylist() == ["B1"]
    assert rejects_of(log, "items") == {2: "malformed_json"}
    assert not (tmp_path / "pwned").exists()


def test_wrong_source_raises_early_with_fields(tmp_path):
    dump = WRITERS["yelp"](tmp_path)
    with pytest.raises(DataError, match=r"all 15 interactions records were rejected.*--source amazon2018.*needs reviewerID.*has.*business_id"):
        read("amazon2018", "interactions", dump.reviews, RejectLog())
    big = tmp_path / "review.json"
    big.write_text("".join(json.dumps({"review_id": str(i), "user_id": "u", "business_id": "b", "stars": 4,
                                       "date": "2014-01-01 00:00:00"}) + "\n" for i in range(1500)))
    log = RejectLog()
    with pytest.raises(DataError, match=r"the first 1,000 .*needs reviewerID, asin, overall, unixReviewTime"):
        read("amazon2018", "interactions", big, log)
    assert log.read["interactions"] == 1000 == log.rejected["interactions"]["missing_field"]
    empty = tmp_path / "empty.json"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no interactions records"):
        read("amazon2018", "interactions", empty, RejectLog())


@pytest.mark.parametrize("source", FORMATS)
def test_vectorised_path_matches_line_loop(tmp_path, source, monkeypatch):
    """Small pieces and batches so that vectorised and line-by-line pieces interleave."""
    import reczero.data.sources._jsonl as jsonl

    monkeypatch.setattr(jsonl, "PIECE_BYTES", 600)
    monkeypatch.setattr(jsonl, "BATCH_ROWS", 4)
    outcomes = []
    real = jsonl._vectorised

    def spy(*args):
        table = real(*args)
        outcomes.append(table is not None)
        return table

    monkeypatch.setattr(jsonl, "_vectorised", spy)
    dump = WRITERS[source](tmp_path)
    path = tmp_path / "long.json"
    good = [dump.lines["reviews"][0], dump.lines["reviews"][4]]     # two plain-JSON good lines
    bad = dump.lines["reviews"][5]                  # the malformed line
    double = good[0] + b" " + good[1]             # two objects on one line: not a JSON line
    path.write_bytes(b"\n".join(good * 30 + [bad] + good * 30 + [b""] + good * 5 + [double] + good * 3) + b"\n")
    results = []
    for vectorised in (True, False):
        log = RejectLog(tmp_path / f"rejects{vectorised}.jsonl")
        results.append((read(source, "interactions", path, log, vectorised=vectorised, line_numbers=True),
                        rejects_of(log, "interactions"), dict(log.read)))
    assert results[0][0].equals(results[1][0])
    assert results[0][1:] == results[1][1:] == ({61: "malformed_json", 133: "malformed_json"}, {"interactions": 138})
    assert results[0][0].column("line").to_pylist() == [n for n in range(1, 140) if n not in (61, 122, 133)]
    assert results[0][0].num_rows == 136
    assert outcomes.count(True) > 10 and outcomes.count(False) >= 2        # both paths were taken


def test_scale_option_rejects_off_scale_ratings(tmp_path):
    from reczero.data.schema import RatingScale

    dump = WRITERS["amazon2018"](tmp_path)
    log = RejectLog()
    table = read("amazon2018", "interactions", dump.reviews, log, scale=RatingScale(2.0, 5.0))
    assert sorted(set(table.column("rating").to_pylist())) == [2.0, 3.0, 4.0, 5.0]
    assert log.rejected["interactions"]["bad_rating"] == 2 + 1                 # 7, "five", and the 1-star one


def test_archives_get_a_clear_message(tmp_path):
    import tarfile
    import zipfile

    inner = WRITERS["yelp"](tmp_path).reviews
    with zipfile.ZipFile(tmp_path / "yelp.zip", "w") as z:
        z.write(inner, inner.name)
    with tarfile.open(tmp_path / "yelp.tar", "w") as t:
        t.add(inner, inner.name)
    for name, kind in (("yelp.zip", "zip archive"), ("yelp.tar", "tar archive")):
        with pytest.raises(DataError, match=f"is a {kind}; expected a text file"):
            read("yelp", "interactions", tmp_path / name, RejectLog())
    with pytest.raises(DataError, match="file not found"):
        read("yelp", "interactions", tmp_path / "missing.json", RejectLog())


def test_huge_line_is_an_error_not_a_memory_blowup(tmp_path, monkeypatch):
    import reczero.data.sources as sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 3 << 20)
    path = tmp_path / "array.json"
    path.write_bytes(b"[" + b'{"asin": "B1"}, ' * 300_000 + b"]\n")
    with pytest.raises(DataError, match="line 1 is longer than 3 MiB"):
        read("amazon2018", "items", path, RejectLog())


def test_field_helpers():
    from reczero.data.sources._fields import Rejected, attributes, clean_text, seconds
    from reczero.data.sources.yelp import unix_seconds

    assert clean_text('<div><script type="x">var a = "<b>";</script>Tea &amp; <b>Cakes</b>\n</div>', 100) == "Tea & Cakes"
    assert clean_text("word " * 100, 22) == "word word word word…"
    assert clean_text("   ", 10) is None
    assert attributes([["Books", "Fiction"], ["Books"]], "Arts &amp; Crafts", None, 3) == ["Books", "Fiction", "Arts & Crafts"]
    assert unix_seconds("2016-03-09 21:43:18") == 1_457_559_798
    assert unix_seconds("2016-03-09") == 1_457_481_600
    assert unix_seconds("2016-03-09T23:43:18+02:00") == 1_457_559_798
    assert seconds(1_457_559_798_999, "timestamp", per_second=1000) == 1_457_559_798
    for bad in (-5, 1_457_559_798_000, "soon", None, float("nan")):
        with pytest.raises(Rejected):
            seconds(bad, "unixReviewTime")


def test_half_star_is_off_the_step_in_both_paths(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("".join(json.dumps({"reviewerID": f"U{i}", "asin": "B1", "overall": 3.5 if i == 7 else 4,
                                        "unixReviewTime": 1_400_000_000}) + "\n" for i in range(20)))
    for vectorised in (True, False):
        log = RejectLog(tmp_path / "rejects.jsonl")
        assert read("amazon2018", "interactions", path, log, vectorised=vectorised).num_rows == 19
        assert rejects_of(log, "interactions") == {8: "bad_rating"}


@pytest.mark.parametrize(("text", "price"), [
    ("$12.99", "12.99"), ("$1,299.00", "1299.00"), (" $5 ", "5"), ("$10.99 - $20.99", "$10.99 - $20.99"),
    ("$1,29.00", "$1,29.00"), ("", ""), (None, None), (7.5, 7.5)])
def test_amazon2018_prices_are_handed_over_as_numbers_where_they_are_dollar_amounts(text, price):
    from reczero.data.sources.amazon2018 import _price

    assert _price(text) == price
