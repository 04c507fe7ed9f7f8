"""The offline plots page: DVC's template with the Vega scripts inlined, and nowhere for DVC's CDN tags."""

import pytest
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

from reprolab.errors import StageError
from reprolab.results import plots_page


@pytest.fixture
def node_modules(tmp_path):
    for number, script in enumerate(plots_page.SCRIPTS):
        (tmp_path / script).parent.mkdir(parents=True)
        (tmp_path / script).write_text(f'var loaded{number} = "</script>";')
    return tmp_path


def test_the_page_inlines_the_scripts_and_drops_dvcs_cdn_tags(node_modules):
    """DVC's own page loads vega from cdn.jsdelivr.net: offline, every Vega plot stayed empty."""
    template = plots_page.offline_template(node_modules)
    page = HTML(template).with_scripts(VegaRenderer.SCRIPTS).with_element("<div id='plot'></div>").embed()
    assert "cdn.jsdelivr.net" in VegaRenderer.SCRIPTS and "cdn." not in page and "src=" not in page
    positions = [page.index(f"/* {script} */") for script in plots_page.SCRIPTS]
    assert positions == sorted(positions)  # vega before vega-lite before vega-embed, which need it
    assert 'var loaded0 = "<\\/script>";' in page  # a "</script" in the code would end the element
    assert page.count("</script>") == 3 and "<div id='plot'></div>" in page
    assert HTML(template, refresh_seconds=5).embed().count('http-equiv="refresh"') == 1


def test_a_missing_package_says_how_to_get_it(node_modules):
    (node_modules / plots_page.SCRIPTS[1]).unlink()
    with pytest.raises(StageError, match=r"vega-lite/build/vega-lite.min.js: not found; `make setup` installs"):
        plots_page.offline_template(node_modules)
