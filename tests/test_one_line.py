"""The one helper behind every one-line error (verl_spro/output_files.one_line)."""

from __future__ import annotations

from verl_spro.output_files import one_line


def test_messages_are_collapsed_onto_one_line_and_named_when_asked() -> None:
    error = ValueError("bad value\n   at row 3\tcolumn 2")
    assert one_line(error) == "bad value at row 3 column 2"
    assert one_line(error, with_type=True) == "ValueError: bad value at row 3 column 2"
    assert one_line(KeyError()) == "KeyError" and one_line(KeyError(), with_type=True) == "KeyError"
    assert one_line(" two\nlines ", with_type=True) == "two lines"  # a str is only collapsed
