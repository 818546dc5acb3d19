"""The command line: no option prefixes, user errors in one line with exit status 2."""

from __future__ import annotations

import pytest

from loce.cli import build_parser, main


def test_option_prefixes_are_not_accepted(capsys):
    """`--res` used to be taken as `--resume`: argparse's prefix matching is off everywhere."""
    for argv in (["train", "cfg", "--res"], ["eval", "--g", "gt.json", "--results", "r.json"],
                 ["predict", "--check", "w.pth", "--images", "d", "--out", "o.json"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments" in err or "arguments are required" in err, err
    parser = build_parser()
    assert parser.allow_abbrev is False
    sub = next(a for a in parser._actions if a.dest == "command")
    assert all(p.allow_abbrev is False for p in sub.choices.values())
    # negative control: the full spelling parses
    assert parser.parse_args(["train", "cfg", "--resume"]).resume is True


def test_a_missing_path_opened_by_a_library_is_a_user_error(tmp_path, capsys):
    code = main(["configs", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "missing.yaml" in err
