"""``deep-prl ratings report``: one self-contained HTML reliability report of a project."""

from __future__ import annotations

import base64
import re
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import napari_deep_prl.cli as cli
from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.reliability_report import write_report


class _Page(HTMLParser):
    """The tables (rows of cell texts), images and external references of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def study(tmp_path, manifest):
    """Three raters (cid rated only sub-01), a reference, and ann's repeats of three lesions."""
    root = tmp_path / "study"
    rng = np.random.default_rng(1)
    with Project.init(root, manifest, {"consensus": {"method": "majority"}}) as project:
        lesions = project.lesions()
        truth = {(s, n): ("prl" if n == 1 else "not_prl")
                 for s, n in zip(lesions["subject"], lesions["lesion"], strict=True)}
        rows = [{"subject": s, "lesion": n, "rater": r,
                 "label": t if rng.random() < 0.8 else rng.choice(["prl", "not_prl", "unsure"])}
                for (s, n), t in truth.items() for r in ("ann", "ben", "cid")
                if r != "cid" or s == "sub-01"]
        project.import_ratings(pd.DataFrame(rows))
        project.import_ratings(pd.DataFrame([{"subject": s, "lesion": n, "label": t}
                                             for (s, n), t in truth.items()]),
                               reference="expert")
        for s, n in list(truth)[:3]:
            project.store.add_rating("ann", s, n, truth[(s, n)], repeat=True)
    return root


def test_cli_writes_one_self_contained_report(study, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert cli.main(["ratings", "report", str(study), "-o", str(out), "--n-boot", "50"]) == 0
    assert "reliability report written to" in capsys.readouterr().err
    text = out.read_text()
    page = _Page()
    page.feed(text)
    assert page.external == []  # opens offline: no script, stylesheet or image to fetch
    assert len(page.images) == 3  # coefficients per pair, sensitivity/specificity, counts
    for image in page.images:
        assert base64.b64decode(image.split(",", 1)[1]).startswith(b"\x89PNG")

    methods = unescape(re.search(r"<p class=methods>(.*?)</p>", text, re.S).group(1))
    for phrase in ("3 raters", "9 white-matter lesions in 3 of 3 patients",
                   "Gwet's AC1", "Krippendorff's alpha", "ICC(A,1)", "50 bootstrap",
                   "resamples of patients (seed 0)", "3 unannounced repeated",
                   "reference expert", f"napari-deep-prl {__version__}"):
        assert phrase in methods, phrase

    with Project.open(study, readonly=True) as project:
        rel = project.reliability(n_boot=50)
    pairs = next(t for t in page.tables if t[0][:2] == ["rater_a", "rater_b"])
    assert [row[:3] for row in pairs[1:]] == [
        [r.rater_a, r.rater_b, str(r.n)] for r in rel.pairs.itertuples()]
    kappa = pairs[0].index("Cohen's κ")
    first = rel.pairs.iloc[0]
    assert pairs[1][kappa] == (f"{first.cohen_kappa:.2f} [{first.cohen_kappa_ci_low:.2f}, "
                               f"{first.cohen_kappa_ci_high:.2f}]")
    accuracy = next(t for t in page.tables if t[0][:2] == ["rater", "truth"])
    assert {tuple(row[:2]) for row in accuracy[1:]} == {
        (r, t) for r in ("ann", "ben", "cid") for t in ("consensus", "expert")}
    intra = next(t for t in page.tables if t[0][0] == "rater" and t[0][1] == "n")
    assert [row[:2] for row in intra[1:]] == [["ann", "3"]]


def test_report_options_and_refusals(study, tmp_path, capsys, manifest):
    out = tmp_path / "report.html"
    assert cli.main(["ratings", "report", str(study), "-o", str(out), "--n-boot", "0"]) == 2
    assert "0 bootstrap resamples: give at least 1" in capsys.readouterr().err
    assert not out.exists()
    with Project.open(study, readonly=True) as project:
        write_report(project, out, unsure="exclude", n_boot=20, seed=3)
    text = out.read_text()
    assert "20 bootstrap resamples of patients (seed 3)" in text
    assert "called 'unsure' were left out" in unescape(text)

    with Project.init(tmp_path / "empty", manifest) as empty, \
            pytest.raises(InputError, match="no ratings yet"):
        write_report(empty, tmp_path / "empty.html")
    assert not (tmp_path / "empty.html").exists()
