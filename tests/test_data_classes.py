"""Which classes are the blasts: layout defaults, a run's stored choice, a model's indices."""
import pytest

import numpy as np

from leukolearn.data.cellimages import CellImages, derive_fingerprint
from leukolearn.data.classes import (AML_BLASTS, BLAST, DEFAULT_POSITIVE, NEGATIVE, binary_positive,
                                     blast_class, default_positive, negative_label,
                                     positive_classes, positive_label, stored_positive)
from leukolearn.data.loaders import AML_CLASSES, LOADERS
from leukolearn.errors import LeukolearnError


def test_layout_defaults_name_classes_the_layout_has():
    assert set(DEFAULT_POSITIVE) <= set(LOADERS)
    assert DEFAULT_POSITIVE["aml-lmu"] == AML_BLASTS == ("MYO", "MOB")
    assert set(AML_BLASTS) <= set(AML_CLASSES)
    assert default_positive("aml-lmu") == ["MYO", "MOB"]
    assert default_positive("all-idb2") is None and default_positive("folder") is None
    default_positive("aml-lmu").append("LYT")  # a copy: the table stays as it is
    assert default_positive("aml-lmu") == ["MYO", "MOB"]


@pytest.mark.parametrize("options, expected", [
    ({}, ["MYO", "MOB"]),  # recorded before --positive was given: the layout's default
    ({"positive": None}, ["MYO", "MOB"]),
    ({"positive": "MYO, PMB"}, ["MYO", "PMB"]),  # the CLI records the option's text
    ({"positive": ["MOB"]}, ["MOB"]),
    ({"positive": " , "}, None),
    ({"positive": "MYO", "multiclass": True}, None),
])
def test_stored_positive_of_an_aml_run(options, expected):
    assert stored_positive("aml-lmu", options) == expected


def test_stored_positive_without_a_layout_default():
    assert stored_positive("folder", {}) is None
    assert stored_positive("folder", {"positive": "blast"}) == ["blast"]


def test_positive_classes_of_a_model():
    assert positive_classes(("other", "blast")) == [1]
    assert positive_classes(("blast", "other")) == [0]  # by name, not by position
    assert positive_classes(("healthy", "blast")) == [1]  # ALL-IDB2
    assert positive_classes(("other", "ig")) == [1]  # a binary task as binary() names it
    assert positive_classes(("other", "MYO+MOB")) == [1]
    assert positive_classes(("rest", "other")) == [1]  # --positive other
    assert positive_classes(("LYT", "MOB", "MYO"), ["MYO", "MOB"]) == [2, 1]
    with pytest.raises(LeukolearnError, match="which class is positive"):
        positive_classes(("LYT", "MOB", "MYO"))
    with pytest.raises(LeukolearnError, match="unknown class 'PMB'"):
        positive_classes(("other", "blast"), ["PMB"])


@pytest.mark.parametrize("names", [("lymphocyte", "neutrophil"), ("healthy", "sick"),
                                   ("ig", "other"), ("other", "other2", "ig")])
def test_classes_that_do_not_say_which_is_positive_are_refused_not_guessed(names):
    """Class 1 used to be taken: a lymphocyte / neutrophil model counted lymphocytes."""
    with pytest.raises(LeukolearnError) as err:
        positive_classes(names)
    message = str(err.value)
    assert "--positive CLASS" in message and names[0] in message and "\n" not in message
    assert positive_classes(names, [names[0]]) == [0]  # named, it is used
    # a model file that records its positive class needs no --positive; --positive wins
    assert positive_classes(names, stored=[names[0]]) == [0]
    assert positive_classes(names, [names[1]], stored=[names[0]]) == [1]
    with pytest.raises(LeukolearnError, match="from the model file"):
        positive_classes(names, stored=["blast"])


def test_binary_task_names():
    assert positive_label("folder", ["ig"]) == "ig"
    assert positive_label("folder", "ig") == "ig"
    assert positive_label("aml-lmu", ["MYO", "MOB"]) == BLAST  # the layout's default
    assert positive_label("aml-lmu", ["MOB", "MYO"]) == BLAST  # in any order
    assert positive_label("aml-lmu", ["MYO", "MOB", "PMB"]) == "MYO+MOB+PMB"
    assert positive_label("aml-lmu", ["MYO"]) == "MYO"
    assert positive_label("folder", ["MYO", "MOB"]) == "MYO+MOB"  # not that layout's default
    assert negative_label("ig") == NEGATIVE == "other" and negative_label("other") == "rest"
    assert binary_positive(("other", "ig")) == 1 and binary_positive(("rest", "other")) == 1
    assert binary_positive(("ig", "other")) is None and binary_positive(("a", "b")) is None
    assert binary_positive(("other", "a", "b")) is None


def test_binary_names_its_classes_but_keeps_the_old_fingerprint():
    """A run records its dataset's fingerprint and resumes only on the same one: binary()
    must hash the ("other", "blast") every binary task had, whatever it names them now."""
    cells = CellImages(np.zeros((6, 4, 4, 3), np.uint8), [0, 1, 2, 0, 1, 2], ("ig", "lym", "neu"),
                       tuple(f"i{k}" for k in range(6)))
    ig = cells.binary(["ig"])
    assert ig.class_names == ("other", "ig") and ig.labels.tolist() == [1, 0, 0, 1, 0, 0]
    two = cells.binary(["lym", "ig"])
    assert two.class_names == ("other", "lym+ig")
    assert cells.binary(["ig"], BLAST).class_names == ("other", "blast")
    # what the version before gave every binary task, written out
    old = derive_fingerprint(cells.fingerprint, "binary", ig.labels.tobytes(), "other", "blast")
    assert ig.fingerprint == old == cells.binary(["ig"], BLAST).fingerprint
    # the labels still count: another positive class is another dataset
    assert cells.binary(["lym"]).fingerprint != old
    named_other = CellImages(cells.images, cells.labels, ("other", "lym", "neu"), cells.image_ids)
    assert named_other.binary(["other"]).class_names == ("rest", "other")  # two names
    with pytest.raises(LeukolearnError, match="two names"):
        cells.binary(["ig"], "x", "x")


def test_blast_class_for_figure_rows():
    assert blast_class(("other", BLAST)) == 1
    assert blast_class(("Lymphoblast", "lymphocyte", "neutrophil")) == 0  # any case, substring
    assert blast_class(("LYT", "NGS", "MYO")) == 1  # no blast name: class 1
    assert blast_class(("myeloblast", "monoblast", "LYT")) == 1  # two: not one to pick
    assert blast_class(("only",)) == 0
