"""Compressed tables (`.csv.gz`, `.jsonl.zst`, ...) read as the plain file, streamed and bounded.

The compression is told by the file's first bytes (gzip or Zstandard), not its name, so a `data.csv`
that holds gzip data reads too. The decompressed stream is read forwards only, never held whole, and
passing `ingest.max_archive_bytes` decompressed bytes stops the file (a small file can expand to
terabytes); a damaged or truncated stream stops it too, naming the file.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

from reprolab.data.ingest_shared import IngestError

_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
SUFFIXES = (".gz", ".zst")  # after a table's own: data.csv.gz, data.jsonl.zst


def compression_of(path: Path) -> str | None:
    """ "gzip" or "zstd" when the file's first bytes say so, else None (read as it is)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def table_suffix(name: str) -> str:
    """A file name's table extension, past a compression one: `a.csv.gz` -> `.csv`."""
    path = Path(name)
    if path.suffix.lower() in SUFFIXES:
        path = path.with_suffix("")
    return path.suffix.lower()


class _Zstd:
    """Zstandard frames, decompressed forwards. The decompressor is fed small pieces, as one call's
    output has no bound (a 4-byte RLE block is 128 KiB out), and input that ends inside a frame is an
    error (zstandard's own stream reader returns what it has, and the rest of the file vanished)."""

    PIECE = 256  # input bytes a call: at most a few MiB out

    def __init__(self, path: Path):
        import zstandard

        self.zstandard = zstandard
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.started = False  # inside a frame: input has gone into `frame` since it began

    def read(self) -> bytes:
        """The next decompressed bytes, b"" at the end of the input."""
        while True:
            piece = self.file.read(self.PIECE)
            if not piece:
                if self.started:
                    raise EOFError("the input ends inside a frame")
                return b""
            out = self._feed(piece)
            if out:
                return out

    def _feed(self, piece: bytes) -> bytes:
        out = [self.frame.decompress(piece)]
        self.started = not self.frame.eof
        while self.frame.eof and self.frame.unused_data:  # the next frame begins in this piece
            rest = self.frame.unused_data
            self.frame = self.zstandard.ZstdDecompressor().decompressobj()
            out.append(self.frame.decompress(rest))
            self.started = not self.frame.eof
        if self.frame.eof:
            self.frame = self.zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self.file.close()


class _Bounded(io.RawIOBase):
    """A decompressing stream that stops past `limit` bytes out, its errors worded for the file."""

    def __init__(self, path: Path, compression: str, limit: int):
        self.path, self.compression, self.limit, self.read_bytes = path, compression, limit, 0
        self.gzip = gzip.open(path, "rb") if compression == "gzip" else None
        self.zstd = _Zstd(path) if compression == "zstd" else None
        self.pending, self.offset = b"", 0  # zstd's decompressed bytes not yet read
        # What a damaged or cut stream raises, by compression.
        self.damaged = (EOFError, zlib.error, gzip.BadGzipFile) + (
            (self.zstd.zstandard.ZstdError,) if self.zstd else ()
        )

    def readable(self) -> bool:
        return True

    def _next(self, size: int) -> bytes:
        if self.gzip is not None:
            return self.gzip.read(size)
        if self.offset == len(self.pending):
            self.pending, self.offset = self.zstd.read(), 0
        out = self.pending[self.offset : self.offset + size]
        self.offset += len(out)
        return out

    def readinto(self, buffer) -> int:
        try:
            out = self._next(len(buffer))
        except self.damaged as exc:
            raise IngestError(
                f"{self.path}: its {self.compression} stream is damaged or cut short after "
                f"{self.read_bytes} bytes ({exc}); compress it again"
            ) from None
        self.read_bytes += len(out)
        if self.read_bytes > self.limit:
            raise IngestError(
                f"{self.path}: decompresses to more than ingest.max_archive_bytes={self.limit} bytes; "
                "raise it if the file is trusted"
            )
        buffer[: len(out)] = out
        return len(out)

    def close(self) -> None:
        for stream in (self.gzip, self.zstd):
            if stream is not None:
                stream.close()
        super().close()


def open_bytes(path: Path, limit: int) -> BinaryIO:
    """The file's bytes, decompressed when its first bytes say gzip or Zstandard, at most `limit` of them."""
    compression = compression_of(path)
    if compression is None:
        return open(path, "rb")
    return io.BufferedReader(_Bounded(path, compression, limit), buffer_size=1 << 16)
