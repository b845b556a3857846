"""`reczero data prepare`: the table source (CSV, JSONL), counts that add up, and one-line errors."""

import json

import pyarrow.parquet as pq
import pytest

from reczero import cli
from reczero.data import schema as S

CSV = ("uid,iid,stars,when,text\n"
       "u1,a,5,2020-01-01 10:00:00,great\n"
       'u1,b,4,2020-01-02,"ok, fine"\n'
       "u2,a,9,2020-01-03,off the scale\n"
       "u2,b,3,not a date,x\n"
       "u2,c,,2020-01-05,no rating\n"
       'u3,a,2,2020-01-06,"a,b",extra\n'
       "u3,b,1,2020-01-07,y\n"
       "u3,b,2,2020-01-08,again\n")


def run(*args):
    return cli.main(["-q", "data", "prepare", *map(str, args)])


def manifest(out):
    m = json.loads((out / S.MANIFEST).read_text())
    c = m["counts"]
    assert c["read"] == c["kept"] + sum(c["rejected"].values())
    return m


def test_table_csv_with_item_table(tmp_path):
    (tmp_path / "r.csv").write_text(CSV)
    (tmp_path / "items.csv").write_text("item,name,cats\na,Alpha,x|y\nb,Beta,z\n")
    out = tmp_path / "out"
    assert run("--source", "table", "--input", tmp_path / "r.csv", "--columns", "user=uid,item=iid,rating=stars,time=when,review=text",
               "--scale", "1,5", "--meta", tmp_path / "items.csv", "--item-columns", "item=item,title=name,attributes=cats",
               "--out", out) == 0
    m = manifest(out)
    assert m["counts"] == {"read": 8, "kept": 3, "rejected": {"malformed_row": 1, "bad_rating": 1, "bad_time": 1,
                                                              "missing_field": 1, "duplicate": 1}}
    lines = {r["reason"]: r["line"] for r in map(json.loads, (out / S.REJECTS).read_text().splitlines())}
    assert lines["malformed_row"] == 7 and lines["bad_rating"] == 4 and lines["bad_time"] == 5
    rows = pq.read_table(out / S.INTERACTIONS).to_pylist()
    assert rows[0]["timestamp"] == 1577872800 and rows[1]["review"] == "ok, fine"
    assert pq.read_table(out / S.ITEMS).to_pylist()[0] == {"item_id": "a", "title": "Alpha", "attributes": ["x", "y"],
                                                          "description": None}
    assert m["rating_scale"] == {"min": 1.0, "max": 5.0, "step": 1.0}
    assert (out / "config.yaml").read_text().count("source: table") == 1


def test_table_jsonl_milliseconds_and_flat_titles(tmp_path):
    lines = [{"u": "u1", "i": "a", "r": 5, "t": 1_600_000_000_000, "name": "Alpha"},
             {"u": "u1", "i": "b", "r": 4, "t": 1_600_000_100_000, "name": "Beta"},
             {"u": "u2", "i": "a", "r": 3, "t": 1_600_000_200_000, "name": "Alpha (again)"}]
    (tmp_path / "r.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    out = tmp_path / "out"
    assert run("--source", "table", "--input", tmp_path / "r.jsonl", "--columns", "user=u,item=i,rating=r,time=t,title=name",
               "--scale", "1,5", "--out", out) == 0
    m = manifest(out)
    assert m["counts"]["kept"] == 3
    assert pq.read_table(out / S.INTERACTIONS).column("timestamp").to_pylist() == [1_600_000_000, 1_600_000_100, 1_600_000_200]
    assert pq.read_table(out / S.ITEMS).column("title").to_pylist() == ["Alpha", "Beta"]


def test_overwrite_is_required(tmp_path, capsys):
    (tmp_path / "r.csv").write_text(CSV)
    args = ["--source", "table", "--input", tmp_path / "r.csv", "--columns", "user=uid,item=iid,rating=stars,time=when",
            "--scale", "1,5", "--out", tmp_path / "out"]
    assert run(*args) == 0
    capsys.readouterr()
    assert run(*args) == 2
    assert "already holds a prepared dataset" in capsys.readouterr().err
    assert run(*args, "--overwrite") == 0


@pytest.mark.parametrize("case", ["missing", "empty", "wrong_columns", "wrong_source", "bad_scale"])
def test_unusable_input_is_one_line_exit_2(tmp_path, capsys, case):
    path = tmp_path / "data.csv"
    args = ["--source", "table", "--columns", "user=uid,item=iid,rating=stars,time=when", "--scale", "1,5"]
    if case == "empty":
        path.write_text("")
    elif case == "wrong_columns":
        path.write_text("a,b\n1,2\n")
    elif case == "wrong_source":
        path = tmp_path / "reviews.json"
        path.write_text("uid,iid,stars,when\nu1,a,5,1\n" * 3)
        args = ["--source", "amazon2018"]
    elif case == "bad_scale":
        path.write_text(CSV)
        args[-1] = "5,1"
    rc = run(*args, "--input", path, "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err or case == "bad_scale"
    assert not (tmp_path / "out" / S.MANIFEST).exists()
