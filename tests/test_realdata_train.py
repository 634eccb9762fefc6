"""The paper's headline on real data: one ALL-IDB2 training with 200 (here 197) images.

Slow (about 5 minutes on a quiet 2-core CPU, 12 on a busy one) and skipped without
../shared/data.
"""
import json

import pytest

from leukolearn.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_all_idb2_fold_reaches_the_papers_auc(shared_data, tmp_path, capsys):
    out = tmp_path / "model"
    main(["train", "all-idb2", str(shared_data / "all-idb2-103px"), "--out", str(out),
          "--train-size", "200", "--val-size", "25", "--test-size", "25", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_train"] == 197  # 247 images after removing near-duplicates, minus 25 + 25
    assert metrics["roc_auc"] >= 0.90
    assert not metrics["degenerate"]
