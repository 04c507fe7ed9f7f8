"""ingest on a zip-bomb-like archive: a ~1 MB .tar.gz holding a 1 GiB member of zeros (and a mail per class).

The real stage (`python -m stages.ingest`) runs in a child process in a scratch project; its peak memory
(summed PSS of its process tree, and the kernel's peak RSS) and wall time are measured as in
bench/scale_bench.py. Side by side, on the same archive: reading that member whole, as ingest did before
it checked member headers (the baseline does less work: no rows, no outputs, just `extractfile().read()`).
Target: the stage's peak under 1 GB; the member is rejected (text_too_large) without being read.
Run: `python bench/zero_member_bench.py [--gib 1]`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml
from common import ROOT, params, save
from scale_bench import run_measured

TARGET_MB = 1024


def build(path: Path, size: int) -> None:
    with tarfile.open(path, "w:gz", compresslevel=9) as archive:
        for name, body in (
            ("ham/a.eml", b"Subject: a\n\nhello there, an ordinary message"),
            ("spam/b.eml", b"Subject: b\n\nwin money now, click here"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
        info = tarfile.TarInfo("spam/zeros.eml")
        info.size = size
        with open("/dev/zero", "rb") as zeros:  # addfile copies info.size bytes: streamed, never held
            archive.addfile(info, zeros)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    size = int(parser.parse_args().gib * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="reprolab-bomb-") as scratch:
        root = Path(scratch)
        build(root / "bomb.tar.gz", size)
        config = yaml.safe_load((ROOT / "params.yaml").read_text())
        config["ingest"] |= {
            "format": "mail_dir",
            "path": "bomb.tar.gz",
            "max_rows_per_label": None,
            "folder_labels": {"ham": "ham", "spam": "spam"},
        }
        config["model"]["name_or_path"] = str(ROOT / params.model.name_or_path)
        (root / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        stage = run_measured([sys.executable, "-m", "stages.ingest"], root)
        report = json.loads((root / "reports/ingest.json").read_text())
        whole = run_measured(
            [
                sys.executable,
                "-c",
                "import tarfile, sys\nwith tarfile.open('bomb.tar.gz') as a:\n"
                "    sys.stdout.write(str(len(a.extractfile('spam/zeros.eml').read())))",
            ],
            root,
        )
        save(
            "zero_member",
            {
                "archive_bytes": (root / "bomb.tar.gz").stat().st_size,
                "member_bytes": size,
                "stage": stage,
                "rejected_by_reason": report["rejected_by_reason"],
                "rows_kept": report["rows_kept"],
                "read_whole_member": whole,
                "memory_ratio_read_whole": round(whole["peak_tree_pss_mb"] / stage["peak_tree_pss_mb"], 1),
                "memory_met": stage["peak_tree_pss_mb"] <= TARGET_MB,
            },
        )


if __name__ == "__main__":
    main()
