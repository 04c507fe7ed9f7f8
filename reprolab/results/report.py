"""One report model, rendered to Markdown and to a self-contained HTML page: titled sections of tables
(folded ones collapse) and figures (PNGs beside the Markdown, inlined in the HTML so it opens offline)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
    "img{max-width:32%;margin:4px}"
)


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    folded: bool = False  # collapsed under its title (<details>)
    empty: str = "(none)"  # shown instead of a table without rows


@dataclass(frozen=True)
class Report:
    title: str
    tables: list[Table]
    figures: list[Path]
    page_title: str  # the HTML page's <title>: what a browser tab shows

    def markdown(self) -> str:
        parts = [f"# {self.title}"]
        for table in self.tables:
            body = _markdown_table(table) if table.rows else table.empty
            if table.folded:
                parts.append(f"<details><summary>{table.title}</summary>\n\n{body}\n\n</details>")
            else:
                parts += [f"## {table.title}", body]
        parts += ["## Plots", "\n".join(f"![{f.stem}]({f.name})" for f in self.figures)]
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        blocks = []
        for table in self.tables:
            body = _html_table(table) if table.rows else f"<p>{html.escape(table.empty)}</p>"
            title = html.escape(table.title)
            blocks.append(
                f"<details><summary>{title}</summary>{body}</details>" if table.folded else f"<h2>{title}</h2>{body}"
            )
        images = "".join(
            f'<img alt="{html.escape(f.stem)}" src="data:image/png;base64,{_base64(f)}">' for f in self.figures
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.page_title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(blocks)}<h2>Plots</h2>{images}</body></html>\n"
        )


def _base64(file: Path) -> str:
    return base64.b64encode(file.read_bytes()).decode()


def _markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + " --- |" * len(table.header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table.rows])


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><tr>{head}</tr>{body}</table>"
