"""Which classes are the blasts: layout defaults, a run's stored choice, a model's indices."""
import pytest

from leukolearn.data.classes import (AML_BLASTS, BLAST, DEFAULT_POSITIVE, blast_class,
                                     default_positive, positive_classes, stored_positive)
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
    assert positive_classes(("healthy", "sick")) == [1]  # binary: class 1
    assert positive_classes(("LYT", "MOB", "MYO"), ["MYO", "MOB"]) == [2, 1]
    with pytest.raises(LeukolearnError, match="which classes are blasts"):
        positive_classes(("LYT", "MOB", "MYO"))
    with pytest.raises(LeukolearnError, match="unknown class 'PMB'"):
        positive_classes(("other", "blast"), ["PMB"])


def test_blast_class_for_figure_rows():
    assert blast_class(("other", BLAST)) == 1
    assert blast_class(("Lymphoblast", "lymphocyte", "neutrophil")) == 0  # any case, substring
    assert blast_class(("LYT", "NGS", "MYO")) == 1  # no blast name: class 1
    assert blast_class(("myeloblast", "monoblast", "LYT")) == 1  # two: not one to pick
    assert blast_class(("only",)) == 0
