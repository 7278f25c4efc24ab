"""Quoting another library's error inside the package's messages."""

from recbole_hyper.errors import describe_error


def test_type_and_first_line_only():
    assert describe_error(RuntimeError("size mismatch for w\n\tcopying a param of shape ...")) == (
        "RuntimeError: size mismatch for w"
    )
    assert describe_error(KeyError()) == "KeyError"
    assert describe_error(ValueError("  \n  ")) == "ValueError"
    assert describe_error(ValueError("x" * 300)) == "ValueError: " + "x" * 200
    assert describe_error(ValueError("x" * 300), limit=None) == "ValueError: " + "x" * 300
