"""`reczero data download`: fetch public dumps (MovieLens, Amazon 2018/2023 categories) to disk.

What it chose, and why:

- **A fixed registry**, not a URL guesser: every name maps to the files its host publishes and to
  the `data prepare --source` that reads them. Category lists are the ones the Amazon 2018 and
  Amazon Reviews'23 pages list; nothing else is offered. Yelp is known but never downloaded: its
  terms forbid redistribution, so we say where to get it and exit non-zero.
- **Resumable, verified, atomic.** Bytes go to ``FILE.part``; a rerun (or a retry after a dropped
  connection) asks for ``Range: bytes=N-``. A ``200`` answer means the server ignored the range, so
  the part is restarted from byte 0; ``416`` with the part's size as total means it was complete.
  The body is read raw (``Accept-Encoding: identity``) so that a server that labels ``.gz`` files
  as gzip-encoded cannot make us save decompressed bytes. Where a checksum is published (GroupLens
  puts ``NAME.zip.md5`` next to each zip) the finished part is checked before it is renamed into
  place; a mismatch deletes it. The final name therefore only ever holds a complete file, so an
  existing one is skipped unless ``--force``.
- **Retries with exponential backoff** on connection errors and 429/5xx answers; the count resets
  whenever an attempt made progress, so a flaky but working link finishes. A lock on
  ``FILE.lock`` stops two processes from appending to the same part.
- MovieLens zips are unpacked into ``OUT/<name>/`` (the zip's single top folder is stripped, paths
  escaping the folder are refused) through a temporary folder renamed at the end.
"""

from __future__ import annotations

import argparse
import difflib
import fcntl
import hashlib
import logging
import os
import re
import shlex
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reczero.errors import DataError, ReczeroError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RETRY_STATUS = {408, 429, 500, 502, 503, 504}

GROUPLENS = "https://files.grouplens.org"
UCSD = "https://datarepo.eng.ucsd.edu"


@dataclass(frozen=True)
class RemoteFile:
    host: str               # official scheme://host, replaced by --base-url
    path: str               # path on the host, kept under a mirror
    md5: bool = False       # a checksum is published at URL + ".md5"
    unzip: bool = False     # a zip to unpack into OUT/<folder>/

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[1]


@dataclass(frozen=True)
class Dataset:
    name: str               # what the user types: "ml-1m", "amazon2023:Video_Games"
    source: str             # the `data prepare --source` that reads it
    size: str               # a hint for --list
    files: tuple[RemoteFile, ...]
    note: str = ""

    @property
    def folder(self) -> str:
        return self.name.replace(":", "-")


# #ratings per category, from the Amazon Reviews'23 table (amazon-reviews-2023.github.io).
AMAZON2023 = {
    "All_Beauty": "701.5K", "Amazon_Fashion": "2.5M", "Appliances": "2.1M", "Arts_Crafts_and_Sewing": "9.0M",
    "Automotive": "20.0M", "Baby_Products": "6.0M", "Beauty_and_Personal_Care": "23.9M", "Books": "29.5M",
    "CDs_and_Vinyl": "4.8M", "Cell_Phones_and_Accessories": "20.8M", "Clothing_Shoes_and_Jewelry": "66.0M",
    "Digital_Music": "130.4K", "Electronics": "43.9M", "Gift_Cards": "152.4K", "Grocery_and_Gourmet_Food": "14.3M",
    "Handmade_Products": "664.2K", "Health_and_Household": "25.6M", "Health_and_Personal_Care": "494.1K",
    "Home_and_Kitchen": "67.4M", "Industrial_and_Scientific": "5.2M", "Kindle_Store": "25.6M",
    "Magazine_Subscriptions": "71.5K", "Movies_and_TV": "17.3M", "Musical_Instruments": "3.0M",
    "Office_Products": "12.8M", "Patio_Lawn_and_Garden": "16.5M", "Pet_Supplies": "16.8M", "Software": "4.9M",
    "Sports_and_Outdoors": "19.6M", "Subscription_Boxes": "16.2K", "Tools_and_Home_Improvement": "27.0M",
    "Toys_and_Games": "16.3M", "Video_Games": "4.6M", "Unknown": "63.8M",
}
# The per-category "small" 5-core files of the Amazon 2018 page (nijianmo.github.io/amazon).
AMAZON2018 = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen", "Industrial_and_Scientific",
    "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments",
    "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
    "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games",
)
AMAZON2018_SIZES = {"Books": "27.2M reviews", "Cell_Phones_and_Accessories": "1.4M reviews"}
MOVIELENS = {
    "ml-latest-small": "100,836 ratings, ~1 MB",
    "ml-100k": "100,000 ratings, ~5 MB",
    "ml-1m": "1,000,209 ratings, ~6 MB",
    "ml-25m": "25,000,095 ratings, ~250 MB",
    "ml-latest": "largest, updated over time (>25M ratings, >250 MB)",
}
YELP_URL = "https://business.yelp.com/data/resources/open-dataset/"
YELP_HELP = f"""\
reczero data download: the Yelp Open Dataset cannot be downloaded for you: its terms of use forbid
redistribution, so each user fetches it from Yelp after accepting them.
  1. Open {YELP_URL}, accept the terms and download the JSON archive.
  2. Unpack it, e.g.:  mkdir -p {{out}}/yelp && tar -xf yelp_dataset.tar -C {{out}}/yelp
  3. Prepare it:
     reczero data prepare --source yelp --input {{out}}/yelp/yelp_academic_dataset_review.json \\
       --meta {{out}}/yelp/yelp_academic_dataset_business.json --out prepared/yelp"""


def _registry() -> dict[str, Dataset]:
    sets = [Dataset(name, "movielens", size,
                    (RemoteFile(GROUPLENS, f"/datasets/movielens/{name}.zip", md5=True, unzip=True),))
            for name, size in MOVIELENS.items()]
    sets += [Dataset(f"amazon2023:{cat}", "amazon2023", f"{n} ratings", (
        RemoteFile(UCSD, f"/mcauley_group/data/amazon_2023/raw/review_categories/{cat}.jsonl.gz"),
        RemoteFile(UCSD, f"/mcauley_group/data/amazon_2023/raw/meta_categories/meta_{cat}.jsonl.gz")))
        for cat, n in AMAZON2023.items()]
    sets += [Dataset(f"amazon2018:{cat}", "amazon2018", AMAZON2018_SIZES.get(cat, "5-core subset"), (
        RemoteFile(UCSD, f"/mcauley_group/data/amazon_v2/categoryFilesSmall/{cat}_5.json.gz"),
        RemoteFile(UCSD, f"/mcauley_group/data/amazon_v2/metaFiles2/meta_{cat}.json.gz")))
        for cat in AMAZON2018]
    sets.append(Dataset("yelp", "yelp", "manual download", (), note=f"by hand: {YELP_URL}"))
    return {ds.name: ds for ds in sets}


DATASETS: dict[str, Dataset] = _registry()


class ManualDownloadRequired(ReczeroError):
    """The dataset exists but its terms forbid automatic download (Yelp)."""


class RemoteMissing(DataError):
    """The server answered 404 for a file."""


class _Retryable(Exception):
    """An attempt failed in a way worth retrying (server busy, body cut short)."""


def lookup(name: str) -> Dataset:
    """The registry entry for ``name`` (case-insensitive), or an error naming the nearest names."""
    by_lower = {key.lower(): ds for key, ds in DATASETS.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    hint = ("nearest known: " + ", ".join(by_lower[c].name for c in close)) if close else \
        "known families: ml-*, amazon2023:<Category>, amazon2018:<Category>, yelp"
    raise DataError(f"unknown dataset {name!r}; {hint} (see `reczero data download --list`)")


def url_of(remote: RemoteFile, base_url: str | None) -> str:
    return (base_url.rstrip("/") if base_url else remote.host) + remote.path


def fetch(client, url: str, dest: Path, *, md5: str | None = None, retries: int = 5,
          backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` with resume, retries and an md5 check.

    ``client`` is an ``httpx.Client``. Raises ``RemoteMissing`` on 404 and ``DataError`` on other
    HTTP errors, on a checksum mismatch (the part is deleted) or when retries run out (the part is
    kept, so a rerun resumes)."""
    import httpx
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    with _locked(dest):
        while True:
            have = before = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    status = resp.status_code
                    if status == 416 and have:
                        total = _content_range(resp.headers.get("content-range"))[1]
                        if total == have:
                            break  # the part already held every byte
                        log.warning("%s: server refused resume at byte %d (size %s); restarting", url, have, total)
                        part.unlink()
                        raise _Retryable(f"HTTP 416 for a part of {have} bytes")
                    if status == 404:
                        raise RemoteMissing(f"{url}: HTTP 404 not found (is the name or --base-url right?)")
                    if status in RETRY_STATUS:
                        raise _Retryable(f"HTTP {status}")
                    if status == 206:
                        start, total = _content_range(resp.headers.get("content-range"))
                        if start != have:
                            part.unlink()
                            raise _Retryable(f"server resumed at byte {start}, not {have}; restarting")
                        mode = "ab"
                    elif status == 200:
                        if have:
                            log.info("%s: server ignored the range request; restarting from byte 0", url)
                        have, mode = 0, "wb"
                        length = resp.headers.get("content-length")
                        total = int(length) if length and length.isdigit() else None
                    else:
                        raise DataError(f"{url}: HTTP {status} {resp.reason_phrase}; expected the file (200/206)")
                    with open(part, mode) as fh, tqdm(total=total, initial=have, desc=dest.name, unit="B",
                                                      unit_scale=True, unit_divisor=1024, disable=None) as bar:
                        for chunk in resp.iter_raw():  # as it arrives: a cut keeps every byte read
                            fh.write(chunk)
                            bar.update(len(chunk))
                size = part.stat().st_size
                if total is not None and size != total:
                    raise _Retryable(f"body ended at byte {size} of {total}")
                break
            except (httpx.TransportError, _Retryable) as err:
                grew = part.exists() and part.stat().st_size > before
                failures = 0 if grew else failures + 1
                if failures > retries:
                    raise DataError(f"{url}: download failed after {retries + 1} attempts ({err}); "
                                    f"{part} is kept: rerun the same command to resume") from err
                wait = 0.0 if grew else backoff * 2 ** (failures - 1)
                log.warning("%s: %s; retrying in %.1fs from byte %d", url, str(err) or type(err).__name__, wait,
                            part.stat().st_size if part.exists() else 0)
                time.sleep(wait)
        if md5 is not None:
            got = _md5(part)
            if got != md5:
                part.unlink()
                raise DataError(f"{url}: md5 mismatch: published {md5}, downloaded file has {got}; "
                                f"the file was removed, rerun to download it again")
            log.info("%s: md5 %s matches the published checksum", dest.name, got)
        os.replace(part, dest)
    log.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def download(name: str, out_dir: str | Path, base_url: str | None = None, force: bool = False, *,
             retries: int = 5, backoff: float = 1.0) -> list[Path]:
    """Download dataset ``name`` into ``out_dir/<folder>``; returns the paths `data prepare` reads:
    the unpacked folder for MovieLens, the reviews and meta files for Amazon.

    Complete files are skipped unless ``force``. Raises ``ManualDownloadRequired`` for Yelp."""
    import httpx

    ds = lookup(name)
    if not ds.files:
        raise ManualDownloadRequired(YELP_HELP.format(out=Path(out_dir)))
    out = Path(out_dir)
    folder = out / ds.folder
    timeout = httpx.Timeout(60.0, connect=20.0)
    results: list[Path] = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for remote in ds.files:
            url = url_of(remote, base_url)
            dest = (out if remote.unzip else folder) / remote.filename
            if remote.unzip and folder.exists() and dest.exists() and not force:
                log.info("%s: already downloaded and unpacked in %s (use --force to download again)", ds.name, folder)
                results.append(folder)
                continue
            if dest.exists() and not force:
                log.info("%s: already complete (use --force to download again)", dest)
            else:
                if force:
                    for stale in (dest, dest.with_name(dest.name + ".part")):
                        stale.unlink(missing_ok=True)
                md5 = _published_md5(client, url, dest, remote, retries, backoff) if remote.md5 else None
                fetch(client, url, dest, md5=md5, retries=retries, backoff=backoff)
            if remote.unzip:
                unpack(dest, folder)
                results.append(folder)
            else:
                results.append(dest)
    return results


def _published_md5(client, url: str, dest: Path, remote: RemoteFile, retries: int, backoff: float) -> str | None:
    md5_path = dest.with_name(dest.name + ".md5")
    md5_path.unlink(missing_ok=True)
    try:
        fetch(client, url + ".md5", md5_path, retries=retries, backoff=backoff)
    except RemoteMissing:
        log.warning("%s: no checksum published at %s.md5; the download will NOT be verified", remote.filename, url)
        return None
    text = md5_path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not found:
        raise DataError(f"{md5_path}: expected an md5 checksum (32 hex digits), got {text[:80]!r}")
    return found.group(0).lower()


def unpack(zip_path: Path, folder: Path) -> Path:
    """Unzip ``zip_path`` into ``folder`` (replacing it), stripping the archive's single top folder."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            tops = {n.split("/", 1)[0] for n in zf.namelist()}
            strip = len(tops) == 1 and all("/" in n for n in names)
            tmp = folder.with_name(f".{folder.name}.unpacking")
            shutil.rmtree(tmp, ignore_errors=True)
            for member in names:
                rel = member.split("/", 1)[1] if strip else member
                target = (tmp / rel).resolve()
                if ".." in PurePosixPath(member).parts or member.startswith("/") \
                        or not target.is_relative_to(tmp.resolve()):
                    raise DataError(f"{zip_path}: member {member!r} would land outside {folder}; refusing to unpack")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except zipfile.BadZipFile as err:
        raise DataError(f"{zip_path}: not a valid zip archive ({err}); delete it and download again") from err
    shutil.rmtree(folder, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)
    log.info("unpacked %s into %s (%d files)", zip_path.name, folder, len(names))
    return folder


def prepare_command(ds: Dataset, paths: list[Path]) -> str:
    """The `reczero data prepare` command that reads what ``download`` returned."""
    parts = ["reczero", "data", "prepare", "--source", ds.source, "--input", str(paths[0])]
    if len(paths) > 1:
        parts += ["--meta", str(paths[1])]
    parts += ["--out", str(Path("prepared") / ds.folder)]
    return shlex.join(parts)


def format_list(base_url: str | None = None) -> str:
    """The `--list` table: name, prepare source, size hint and the (first) URL of every dataset."""
    rows = [(ds.name, ds.source, ds.size, url_of(ds.files[0], base_url) if ds.files else ds.note)
            for ds in DATASETS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{'NAME':<{widths[0]}}  {'FORMAT':<{widths[1]}}  {'SIZE':<{widths[2]}}  URL"]
    lines += [f"{n:<{widths[0]}}  {s:<{widths[1]}}  {z:<{widths[2]}}  {u}" for n, s, z, u in rows]
    lines.append("Amazon entries also fetch the matching meta_<Category> file; MovieLens checks the published .md5.")
    return "\n".join(lines)


def download_cli(args: argparse.Namespace) -> int:
    """`reczero data download`: --list, or download NAME into --out and print the next command."""
    if args.list:
        print(format_list(args.base_url))
        return 0
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here
    if not args.name:
        raise ReczeroError("give a dataset NAME (see `reczero data download --list`)")
    ds = lookup(args.name)
    if not args.out and ds.files:
        raise ReczeroError("--out DIR is required (files land in DIR/" + ds.folder + "/)")
    try:
        paths = download(args.name, args.out or "OUT", base_url=args.base_url, force=args.force)
    except ManualDownloadRequired as msg:
        print(msg, file=sys.stderr)
        return 2
    print(f"{ds.name}: ready in {paths[0] if ds.files[0].unzip else paths[0].parent}")
    print("next, prepare it:\n  " + prepare_command(ds, paths))
    return 0


@dataclass
class _locked:
    """An exclusive ``flock`` on ``DEST.lock`` for the duration of a download (freed if we die)."""

    dest: Path

    def __enter__(self) -> None:
        self.path = self.dest.with_name(self.dest.name + ".lock")
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self.fh.close()
            raise DataError(f"{self.dest}: another download is writing this file right now") from err

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200); total ``*`` -> None."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
