"""The HTML report, built on stores filled by a fake sweep (no training).

The page is checked as text here (sections, numbers, that every image is an embedded PNG
and nothing is fetched); tests/test_report_browser.py opens it in a real browser.
"""
import base64
import io
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from leukolearn import files
from leukolearn.data.cellimages import CellImages
from leukolearn.cli import main
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.presets import SweepConfig, get_preset
from leukolearn.experiments.protocol import ProtocolOptions, make_plan
from leukolearn.report import html as report_html
from leukolearn.report.html import render_report, write_report
from leukolearn.runstore.store import DatasetInfo, RunStore
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.sweep import run_sweep

N_BOOT = 40  # the learning curve's bootstrap; 1000 (the default) takes most of a minute here


class FakeRunner:
    """Probabilities that get better with the training size; a plausible loss history.
    Size 6 of fold 1 gives constant predictions (a degenerate job)."""

    def __call__(self, cells, job):
        rng = np.random.default_rng(job.seed)
        labels = cells.labels[list(job.test_idx)]
        logits = rng.normal(size=(len(labels), cells.n_classes))
        logits[np.arange(len(labels)), labels] += job.size / 8
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        degenerate = job.fold == 1 and job.size == 6
        if degenerate:
            probs[:] = 1 / cells.n_classes
        history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + 0.01 * e,
                    "seconds": 0.1} for e in range(1, 12)]
        metric = 1.0 - float(np.mean(rng.random(len(labels)) < 3 / job.size))
        return JobOutcome(metric=metric, best_epoch=3, epochs_run=11, seconds=1.5,
                          degenerate=degenerate, test_probs=probs, history=history)


def make_run(path, *, n_classes=2, name="all-idb2", sizes=(6, 12, 18, 200), folds=3,
             run_folds=None, n=60):
    """A finished fake sweep in `path`. Size 200 exceeds the training pool and is capped,
    as the paper's 200 is on deduplicated ALL-IDB2."""
    rng = np.random.default_rng(0)
    names = ("healthy", "blast") if n_classes == 2 else tuple(f"type{i}" for i in range(n_classes))
    cells = CellImages(rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8),
                       np.arange(n) % n_classes, names, tuple(f"img{i}" for i in range(n)))
    options = ProtocolOptions(folds=folds, sizes=sizes, run_folds=run_folds, cap_sizes=True)
    metric = "auc" if n_classes == 2 else "weighted_f1"
    config = SweepConfig("all", options, get_preset("quick").train, metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "training sizes [200] capped to the training pool"
        plan = make_plan("all", cells.labels, options)
    info = DatasetInfo.from_cells(cells, name=name, root="/data/fake",
                                  load_options={"size": 4, "dedupe": True})
    with RunStore.create_or_resume(path, config=config, dataset=info, cells=cells) as store:
        run_sweep(cells, plan, store, runner=FakeRunner(), progress=False)
    return path


def write_inside_png(path, seed=0):
    """A stand-in for a figure `leukolearn embed` would have written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(path)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.tags, self.links = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.links.append(attrs[key])


def parse(text):
    page = _Page()
    page.feed(text)
    return page


def decode_png(src):
    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    image.load()
    return image


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    write_inside_png(run / "figures" / "fig5_tsne_fold00.png")
    write_inside_png(run / "figures" / "fig3a_loss_curves.png", seed=1)  # stale: drawn afresh
    (run / "figures" / "broken.png").write_bytes(b"not a png")
    return run


@pytest.fixture(scope="module")
def binary_report(binary_run):
    return write_report(binary_run, n_boot=N_BOOT).read_text()


@pytest.mark.slow
def test_report_is_self_contained_and_every_image_is_an_embedded_png(binary_run, binary_report):
    assert (binary_run / "report.html").is_file()
    assert not list(binary_run.glob(".report*"))  # no temporary file left behind
    page = parse(binary_report)
    assert "script" not in page.tags and "link" not in page.tags
    assert all(link.startswith(("#", "data:image/png;base64,")) for link in page.links)
    assert not re.search(r"url\(|@import|https?://", binary_report.split("<body>")[0])
    for img in page.images:
        image = decode_png(img["src"])
        assert image.width > 50 and image.height > 50
        assert img["alt"] and int(img["width"]) > 0 and int(img["height"]) > 0
    # paper figures (3a, 3b, 4a), learning curve, reliability, the found tSNE figure
    assert len(page.images) == 6
    assert {"fig3a_loss_curves", "fig3b_mean_roc", "fig4a_metric_vs_size", "learning_curve_plan",
            "reliability", "found-figures-fig5-tsne-fold00-png"} <= page.ids


def test_report_has_a_contents_list_and_every_section(binary_report):
    page = parse(binary_report)
    toc = [link[1:] for link in page.links if link.startswith("#")]
    assert toc == ["summary", "figures", "learning-curve", "calibration", "inside",
                   "evaluations", "model-card", "run"]
    assert set(toc) <= page.ids
    assert 'name="viewport"' in binary_report and "max-width" in binary_report


def test_summary_table_sits_beside_the_papers_number(binary_run, binary_report):
    with RunStore.open(binary_run) as store:
        sizes = sorted({r.size for r in store.results()})
    assert sizes[:3] == [6, 12, 18] and sizes[-1] < 200  # 200 was capped to the pool
    table = binary_report.split('<table class="results">')[1].split("</table>")[0]
    rows = re.findall(r"<tr(?: class=\"paper-row\")?>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(rows) == len(sizes)
    first = re.findall(r"<td[^>]*>(.*?)</td>", rows[0])
    assert first[:3] == ["6", "3", "3"] and "1 degenerate" in first[-1]
    last = re.findall(r"<td[^>]*>(.*?)</td>", rows[-1])
    assert last[0] == str(sizes[-1]) and last[-2] == "0.97 ± 0.02 (n = 200)"
    assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", last[3])


def test_run_details_and_model_card(binary_run, binary_report):
    with RunStore.open(binary_run) as store:
        fingerprint = store.dataset_info.fingerprint
    assert fingerprint in binary_report
    assert "options.folds" in binary_report and "train.optimizer" in binary_report
    assert "numpy" in binary_report and "torch" in binary_report
    card = binary_report.split('id="model-card"')[1].split("</section>")[0]
    for heading in ("Intended use", "Training data", "Evaluation", "Limits"):
        assert f"<dt>{heading}</dt>" in card
    assert "not a diagnostic device" in card.lower().replace("<b>", "").replace("</b>", "")
    assert "background colour" in card and "60 images" in card


def test_found_figures_are_embedded_and_broken_ones_listed(binary_report):
    inside = binary_report.split('id="inside"')[1].split("</section>")[0]
    assert "tSNE" in inside and "figures/fig5_tsne_fold00.png" in inside
    assert "figures/broken.png (not a PNG)" in inside
    assert binary_report.count('id="fig3a_loss_curves"') == 1  # the stale copy is not shown


def test_multiclass_run_shows_the_confusion_matrix_and_no_calibration(tmp_path):
    run = make_run(tmp_path / "run", n_classes=3, sizes=(6, 12, 200), folds=4, run_folds=2)
    text = render_report(run, n_boot=N_BOOT)
    page = parse(text)
    assert "fig7b_confusion" in page.ids and "fig3b_mean_roc" not in page.ids
    assert "reliability" not in page.ids and "this run has 3 classes" in text
    assert "0.81 ± 0.09 (n = 200)" in text and "weighted F1" in text
    assert "needs 3 or more folds; this run has 2" in text  # learning curve skipped
    for img in page.images:
        decode_png(img["src"])


@pytest.mark.slow
def test_learning_curve_is_skipped_with_a_note_when_too_few_sizes(tmp_path):
    run = make_run(tmp_path / "run", name="my-lab", sizes=(6, 12))
    text = render_report(run, n_boot=N_BOOT)
    assert "needs results at 3 or more training sizes; this run has 2" in text
    assert "learning_curve_plan" not in parse(text).ids
    assert "reports no numbers for this data set" in text  # not the paper's data set
    assert "Known batch effect" not in text


def test_write_is_atomic_and_keeps_the_old_report_on_failure(binary_run, tmp_path, monkeypatch):
    out = tmp_path / "sub" / "r.html"
    out.parent.mkdir()
    out.write_text("old")

    def fail(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_html, "render_report", lambda *_a, **_k: "new")
    monkeypatch.setattr(files.os, "replace", fail)  # the rename of files.atomic_write
    with pytest.raises(OSError):
        write_report(binary_run, out)
    assert out.read_text() == "old" and sorted(p.name for p in out.parent.iterdir()) == ["r.html"]
    monkeypatch.undo()
    monkeypatch.setattr(report_html, "render_report", lambda *_a, **_k: "new")
    assert write_report(binary_run, out.parent) == out.parent / "report.html"  # a folder
    assert (out.parent / "report.html").read_text() == "new"
    deeper = tmp_path / "new" / "deeper" / "r.html"  # folders that do not exist yet
    assert write_report(binary_run, deeper) == deeper and deeper.read_text() == "new"


@pytest.mark.slow
def test_report_command_writes_the_file_and_names_it(binary_run, tmp_path, capsys):
    main(["report", str(binary_run), "--out", str(tmp_path / "r.html"), "--n-boot", "20"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_report_command_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nothing")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error:")


def test_a_run_without_finished_jobs_is_refused(tmp_path):
    cells = CellImages(np.zeros((8, 4, 4, 3), np.uint8), np.arange(8) % 2, ("a", "b"),
                       tuple(f"i{i}" for i in range(8)))
    config = SweepConfig("all", ProtocolOptions(folds=2, sizes=(2,)),
                         get_preset("quick").train, "auc")
    RunStore.create_or_resume(tmp_path / "run", config=config,
                              dataset=DatasetInfo.from_cells(cells), cells=cells).close()
    with pytest.raises(LeukolearnError, match="no finished jobs"):
        render_report(tmp_path / "run")
