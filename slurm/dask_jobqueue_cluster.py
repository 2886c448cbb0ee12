"""hpcrl on Dask workers that Slurm jobs provide, driven from a login node (dask-jobqueue).

What it runs: here, on the machine you start it on (a login node, or any
machine that can submit with ``sbatch`` and that the compute nodes can
reach), a Dask scheduler (``dask_jobqueue.SLURMCluster``); ``--jobs`` Slurm
jobs, each running one single-threaded Dask worker with a nanny; and, once
the workers have joined, ``hpcrl train --backend dask --dask-address
<scheduler>`` with the arguments given after ``--``, one rollout worker per
Dask worker. When training ends the script closes the cluster, which
cancels the jobs. With ``--serve`` it starts the cluster, prints its
address and keeps it until Ctrl-C, so that ``hpcrl train --dask-address
ADDRESS ...`` (or ``{"backend": "dask", "dask_address": ADDRESS}`` from
Python) can join it from here, as often as you like.

A Dask worker whose process dies is restarted by its nanny, and hpcrl
re-creates the rollout worker it held (``recreate_failed_workers``). A job
that ends (walltime, preemption) takes its worker away; hpcrl re-creates the
rollout worker on a free Dask worker, so ask for a spare job or two
(``--jobs`` larger than ``--num-workers``) for long runs. The dashboard
listens on 127.0.0.1 of this machine only: reach it with an ssh tunnel
(``ssh -L 8787:127.0.0.1:PORT login-node``; the port is printed).

TLS (by default): a Dask scheduler runs whatever its clients send it, so the
cluster speaks TLS with a certificate made for this run (``openssl``): only
the scheduler, the workers and hpcrl hold its key, kept readable by you only
in ``<--log-dir>/.hpcrl-dask-tls-<pid>/`` (the jobs read it there) and
removed at the end. ``--serve`` prints the ``--dask-tls-*`` flags that join
it; ``--no-tls`` runs the cluster over plain TCP instead.

What to adapt: ``--partition``, ``--account``, ``--walltime``,
``--memory``, ``--interface`` (the network interface the compute nodes reach
this machine on, e.g. ``ib0``; default: the one of its host name), and
``--prologue`` (shell lines each job runs first, e.g. ``"module load
python"`` or ``"source ~/venvs/hpcrl/bin/activate"``; the jobs must find
the same hpcrl, dask and distributed as this machine). Anything else of
``SLURMCluster`` (``job_extra_directives`` for ``--gres``, ``--qos`` ...)
goes in ``make_cluster`` below.

How to run (from the hpcrl checkout, after ``pip install -e .[dask]``)::

    python slurm/dask_jobqueue_cluster.py --jobs 4 -- --run PPO --env CartPole-v1 \\
        --num-workers 4 --stop '{"training_iteration": 100}'
    python slurm/dask_jobqueue_cluster.py --jobs 4 --serve      # then, in another shell:
    hpcrl train --run A3C --env CartPole-v1 --dask-address tls://10.0.0.5:38211 \
        --dask-tls-ca-file ... --dask-tls-cert ... --dask-tls-key ...   # as printed

Inside an allocation that should hold everything, use ``slurm/dask_job.sbatch``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    own, train = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(
        description="Start Dask workers as Slurm jobs and train hpcrl on them "
        "(arguments after -- go to `hpcrl train`).",
        epilog="example: python slurm/dask_jobqueue_cluster.py --jobs 4 -- --run PPO "
        "--env CartPole-v1 --num-workers 4",
    )
    parser.add_argument("--jobs", type=int, default=2, help="Slurm jobs, one Dask worker each")
    parser.add_argument("--partition", help="Slurm partition (default: the site's)")
    parser.add_argument("--account", help="Slurm account to charge")
    parser.add_argument("--walltime", default="01:00:00", help="time limit of each job")
    parser.add_argument("--memory", default="2GB", help="memory of each job")
    parser.add_argument("--interface", help="network interface the compute nodes reach us on")
    parser.add_argument(
        "--prologue", action="append", default=[], help="shell line each job runs first"
    )
    parser.add_argument("--log-dir", default="dask-jobqueue-logs", help="the jobs' output")
    parser.add_argument(
        "--start-timeout", type=float, default=600.0, help="seconds to wait for the workers"
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep the cluster until Ctrl-C instead of training"
    )
    parser.add_argument(
        "--no-tls",
        action="store_true",
        help="plain TCP instead of TLS with a certificate made here",
    )
    args = parser.parse_args(own)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if not args.serve and not train:
        parser.error("give `hpcrl train` arguments after --, or --serve")
    return args, train


def make_certificate(directory: str) -> dict[str, str]:
    """A self-signed certificate and its key in ``directory`` (made readable by you
    only), as the ``--dask-tls-*`` flags of hpcrl: its own CA, and every role's
    certificate."""
    os.makedirs(directory, mode=0o700)
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    old_umask = os.umask(0o077)
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            + ["-nodes", "-days", "365", "-subj", "/CN=hpcrl-dask", "-keyout", key, "-out", cert],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        said = getattr(err, "stderr", None) or err
        raise SystemExit(
            f"cannot make the Dask cluster's TLS certificate with openssl ({said}); install "
            "openssl, or give --no-tls for plain TCP"
        ) from None
    finally:
        os.umask(old_umask)
    return {"--dask-tls-ca-file": cert, "--dask-tls-cert": cert, "--dask-tls-key": key}


def make_cluster(args: argparse.Namespace, tls: dict[str, str] | None) -> Any:
    """The SLURMCluster: one job = one Dask worker process with one thread and a nanny;
    with ``tls`` (``make_certificate``), scheduler, workers and client use TLS."""
    from dask_jobqueue import SLURMCluster

    security = None
    if tls is not None:
        from distributed.security import Security

        cert, key = tls["--dask-tls-cert"], tls["--dask-tls-key"]
        security = Security(
            tls_ca_file=cert,
            **{f"tls_{role}_cert": cert for role in ("client", "scheduler", "worker")},
            **{f"tls_{role}_key": key for role in ("client", "scheduler", "worker")},
            require_encryption=True,
        )
    return SLURMCluster(
        queue=args.partition,
        account=args.account,
        cores=1,
        processes=1,
        memory=args.memory,
        walltime=args.walltime,
        interface=args.interface,
        job_script_prologue=["export OMP_NUM_THREADS=1", *args.prologue],
        job_extra_directives=[],
        python=sys.executable,
        log_directory=args.log_dir,
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        security=security,
    )


def wait_for_workers(client: Any, count: int, timeout: float) -> None:
    """Wait until ``count`` Dask workers have joined, printing progress."""
    start = time.monotonic()
    last = -1
    while (joined := len(client.nthreads())) < count:
        if joined != last:
            print(f"{joined} of {count} Dask workers joined", flush=True)
            last = joined
        if time.monotonic() - start > timeout:
            raise SystemExit(
                f"only {joined} of {count} Dask workers joined within {timeout:g}s; "
                "see `squeue --me` and the jobs' output in --log-dir"
            )
        time.sleep(1.0)
    print(f"{count} of {count} Dask workers joined", flush=True)


def main(argv: list[str] | None = None) -> int:
    args, train = parse_args(argv)
    tls_dir = os.path.join(os.path.abspath(args.log_dir), f".hpcrl-dask-tls-{os.getpid()}")
    tls = None if args.no_tls else make_certificate(tls_dir)
    try:
        return run(args, train, tls)
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)


def run(args: argparse.Namespace, train: list[str], tls: dict[str, str] | None) -> int:
    from distributed import Client

    tls_flags = [part for flag, path in (tls or {}).items() for part in (flag, path)]
    with make_cluster(args, tls) as cluster, Client(cluster) as client:
        print(f"Dask scheduler at {cluster.scheduler_address}", flush=True)
        print(f"dashboard at {cluster.dashboard_link} (this machine only)", flush=True)
        print("job script:\n" + cluster.job_script(), flush=True)
        cluster.scale(jobs=args.jobs)
        wait_for_workers(client, args.jobs, args.start_timeout)
        if args.serve:
            join = ["hpcrl train ... --dask-address", cluster.scheduler_address, *tls_flags]
            print(f"join with: {' '.join(join)} (Ctrl-C ends the jobs)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        command = [sys.executable, "-m", "hpcrl", "train", *train]
        command += ["--dask-address", cluster.scheduler_address, *tls_flags]
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
