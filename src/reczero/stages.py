"""Named, resumable stages, and lanes of them run side by side: the demo's scheduler.

What this chose, and why:

* **A stage** is a name, a function and its outputs. It runs once: a finished stage leaves a marker
  ``ROOT/.stages/<name>.json`` (its seconds and when), a rerun skips it, and a stage that did not
  finish (or ``force``) is redone from scratch (its outputs removed first) — the demo's resumability.
* **A lane** is a list of stages that depend on each other in order (the teacher, SFT-only, RecOne
  and its evaluation); a stage may also wait for a stage of an earlier lane (``after``: SFT-only's
  evaluation waits for SFT-only, in the lane that is free first), lanes are otherwise independent. With ``jobs`` > 1 the lanes run in
  that many **processes** (``spawn``: a fresh interpreter, no forked torch state), each writing
  its output to ``ROOT/logs/<lane>.log``, while this process prints each stage's line as its
  marker appears. Why processes: the tiny models train fastest on one torch thread (RESULTS.md),
  so on a 2-core laptop two lanes of one thread each use both cores — the quick demo's wall time
  is its longest lane, not the sum. A lane is described by a picklable ``(builder, args, lane)``:
  the child calls ``builder(*args)`` to rebuild the stage list and runs the named lane, so stage
  functions may be closures. With ``jobs`` = 1 the lanes run here, one after the other, printing
  to the terminal as before. Written by hand: a dozen lines over ``concurrent.futures``; workflow
  engines (Snakemake, Luigi) would be a heavy dependency for four lanes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import active_children, get_context
from pathlib import Path
from typing import Any


@dataclass
class Stage:
    name: str
    fn: Callable[[], Any]
    outputs: list[Path] = field(default_factory=list)
    after: tuple[str, ...] = ()      # stages of other lanes that must have finished first (their markers)


#: A lane's recipe: ``builder(*args)`` returns ``{lane name: [Stage, ...]}``; the lane is one key.
LaneBuilder = Callable[..., dict[str, list[Stage]]]


class Stages:
    """Runs named stages once: prints name and time, records a marker, skips finished ones."""

    def __init__(self, root: Path, force: bool) -> None:
        self.root, self.force = root, force
        self.marks = root / ".stages"
        self.marks.mkdir(parents=True, exist_ok=True)

    def done(self, name: str) -> dict[str, Any] | None:
        mark = self.marks / f"{name}.json"
        return json.loads(mark.read_text()) if mark.is_file() else None

    def run(self, name: str, fn: Callable[[], Any], outputs: Sequence[Path] = (), always: bool = False) -> None:
        finished = self.done(name)
        if finished and not (self.force or always):
            print(f"== {name}: already done ({finished['seconds']:.0f}s), skipped")
            return
        for out in outputs:  # a forced stage, or one that did not finish, is redone from scratch
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
        print(f"== {name} ...", flush=True)
        failed = self.marks / f"{name}.failed"     # tells stages of other lanes that wait for this one
        failed.unlink(missing_ok=True)
        t0 = time.time()
        try:
            rc = fn()
            if isinstance(rc, int) and rc != 0:
                raise RuntimeError(f"stage {name} failed with exit code {rc}")
        except BaseException:
            failed.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
            raise
        seconds = time.time() - t0
        (self.marks / f"{name}.json").write_text(json.dumps({"seconds": seconds,
                                                             "finished": time.strftime("%Y-%m-%d %H:%M:%S")}))
        print(f"== {name}: done in {seconds:.0f}s", flush=True)

    def run_all(self, stages: Sequence[Stage], poll: float = 2.0) -> None:
        for s in stages:
            while not all(self.done(n) for n in s.after):      # another lane's stage, still running
                if failed := [n for n in s.after if (self.marks / f"{n}.failed").is_file()]:
                    raise RuntimeError(f"stage {s.name} waits for {', '.join(failed)}, which failed")
                time.sleep(poll)
            self.run(s.name, s.fn, s.outputs)

    def run_lanes(self, lanes: dict[str, tuple[LaneBuilder, tuple[Any, ...]]], jobs: int) -> None:
        """Run each lane's stages in order, ``jobs`` lanes at a time (see the module docstring)."""
        built = {lane: builder(*args)[lane] for lane, (builder, args) in lanes.items()}
        order = [s.name for stages in built.values() for s in stages]
        for s in (s for stages in built.values() for s in stages):
            if bad := [n for n in s.after if n not in order or order.index(n) > order.index(s.name)]:
                raise ValueError(f"stage {s.name} waits for {bad}: they must come in an earlier lane")
        if jobs <= 1 or len(lanes) == 1:     # one lane: here, printing to the terminal
            for stages in built.values():
                self.run_all(stages)
            return
        todo = {}
        for lane, stages in built.items():
            if not self.force and all(self.done(s.name) for s in stages):
                for s in stages:
                    print(f"== {s.name}: already done ({self.done(s.name)['seconds']:.0f}s), skipped")
            else:
                todo[lane] = lanes[lane]
        if not todo:
            return
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        marks = {s.name: self.marks / f"{s.name}.json" for lane in todo for s in built[lane]}
        stamp = {n: m.stat().st_mtime_ns if m.is_file() else None for n, m in marks.items()}   # a new marker = done
        print(f"== {len(todo)} lanes, {min(jobs, len(todo))} at a time (each one torch thread; output in {logs}/): "
              + "; ".join(f"{lane}: {' -> '.join(s.name for s in built[lane])}" for lane in todo), flush=True)
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn")) as pool:
            futures: dict[Future, str] = {
                pool.submit(_run_lane, builder, args, lane, str(self.root), self.force, str(logs / f"{lane}.log")): lane
                for lane, (builder, args) in todo.items()}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_EXCEPTION)
                for name, mark in marks.items():
                    if mark.is_file() and mark.stat().st_mtime_ns != stamp[name]:
                        stamp[name] = mark.stat().st_mtime_ns
                        print(f"== {name}: done in {json.loads(mark.read_text())['seconds']:.0f}s", flush=True)
                for f in finished:
                    if f.exception() is not None:
                        pool.shutdown(wait=False, cancel_futures=True)
                        for child in active_children():       # the other lanes stop now (they resume on a rerun)
                            child.terminate()
                        log_file = logs / f"{futures[f]}.log"
                        tail = log_file.read_text(errors="replace").splitlines()[-15:] if log_file.is_file() else []
                        print("\n".join(["", f"lane {futures[f]} failed; the end of {log_file}:", *tail]),
                              file=sys.stderr)
                        raise f.exception()


def _run_lane(builder: LaneBuilder, args: tuple[Any, ...], lane: str, root: str, force: bool, log_path: str) -> None:
    """In a lane's process: output to the lane's log, then its stages in order."""
    with open(log_path, "a", buffering=1) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S", stream=sys.stderr, force=True)
        Stages(Path(root), force).run_all(builder(*args)[lane])
