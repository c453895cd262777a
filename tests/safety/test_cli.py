"""`lmlab detect` and `generate --watermark` refuse bad input with one clear line, before any model loads."""

from __future__ import annotations

import pytest

from lmlab.cli.main import main


@pytest.mark.parametrize("argv, message", [
    (["detect", "--watermark", "--gamma", "1.5", "some text"], "gamma must be in (0, 1)"),
    (["detect", "--watermark", "--gamma", "0", "some text"], "gamma must be in (0, 1)"),
    (["generate", "hi", "--watermark", "delta=-1"], "delta must be >= 0"),
    (["generate", "hi", "--watermark", "gamma=1"], "gamma must be in (0, 1)"),
])
def test_bad_watermark_settings_fail_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_detect_names_its_methods_and_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--method", "detectgpt", "text"])
    assert "fast-detectgpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["safety", "eval", "--help"])
    assert "--behaviors" in capsys.readouterr().out
