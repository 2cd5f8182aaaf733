"""Ids (subjects, raters, references) on the way in, and as parts of file names on the way out.

Subject ids come from manifests and rater ids from what people type. New ids must be plain
names (:func:`check_id`, the alphabet :data:`ID_RULE` that docs/data.md documents), so that an
id is never a path, a spreadsheet formula or a column separator. Ids older projects hold may
still be anything, so every file named from an id is named through :func:`file_component`:
it keeps an id that is already a plain file name (``sub-01``, ``ann``) as it is, and maps any
other to its plain characters followed by ``x`` and a short hash of the id: the result is
always one non-empty file-name component of letters, digits and (unless restricted to a BIDS
label) ``-`` and ``_``, and distinct ids get distinct names. :func:`file_components` maps a set
of ids at once and also keeps names apart that would only differ by case (one file on macOS
and Windows). :func:`output_path` is the last guard of every writer that names files from data:
the file it returns lies in the folder the user named.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from napari_deep_prl.base.errors import InputError, file_error

#: Characters a file-name component keeps as they are.
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
#: Characters of a BIDS label, the value of an entity such as ``desc-<label>``.
LABEL_CHARS = frozenset(string.ascii_letters + string.digits)
#: Longest component kept as it is; longer ids are shortened and hashed.
MAX_LENGTH = 64
_HASH_LENGTH = 8

#: A valid id: ASCII letters, digits, ``-``, ``_`` and ``.``, starting with a letter or a digit.
ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
#: The id alphabet in words, for error messages.
ID_RULE = (f"an id is 1 to {MAX_LENGTH} of the characters A-Z a-z 0-9 - _ . and starts with a "
           "letter or a digit")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id (:data:`ID_RULE`), or ``None`` when it is one.

    The rule keeps ids out of trouble everywhere they go: no path separators or ``..`` (file
    names), no leading ``=``, ``+``, ``-``, ``@`` (spreadsheet formulas), no tabs, newlines or
    commas (table columns), no blanks or lookalike characters (two raters that read the same).
    """
    if not isinstance(value, str) or not value:
        return "is empty"
    if ID_PATTERN.fullmatch(value):
        return None
    bad = sorted({c for c in value[1:] if not ID_PATTERN.fullmatch("a" + c)})
    problems = [f"starts with {value[0]!r}"] if not ID_PATTERN.fullmatch(value[0]) else []
    problems += [f"holds {', '.join(map(repr, bad))}"] if bad else []
    return " and ".join(problems) or f"is longer than {MAX_LENGTH} characters"


def check_id(value: object, *, what: str = "id", remedy: str = "Rename it.") -> str:
    """``value`` when it is a valid id, else an :class:`InputError` saying what is wrong."""
    problem = id_problem(value)
    if problem is not None:
        raise InputError(f"{what} {value!r} {problem}; {ID_RULE} (docs/data.md). {remedy}")
    return value  # type: ignore[return-value]


def output_path(folder: str | Path, name: str) -> Path:
    """``folder / name``, refused (:class:`InputError`) unless it lands in ``folder``.

    ``name`` comes from :func:`file_component`, so this holds by construction; the check makes
    sure of it where it matters (a writer naming files from data), also against a link planted
    under the name that leads elsewhere.
    """
    folder = Path(folder)
    path = folder / name
    resolved = path.resolve()
    if Path(name).name != name or name in ("", ".", "..") or resolved.parent != folder.resolve():
        raise file_error(path, f"would be written outside the output folder {folder} (to {resolved})",
                         "Remove the link, or rename the id it is named after.")
    return path


def file_component(value: str, *, what: str = "id", chars: frozenset[str] = NAME_CHARS) -> str:
    """``value`` as one safe file-name component (see the module doc); ``what`` names the
    kind of id in the error an empty id raises."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} {value!r} is empty, so it cannot name a file. Give it a name.")
    if set(value) <= chars and len(value) <= MAX_LENGTH and not value.startswith("-"):
        return value
    return _hashed(value, chars)


def _hashed(value: str, chars: frozenset[str]) -> str:
    """The plain characters of ``value`` (accents dropped), ``x`` and a hash of ``value``."""
    plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    kept = "".join(c for c in plain if c in chars).lstrip("-")[:MAX_LENGTH - _HASH_LENGTH - 1]
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kept}x{digest[:_HASH_LENGTH]}"


def file_components(values: Iterable[str], *, what: str = "id",
                    chars: frozenset[str] = NAME_CHARS) -> dict[str, str]:
    """:func:`file_component` of each id, with every name distinct even ignoring case.

    Ids whose names would differ only by case (``Ann``, ``ann``) are all hashed; an
    :class:`InputError` is raised in the (practically impossible) case that names still clash.
    """
    names = {value: file_component(value, what=what, chars=chars) for value in set(values)}
    for clash in _clashes(names):
        names.update({value: _hashed(value, chars) for value in clash})
    left = _clashes(names)
    if left:
        raise InputError(f"the {what}s {', '.join(map(repr, left[0]))} map to the same file name; "
                         "rename one of them.")
    return names


def _clashes(names: dict[str, str]) -> list[list[str]]:
    """Groups of ids whose names are equal ignoring case."""
    folded: dict[str, list[str]] = {}
    for value, name in sorted(names.items()):
        folded.setdefault(name.casefold(), []).append(value)
    return [group for group in folded.values() if len(group) > 1]
