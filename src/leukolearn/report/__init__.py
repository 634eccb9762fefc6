"""Figures and the paper's reported numbers, for comparing a reproduction with the article."""
from leukolearn.report.figures import (auc_vs_size, confusion_matrix_percent, loss_curves, mean_roc)
from leukolearn.report.style import save_figure
from leukolearn.report.paper_values import PaperResult, paper_reference, paper_result

__all__ = [
    "PaperResult",
    "auc_vs_size",
    "confusion_matrix_percent",
    "loss_curves",
    "mean_roc",
    "paper_reference",
    "paper_result",
    "save_figure",
]
