"""TLS for Dask (``dask_security``, ``--dask-tls-*``) against a real TLS LocalCluster
with certificates made here: training joins it with the right certificates; without
them, or with wrong ones, the CLI says why in one line, exits 2 and does not hang."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from tls_certificates import make_certificates, tls_maker

from hpcrl.backends import make_backend
from hpcrl.cli import UsageError, build_parser, main, resolve_train_args
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID

distributed = pytest.importorskip("distributed")
from hpcrl.backends.dask import DaskBackend  # noqa: E402 - needs distributed
from hpcrl.backends.dask_tls import check_join, connect_client, make_security  # noqa: E402

SMALL = {
    "num_workers": 2,
    "num_envs_per_worker": 1,
    "rollout_fragment_length": 25,
    "train_batch_size": 50,
    "model": {"fcnet_hiddens": [8]},
}
# Joining waits for the scheduler min(worker_timeout_s, 30) seconds; a failure to
# join is reported within that and the start of the command.
JOIN_TIMEOUT_S = 5.0
FAILURE_WITHIN_S = 20.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """``{"cluster": files, "other": files}``: the cluster's CA with a certificate
    and key it signed, and an unrelated CA with its own certificate and key."""
    if tls_maker() is None:
        pytest.skip("making test certificates needs the cryptography package or openssl")
    directory = tmp_path_factory.mktemp("tls")
    return {name: make_certificates(directory, name) for name in ("cluster", "other")}


@pytest.fixture(scope="module")
def tls_cluster(certificates):
    """A LocalCluster that speaks TLS only: two worker processes, one thread each."""
    files = certificates["cluster"]
    security = distributed.security.Security(
        **files,  # the cluster object's own client
        tls_scheduler_cert=files["tls_client_cert"],
        tls_scheduler_key=files["tls_client_key"],
        tls_worker_cert=files["tls_client_cert"],
        tls_worker_key=files["tls_client_key"],
        require_encryption=True,
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        protocol="tls",
        security=security,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    assert cluster.scheduler_address.startswith("tls://")
    yield cluster
    cluster.close()


class Echo:
    def add(self, x: int) -> int:
        return x + 1


def tls_flags(files: dict[str, str]) -> list[str]:
    return [
        "--dask-tls-ca-file",
        files["tls_ca_file"],
        "--dask-tls-cert",
        files["tls_client_cert"],
        "--dask-tls-key",
        files["tls_client_key"],
    ]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no certificates", "uses TLS and hpcrl has no certificate for it: give"),
        ("tcp:// address", "a scheduler that uses TLS has a tls:// address"),
        ("another CA", "over TLS: hpcrl does not trust the scheduler's certificate"),
        ("a certificate of another CA", "over TLS: the scheduler refused hpcrl's certificate"),
        ("a scheduler that never answers", "could not connect to the Dask scheduler at"),
    ],
)
def test_joining_without_the_right_certificates_is_a_one_line_error(
    case, expected, tls_cluster, certificates, tmp_path, capsys
):
    address, flags, silent = tls_cluster.scheduler_address, [], None
    cluster, other = certificates["cluster"], certificates["other"]
    if case == "tcp:// address":
        address = address.replace("tls://", "tcp://")
    elif case == "another CA":
        flags = tls_flags({**cluster, "tls_ca_file": other["tls_ca_file"]})
    elif case == "a certificate of another CA":
        flags = tls_flags({**other, "tls_ca_file": cluster["tls_ca_file"]})
    elif case == "a scheduler that never answers":  # TCP connects, TLS handshake never ends
        silent = socket.create_server(("127.0.0.1", 0))
        address, flags = f"tls://127.0.0.1:{silent.getsockname()[1]}", tls_flags(cluster)
    start = time.monotonic()
    code = main(
        ["train", "--run", "PG", "--env", "CartPole-v1", "--dask-address", address, *flags]
        + ["--config", json.dumps({**SMALL, "worker_timeout_s": JOIN_TIMEOUT_S})]
        + ["--local-dir", str(tmp_path), "-q"]
    )
    elapsed = time.monotonic() - start
    if silent is not None:
        silent.close()
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.startswith("hpcrl: error: ") and expected in line, line
    assert ("--dask-tls" in line) == (silent is None)  # the fix, where TLS is what is wrong
    assert elapsed < FAILURE_WITHIN_S


def test_training_joins_a_tls_cluster_with_the_right_certificates(tls_cluster, certificates):
    # Run after the failures above: a failed join leaves nothing that stops this one.
    from hpcrl.algorithms.pg import PGTrainer

    config = {
        **SMALL,
        "backend": "dask",
        "dask_address": tls_cluster.scheduler_address,
        "dask_security": certificates["cluster"],
    }
    with PGTrainer(config, env="CartPole-v1") as trainer:
        workers = trainer.workers.remote_workers()
        assert len(workers) == 2 and all(w.address.startswith("tls://") for w in workers)
        result = trainer.train()
    assert result["timesteps_total"] >= 50 and result["num_healthy_workers"] == 2
    assert DEFAULT_POLICY_ID in result["info"]["learner"]


@pytest.mark.parametrize("how", ["certificate files", "temporary certificate"])
def test_local_cluster_started_with_tls_refuses_clients_without_certificates(how, certificates):
    security = (
        certificates["cluster"] if how == "certificate files" else {"require_encryption": True}
    )
    backend = DaskBackend(num_workers=1, security=security, timeout_s=30, verbose=False)
    try:
        assert backend.address.startswith("tls://127.0.0.1:")
        [actor] = backend.spawn(Echo)
        assert backend.get(backend.call([actor], "add", 1)) == [2]
        stranger = make_security(certificates["other"], local_cluster=False)
        with pytest.raises(ConnectionError, match="does not trust the scheduler's certificate"):
            connect_client(backend.address, stranger, timeout_s=JOIN_TIMEOUT_S)
    finally:
        backend.shutdown()


# -- checked before any connection ---------------------------------------------
def test_dask_security_mistakes_are_named_with_the_fix(certificates, tmp_path):
    files = certificates["cluster"]
    with pytest.raises(ValueError, match="did you mean 'tls_ca_file'"):
        make_security({"tls_ca_fle": files["tls_ca_file"]}, local_cluster=False)
    with pytest.raises(ValueError, match=r"tls_client_cert \(--dask-tls-cert\).*does not exist"):
        make_security({**files, "tls_client_cert": str(tmp_path / "no.pem")}, local_cluster=False)
    wrong_key = {**files, "tls_client_key": certificates["other"]["tls_client_key"]}
    with pytest.raises(ValueError, match="the key the one that belongs to the certificate"):
        make_security(wrong_key, local_cluster=False)
    with pytest.raises(ValueError, match="needs tls_ca_file"):
        make_security({"tls_client_cert": files["tls_client_cert"]}, local_cluster=False)
    with pytest.raises(ValueError, match="for a local cluster that hpcrl starts"):
        make_security({**files, "tls_worker_cert": files["tls_client_cert"]}, local_cluster=False)
    with pytest.raises(ValueError, match="names no certificate"):
        make_security({"require_encryption": True}, local_cluster=False)
    with pytest.raises(ValueError, match="must be 1.2 or 1.3"):
        make_security({**files, "tls_min_version": 1.1}, local_cluster=False)
    with pytest.raises(ValueError, match="must be a dict"):
        make_security("ca.pem", local_cluster=False)
    with pytest.raises(ValueError, match="set backend='dask'"):
        make_backend("local", {"dask_security": files})
    tls = make_security(files, local_cluster=False)
    with pytest.raises(ConnectionError, match="give the scheduler's tls:// address"):
        check_join("tcp://127.0.0.1:8786", tls)
    check_join("tls://127.0.0.1:8786", tls)


def test_tls_flags_become_dask_security(certificates):
    files = certificates["cluster"]
    train = ["train", "--run", "PG", "--env", "CartPole-v1"]
    config = resolve_train_args(build_parser().parse_args([*train, *tls_flags(files)]))["config"]
    assert config["backend"] == "dask"
    assert config["dask_security"] == {**files, "require_encryption": True}
    with pytest.raises(UsageError, match="--backend is 'mpi'"):
        resolve_train_args(
            build_parser().parse_args([*train, "--backend", "mpi", *tls_flags(files)])
        )


def test_tune_trials_run_on_a_tls_cluster(tls_cluster, certificates, tmp_path):
    from hpcrl import tune
    from hpcrl.tune.dask_executor import DaskExecutor

    executor = DaskExecutor(
        dask_address=tls_cluster.scheduler_address, dask_security=certificates["cluster"]
    )
    analysis = tune.run(
        lambda config: tune.report(value=config["v"] * 2),
        config={"v": tune.grid_search([1, 2])},
        trial_executor=executor,
        local_dir=str(tmp_path),
        verbose=0,
    )
    assert sorted(t.last_result["value"] for t in analysis.trials) == [2, 4]
