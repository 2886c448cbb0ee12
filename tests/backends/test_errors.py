"""Errors sent from an actor to the driver."""

from __future__ import annotations

from hpcrl.backends.base import picklable_error


class NeedsKeyword(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


def test_an_error_that_pickles_but_cannot_unpickle_goes_as_its_repr():
    assert picklable_error(NeedsKeyword(code=3)) == "NeedsKeyword('code 3')"


def test_an_ordinary_error_goes_as_itself():
    error = KeyError("x")
    assert picklable_error(error) is error
