"""`reczero data download` against a real HTTP server on 127.0.0.1 (never the internet).

The server serves fixture bytes by path, honours ``Range`` (or not, per test), can cut the body in
half on the first request for a path, and logs every request so tests can see what was asked.
"""

import hashlib
import io
import random
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reczero import cli
from reczero.data import download as dl
from reczero.errors import DataError

ML_PATH = "/datasets/movielens/ml-latest-small.zip"
AZ_REVIEWS = "/mcauley_group/data/amazon_2023/raw/review_categories/Video_Games.jsonl.gz"
AZ_META = "/mcauley_group/data/amazon_2023/raw/meta_categories/meta_Video_Games.jsonl.gz"


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.ranges = True            # honour Range requests
        self.breaks: dict[str, int] = {}   # path -> how many more bodies to cut in half
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv: FixtureServer = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self._reply(404, b"not found")
            return
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and srv.ranges else 0
        if start >= len(body) and rng and srv.ranges:
            self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            return
        payload = body[start:]
        headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if rng and srv.ranges else {}
        if srv.breaks.get(self.path, 0) > 0:
            srv.breaks[self.path] -= 1
            self._reply(206 if headers else 200, payload[: len(payload) // 2], headers, length=len(payload))
            self.close_connection = True
            return
        self._reply(206 if headers else 200, payload, headers)

    def _reply(self, status, payload, headers=None, length=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


@pytest.fixture
def server():
    srv = FixtureServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def movielens_zip(seed=0) -> tuple[bytes, dict[str, bytes]]:
    """A fake ml-latest-small.zip (stored, ~300 KB so cutting it mid-file means something)."""
    rnd = random.Random(seed)
    members = {
        "ratings.csv": b"userId,movieId,rating,timestamp\n"
                       + b"".join(b"%d,%d,4.0,%d\n" % (rnd.randrange(600), rnd.randrange(9000), rnd.randrange(10**9))
                                  for _ in range(12000)),
        "movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ml-latest-small/", b"")
        for name, data in members.items():
            zf.writestr(f"ml-latest-small/{name}", data)
    return buf.getvalue(), members


def serve_movielens(srv, md5=None) -> tuple[bytes, dict[str, bytes]]:
    blob, members = movielens_zip()
    srv.files[ML_PATH] = blob
    digest = md5 or hashlib.md5(blob).hexdigest()
    srv.files[ML_PATH + ".md5"] = f"MD5 (ml-latest-small.zip) = {digest}\n".encode()
    return blob, members


def get(name, out, srv, **kw):
    return dl.download(name, out, base_url=srv.url, backoff=0.0, **kw)


def test_movielens_verified_unpacked_then_skipped(server, tmp_path):
    blob, members = serve_movielens(server)
    paths = get("ml-latest-small", tmp_path, server)
    assert paths == [tmp_path / "ml-latest-small"]
    for name, data in members.items():
        assert (tmp_path / "ml-latest-small" / name).read_bytes() == data
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.lock"))
    asked = len(server.requests)
    assert get("ml-latest-small", tmp_path, server) == paths
    assert len(server.requests) == asked, "a complete download must not be fetched again"
    get("ml-latest-small", tmp_path, server, force=True)
    assert [p for p, _ in server.requests[asked:]] == [ML_PATH + ".md5", ML_PATH]


def test_broken_connection_resumes_with_range(server, tmp_path):
    blob, _ = serve_movielens(server)
    server.breaks[ML_PATH] = 1
    get("ml-latest-small", tmp_path, server)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob
    zip_requests = [rng for path, rng in server.requests if path == ML_PATH]
    assert zip_requests[0] is None
    resumed_at = int(zip_requests[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at < len(blob)


def test_partial_file_from_earlier_run_is_resumed(server, tmp_path):
    blob, _ = serve_movielens(server)
    (tmp_path / "ml-latest-small.zip.part").write_bytes(blob[:1000])
    get("ml-latest-small", tmp_path, server)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob
    assert (ML_PATH, "bytes=1000-") in server.requests


def test_complete_part_answered_416_is_kept(server, tmp_path):
    blob, _ = serve_movielens(server)
    (tmp_path / "ml-latest-small.zip.part").write_bytes(blob)
    get("ml-latest-small", tmp_path, server)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob
    assert [p for p, _ in server.requests].count(ML_PATH) == 1


def test_server_without_range_support_restarts(server, tmp_path):
    blob, _ = serve_movielens(server)
    server.ranges = False
    server.breaks[ML_PATH] = 1
    (tmp_path / "ml-latest-small.zip.part").write_bytes(b"garbage that must not survive")
    get("ml-latest-small", tmp_path, server)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob


def test_md5_mismatch_leaves_no_complete_file(server, tmp_path):
    serve_movielens(server, md5="0" * 32)
    with pytest.raises(DataError, match="md5 mismatch"):
        get("ml-latest-small", tmp_path, server)
    assert not (tmp_path / "ml-latest-small.zip").exists()
    assert not (tmp_path / "ml-latest-small.zip.part").exists()
    assert not (tmp_path / "ml-latest-small").exists()


def test_missing_checksum_warns_and_downloads(server, tmp_path, caplog):
    blob, _ = serve_movielens(server)
    del server.files[ML_PATH + ".md5"]
    get("ml-latest-small", tmp_path, server)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob
    assert "NOT be verified" in caplog.text


def test_zip_escaping_its_folder_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    (tmp_path / "bad.zip").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="outside"):
        dl.unpack(tmp_path / "bad.zip", tmp_path / "bad")
    assert not (tmp_path / "evil.txt").exists()


def test_amazon_cli_downloads_both_files_and_prints_prepare(server, tmp_path, capsys):
    server.files[AZ_REVIEWS] = b"\x1f\x8b reviews bytes" * 1000
    server.files[AZ_META] = b"\x1f\x8b meta bytes" * 500
    rc = cli.main(["data", "download", "amazon2023:Video_Games", "--out", str(tmp_path), "--base-url", server.url])
    assert rc == 0
    folder = tmp_path / "amazon2023-Video_Games"
    assert (folder / "Video_Games.jsonl.gz").read_bytes() == server.files[AZ_REVIEWS]
    assert (folder / "meta_Video_Games.jsonl.gz").read_bytes() == server.files[AZ_META]
    out = capsys.readouterr().out
    assert (f"reczero data prepare --source amazon2023 --input {folder / 'Video_Games.jsonl.gz'} "
            f"--meta {folder / 'meta_Video_Games.jsonl.gz'}") in out


def test_not_found_is_a_clear_error(server, tmp_path, capsys):
    rc = cli.main(["data", "download", "amazon2018:Digital_Music", "--out", str(tmp_path), "--base-url", server.url])
    err = capsys.readouterr().err
    assert rc == 2 and "404" in err and "Digital_Music_5.json.gz" in err and "Traceback" not in err


def test_attempts_that_make_progress_do_not_count_as_failures(server, tmp_path):
    blob, _ = serve_movielens(server)
    server.breaks[ML_PATH] = 6
    get("ml-latest-small", tmp_path, server, retries=1)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == blob


def test_retries_run_out_and_keep_the_part(server, tmp_path):
    blob, _ = serve_movielens(server)
    server.ranges = False  # every attempt restarts and breaks at the same byte: no progress
    server.breaks[ML_PATH] = 100
    with pytest.raises(DataError, match="after 3 attempts.*rerun the same command to resume"):
        get("ml-latest-small", tmp_path, server, retries=2)
    assert (tmp_path / "ml-latest-small.zip.part").stat().st_size == len(blob) // 2
    assert not (tmp_path / "ml-latest-small.zip").exists()


def test_unreachable_host_is_a_clear_error(tmp_path):
    srv = FixtureServer()  # take a free port, then close it: connections are refused
    port = srv.server_address[1]
    srv.server_close()
    with pytest.raises(DataError, match="after 2 attempts"):
        dl.download("amazon2023:Video_Games", tmp_path, base_url=f"http://127.0.0.1:{port}", retries=1, backoff=0.0)


def test_list_shows_names_formats_and_urls(capsys):
    assert cli.main(["data", "download", "--list"]) == 0
    out = capsys.readouterr().out
    for needle in ("ml-latest-small", "ml-25m", "amazon2023:CDs_and_Vinyl", "amazon2018:Books",
                   "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                   "amazon_v2/categoryFilesSmall/Digital_Music_5.json.gz", "yelp", "amazon2023"):
        assert needle in out


def test_yelp_explains_manual_download(capsys, tmp_path):
    rc = cli.main(["data", "download", "yelp", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "https://business.yelp.com/data/resources/open-dataset/" in err
    assert "reczero data prepare --source yelp" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, nearest", [("ml-10m", "ml-1m"), ("amazon2023:Video_Game", "amazon2023:Video_Games")])
def test_unknown_name_names_the_nearest(name, nearest, capsys, tmp_path):
    assert cli.main(["data", "download", name, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"unknown dataset {name!r}" in err and nearest in err


def test_names_are_case_insensitive():
    assert dl.lookup("AMAZON2023:video_games").name == "amazon2023:Video_Games"


def test_second_writer_to_the_same_file_is_refused(server, tmp_path):
    blob, _ = serve_movielens(server)
    dest = tmp_path / "ml-latest-small.zip"
    with dl._locked(dest), pytest.raises(DataError, match="another download"):
        get("ml-latest-small", tmp_path, server)
    get("ml-latest-small", tmp_path, server)
    assert dest.read_bytes() == blob
