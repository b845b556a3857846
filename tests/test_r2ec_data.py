"""The R2ec reference's Amazon 2023 data filters in `reczero data prepare`: the item rules
(--item-filter), the time window (--since/--until) and its widening (--window-min-items).

The dump below is written in the real Amazon Reviews'23 layouts (``Video_Games.jsonl.gz``: ``timestamp``
in milliseconds, the item is ``parent_asin``; ``meta_Video_Games.jsonl.gz`` with every field of the
real meta lines), and what a correct preparation must make of it is declared here by hand, line by
line, not computed by the code under test.
"""

from __future__ import annotations

import gzip
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reczero import cli
from reczero.config import ConfigError, PrepareConfig
from reczero.data import prepare as prepare_module
from reczero.data import samples as samples_module
from reczero.data import schema as S

RECIPES = Path(__file__).resolve().parents[1] / "src" / "reczero" / "configs" / "paper"
LONG = " ".join(["word"] * 21)              # 21 words: too long
TWENTY = " ".join(["Deluxe"] * 19 + ["Edition"])   # exactly 20 words: kept

# (parent_asin, title, price) in file order, with what --item-filter r2ec / r2ec-price make of it
ITEMS = [
    ("G01", "Halo Infinite - Standard Edition \u2013 Xbox Series X", 39.99, None, None),
    ("G02", "", 10.0, "no_title", "no_title"),
    ("G03", '"X"', 5.0, "title_too_short", "title_too_short"),          # quotes trimmed, as the reference
    ("G04", LONG, 20.0, "title_too_long", "title_too_long"),
    ("G05", '<span id="productTitle" class="a-size-large">Mario Kart 8 Deluxe</span>', 49.99,
     "html_in_title", "html_in_title"),
    ("G06", "The Legend of Zelda: Tears of the Kingdom", None, None, "bad_price"),
    ("G07", "Sonic &amp; Knuckles Collection", "from 12.99", None, "bad_price"),
    ("G08", TWENTY, 19.99, None, None),
    ("G09", "Ys", 5, None, None),                                      # 2 characters: kept
    ("G10", "Elden Ring", 59.99, None, None),
    ("G11", "Stardew Valley", 14.99, None, None),
    ("G12", "Tetris Effect: Connected", 29.99, None, None),
]


def ms(when: str) -> int:
    """Milliseconds of a UTC 'YYYY-MM-DD HH:MM:SS' (Amazon 2023 times), with a sub-second part."""
    return int(datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()) * 1000 + 345


# (line, user, item, rating, UTC time); window 2022-10-01 .. 2023-10-01
REVIEWS = [
    (1, "A", "G01", 5, "2022-10-01 00:00:00"),     # the first second of the window: kept
    (2, "A", "G06", 4, "2022-11-15 10:00:00"),
    (3, "A", "G07", 3, "2023-01-10 10:00:00"),
    (4, "B", "G01", 4, "2022-12-01 10:00:00"),
    (5, "B", "G08", 5, "2023-03-03 10:00:00"),
    (6, "B", "G09", 2, "2023-10-01 23:59:59"),     # the last second of the window: kept
    (7, "C", "G06", 5, "2023-02-02 10:00:00"),
    (8, "C", "G01", 3, "2023-05-05 10:00:00"),
    (9, "C", "G02", 4, "2023-06-06 10:00:00"),     # item without a title: unknown_item
    (10, "D", "G05", 5, "2023-04-04 10:00:00"),    # item with HTML in its title: unknown_item
    (11, "D", "G08", 4, "2023-04-05 10:00:00"),
    (12, "D", "G01", 2, "2023-07-07 10:00:00"),
    (13, "B", "G06", 4, "2022-09-30 23:59:59"),    # one second early
    (14, "C", "G09", 3, "2023-10-02 00:00:00"),    # one second late
    (15, "A", "G10", 4, "2022-08-15 10:00:00"),    # G10 only 1.5 months before the window
    (16, "B", "G10", 5, "2022-08-20 10:00:00"),
    (17, "C", "G11", 3, "2022-02-14 10:00:00"),    # G11 7.5 months before
    (18, "D", "G12", 4, "2021-05-10 10:00:00"),    # the earliest kept review
    (19, "D", "G04", 1, "2021-06-01 10:00:00"),    # item with a too long title: unknown_item
]
MALFORMED_LINE = 20


def write_dump(directory: Path) -> tuple[Path, Path]:
    """``Video_Games.jsonl.gz`` and ``meta_Video_Games.jsonl.gz`` as the Amazon 2023 dump has them."""
    directory.mkdir(parents=True, exist_ok=True)
    reviews = [json.dumps({"rating": float(r), "title": "Fun", "text": f"Review {n} of {i}.", "images": [],
                           "asin": f"X{i}", "parent_asin": i, "user_id": u, "timestamp": ms(t), "helpful_vote": 0,
                           "verified_purchase": True}) for n, u, i, r, t in REVIEWS]
    reviews.append('{"rating": 5.0, "title": "Cut", "parent_asin": "G01", "user_id": "E"')   # cut short
    meta = [json.dumps({"main_category": "Video Games", "title": title, "average_rating": 4.5, "rating_number": 10,
                        "features": ["Online play"], "description": ["A game."], "price": price, "images": [],
                        "videos": [], "store": "Nintendo", "categories": ["Video Games", "Games"],
                        "details": {"Release date": "2023"}, "parent_asin": item, "bought_together": None})
            for item, title, price, _, _ in ITEMS]
    paths = directory / "Video_Games.jsonl.gz", directory / "meta_Video_Games.jsonl.gz"
    for path, lines in zip(paths, (reviews, meta), strict=True):
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    return paths


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> tuple[Path, Path]:
    return write_dump(tmp_path_factory.mktemp("raw"))


def prepare(dump, out: Path, *args) -> dict:
    reviews, meta = dump
    rc = cli.main(["-q", "data", "prepare", "--source", "amazon2023", "--input", str(reviews), "--meta", str(meta),
                   "--out", str(out), *map(str, args)])
    assert rc == 0
    m = json.loads((out / S.MANIFEST).read_text())
    for counts in (m["counts"], m["items_counts"]):       # nothing lost
        assert counts["read"] == counts["kept"] + sum(counts["rejected"].values())
    return m


def rejects(out: Path, stream: str) -> list[dict]:
    return [e for e in map(json.loads, (out / S.REJECTS).read_text().splitlines()) if e["stream"] == stream]


def kept_lines(out: Path) -> list[int]:
    """Review line numbers of interactions.parquet (the review text says which line it came from)."""
    texts = pq.read_table(out / S.INTERACTIONS).column("review").to_pylist()
    return sorted(int(t.split()[1]) for t in texts)


@pytest.mark.parametrize("item_filter", ["r2ec", "r2ec-price"])
def test_item_rules_drop_items_with_reasons_and_their_reviews(tmp_path, dump, item_filter):
    m = prepare(dump, tmp_path / "out", "--item-filter", item_filter)
    col = ["r2ec", "r2ec-price"].index(item_filter)
    dropped = {item: reasons[col] for item, _, _, *reasons in ITEMS if reasons[col]}
    assert m["items_counts"] == {"read": 12, "kept": 12 - len(dropped), "rejected": {
        r: list(dropped.values()).count(r) for r in dict.fromkeys(dropped.values())}}
    listed = {json.loads(e["record"])["item_id"]: e["reason"] for e in rejects(tmp_path / "out", "items")}
    assert listed == dropped
    html = next(json.loads(e["record"]) for e in rejects(tmp_path / "out", "items") if e["reason"] == "html_in_title")
    assert html["raw_title"].startswith("<span id=") and html["title"] == "Mario Kart 8 Deluxe"
    items = pq.read_table(tmp_path / "out" / S.ITEMS).to_pydict()
    assert items["item_id"] == [i for i, *_ in ITEMS if i not in dropped]
    assert "Sonic & Knuckles Collection" in items["title"] or item_filter == "r2ec-price"    # entities are no HTML
    # every review of a dropped item is unknown_item; the malformed line is the reader's
    unknown = sorted(n for n, _, i, _, _ in REVIEWS if i in dropped)
    assert m["counts"] == {"read": 20, "kept": 19 - len(unknown),
                           "rejected": {"malformed_json": 1, "unknown_item": len(unknown)}}
    assert unknown == ([9, 10, 19] if item_filter == "r2ec" else [2, 3, 7, 9, 10, 13, 19])
    assert kept_lines(tmp_path / "out") == [n for n, *_ in REVIEWS if n not in unknown]


def test_without_item_filter_every_item_is_kept(tmp_path, dump):
    m = prepare(dump, tmp_path / "out")
    assert m["items_counts"] == {"read": 12, "kept": 12, "rejected": {}}
    assert m["counts"]["rejected"] == {"malformed_json": 1} and m["window"] is None


def test_window_keeps_both_end_days_and_rejects_the_rest(tmp_path, dump):
    out = tmp_path / "out"
    m = prepare(dump, out, "--item-filter", "r2ec", "--since", "2022-10-01", "--until", "2023-10-01")
    assert m["counts"] == {"read": 20, "kept": 10,
                           "rejected": {"malformed_json": 1, "unknown_item": 3, "out_of_window": 6}}
    assert kept_lines(out) == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]
    assert sorted(json.loads(e["record"])["timestamp"] for e in rejects(out, "interactions")
                  if e["reason"] == "out_of_window") == \
        sorted(ms(t) // 1000 for n, _, _, _, t in REVIEWS if n in (13, 14, 15, 16, 17, 18))
    assert m["window"] == {"since": "2022-10-01", "until": "2023-10-01", "requested_since": "2022-10-01",
                           "moved_back_months": 0, "window_min_items": 0, "items": 5, "out_of_window": 6}
    assert m["options"]["since"] == "2022-10-01" and m["splits"] == {"train": 8, "valid": 1, "test": 1}


def test_window_with_the_price_rule(tmp_path, dump):
    """A review of a dropped item is unknown_item even outside the window (checked first)."""
    m = prepare(dump, tmp_path / "out", "--item-filter", "r2ec-price", "--since", "2022-10-01", "--until", "2023-10-01")
    assert m["counts"] == {"read": 20, "kept": 7,
                           "rejected": {"malformed_json": 1, "unknown_item": 7, "out_of_window": 5}}
    assert m["window"]["items"] == 3


@pytest.mark.parametrize("min_items, since, moved, items, kept", [
    (5, "2022-10-01", 0, 5, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]),          # enough already
    (6, "2022-07-01", 3, 6, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15, 16]),   # one step back brings G10
    (7, "2022-01-01", 9, 7, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15, 16, 17]),   # three steps bring G11
    (50, "2021-04-01", 18, 8, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15, 16, 17, 18]),   # stops at the earliest
])
def test_widening_moves_the_start_back_three_months_at_a_time(tmp_path, dump, min_items, since, moved, items, kept):
    out = tmp_path / "out"
    m = prepare(dump, out, "--item-filter", "r2ec", "--since", "2022-10-01", "--until", "2023-10-01",
                "--window-min-items", min_items)
    assert m["window"] == {"since": since, "until": "2023-10-01", "requested_since": "2022-10-01",
                           "moved_back_months": moved, "window_min_items": min_items, "items": items,
                           "out_of_window": 16 - len(kept)}
    assert kept_lines(out) == kept
    assert m["counts"]["kept"] == len(kept)
    assert len(set(pq.read_table(out / S.INTERACTIONS).column("item_id").to_pylist())) == items


def test_widening_stops_at_the_first_start_that_holds_every_review(tmp_path, dump):
    """From 2022-08-10 the fifth step back, 2021-05-10, is the day of the earliest review: no sixth."""
    m = prepare(dump, tmp_path / "out", "--item-filter", "r2ec", "--since", "2022-08-10", "--until", "2023-10-01",
                "--window-min-items", 50)
    assert (m["window"]["since"], m["window"]["moved_back_months"], m["window"]["items"]) == ("2021-05-10", 15, 8)
    assert m["counts"]["rejected"]["out_of_window"] == 1


def test_kcore_counts_the_whole_dump_before_the_window(tmp_path, dump):
    """As the reference's 5-core input: user A has 3 reviews in the window but 4 in the dump and
    stays with --min-user 4; D has 3 in all and goes."""
    out = tmp_path / "out"
    m = prepare(dump, out, "--item-filter", "r2ec", "--since", "2022-10-01", "--until", "2023-10-01", "--min-user", 4)
    assert m["counts"]["rejected"] == {"malformed_json": 1, "unknown_item": 3, "filtered": 3, "out_of_window": 5}
    assert kept_lines(out) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_spilled_inputs_give_the_same_dataset(tmp_path, dump, monkeypatch):
    """Past the memory budget items (with the check columns) and reviews go through Parquet files."""
    args = ("--item-filter", "r2ec-price", "--since", "2022-10-01", "--until", "2023-10-01", "--window-min-items", 5)
    held = prepare(dump, tmp_path / "held", *args)
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(samples_module, "IN_MEMORY_BYTES", 0)
    spilled = prepare(dump, tmp_path / "spilled", *args)
    for key in ("counts", "items_counts", "window", "splits"):
        assert spilled[key] == held[key]
    assert held["window"]["since"] == "2022-01-01"     # without G06 and G07: 3 items, 4 from July, 5 from January
    assert pq.read_table(tmp_path / "spilled" / S.ITEMS).equals(pq.read_table(tmp_path / "held" / S.ITEMS))


def test_item_filter_applies_to_any_source_with_items(tmp_path, capsys, monkeypatch):
    """A table with an item file; spilled to Parquet, so the check columns it lacks are read as nulls there."""
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(samples_module, "IN_MEMORY_BYTES", 0)
    (tmp_path / "r.csv").write_text("u,i,r,t\nu1,a,5,2023-01-01\nu1,b,4,2023-01-02\nu2,c,3,2023-01-03\n"
                                    "u2,d,2,2023-01-04\nu2,a,4,2023-01-05\n")
    (tmp_path / "items.csv").write_text(f'item,name\na,Alpha\nb,<b>Beta</b> Box\nc,Z\nd,{LONG}\n')
    args = ["-q", "data", "prepare", "--source", "table", "--input", str(tmp_path / "r.csv"), "--columns",
            "user=u,item=i,rating=r,time=t", "--scale", "1,5", "--meta", str(tmp_path / "items.csv"),
            "--item-columns", "item=item,title=name"]
    assert cli.main([*args, "--item-filter", "r2ec", "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / S.MANIFEST).read_text())
    assert m["items_counts"]["rejected"] == {"html_in_title": 1, "title_too_short": 1, "title_too_long": 1}
    assert m["counts"] == {"read": 5, "kept": 2, "rejected": {"unknown_item": 3}}
    capsys.readouterr()
    assert cli.main([*args, "--item-filter", "r2ec-price", "--out", str(tmp_path / "price")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no item carries a price" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("source", ["amazon2014", "amazon2018"])
def test_item_filter_sees_the_raw_titles_and_prices_of_the_older_amazon_dumps(tmp_path, source, capsys):
    """The 2014 and 2018 readers hand over the raw title and the price too: the fixture's B002 has
    markup in its title (cleaned away in ``title``), and 2018's prices are "$9.99" or ""."""
    from fixtures_raw import WRITERS

    raw = WRITERS[source](tmp_path / "raw")
    args = ["-q", "data", "prepare", "--source", source, "--input", str(raw.reviews), "--meta", str(raw.meta)]
    assert cli.main([*args, "--item-filter", "r2ec", "--out", str(tmp_path / "out")]) == 0
    listed = {json.loads(e["record"])["item_id"]: e["reason"] for e in rejects(tmp_path / "out", "items")
              if e["reason"] in ("html_in_title", "bad_price")}
    assert listed == {"B002": "html_in_title"}
    assert "B002" not in pq.read_table(tmp_path / "out" / S.ITEMS).column("item_id").to_pylist()
    if source == "amazon2018":      # "$9.99" is a price, "" is none; only the unreviewed B004 is left
        assert cli.main([*args, "--item-filter", "r2ec-price", "--out", str(tmp_path / "price")]) == 2
        assert "no interaction left after checks and filters" in capsys.readouterr().err
        listed = {json.loads(e["record"])["item_id"]: e["reason"] for e in rejects(tmp_path / "price", "items")
                  if e["reason"] in ("html_in_title", "bad_price")}
        assert listed == {"B001": "bad_price", "B002": "html_in_title", "B003": "bad_price"}


def test_unusable_filter_options_are_one_line_errors(tmp_path, dump, capsys):
    reviews, _ = dump
    base = ["-q", "data", "prepare", "--source", "amazon2023", "--input", str(reviews), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--item-filter", "r2ec"]) == 2
    assert "--item-filter r2ec needs item metadata" in capsys.readouterr().err
    for extra, says in ((["--since", "2022-13-01"], "expected a date YYYY-MM-DD"),
                        (["--since", "1/10/2022"], "expected a date YYYY-MM-DD"),
                        (["--since", "2023-10-02", "--until", "2023-10-01"], "is after --until"),
                        (["--until", "2023-10-01", "--window-min-items", "10"], "needs --since")):
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ConfigError, match="window_min_items must be >= 0"):
        PrepareConfig(source="amazon2023", input="x", out="y", since="2022-10-01", window_min_items=-1)
    assert not (tmp_path / "o" / S.MANIFEST).exists()


@pytest.mark.parametrize("name, category", [("games", "Video_Games"), ("instruments", "Musical_Instruments"),
                                            ("cds", "CDs_and_Vinyl")])
def test_paper_recipe_data_command_runs_with_the_reference_settings(tmp_path, dump, name, category):
    """The `# Data:` command in each R2ec recipe's header has the reference's settings and runs as
    written (on the fixture dump in place of the category's files)."""
    header = [line for line in (RECIPES / f"r2ec-{name}.yaml").read_text().splitlines() if line.startswith("#")]
    command = next(line for line in header if line.startswith("# Data:")).split("&&")
    assert command[0].split() == ["#", "Data:", "reczero", "data", "download", f"amazon2023:{category}", "--out", "raw"]
    args = shlex.split(command[1])
    assert args[:3] == ["reczero", "data", "prepare"]
    flags = dict(zip(args[3::2], args[4::2], strict=True))
    folder = f"raw/amazon2023-{category}"
    assert flags == {"--source": "amazon2023", "--input": f"{folder}/{category}.jsonl.gz",
                     "--meta": f"{folder}/meta_{category}.jsonl.gz", "--item-filter": "r2ec",
                     "--since": "2022-10-01", "--until": "2023-10-01", "--window-min-items": "10000",
                     "--min-user": "5", "--min-item": "5", "--history": "20", "--min-history": "1",
                     "--split": "temporal", "--split-ratios": "0.8,0.1,0.1", "--out": f"data/{name}"}
    reviews, meta = dump
    flags.update({"--input": str(reviews), "--meta": str(meta), "--out": str(tmp_path / "out"),
                  "--min-user": "2", "--min-item": "1"})    # the fixture is far smaller than a 5-core
    assert cli.main(["-q", "data", "prepare", *(x for kv in flags.items() for x in kv)]) == 0
    m = json.loads((tmp_path / "out" / S.MANIFEST).read_text())
    assert m["window"]["window_min_items"] == 10_000 and m["window"]["since"] == "2021-04-01"   # widened to all
    assert m["options"]["history"] == 20 and m["options"]["item_filter"] == "r2ec"
