"""The user documentation states what is true now, and its links resolve.

Pure Python: reads ``docs/*.md`` and ``README.md``; no Qt, no package import.

* No work-history narration ("the ninth session", "this session"): history goes to
  CHANGELOG.md, the pages describe current behaviour.
* Every relative markdown link (``[text](page.md#anchor)``, ``[text](#anchor)``, images)
  resolves to an existing file and, for a markdown page, an existing heading (GitHub's slugs).
* No table cell of docs/benchmarks.md is longer than 200 characters.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

_UNITS_AFTER_TENS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
                     "ninth"]
_ORDINAL_UNITS = [*_UNITS_AFTER_TENS, "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
                  "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth"]
ORDINALS = (
    _ORDINAL_UNITS
    + ["twentieth", "thirtieth"]
    + [f"twenty[- ]{u}" for u in _UNITS_AFTER_TENS]
)
ORDINAL = r"(?:" + "|".join(ORDINALS) + r"|\d+(?:st|nd|rd|th))"
# An ordinal followed, within two more words, by "session(s)": "the ninth session",
# "twentieth and twenty-first sessions", "13th session".
ORDINAL_SESSION = re.compile(
    rf"\b{ORDINAL}\b(?:[\s,()*_`'-]+[\w'-]+){{0,2}}?[\s,()*_`-]+sessions?\b", re.IGNORECASE
)
# Phrases that narrate the work rather than a rater's session in the app.
HISTORY_PHRASES = re.compile(
    r"\b(?:this|last|previous|same)\s+session\b|\bin\s+session\b", re.IGNORECASE
)

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def _without_code_spans(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


def history_phrases(text: str) -> list[tuple[int, str]]:
    """(line, phrase) of every work-history phrase in a page's prose."""
    lines = _prose_lines(text)
    # Search the prose as one string so a phrase broken over two lines is found too.
    joined, starts = "", []
    for number, line in lines:
        starts.append((len(joined), number))
        joined += line + "\n"
    found = []
    for pattern in (ORDINAL_SESSION, HISTORY_PHRASES):
        for match in pattern.finditer(joined):
            number = max(n for offset, n in starts if offset <= match.start())
            found.append((number, " ".join(match.group(0).split())))
    return sorted(found)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    kept = []
    for char in text.lower():
        category = unicodedata.category(char)
        if char in "-_" or category[0] in "LM" or category in ("Nd", "Nl"):
            kept.append(char)
        elif char == " ":
            kept.append("-")
    return "".join(kept)


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown page, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        out.add(slug)
    return out


def broken_links(path: Path) -> list[tuple[int, str, str]]:
    """(line, target, why) of every relative link of a page that does not resolve."""
    out = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(_without_code_spans(line)):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                out.append((number, target, "no such file"))
                continue
            if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                out.append((number, target, "no such heading"))
    return out


def table_cells(text: str) -> list[tuple[int, str]]:
    """(line, cell) of every cell of every markdown table row."""
    out = []
    for number, line in _prose_lines(text):
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue
        cells = re.split(r"(?<!\\)\|", stripped.strip("|"))
        out.extend((number, cell.strip()) for cell in cells)
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------


def test_pages_found():
    assert (ROOT / "README.md").exists()
    assert len(PAGES) > 5


@pytest.mark.parametrize(
    "text",
    [
        "as the ninth session found",
        "in the twentieth and twenty-first\nsessions",
        "fold 5 in the twenty-second session",
        "the 13th session",
        "Measured (this session): more",
        "rerun in the last session",
        "Ninth session, bfloat16",
    ],
)
def test_history_phrases_are_found(text):
    assert history_phrases(text)


@pytest.mark.parametrize(
    "text",
    [
        "the next session starts at your next unrated lesion",
        "for the rest of the session",
        "the first lesion of a rating session",
        "While a rater's blind session is open",
        "`seconds` counts from the paint; the session id is stored",
    ],
)
def test_rating_sessions_are_not_history(text):
    assert history_phrases(text) == []


def test_github_slugs():
    assert github_slug("Looking at the errors") == "looking-at-the-errors"
    assert github_slug("Presets (`default`, `paper`)") == "presets-default-paper"
    assert github_slug("Ids: 1–64 of A-Z") == "ids-164-of-a-z"
    assert github_slug("Test-time augmentation, 28³ patches") == "test-time-augmentation-28-patches"
    assert github_slug("[Scoring](scoring.md) and more") == "scoring-and-more"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Page A\n\n## Current results\n\nText.\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text(
        "# B\n\n[ok](a.md#current-results) [ok](#b) [gone](a.md#ninth-session)\n"
        "[no file](c.md) ![no image](images/x.png) [web](https://example.org/x.md#y)\n"
        "```\n[in code](c.md)\n```\n",
        encoding="utf-8",
    )
    assert [(target, why) for _, target, why in broken_links(page)] == [
        ("a.md#ninth-session", "no such heading"),
        ("c.md", "no such file"),
        ("images/x.png", "no such file"),
    ]


def test_long_table_cells_are_found():
    cells = table_cells("| a | b |\n| --- | --- |\n| short | " + "x" * 250 + " |\n")
    assert max(len(cell) for _, cell in cells) == 250


def test_no_work_history_in_the_docs():
    found = [
        f"{_rel(path)}:{line}: {phrase}"
        for path in PAGES
        for line, phrase in history_phrases(path.read_text(encoding="utf-8"))
    ]
    assert not found, "work history belongs in CHANGELOG.md:\n" + "\n".join(found)


def test_relative_links_resolve():
    found = [
        f"{_rel(path)}:{line}: {target} ({why})"
        for path in PAGES
        for line, target, why in broken_links(path)
    ]
    assert not found, "broken links:\n" + "\n".join(found)


def test_benchmark_table_cells_are_short():
    path = DOCS / "benchmarks.md"
    found = [
        f"{_rel(path)}:{line}: {len(cell)} characters: {cell[:60]}…"
        for line, cell in table_cells(path.read_text(encoding="utf-8"))
        if len(cell) > 200
    ]
    assert not found, "table cells over 200 characters:\n" + "\n".join(found)
