"""Stages and lanes (reczero.stages): markers, skipping, lanes in their own processes, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reczero.stages import Stage, Stages


def _write(path: Path, text: str) -> int:
    path.write_text(f"{text} pid={os.getpid()}")
    print(f"wrote {path.name}")
    return 0


def lanes_of(root: Path, fail: bool = False) -> dict[str, list[Stage]]:
    """Two lanes: 'a' (two stages, the second reads the first's output) and 'b'; and 'c', whose one
    stage reads what lane a wrote (``after``)."""
    def second() -> int:
        first = (root / "a1.txt").read_text()           # the lane's order holds in its process
        return _write(root / "a2.txt", f"after {first.split()[0]}")

    def broken() -> int:
        raise ValueError("lane b is broken on purpose")

    return {"a": [Stage("a1", lambda: _write(root / "a1.txt", "a1"), [root / "a1.txt"]),
                  Stage("a2", second, [root / "a2.txt"])],
            "b": [Stage("b1", broken if fail else lambda: _write(root / "b1.txt", "b1"), [root / "b1.txt"])],
            "c": [Stage("c1", lambda: _write(root / "c1.txt", (root / "b1.txt").read_text()), [root / "c1.txt"],
                        after=("b1",))]}


def test_a_stage_waits_for_another_lanes_stage(tmp_path):
    st = Stages(tmp_path, force=False)
    st.run_lanes({lane: (lanes_of, (tmp_path,)) for lane in ("b", "a", "c")}, jobs=2)
    assert (tmp_path / "c1.txt").read_text().startswith("b1")
    with pytest.raises(ValueError, match="earlier lane"):                  # it could wait for ever
        st.run_lanes({lane: (lanes_of, (tmp_path,)) for lane in ("c", "b")}, jobs=2)


def test_a_stage_waiting_for_a_failed_one_stops(tmp_path):
    st = Stages(tmp_path, force=False)
    with pytest.raises((ValueError, RuntimeError)):
        st.run_lanes({lane: (lanes_of, (tmp_path, True)) for lane in ("b", "c")}, jobs=2)
    assert (tmp_path / ".stages" / "b1.failed").is_file() and not (tmp_path / "c1.txt").exists()
    with pytest.raises(RuntimeError, match="waits for b1, which failed"):
        st.run_all(lanes_of(tmp_path)["c"])


def test_lanes_run_in_their_own_processes_and_skip_when_done(tmp_path, capsys):
    st = Stages(tmp_path, force=False)
    st.run_lanes({"a": (lanes_of, (tmp_path,)), "b": (lanes_of, (tmp_path,))}, jobs=2)
    printed = capsys.readouterr().out
    pids = {n: (tmp_path / f"{n}.txt").read_text().split("pid=")[1] for n in ("a1", "a2", "b1")}
    assert pids["a1"] == pids["a2"] != pids["b1"] and str(os.getpid()) not in pids.values()
    assert (tmp_path / "a2.txt").read_text().startswith("after a1")
    for name in ("a1", "a2", "b1"):
        assert f"== {name}: done in" in printed                      # the parent reports each lane's stages
        assert json.loads((tmp_path / ".stages" / f"{name}.json").read_text())["seconds"] >= 0
    assert "wrote a1.txt" in (tmp_path / "logs" / "a.log").read_text()   # a lane's output goes to its log
    assert "wrote b1.txt" in (tmp_path / "logs" / "b.log").read_text()

    st.run_lanes({"a": (lanes_of, (tmp_path,)), "b": (lanes_of, (tmp_path,))}, jobs=2)
    again = capsys.readouterr().out
    assert "== a2: already done" in again and "lanes" not in again       # nothing relaunched


def test_a_failing_lane_stops_the_run_and_shows_its_log(tmp_path, capsys):
    st = Stages(tmp_path, force=False)
    with pytest.raises(ValueError, match="broken on purpose"):
        st.run_lanes({"a": (lanes_of, (tmp_path, True)), "b": (lanes_of, (tmp_path, True))}, jobs=2)
    err = capsys.readouterr().err
    assert "lane b failed" in err and "b.log" in err
    assert not (tmp_path / ".stages" / "b1.json").exists()                # a failed stage leaves no marker


def test_one_job_runs_the_lanes_here_in_order(tmp_path, capsys):
    Stages(tmp_path, force=False).run_lanes({"a": (lanes_of, (tmp_path,)), "b": (lanes_of, (tmp_path,))}, jobs=1)
    assert all(f"pid={os.getpid()}" in (tmp_path / f"{n}.txt").read_text() for n in ("a1", "a2", "b1"))
    assert "wrote a1.txt" in capsys.readouterr().out and not (tmp_path / "logs").exists()
