"""An offline page for `dvc plots show` and `dvc plots diff`.

DVC's own page loads vega, vega-lite and vega-embed from a CDN: offline, every Vega plot stays empty.
`offline_template` is DVC's HTML template (its `{refresh_tag}` and `{plot_divs}` placeholders) with the
three scripts inlined from their npm packages (pinned in package.json), and no `{scripts}` placeholder,
so DVC's CDN tags have nowhere to go. `.dvc/config` names the written file (`plots.html_template`), so
a plain `dvc plots show` uses it; the page is self-contained, and can be copied or mailed as one file.
"""

from __future__ import annotations

from pathlib import Path

from reprolab import storage
from reprolab.errors import StageError

# The browser builds, in load order: vega-lite and vega-embed expect the globals before them.
SCRIPTS = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
DEFAULT_OUT = Path(".dvc/offline_plots.html")  # .dvc/config: plots.html_template = offline_plots.html

_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
{inline_scripts}
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_template(node_modules: Path) -> str:
    """DVC's plots page with the Vega scripts inlined from `node_modules`."""
    blocks = []
    for script in SCRIPTS:
        path = node_modules / script
        if not path.is_file():
            raise StageError(
                f"{path}: not found; `make setup` installs vega, vega-lite and vega-embed from package.json"
            )
        # Inside a script element, "</script" ends it wherever it appears; "<\/" is the same text to JS.
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        blocks.append(f"<script>/* {script} */\n{code}\n</script>")
    return _PAGE.replace("{inline_scripts}", "\n".join(blocks))


def write_offline_template(node_modules: Path, dest: Path = DEFAULT_OUT) -> Path:
    storage.write_text(offline_template(node_modules), dest)
    return dest
