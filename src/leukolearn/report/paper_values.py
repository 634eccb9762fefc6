"""The numbers Schouten et al. (2021) report, to draw next to ours.

Source of every value: Schouten, Matek, Jacobs, Buck, Bošnački, Marr, "Tens of images can
suffice to train neural networks for malignant leukocyte detection", Sci Rep 11, 7995 (2021),
as summarised in shared/paper/original-protocol.md ("Numbers reported in the article").
All values are mean ± s.d. over the 10 cross-validation folds.

- ALL-IDB2, binary (lymphoblast vs. other), 200 training images: ROC-AUC 0.97 ± 0.02
  (Results, "A CNN distinguishes lymphoblasts ...", and the Fig. 3b caption).
  Saturation: "the ROC-AUC saturates at 30 images" (Results, Fig. 4a).
- ALL-IDB2, multiclass (6 classes), 200 training images: F1-score weighted by class support
  0.81 ± 0.09 (Results, "Multiclass prediction", and the Fig. 7 caption).
- AML-Cytomorphology_LMU, binary (blast vs. benign), ROC-AUC 0.91 ± 0.04 with 50 training
  images and 0.93 ± 0.02 with 200 (Results, Fig. 6). Saturation "at around 50 training images"
  (Fig. 6 caption); "30–50 images" in the text.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

PAPER_CITATION = "Schouten et al. 2021"


@dataclass(frozen=True)
class PaperResult:
    """One task's reported performance: training size -> (mean, s.d.) over 10 folds."""

    dataset: str
    task: str
    metric: str
    values: Mapping[int, tuple[float, float]]
    saturation: str | None
    source: str = field(repr=False)


PAPER_RESULTS: Mapping[tuple[str, str], PaperResult] = MappingProxyType(
    {
        ("all-idb2", "binary"): PaperResult(
            dataset="all-idb2",
            task="binary",
            metric="ROC-AUC",
            values=MappingProxyType({200: (0.97, 0.02)}),
            saturation="ROC-AUC saturates at about 30 training images",
            source="Results and Fig. 3b caption (0.97 ± 0.02); Fig. 4a text (saturation at 30)",
        ),
        ("all-idb2", "multiclass"): PaperResult(
            dataset="all-idb2",
            task="multiclass",
            metric="weighted F1",
            values=MappingProxyType({200: (0.81, 0.09)}),
            saturation=None,
            source="Results 'Multiclass prediction' and Fig. 7 caption (F1 0.81 ± 0.09)",
        ),
        ("aml-lmu", "binary"): PaperResult(
            dataset="aml-lmu",
            task="binary",
            metric="ROC-AUC",
            values=MappingProxyType({50: (0.91, 0.04), 200: (0.93, 0.02)}),
            saturation="ROC-AUC saturates at about 30-50 training images",
            source="Results, Fig. 6 text (0.91 ± 0.04 at 50, 0.93 ± 0.02 at 200)",
        ),
    }
)


def _key(dataset_name: str, task: str) -> tuple[str, str]:
    return dataset_name.strip().lower().replace("_", "-"), task.strip().lower()


def paper_result(dataset_name: str, task: str) -> PaperResult | None:
    """The paper's full record for a dataset and task ('binary' / 'multiclass'), or None."""
    return PAPER_RESULTS.get(_key(dataset_name, task))


def paper_reference(dataset_name: str, task: str) -> dict[int, tuple[float, float]] | None:
    """Training size -> (mean, s.d.) the paper reports, for `auc_vs_size(paper=...)`.

    Known: "all-idb2" with task "binary" or "multiclass", "aml-lmu" with "binary".
    Anything else (another dataset, or a task the paper did not run) gives None.
    Returns a fresh dict the caller may change.
    """
    result = paper_result(dataset_name, task)
    return None if result is None else dict(result.values)
