"""Launcher rules for the learners' rendezvous: pure functions of an environment."""

from __future__ import annotations

import pytest

from hpcrl.learners.rendezvous import (
    Rendezvous,
    assign_devices,
    first_host,
    plan_rendezvous,
    rendezvous_from_environment,
    rendezvous_from_slurm_env,
    rendezvous_from_torchrun_env,
)

TORCHRUN = {
    "RANK": "5",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "gpu01",
    "MASTER_PORT": "29400",
}
SLURM = {
    "SLURM_PROCID": "6",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "2",
    "SLURM_JOB_NODELIST": "gpu[017-018,020]",
    "SLURM_JOB_ID": "4242",
}


def test_torchrun_variables():
    assert rendezvous_from_torchrun_env(TORCHRUN) == Rendezvous(5, 8, 1, "gpu01", 29400)


def test_torchrun_defaults_for_a_single_node():
    rendezvous = rendezvous_from_torchrun_env({"RANK": "0", "WORLD_SIZE": "2"})
    assert rendezvous == Rendezvous(0, 2, 0, "127.0.0.1", 29500)
    assert rendezvous.is_master


def test_slurm_variables_master_is_first_host_and_port_from_job_id():
    assert rendezvous_from_slurm_env(SLURM) == Rendezvous(6, 8, 2, "gpu017", 24242)


def test_slurm_master_port_variable_wins():
    assert rendezvous_from_slurm_env({**SLURM, "MASTER_PORT": "12345"}).master_port == 12345


def test_slurm_without_node_list_says_what_to_do():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_JOB_NODELIST"}
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST is not set.*srun"):
        rendezvous_from_slurm_env(env)


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node7", "node7"),
        ("node[1-4]", "node1"),
        ("gpu[003-005,010],cpu1", "gpu003"),
        ("a-b-c[09,11]", "a-b-c09"),
        ("login1,login2", "login1"),
    ],
)
def test_first_host_of_slurm_node_lists(nodelist, host):
    assert first_host(nodelist) == host


def test_environment_prefers_torchrun_then_slurm():
    assert rendezvous_from_environment({**SLURM, **TORCHRUN}).master_addr == "gpu01"
    assert rendezvous_from_environment(SLURM).master_addr == "gpu017"
    with pytest.raises(ValueError, match="torchrun --nproc-per-node K"):
        rendezvous_from_environment({"HOME": "/root"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is outside world size 2"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "not a TCP port"),
    ],
)
def test_inconsistent_variables_are_errors(env, message):
    with pytest.raises(ValueError, match=message):
        rendezvous_from_torchrun_env(env)


def test_actor_rendezvous_local_ranks_by_host():
    plan = plan_rendezvous(["n1", "n2", "n1", "n1", "n2"], 4000)
    assert [r.rank for r in plan] == [0, 1, 2, 3, 4]
    assert [r.local_rank for r in plan] == [0, 0, 1, 2, 1]
    assert {(r.master_addr, r.master_port, r.world_size) for r in plan} == {("n1", 4000, 5)}


def test_nccl_on_node_local_gpus():
    plan = plan_rendezvous(["n1", "n1", "n2", "n2"], 4000)
    gpus = [["A0", "A1"], ["A0", "A1"], ["B0", "B1"], ["B0", "B1"]]
    assert assign_devices(plan, gpus, 1) == ("nccl", ["cuda:0", "cuda:1", "cuda:0", "cuda:1"])
    assert assign_devices(plan, gpus, 1, "gloo")[0] == "gloo"


def test_one_gpu_bound_per_task_is_device_zero():
    plan = plan_rendezvous(["n1", "n1"], 4000)
    assert assign_devices(plan, [["A0"], ["A1"]], 1) == ("nccl", ["cuda:0", "cuda:0"])


def test_cpu_learners_use_gloo_even_where_gpus_exist():
    plan = plan_rendezvous(["n1", "n1"], 4000)
    assert assign_devices(plan, [["A0", "A1"]] * 2, 0) == ("gloo", ["cpu", "cpu"])


@pytest.mark.parametrize(
    ("gpus", "num_gpus", "backend", "message"),
    [
        ([["A0"], []], 1, "auto", "learner 1 sees no CUDA device"),
        ([["A0"], ["A0"]], 1, "auto", "learners 0 and 1 would share GPU A0"),
        ([[], []], 0, "nccl", "learner_backend='nccl' needs a GPU per learner"),
        ([[], []], 0, "mpi", "unknown learner_backend 'mpi'"),
        ([["A0"], ["A1"]], 2, "auto", "num_gpus_per_learner must be 0 .* or 1"),
    ],
)
def test_device_plans_that_cannot_work_are_errors(gpus, num_gpus, backend, message):
    with pytest.raises(ValueError, match=message):
        assign_devices(plan_rendezvous(["n1", "n1"], 4000), gpus, num_gpus, backend)
