from __future__ import annotations

import subprocess
import sys


def test_import_hpcrl_imports_no_mpi_dask_or_torch():
    code = (
        "import sys, hpcrl; "
        "bad = [m for m in ('mpi4py', 'dask', 'distributed', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_lazy_exports_resolve():
    import hpcrl

    assert hpcrl.SampleBatch.__name__ == "SampleBatch"
    assert hpcrl.PGTrainer._name == "PG"
