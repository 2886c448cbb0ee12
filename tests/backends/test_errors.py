"""Errors sent from an actor to the driver."""

from __future__ import annotations

import pickle

from hpcrl.backends.base import picklable_error


def _refuse_to_load(message: str) -> Exception:
    raise TypeError(f"cannot rebuild the error {message!r}")


class PicklesButCannotUnpickle(Exception):
    """Pickles fine but fails when loaded, whatever pickling support is installed:
    ``distributed`` installs tblib's exception pickling at import, which rebuilds
    even exceptions with keyword-only ``__init__`` arguments, so those are no
    test of this case once any Dask test module has been imported."""

    def __reduce__(self):
        return _refuse_to_load, self.args


def test_an_error_that_pickles_but_cannot_unpickle_goes_as_its_repr():
    error = PicklesButCannotUnpickle("code 3")
    pickle.dumps(error)
    assert picklable_error(error) == "PicklesButCannotUnpickle('code 3')"


def test_the_same_holds_with_tblib_pickling_installed():
    import tblib.pickling_support

    tblib.pickling_support.install(PicklesButCannotUnpickle)
    error = PicklesButCannotUnpickle("code 3")
    assert picklable_error(error) == "PicklesButCannotUnpickle('code 3')"


def test_an_ordinary_error_goes_as_itself():
    error = KeyError("x")
    assert picklable_error(error) is error
