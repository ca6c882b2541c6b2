"""Off a terminal, long loops print a plain progress line to stderr every interval; none when
progress is disabled (--json)."""

from onnxcomp import progress


def test_periodic_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("ONNXCOMP_PROGRESS_SECONDS", "0")
    assert list(progress.progress(range(3), desc="calibrating", unit="batch")) == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"onnxcomp: calibrating {i}/3 batch (0 s)" for i in (1, 2, 3)]


def test_quiet_until_the_interval_has_passed(monkeypatch, capsys):
    monkeypatch.setenv("ONNXCOMP_PROGRESS_SECONDS", "3600")
    assert list(progress.progress(iter(range(5)), desc="timing")) == list(range(5))
    assert capsys.readouterr().err == ""


def test_nothing_when_disabled(monkeypatch, capsys):
    monkeypatch.setenv("ONNXCOMP_PROGRESS_SECONDS", "0")
    progress.set_enabled(False)
    try:
        assert list(progress.progress(range(3), desc="x")) == [0, 1, 2]
    finally:
        progress.set_enabled(True)
    assert capsys.readouterr().err == ""
