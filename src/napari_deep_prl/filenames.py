"""Ids as parts of file names, so that no id can write outside the folder it is written to.

Subject ids come from manifests and rater ids from what people type: they may hold ``/``,
``..``, spaces or accents. :func:`file_component` keeps an id that is already a plain name
(``sub-01``, ``ann``) as it is, and maps any other to its plain characters followed by ``x``
and a short hash of the id: the result is always one non-empty file-name component of
letters, digits and (unless restricted to a BIDS label) ``-`` and ``_``, and distinct ids get
distinct names. :func:`file_components` maps a set of ids at once and also keeps names apart
that would only differ by case (one file on macOS and Windows).
"""

from __future__ import annotations

import hashlib
import string
import unicodedata
from collections.abc import Iterable

from napari_deep_prl.errors import InputError

#: Characters a file-name component keeps as they are.
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
#: Characters of a BIDS label, the value of an entity such as ``desc-<label>``.
LABEL_CHARS = frozenset(string.ascii_letters + string.digits)
#: Longest component kept as it is; longer ids are shortened and hashed.
MAX_LENGTH = 64
_HASH_LENGTH = 8


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
