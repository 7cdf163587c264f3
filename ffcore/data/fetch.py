"""Download MNIST or Fashion-MNIST with checksum verification (for users with internet).

Each file is downloaded to a temporary name, its MD5 (the published checksum) and, where known,
its SHA-256 are checked, and only then is it renamed into place: a failed or tampered download
never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    base_url: str
    files: tuple[RemoteFile, ...]


SOURCES: dict[str, Source] = {
    "mnist": Source(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                       "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                       "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
    ),
    "fashion-mnist": Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    # The binary version (no pickle); checksum as published on the CIFAR page.
    "cifar10": Source(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),),
    ),
}


class FetchError(RuntimeError):
    """A download failed or its checksum did not match."""


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _is_valid(path: Path, remote: RemoteFile) -> bool:
    try:
        verify(path, remote)
    except FetchError:
        return False
    return True


def verify(path: Path, remote: RemoteFile) -> None:
    md5, sha = _digests(path)
    if md5 != remote.md5 or (remote.sha256 and sha != remote.sha256):
        raise FetchError(f"checksum mismatch for {remote.name}: md5 {md5}, expected {remote.md5}")


def fetch(
    dataset: str,
    dest: str | Path,
    *,
    base_url: str | None = None,
    source: Source | None = None,
    timeout: float = 60.0,
    on_progress: Callable[[str, int, int | None], None] | None = None,
) -> list[Path]:
    """Download ``dataset`` into ``dest``; files already present with the right checksum are kept.

    ``base_url`` overrides the mirror; ``source`` overrides the whole manifest (tests).
    ``on_progress(name, bytes_so_far, total_or_None)`` is called as data arrives.
    """
    if source is None:
        if dataset not in SOURCES:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
        source = SOURCES[dataset]
    url = base_url or source.base_url
    url = url if url.endswith("/") else url + "/"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for remote in source.files:
        target = dest / remote.name
        if target.is_file() and _is_valid(target, remote):
            paths.append(target)
            continue  # a stale or damaged copy is downloaded again
        part = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url + remote.name, timeout=timeout) as response, part.open("wb") as f:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                done = 0
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    f.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(remote.name, done, total)
            verify(part, remote)
        except (urllib.error.URLError, OSError) as e:
            part.unlink(missing_ok=True)
            raise FetchError(f"could not download {url + remote.name}: {e}") from e
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        part.replace(target)
        paths.append(target)
    return paths
