"""The one progress bar: on stderr (stdout stays for --json and tables), off without a trace."""
from leukolearn.progress import progress_bar, track


def test_track_yields_every_item_and_draws_on_stderr(capsys):
    assert list(track(iter("abc"), "counting", total=3, transient=False)) == ["a", "b", "c"]
    out = capsys.readouterr()
    assert out.out == ""
    assert "counting" in out.err and "3/3" in out.err  # done / total


def test_a_transient_bar_leaves_nothing(capsys):
    assert list(track([1, 2], "counting")) == [1, 2]
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == ""  # (rich ends a live display with a newline)


def test_disabled_track_hands_back_the_items_themselves(capsys):
    items = [1, 2, 3]
    assert track(items, "counting", enabled=False) is items
    assert capsys.readouterr() == ("", "")


def test_a_disabled_bar_accepts_every_call_and_draws_nothing(capsys):
    with progress_bar(enabled=False, transient=False, extra=("{task.fields[note]}",)) as bar:
        task = bar.add_task("sweep", total=2, note="")
        bar.update(task, advance=1, note="job 1")
        bar.advance(task)
    assert capsys.readouterr() == ("", "")


def test_extra_columns_show_the_task_fields(capsys):
    with progress_bar(transient=False, extra=("{task.fields[note]}",)) as bar:
        task = bar.add_task("sweep", total=2, note="")
        bar.update(task, advance=1, note="f00-n10-s0: auc 0.912")
    err = capsys.readouterr().err
    assert "sweep" in err and "1/2" in err and "f00-n10-s0: auc 0.912" in err
