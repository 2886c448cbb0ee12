"""``python -m hpcrl``: the hpcrl command."""

from __future__ import annotations

from hpcrl.cli import run_command

run_command()
