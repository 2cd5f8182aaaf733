"""Ids as file-name components: hostile ids never leave the folder, distinct ids never share a file."""

from __future__ import annotations

import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.filenames import (
    LABEL_CHARS,
    MAX_LENGTH,
    check_id,
    file_component,
    file_components,
    id_problem,
    output_path,
)

HOSTILE = ["../x", "/abs", "a/b", "a\\b", "..", ".", ".hidden", "-rf", "dr. smith", "René",
           "名前", "a\x00b", "x" * 300, "sub-01/../../etc"]


@pytest.mark.parametrize("plain", ["sub-01", "ann", "rater_2", "A1"])
def test_plain_ids_are_kept(plain):
    assert file_component(plain) == plain


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("chars", [None, LABEL_CHARS])
def test_hostile_ids_become_one_component_inside_the_folder(tmp_path, value, chars):
    name = file_component(value, what="rater id", **({} if chars is None else {"chars": chars}))
    assert name and len(name) <= MAX_LENGTH and name.isascii()
    assert "/" not in name and "\\" not in name and not name.startswith((".", "-"))
    if chars is not None:
        assert set(name) <= LABEL_CHARS
    path = (tmp_path / f"{name}.nii.gz").resolve()
    assert path.parent == tmp_path.resolve()
    path.write_bytes(b"")  # a name the file system accepts


def test_accents_are_kept_readable():
    assert file_component("René").startswith("Renex")


def test_empty_id_is_refused():
    with pytest.raises(InputError, match="subject id '' is empty"):
        file_component("", what="subject id")


def test_distinct_ids_get_distinct_names_even_ignoring_case():
    ids = HOSTILE + ["Ann", "ann", "a.b", "a/b ", "ab"]
    names = file_components(ids, chars=LABEL_CHARS)
    assert set(names) == set(ids)
    assert len({n.casefold() for n in names.values()}) == len(ids)
    assert names["ab"] == "ab"  # a plain id that clashes with nothing stays as it is
    assert names["Ann"] != "Ann" and names["ann"] != "ann"  # one file on macOS: both hashed
    assert file_components(["ann"]) == {"ann": "ann"}


@pytest.mark.parametrize("value", ["sub-01", "P001", "ann", "j.doe", "rater_2", "NA", "x" * MAX_LENGTH])
def test_ids_of_the_alphabet_are_valid(value):
    assert id_problem(value) is None and check_id(value) == value


@pytest.mark.parametrize(("value", "problem"), [
    ("", "is empty"), ("../x", "starts with '.' and holds '/'"), ("/abs", "starts with '/'"),
    ("-rf", "starts with '-'"), ("=1+1", "starts with '=' and holds '+'"), ("@SUM(A1)", "starts with '@'"),
    ("a\tb", r"holds '\t'"), ("dr smith", "holds ' '"), ("René", "holds 'é'"),
    ("x" * (MAX_LENGTH + 1), "is longer than"),
])
def test_ids_outside_the_alphabet_are_refused_saying_why(value, problem):
    assert id_problem(value).startswith(problem)
    with pytest.raises(InputError, match="rater id .* Choose another"):
        check_id(value, what="rater id", remedy="Choose another.")


@pytest.mark.parametrize("name", ["../x.nii.gz", "/abs.nii.gz", "a/b.nii.gz", "..", "."])
def test_an_output_path_never_leaves_its_folder(tmp_path, name):
    with pytest.raises(InputError, match="outside the output folder"):
        output_path(tmp_path / "out", name)
    assert output_path(tmp_path / "out", "sub-01_map.nii.gz") == tmp_path / "out" / "sub-01_map.nii.gz"
