"""Logging set-up: console lines as before, log files with everything, warnings logged."""

from __future__ import annotations

import logging
import warnings

from loce.logs import log_to_file, setup_console


def test_console_info_to_stdout_warnings_to_stderr(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    setup_console()
    setup_console()  # idempotent: one line per message
    log = logging.getLogger("loce.some.module")
    log.info("hello %d", 3)
    log.debug("not on the console")
    log.warning("careful")
    out, err = capsys.readouterr()
    assert out == "hello 3\n" and err == "careful\n"


def test_other_ranks_show_warnings_only(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    setup_console(prefix="[r1] ")
    log = logging.getLogger("loce.x")
    log.info("quiet")
    log.warning("loud")
    out, err = capsys.readouterr()
    assert out == "" and err == "[r1] loud\n"
    monkeypatch.delenv("RANK")
    setup_console()


def test_log_file_gets_debug_and_library_warnings(tmp_path):
    path = tmp_path / "run" / "log.txt"
    show_before = warnings.showwarning
    with log_to_file(path):
        logging.getLogger("loce.engine.x").debug("detail %s", "here")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library complains", UserWarning, stacklevel=1)
    logging.getLogger("loce.engine.x").info("after the run")
    text = path.read_text()
    assert "DEBUG   loce.engine.x: detail here" in text
    assert "py.warnings" in text and "UserWarning: a library complains" in text
    assert "after the run" not in text  # the handler is removed at the end
    assert warnings.showwarning is show_before
    # appended, not replaced: a resumed run continues its log
    with log_to_file(path):
        logging.getLogger("loce").info("second")
    assert path.read_text().startswith(text) and "second" in path.read_text()
