"""Fixtures shared by tests in several folders."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models train fastest so, and on a small
    shared machine more threads only contend for the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_pickle(monkeypatch):
    """Loading must not unpickle anything: every unpickler hpcrl's dependencies offer
    (pickle's and _pickle's, cloudpickle's, torch.load) raises for the test."""
    import _pickle
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled while loading a file")

    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, refuse)
    for module_name, names in (("cloudpickle", ("load", "loads")), ("torch", ("load",))):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for name in names:
            monkeypatch.setattr(module, name, refuse)
