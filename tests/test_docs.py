"The course site: every notebook becomes a page with its title and its plots; the API page comes from docstrings."
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def notebooks():
    return sorted((ROOT / "nbs").glob("*.ipynb"))


def test_every_notebook_has_a_page_with_its_title_and_images(site):
    for nb_path in notebooks():
        nb = json.loads(nb_path.read_text())
        title = next("".join(c["source"]).splitlines()[0][2:] for c in nb["cells"]
                     if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("# "))
        images = sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []))
        page = site / "nbs" / f"{nb_path.stem}.html"
        assert page.is_file(), page
        html = page.read_text()
        assert f"<h1>{title}" in html.replace("&quot;", '"').replace("&#39;", "'").replace("\u2019", "'"), (nb_path.name, title)
        srcs = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
        assert len(srcs) >= images, (nb_path.name, len(srcs), images)
        for s in srcs: assert (page.parent / s).resolve().is_file(), (nb_path.name, s)


def test_index_has_the_course_table_and_links(site):
    html = (site / "index.html").read_text()
    for nb_path in notebooks():
        assert f"nbs/{nb_path.stem}.html" in html, nb_path.stem


def test_api_page_documents_every_module(site):
    html = (site / "api.html").read_text()
    for mod in sorted(p.stem for p in (ROOT / "minillama").glob("*.py") if not p.name.startswith("_")):
        assert f'id="module-minillama.{mod}"' in html, mod
    assert 'id="minillama.model.Llama.forward"' in html and "ids (T,) or (B, T)" in html


def test_show_doc_renders(site):
    html = (site / "nbs" / "23_api.html").read_text()
    assert "load" in html and "Load a model file or directory" in html
