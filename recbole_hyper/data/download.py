"""Downloading a dataset RecBole knows, when its atomic files are not there.

RecBole 1.2.1 downloads only with ``allow_download: True``, and then calls
``torch.distributed.barrier()`` even in a single process and asks for
confirmation on the terminal above 1 GB.  Here, before any data is loaded, a
missing dataset that RecBole lists in its ``url.yaml`` (or one with a
``download_url``) is fetched without questions:

* with a progress bar on stderr (``show_progress``);
* checked: the number of bytes against the server's ``Content-Length``, every
  member of the zip against its CRC-32, and, with ``download_sha256``, the
  whole file against that digest;
* into a temporary folder beside the target, renamed into place only when
  everything passed: the dataset's folder is complete or absent, never half
  written, and nothing is left behind on failure;
* with one clear message (:class:`DownloadError`) when the machine is offline
  or the file is wrong, saying where to put the files instead.

The zip has RecBole's layout: atomic files named after the archive
(``ml-1m.inter``, ``Amazon_Beauty.inter``, ...), at its top level or in one
folder; they are renamed after the dataset (``<dataset>.inter``), as RecBole
does.  ``allow_download: False`` turns downloading off.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

import yaml

from recbole_hyper.data.atomic_files import ATOMIC_SUFFIXES, DatasetNotFoundError

__all__ = ["DownloadError", "known_url", "download_dataset"]

_CHUNK = 1 << 20


class DownloadError(DatasetNotFoundError):
    """The dataset is missing and could not be downloaded; the message says what to do."""


def known_url(dataset: str) -> Optional[str]:
    """The address RecBole 1.2.1 lists for ``dataset`` (its ``url.yaml``), or None."""
    import recbole

    listed = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    if not listed.is_file():
        return None
    urls = yaml.safe_load(listed.read_text(encoding="utf-8")) or {}
    return urls.get(dataset.lower())


def download_dataset(
    dataset: str,
    data_path,
    url: str,
    sha256: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` (a zip of RecBole atomic files) into ``<data_path>/<dataset>/``; returns that folder."""
    root = Path(data_path)
    target = root / dataset
    if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64 and _is_hex(sha256)):
        raise DownloadError(f"download_sha256 = {sha256!r}: must be the 64 hexadecimal digits of a sha256.")
    where = f"put its atomic files in {target}/ (e.g. {target / (dataset + '.inter')})"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Dataset '{dataset}' is missing and cannot be downloaded into {root}: {exc}.") from None
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{dataset}.download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        digest = _fetch(dataset, url, archive, progress, timeout, where)
        if sha256 and digest != sha256.lower():
            raise DownloadError(
                f"The download of dataset '{dataset}' from {url} has sha256 {digest}, not the expected "
                f"{sha256} (download_sha256). Check the address, or {where}."
            )
        files = Path(tmp) / "files"
        _extract(dataset, url, archive, files, where)
        if target.exists():  # another process finished first
            return target
        files.replace(target)
    return target


def _fetch(dataset: str, url: str, archive: Path, progress: bool, timeout: float, where: str) -> str:
    """Stream ``url`` into ``archive``; returns its sha256 (hex)."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"Dataset '{dataset}' is not in its folder and could not be downloaded from {url} ({reason}). "
            f"Without network access, {where}; or point data_path at the folder that holds '{dataset}/'."
        ) from None
    from tqdm import tqdm

    hasher = hashlib.sha256()
    size = 0
    with response:
        total = int(response.headers.get("Content-Length") or 0)
        with open(archive, "wb") as out, tqdm(
            total=total or None, unit="B", unit_scale=True, desc=f"Downloading {dataset}",
            disable=not progress, file=sys.stderr,
        ) as bar:
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    hasher.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as exc:
                raise DownloadError(
                    f"The download of dataset '{dataset}' from {url} broke off after {size} bytes ({exc}); "
                    f"nothing was kept. Try again, or {where}."
                ) from None
    if total and size != total:
        raise DownloadError(
            f"The download of dataset '{dataset}' from {url} is incomplete: {size} of {total} bytes; "
            f"nothing was kept. Try again, or {where}."
        )
    return hasher.hexdigest()


def _extract(dataset: str, url: str, archive: Path, out: Path, where: str) -> None:
    """Unpack the zip's atomic files into ``out``, renamed after ``dataset``."""
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise DownloadError(
                    f"The download of dataset '{dataset}' from {url} is corrupt ({bad} fails its CRC check); "
                    f"nothing was kept. Try again, or {where}."
                )
            z.extractall(out / "unpacked")
    except zipfile.BadZipFile:
        raise DownloadError(
            f"The download of dataset '{dataset}' from {url} is not a zip archive; nothing was kept. "
            f"Check the address (download_url), or {where}."
        ) from None
    atomic = [p for p in (out / "unpacked").rglob("*") if p.is_file() and p.suffix in ATOMIC_SUFFIXES]
    inter = [p for p in atomic if p.suffix == ".inter"]
    if len(inter) != 1:
        raise DownloadError(
            f"The download of dataset '{dataset}' from {url} holds {len(inter)} .inter files, not one; "
            f"nothing was kept. Check the address (download_url), or {where}."
        )
    stem = inter[0].stem
    out.mkdir(exist_ok=True)
    for path in atomic:
        if path.parent == inter[0].parent and path.stem == stem:
            path.replace(out / f"{dataset}{path.suffix}")
    shutil.rmtree(out / "unpacked")


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True

