"""Load test of `reczero serve` on loopback: /v1/predict and /v1/recommend, with and without micro-batching.

For each endpoint and each mode, a fresh `reczero serve` process is started on 127.0.0.1 (batched:
``--max-batch-size B [--max-wait-ms W]``; unbatched: ``--no-batching``, one request per model call,
same queue and worker thread), waited for on ``/readyz``, warmed up with a few requests, then
loaded by ``--clients`` concurrent clients (asyncio + httpx, one connection each) sending a fixed
list of ``--requests`` requests between them. A phase stops by itself when the list is done or
``--max-seconds`` have passed (requests in flight then finish). Reported: requests answered 200,
errors (any other status or a transport error), p50/p99 latency as the client saw it, throughput
(answered / wall time of the phase), and the server's mean batch size from its /metrics.

Requests are the dataset's own (user, item) pairs of its test split (predict) and its users
(recommend), in a fixed order, the same in every mode.

    python bench/serve.py --run RUN [--ranking-run RUN] [--clients 32] [--requests 192]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`reczero serve` in a subprocess on a free loopback port; stopped with SIGINT."""

    def __init__(self, runs: list[str], flags: list[str], ready_seconds: float = 600) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "reczero.cli", "-q", "serve", *runs, "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server not ready in time")

    def batch_sizes(self, model: str) -> dict[str, float]:
        """The server's batch-size histogram of ``model``: cumulative bucket counts, sum and count."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics", timeout=10).text):
            for s in family.samples:
                if s.name.startswith("reczero_batch_size") and s.labels.get("model") == model:
                    key = f"le={s.labels['le']}" if "le" in s.labels else s.name.removeprefix("reczero_batch_size_")
                    out[key] = s.value
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def load(url: str, path: str, bodies: list[dict], clients: int, max_seconds: float) -> dict:
    """``clients`` workers send ``bodies`` (each once) until done or ``max_seconds`` pass."""
    results: list[tuple[float, int | str]] = []
    cursor = {"next": 0}
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, limits=limits) as client:
        async def worker() -> None:
            while cursor["next"] < len(bodies) and time.monotonic() < deadline:
                body = bodies[cursor["next"]]
                cursor["next"] += 1
                started = time.perf_counter()
                try:
                    code: int | str = (await client.post(path, json=body)).status_code
                except httpx.HTTPError as err:
                    code = type(err).__name__
                results.append((time.perf_counter() - started, code))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    ok = np.array([t for t, code in results if code == 200])
    return {"sent": len(results), "ok": int(len(ok)), "errors": len(results) - len(ok), "wall_s": wall,
            "p50_ms": float(np.percentile(ok, 50) * 1000) if len(ok) else None,
            "p99_ms": float(np.percentile(ok, 99) * 1000) if len(ok) else None,
            "throughput_rps": len(ok) / wall if wall else None,
            "not_ok": sorted({str(code) for _, code in results if code != 200})}


def phase(runs: list[str], flags: list[str], model: str, path: str, bodies: list[dict], args) -> dict:
    server = Server(runs, flags)
    try:
        warm = bodies[: min(4, len(bodies))]
        asyncio.run(load(server.url, path, warm, len(warm), args.max_seconds))
        before, sizes = os.getloadavg()[0], server.batch_sizes(model)
        result = asyncio.run(load(server.url, path, bodies, args.clients, args.max_seconds))
        after = server.batch_sizes(model)              # this phase only (the warm-up's batches taken out)
        delta = {k: after.get(k, 0) - sizes.get(k, 0) for k in after}
        result["batches"] = int(delta.get("count", 0))
        result["mean_batch"] = delta["sum"] / delta["count"] if delta.get("count") else None
        result["batch_histogram"] = {k: int(v) for k, v in delta.items() if k.startswith("le=")}
        result["load_before"], result["load_after"] = before, os.getloadavg()[0]
    finally:
        server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Rating run to serve for /v1/predict (its config.yaml names the data).")
    parser.add_argument("--ranking-run", default=None, help="Ranking run for /v1/recommend (e.g. reczero baseline --method popularity).")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients.")
    parser.add_argument("--requests", type=int, default=192, help="Requests per phase (predict).")
    parser.add_argument("--recommend-requests", type=int, default=2000, help="Requests per phase (recommend).")
    parser.add_argument("--max-seconds", type=float, default=300, help="A phase stops after this long.")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=None, help="The server's --max-wait-ms (default: its default).")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="The server's --max-new-tokens.")
    parser.add_argument("--threads", type=int, default=0, help="The server's --threads.")
    parser.add_argument("--modes", default="batched,unbatched", help="Which modes to run (comma-separated).")
    parser.add_argument("--rounds", type=int, default=1, help="Run the modes this many times, interleaved (the "
                        "load of a shared machine drifts; each round's ratio compares neighbours).")
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    data = Path(yaml.safe_load((Path(args.run) / "config.yaml").read_text())["data"])
    test = pd.read_parquet(data / "test.parquet", columns=["user_id", "item_id"])
    pairs = test.iloc[np.arange(args.requests) % len(test)]
    common = ["--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    wait = [] if args.max_wait_ms is None else ["--max-wait-ms", str(args.max_wait_ms)]
    modes = {"batched": ["--max-batch-size", str(args.max_batch_size), *wait],
             "unbatched": ["--no-batching"]}
    modes = {m: modes[m] for m in args.modes.split(",")}
    report: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args),
                    "cpus": os.cpu_count(), "results": {}}

    predict = [{"model": "served", "user_id": u, "item_id": i} for u, i in zip(pairs["user_id"], pairs["item_id"], strict=True)]
    users = test["user_id"].unique()
    recommend = [{"model": "served", "user_id": users[j % len(users)], "k": 10} for j in range(args.recommend_requests)]
    endpoints = [("predict", args.run, "/v1/predict", predict)]
    if args.ranking_run:
        endpoints.append(("recommend", args.ranking_run, "/v1/recommend", recommend))
    for endpoint, run, path, bodies in endpoints:
        for round_ in range(1, args.rounds + 1):
            for mode, flags in modes.items():
                result = phase([f"served={run}"], common + flags, "served", path, bodies, args)
                report["results"][f"{endpoint}/{mode}/{round_}"] = result
                print(f"{endpoint} {mode} round {round_}: {json.dumps(result)}", flush=True)

    print("\n| endpoint | mode | round | answered | errors | p50 ms | p99 ms | req/s | batches (mean size) | of 1-2 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in report["results"].items():
        endpoint, mode, round_ = key.split("/")
        mean_batch = f"{r['batches']} ({r['mean_batch']:.1f})" if r["mean_batch"] else "-"
        print(f"| {endpoint} | {mode} | {round_} | {r['ok']}/{r['sent']} | {r['errors']} | {r['p50_ms']:.0f} "
              f"| {r['p99_ms']:.0f} | {r['throughput_rps']:.2f} | {mean_batch} | {r['batch_histogram'].get('le=2.0', '-')} |")
    for endpoint, *_ in endpoints:
        for round_ in range(1, args.rounds + 1):
            b = report["results"].get(f"{endpoint}/batched/{round_}")
            u = report["results"].get(f"{endpoint}/unbatched/{round_}")
            if b and u and u["throughput_rps"]:
                print(f"{endpoint} round {round_}: {b['throughput_rps'] / u['throughput_rps']:.2f}x throughput "
                      "with micro-batching")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
