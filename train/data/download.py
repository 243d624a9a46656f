"""Public dataset archives: find them under a data root or download, verify and unpack them into the cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from distilshot.core.files import file_digest
from distilshot.errors import DatasetMissingError
from distilshot.train.data.progress import progress_bar
from distilshot.train.data.root import DATA_ENV, OFFLINE_ENV, cache_dir, data_roots, download_root, offline


@dataclass(frozen=True)
class Archive:
    """A public archive that unpacks to the folder `target` (a path relative to a data root, whose last
    component is the archive's top-level folder)."""

    url: str
    md5: str
    target: str
    members: tuple[str, ...] = ()  # files inside `target` that a complete copy has

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def complete_in(self, root: Path) -> bool:
        folder = root / self.target
        return folder.is_dir() and all((folder / m).is_file() for m in self.members)


_OMNIGLOT = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"

ARCHIVES: dict[str, Archive] = {
    "omniglot-background": Archive(
        f"{_OMNIGLOT}/images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", "omniglot/images_background"
    ),
    "omniglot-evaluation": Archive(
        f"{_OMNIGLOT}/images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", "omniglot/images_evaluation"
    ),
    "cifar-100": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train", "test", "meta"),
    ),
}


def locate(archive: Archive) -> Path:
    """The folder `archive.target` from the first data root that has it complete; otherwise downloads the
    archive into the cache (unless offline) and unpacks it there."""
    for root in data_roots():
        if archive.complete_in(root):
            return root / archive.target
    if offline():
        raise _missing(archive, f"downloads are off ({OFFLINE_ENV} is set)")
    try:
        path = fetch(archive)
    except (OSError, DatasetMissingError) as error:  # urllib's URLError is an OSError
        raise _missing(archive, f"downloading it failed: {error}") from None
    unpack(path, download_root() / archive.target)
    if not archive.complete_in(download_root()):
        raise _missing(archive, f"{path.name} did not unpack to a complete {archive.target}")
    return download_root() / archive.target


def fetch(archive: Archive) -> Path:
    """`<cache>/downloads/<filename>` with a verified md5, downloading it if needed. The download goes to
    a temporary file that is renamed only once its checksum matches."""
    folder = cache_dir() / "downloads"
    path = folder / archive.filename
    if path.is_file() and file_digest(path, "md5") == archive.md5:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{archive.filename}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(archive.url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            with progress_bar(
                f"Downloading {archive.filename}", int(length) if length else None, in_bytes=True
            ) as advance:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
        if digest.hexdigest() != archive.md5:
            raise DatasetMissingError(
                f"its md5 is {digest.hexdigest()}, not {archive.md5}, so the download was deleted"
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def unpack(archive_file: Path, dest: Path) -> None:
    """Unpacks a zip or tar archive and moves its top-level folder `dest.name` to `dest`. Members with
    absolute paths or '..' (and, in tars, links and devices) are refused before anything is written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unpack-"))
    try:
        if zipfile.is_zipfile(archive_file):
            with zipfile.ZipFile(archive_file) as z:
                for name in z.namelist():
                    _check_member(archive_file, name)
                z.extractall(staging)
        else:
            with tarfile.open(archive_file) as t:
                for member in t.getmembers():
                    _check_member(archive_file, member.name)
                    if not (member.isfile() or member.isdir()):
                        raise DatasetMissingError(
                            f"{archive_file} holds {member.name!r}, which is not a plain file"
                        )
                t.extractall(staging, filter="data")
        if not (staging / dest.name).is_dir():
            raise DatasetMissingError(f"{archive_file} has no top-level folder {dest.name!r}")
        try:
            os.replace(staging / dest.name, dest)
        except OSError:
            if not dest.is_dir():  # otherwise a concurrent process unpacked it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member(archive_file: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise DatasetMissingError(f"{archive_file} holds the unsafe path {name!r}; refusing to unpack it")


def _missing(archive: Archive, reason: str) -> DatasetMissingError:
    looked = " or ".join(str(root / archive.target) for root in data_roots())
    parent = (download_root() / archive.target).parent
    return DatasetMissingError(
        f"{looked} not found and {reason}. Fetch {archive.url} (md5 {archive.md5}) and unpack it into "
        f"{parent} so that {download_root() / archive.target} exists, or set {DATA_ENV} to a folder that "
        f"holds {archive.target}."
    )
