"""The docs hold together. Every relative link in README.md, docs/ and the Markdown pages they link to
(reports/measurements.md, ...) points at a file that exists and, with a `#anchor`, at a heading of it;
every `reprolab` verb and `--flag` they show in code is one that `reprolab --help` has. The synthetic
cases at the end show that each checker catches what it is for."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from reprolab.cli import build_parser
from tests.conftest import REPO

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
# Where one shell command ends and the next may start; a comment may show another command ("# or: ...").
COMMAND_BREAK = re.compile(r"\|\|?|&&|;|\$\(|\(|(?:^|\s)#")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Line:
    number: int
    text: str


@dataclass(frozen=True)
class Shown:
    """A `reprolab` command as a page shows it: where, the verb, and the options it passes."""

    where: str
    verb: str
    flags: tuple[str, ...]


def split_fences(text: str) -> tuple[list[Line], list[Line]]:
    """The lines outside fenced code blocks, and the lines inside them (fence lines in neither)."""
    prose: list[Line] = []
    code: list[Line] = []
    fence = ""
    for number, line in enumerate(text.splitlines(), 1):
        marker = FENCE.match(line)
        if marker and not fence:
            fence = marker.group(1)
        elif marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
            fence = ""
        else:
            (code if fence else prose).append(Line(number, line))
    return prose, code


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (a link's text for a link), lowercase, punctuation
    other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(text: str) -> set[str]:
    """Every anchor a page's headings give; a repeated heading gets -1, -2, ... as on GitHub."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in split_fences(text)[0]:
        match = HEADING.match(line.text)
        if not match:
            continue
        slug = github_slug(match.group(1))
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(text: str) -> list[Line]:
    """The targets of a page's links that are not URLs, outside code blocks and code spans."""
    links: list[Line] = []
    for line in split_fences(text)[0]:
        prose = CODE_SPAN.sub("", line.text)
        targets = [*INLINE_LINK.findall(prose), *LINK_DEFINITION.findall(prose)]
        links += [Line(line.number, target) for target in targets if not SCHEME.match(target)]
    return links


def link_target(page: Path, target: str) -> tuple[Path, str]:
    """The file a link on `page` points at (the page itself for a bare #anchor), and its anchor."""
    path, _, anchor = target.partition("#")
    return (page.parent / unquote(path)).resolve() if path else page, unquote(anchor)


def link_problems(page: Path) -> list[str]:
    """What is wrong with a page's relative links: a missing file, or an anchor no heading gives."""
    problems = []
    for link in relative_links(page.read_text()):
        where = f"{shown_name(page)}:{link.number}: link ({link.text})"
        file, anchor = link_target(page, link.text)
        if file.is_dir() and anchor:
            file = file / "README.md"
        if not file.exists():
            problems.append(f"{where}: no such file {shown_name(file)}")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
            problems.append(f"{where}: {shown_name(file)} has no heading with the anchor #{anchor}")
    return problems


def shown_name(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def linked_pages(page: Path) -> list[Path]:
    """The Markdown files a page links to."""
    files = (link_target(page, link.text)[0] for link in relative_links(page.read_text()))
    return [file for file in files if file.suffix == ".md" and file.is_file()]


def documented_pages() -> list[Path]:
    """README.md, every page under docs/, and every Markdown page those link to, transitively."""
    pending = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pages: list[Path] = []
    while pending:
        page = pending.pop(0).resolve()
        if page not in pages:
            pages.append(page)
            pending += linked_pages(page)
    return pages


def code_texts(text: str) -> list[Line]:
    """What a page shows as code: each line of a fenced block (a line ending in a backslash joined to
    the next) and each inline code span."""
    prose, code = split_fences(text)
    texts = [Line(line.number, span[1]) for line in prose for span in CODE_SPAN.findall(line.text)]
    pending: Line | None = None
    for line in code:
        joined = Line(pending.number, f"{pending.text} {line.text}") if pending else line
        pending = Line(joined.number, joined.text.rstrip()[:-1]) if joined.text.rstrip().endswith("\\") else None
        if not pending:
            texts.append(joined)
    return texts


def command_flags(words: list[str]) -> tuple[str, ...]:
    """The options among a command's words: `[--since REV]` gives --since, `--out=x` gives --out."""
    options = (word.strip("[]()<>{}.,'\"`").split("=")[0] for word in words)
    return tuple(word for word in options if re.match(r"^--?[A-Za-z]", word))


def shown_commands(text: str, name: str) -> list[Shown]:
    """Every `reprolab` command a page shows in code, at the start of a command (also after a prompt
    `$ `, a pipe, `&&`, `;`, or in a comment after `or:`)."""
    shown = []
    for code in code_texts(text):
        for segment in COMMAND_BREAK.split(code.text):
            words = segment.split()
            while words and (words[0] in ("$", ">") or words[0].endswith(":") or ENV_ASSIGNMENT.match(words[0])):
                words = words[1:]
            if len(words) >= 2 and words[0].rsplit("/", 1)[-1] == "reprolab":
                shown.append(Shown(f"{name}:{code.number}", words[1], command_flags(words[2:])))
    return shown


def verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name."""
    return parser._subparsers._group_actions[0].choices


def command_problems(shown: list[Shown], parser: argparse.ArgumentParser) -> list[str]:
    """A verb the parser does not have, or an option its verb (or, before any verb, the parser) lacks."""
    problems = []
    for command in shown:
        if command.verb.startswith("-"):
            usage, options, flags = "reprolab", parser._option_string_actions, (command.verb, *command.flags)
        elif command.verb in verbs(parser):
            usage, options = f"reprolab {command.verb}", verbs(parser)[command.verb]._option_string_actions
            flags = command.flags
        else:
            problems.append(
                f"{command.where}: `reprolab {command.verb}`: no such verb (one of {sorted(verbs(parser))})"
            )
            continue
        problems += [
            f"{command.where}: `{usage} {flag}`: no such option (`{usage} --help`)"
            for flag in flags
            if flag not in options
        ]
    return problems


PAGES = documented_pages()
PAGE_IDS = [shown_name(page) for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_point_at_files_and_headings_that_exist(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_reprolab_commands_shown_exist(page):
    problems = command_problems(shown_commands(page.read_text(), shown_name(page)), build_parser())
    assert not problems, "\n".join(problems)


def test_the_docs_are_found_and_show_commands():
    """The checks above see what they should: the docs tree, the reports page, and the commands shown."""
    names = set(PAGE_IDS)
    assert {"README.md", "docs/README.md", "docs/architecture.md", "reports/measurements.md"} <= names
    shown = [command for page in PAGES for command in shown_commands(page.read_text(), shown_name(page))]
    assert {"predict", "audit", "compare", "trace", "ui"} <= {command.verb for command in shown}
    assert any("--experiments" in command.flags for command in shown)


def test_every_docs_page_is_in_the_index():
    index = REPO / "docs/README.md"
    listed = set(linked_pages(index))
    unlisted = [shown_name(page) for page in (REPO / "docs").rglob("*.md") if page != index and page not in listed]
    assert not unlisted, f"not linked from docs/README.md: {unlisted}"


def test_main_parses_with_build_parser():
    args = build_parser().parse_args(["predict", "in.csv", "--out", "p.csv", "--format", "onnx-int8"])
    assert (args.verb, args.input, args.out, args.format) == ("predict", "in.csv", Path("p.csv"), "onnx-int8")


# The checkers on synthetic pages: each problem is caught, and what is fine passes.


def write_pages(tmp_path: Path, pages: dict[str, str]) -> None:
    for name, text in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def test_a_link_to_a_missing_file_is_caught(tmp_path):
    write_pages(tmp_path, {"a.md": "# A\n\nSee [b](b.md) and [gone](docs/gone.md).\n", "b.md": "# B\n"})
    assert link_problems(tmp_path / "a.md") == [
        f"{tmp_path / 'a.md'}:3: link (docs/gone.md): no such file {(tmp_path / 'docs/gone.md').resolve()}"
    ]


def test_a_link_to_a_missing_heading_is_caught(tmp_path):
    write_pages(
        tmp_path,
        {
            "a.md": "# A\n\n## Two words\n\n[ok](b.md#the-ui) [here](#two-words) [bad](b.md#the-api) [bad](#one)\n",
            "b.md": "# B\n\n## The UI\n",
        },
    )
    problems = link_problems(tmp_path / "a.md")
    assert len(problems) == 2
    assert "link (b.md#the-api)" in problems[0] and "no heading with the anchor #the-api" in problems[0]
    assert "link (#one)" in problems[1] and "no heading with the anchor #one" in problems[1]


def test_links_in_code_and_urls_are_not_checked(tmp_path):
    text = "# A\n\n```md\n[x](missing.md)\n```\n\n`[y](missing.md)` [web](https://example.com/x.md#y)\n"
    write_pages(tmp_path, {"a.md": text})
    assert link_problems(tmp_path / "a.md") == []


def test_anchors_are_github_slugs():
    text = (
        "# A grid with `dvc exp run --queue`\n## Export: torch, ONNX and int8\n## Notes\n## Notes\n"
        "```\n# not a heading\n```\n## The [UI](x.md) ##\n"
    )
    assert heading_anchors(text) == {
        "a-grid-with-dvc-exp-run---queue",
        "export-torch-onnx-and-int8",
        "notes",
        "notes-1",
        "the-ui",
    }


def test_an_unknown_verb_is_caught():
    shown = shown_commands("Run `reprolab predcit new.csv --out p.csv`.\n", "page.md")
    assert shown == [Shown("page.md:1", "predcit", ("--out",))]
    problems = command_problems(shown, build_parser())
    assert len(problems) == 1 and "`reprolab predcit`: no such verb" in problems[0]


def test_an_unknown_flag_is_caught():
    text = (
        "```bash\n"
        "cat t.txt | reprolab predict - --out p.csv \\\n"
        "  --colour red   # or: reprolab ui [--hots 0.0.0.0]\n"
        "$ reprolab audit --all [--since REV]\n"
        "```\n"
        "`reprolab --version`\n"
    )
    shown = shown_commands(text, "page.md")
    assert shown == [
        Shown("page.md:6", "--version", ()),
        Shown("page.md:2", "predict", ("--out", "--colour")),
        Shown("page.md:2", "ui", ("--hots",)),
        Shown("page.md:4", "audit", ("--all", "--since")),
    ]
    assert command_problems(shown, build_parser()) == [
        "page.md:6: `reprolab --version`: no such option (`reprolab --help`)",
        "page.md:2: `reprolab predict --colour`: no such option (`reprolab predict --help`)",
        "page.md:2: `reprolab ui --hots`: no such option (`reprolab ui --help`)",
    ]


def test_prose_and_paths_are_not_commands():
    text = "`reprolab/cli.py`, `reprolab.serving`, the `reprolab` command\n```text\nthe reprolab library\n```\n"
    assert shown_commands(text, "page.md") == []
