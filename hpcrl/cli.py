"""The ``hpcrl`` command (also ``python -m hpcrl``)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
import threading
from typing import Any, NoReturn

from hpcrl.algorithms.registry import ALGORITHMS
from hpcrl.algorithms.rllib_compat import from_rllib_stop

EXIT_USAGE = 2

EPILOG = """\
examples:
  hpcrl train --run PPO --env CartPole-v1
  hpcrl train -f examples/tuned/cartpole-ppo.yaml --seed 3
  hpcrl train --run A2C --env CartPole-v1 --config '{"lr": 0.001}' \\
      --stop '{"episode_reward_mean": 195, "timesteps_total": 200000}'

Settings given as flags override the same settings in the -f file; --config
is merged over the file's config. Training stops when any stop criterion is
reached (result[key] >= value).

A file with several experiments, or with search spaces in a config
({grid_search: [...]}), num_samples > 1 or max_failures, runs them all as
one hpcrl.tune run (so do --max-concurrent-trials and --trial-executor):
trials in processes of their own (as many at once as cores), flags applied
to every experiment, a table of trials on stderr; --resume continues its
unfinished trials.

On SIGTERM or SIGUSR1 the current iteration finishes, a checkpoint is
written, and hpcrl exits with code 75 (EX_TEMPFAIL); the same command with
--resume continues from the newest complete checkpoint.
"""


class UsageError(Exception):
    """Bad input from the user: reported in one line with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcrl",
        description="Reinforcement learning at HPC scale: RLlib's abstractions, no Ray.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    train = commands.add_parser(
        "train",
        help="train an algorithm on an env until a stop criterion is reached",
        description="Train an algorithm on an env until a stop criterion is reached.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--run", help=f"algorithm: {', '.join(ALGORITHMS)}")
    train.add_argument(
        "--env",
        help="gymnasium id (CartPole-v1), module:EnvId (imports module first), "
        "or a name given to hpcrl.register_env",
    )
    train.add_argument("--config", help="JSON object of config keys, merged over the file's")
    train.add_argument(
        "--stop",
        help="JSON object of stop criteria, e.g. '{\"episode_reward_mean\": 475}' "
        "(default: the file's, else 1,000,000 timesteps)",
    )
    train.add_argument("-f", "--config-file", help="YAML experiment file")
    train.add_argument("--num-workers", type=int, help="remote rollout workers")
    train.add_argument(
        "--num-learners",
        type=int,
        help="data-parallel learners over torch.distributed (default 1: the driver learns)",
    )
    train.add_argument(
        "--num-gpus-per-learner",
        type=int,
        choices=[0, 1],
        help="1: each learner on a GPU of its node (NCCL); 0: CPU learners (gloo)",
    )
    train.add_argument(
        "--backend",
        choices=["local", "mpi", "dask"],
        help="where workers run: local (this process), mpi (ranks of mpiexec/srun) or "
        "dask (Dask actors; a local cluster unless --dask-address is given)",
    )
    train.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="scheduler of a running Dask cluster to join, e.g. tcp://head:8786 "
        "(implies --backend dask; the cluster is left running)",
    )
    _add_dask_tls_flags(train)
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument(
        "--local-dir", help="results directory (default: ~/hpcrl_results)", default=None
    )
    train.add_argument("--name", help="experiment name (default: the file's, else 'default')")
    train.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: print each result's main keys and hpcrl's INFO log lines (e.g. which "
        "MPI rank runs what, on which host); -vv: print each whole result",
    )
    train.add_argument(
        "-q", "--quiet", action="store_true", help="no status display, only the final summary"
    )
    _add_checkpoint_flags(train)
    evaluate = commands.add_parser(
        "evaluate",
        help="play episodes with the policy of a checkpoint and print the mean return",
        description="Play episodes with the policy of a checkpoint (of Trainer.save, "
        "hpcrl train --checkpoint-*, or Policy.export_checkpoint) and print their returns.",
    )
    evaluate.add_argument("checkpoint", help="checkpoint directory")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes (default: 10)")
    evaluate.add_argument("--env", help="env to play on (default: the checkpoint's config)")
    evaluate.add_argument("--seed", type=int, help="seed of the episodes' envs")
    evaluate.add_argument(
        "--explore", action="store_true", help="sample actions (default: the most likely action)"
    )
    evaluate.add_argument(
        "--policy-id",
        help="play this policy of a trainer checkpoint alone on a single-agent env "
        "(default: the only one; on a multi-agent env every policy plays its agents)",
    )
    evaluate.add_argument(
        "--policy-mapping-fn",
        help="module:function mapping agents to policy ids on a multi-agent env (default: "
        "the checkpoint's, when it was given as such a string)",
    )
    return parser


def _add_dask_tls_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--dask-tls-ca-file",
        metavar="PEM",
        help="TLS for the Dask cluster joined or started (implies --backend dask): the CA "
        "certificate that signed the cluster's certificates",
    )
    train.add_argument(
        "--dask-tls-cert", metavar="PEM", help="TLS for Dask: hpcrl's certificate, signed by the CA"
    )
    train.add_argument(
        "--dask-tls-key",
        metavar="PEM",
        help="TLS for Dask: the key of --dask-tls-cert (unless appended to that file)",
    )


def _add_checkpoint_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--checkpoint-freq",
        type=int,
        metavar="N",
        help="write a checkpoint every N iterations (default: 0, never)",
    )
    train.add_argument(
        "--checkpoint-at-end", action="store_true", help="write a checkpoint when training stops"
    )
    train.add_argument(
        "--keep-checkpoints-num",
        type=int,
        metavar="N",
        help="keep only the newest N checkpoints (default: all)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the experiment's trial (--local-dir/--name, and --trial-name if "
        "given) from its newest complete checkpoint; a finished trial is left as it is, "
        "and without a trial a new one starts",
    )
    train.add_argument(
        "--trial-name", help="trial directory name (default: <run>_<env>_<date>_<time>)"
    )
    train.add_argument(
        "--max-concurrent-trials",
        type=int,
        metavar="N",
        help="run through hpcrl.tune (see below), at most N trials at once (default: one per core)",
    )
    train.add_argument(
        "--trial-executor",
        metavar="NAME",
        help="run through hpcrl.tune (see below), trials on: local (processes here, the "
        "default), dask or slurm",
    )


def _parse_json(text: str | None, flag: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{flag} is not valid JSON ({err.msg} at column {err.colno}): {text}"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object like '{{\"key\": 1}}', got {text}")
    return value


def load_experiment_file(path: str) -> dict[str, dict[str, Any]]:
    """Every experiment in a YAML file, in order: name -> settings.

    The file maps experiment names to ``run``, ``env``, ``stop`` and ``config``
    (RLlib's tuned-example format: its config keys are read in ``merge_config``, its
    newer stop keys here, see ``hpcrl.algorithms.rllib_compat``), optionally
    ``num_samples``, ``checkpoint_freq``, ``checkpoint_at_end``,
    ``keep_checkpoints_num``, ``max_failures`` and ``local_dir``; a config may
    hold search spaces (``lr: {grid_search: [0.01, 0.001]}``)::

        cartpole-ppo:
          run: PPO
          env: CartPole-v1
          stop: {episode_reward_mean: 475}
          config: {num_envs_per_worker: 16}
    """
    import yaml

    from hpcrl.tune.runner import EXPERIMENT_KEYS

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise UsageError(f"cannot read experiment file {path!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UsageError(
            f"experiment file {path!r} is not a YAML text file (byte {err.start} is not UTF-8)"
        ) from None
    except yaml.YAMLError as err:
        problem = _yaml_problem(err)
        raise UsageError(f"experiment file {path!r} is not valid YAML: {problem}") from None
    if not isinstance(data, dict) or not data:
        found = "nothing" if data is None else f"a {type(data).__name__}"
        raise UsageError(
            f"experiment file {path!r} must map experiment names to their settings "
            f"(run, env, stop, config), e.g. 'my-exp: {{run: PPO, env: CartPole-v1}}'; "
            f"it holds {found}"
        )
    experiments = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise UsageError(
                f"experiment {name!r} in {path!r} must be a mapping of its settings (run, env, "
                f"stop, config), got {type(spec).__name__} {spec!r}"
            )
        unknown = set(spec) - set(EXPERIMENT_KEYS)
        if unknown:
            raise UsageError(
                f"unknown setting(s) {sorted(unknown)} in experiment {name!r}; "
                f"expected some of {list(EXPERIMENT_KEYS)}"
            )
        for key, (expected, example) in _SETTING_TYPES.items():
            if spec.get(key) is not None and not isinstance(spec[key], expected):
                raise UsageError(
                    f"setting {key!r} of experiment {name!r} in {path!r} must be {example}, "
                    f"got {type(spec[key]).__name__} {spec[key]!r}"
                )
        if isinstance(spec.get("stop"), dict):  # RLlib's files may name newer result keys
            try:
                spec = {**spec, "stop": from_rllib_stop(spec["stop"])}
            except ValueError as err:
                raise UsageError(f"experiment {name!r} in {path!r}: {err}") from None
        experiments[str(name)] = spec
    return experiments


# Experiment settings of the -f file whose type is checked here (the others where used).
_SETTING_TYPES: dict[str, tuple[type, str]] = {
    "run": (str, "an algorithm name (run: PPO)"),
    "env": (str, "an env id (env: CartPole-v1)"),
    "config": (dict, "a mapping of config keys (config: {lr: 0.001})"),
    "stop": (dict, "a mapping of stop criteria (stop: {timesteps_total: 100000})"),
    "checkpoint_at_end": (bool, "true or false"),
    "local_dir": (str, "a directory (local_dir: ~/hpcrl_results)"),
}


def _yaml_problem(err: Exception) -> str:
    """A YAML error in one line: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _file_experiments(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The -f file's experiments, or one experiment of flags alone named "default"."""
    return load_experiment_file(args.config_file) if args.config_file else {"default": {}}


def resolve_train_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the -f file's single experiment and the flags into run, config, stop,
    name, local_dir (and num_samples, checkpoint_freq, checkpoint_at_end, max_failures)."""
    experiments = _file_experiments(args)
    if len(experiments) != 1:
        raise UsageError(f"{args.config_file!r} has {len(experiments)} experiments, not one")
    ((name, spec),) = experiments.items()
    return resolve_experiment(args, name, spec)


def resolve_experiment(args: argparse.Namespace, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One experiment of the -f file with the flags merged over it."""
    from hpcrl.tune.stopping import DEFAULT_STOP

    config = dict(spec.get("config") or {})
    config.update(_parse_json(args.config, "--config"))
    stop = dict(spec.get("stop") or {})
    stop.update(_parse_json(args.stop, "--stop"))
    run = args.run or spec.get("run")
    env = args.env or spec.get("env") or config.get("env")
    if not run:
        raise UsageError("no algorithm: give --run (e.g. --run PPO) or 'run' in the -f file")
    if not env and not config.get("input"):
        raise UsageError("no env: give --env (e.g. --env CartPole-v1) or 'env' in the -f file")
    if env:  # offline algorithms read config["input"] and may have no env
        config["env"] = env
    keep = args.keep_checkpoints_num
    keep = keep if keep is not None else spec.get("keep_checkpoints_num")
    if keep is not None:
        config["keep_checkpoints_num"] = keep
    if args.dask_address is not None:
        if args.backend not in (None, "dask"):
            raise UsageError(
                f"--dask-address joins a Dask cluster but --backend is {args.backend!r}; "
                "drop --backend or use --backend dask"
            )
        config["dask_address"] = args.dask_address
        config["backend"] = "dask"
    tls_files = {
        "tls_ca_file": args.dask_tls_ca_file,
        "tls_client_cert": args.dask_tls_cert,
        "tls_client_key": args.dask_tls_key,
    }
    if any(tls_files.values()):
        if args.backend not in (None, "dask"):
            raise UsageError(
                f"--dask-tls-* secure a Dask cluster but --backend is {args.backend!r}; "
                "drop --backend or use --backend dask"
            )
        security = config.get("dask_security") or {}
        if not isinstance(security, dict):
            raise UsageError(f"config key 'dask_security' must be a dict, got {security!r}")
        given = {key: value for key, value in tls_files.items() if value}
        config["dask_security"] = {**security, **given, "require_encryption": True}
        config["backend"] = "dask"
    for key in ("num_workers", "num_learners", "num_gpus_per_learner", "backend", "seed"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    freq = args.checkpoint_freq
    return {
        "run": run,
        "config": config,
        "stop": stop or dict(DEFAULT_STOP),
        "name": args.name or name,
        "local_dir": args.local_dir or spec.get("local_dir") or os.path.join("~", "hpcrl_results"),
        "num_samples": spec.get("num_samples", 1),
        "checkpoint_freq": freq if freq is not None else spec.get("checkpoint_freq", 0),
        "checkpoint_at_end": args.checkpoint_at_end or spec.get("checkpoint_at_end", False),
        "max_failures": spec.get("max_failures", 0),
    }


def _summary_line(result: dict[str, Any], trial_dir: str) -> str:
    reward = result.get("episode_reward_mean")
    return (
        f"stopped by {result.get('stopped_by')} after {result['training_iteration']} "
        f"iterations, {result['timesteps_total']:,} timesteps, "
        f"{result['time_total_s']:.1f}s; episode_reward_mean "
        f"{float('nan') if reward is None else reward:.2f}; results in {trial_dir}"
    )


def train_command(args: argparse.Namespace) -> int:
    experiments = [
        resolve_experiment(args, name, spec) for name, spec in _file_experiments(args).items()
    ]
    from hpcrl.tune.search import has_spaces

    if len(experiments) == 1 and not has_spaces(experiments[0]["config"]):
        # Helper processes (learners, Dask workers) start importing now, beside the
        # imports below rather than after them (hpcrl.backends.prestart).
        from hpcrl.backends.prestart import prestart

        prestart(experiments[0]["config"], experiments[0]["run"])
    from hpcrl.tune.experiment import Experiment, StopCriterionError
    from hpcrl.tune.preemption import EXIT_PREEMPTED, TrialPreempted

    tune_flags = args.max_concurrent_trials is not None or args.trial_executor is not None
    if (
        tune_flags
        or len(experiments) > 1
        or any(
            has_spaces(e["config"]) or e["num_samples"] != 1 or e["max_failures"]
            for e in experiments
        )
    ):
        return train_experiments(args, experiments)
    [settings] = experiments
    try:
        experiment = Experiment(
            settings["run"],
            settings["config"],
            settings["stop"],
            name=settings["name"],
            local_dir=settings["local_dir"],
            verbose=0 if args.quiet else 1,
            on_result=_result_printer(args.verbose),
            trial_name=args.trial_name,
            checkpoint_freq=settings["checkpoint_freq"],
            checkpoint_at_end=settings["checkpoint_at_end"],
            resume=args.resume,
        )
    except (ValueError, TypeError, ImportError, ConnectionError) as err:
        raise UsageError(str(err)) from err
    if experiment.finished is not None:
        last = experiment.run()
        print(f"already finished, nothing to resume: {_summary_line(last, experiment.trial_dir)}")
        return 0
    if experiment.resumed:
        where = experiment.resumed_from or "the start (no checkpoint yet)"
        print(f"hpcrl: resuming {experiment.trial_dir} from {where}", file=sys.stderr)
    try:
        result = experiment.run()
    except StopCriterionError as err:
        raise UsageError(str(err)) from err
    except TrialPreempted as preempted:
        print(
            f"hpcrl: {preempted}; exiting with code {EXIT_PREEMPTED}: run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_PREEMPTED
    print(f"done: {_summary_line(result, experiment.trial_dir)}")
    return 0


def train_experiments(args: argparse.Namespace, experiments: list[dict[str, Any]]) -> int:
    """Run several experiments (or one with search spaces) as one ``hpcrl.tune`` run."""
    from hpcrl import tune
    from hpcrl.tune.preemption import EXIT_PREEMPTED

    if args.trial_name:
        raise UsageError("--trial-name names the single trial of an experiment without search")
    if args.name and len(experiments) > 1:
        raise UsageError(f"--name renames one experiment; the file has {len(experiments)}")
    settings = {
        e["name"]: {key: value for key, value in e.items() if key != "name"} for e in experiments
    }
    try:
        analysis = tune.run_experiments(
            settings,
            resume=args.resume,
            verbose=0 if args.quiet else 1 + min(args.verbose, 1),
            max_concurrent_trials=args.max_concurrent_trials,
            trial_executor=args.trial_executor or "local",
            raise_on_failed_trial=False,
        )
    except tune.ExperimentPreempted as preempted:
        print(
            f"hpcrl: {preempted}; exiting with code {EXIT_PREEMPTED}: run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_PREEMPTED
    except (ValueError, TypeError, ImportError, ConnectionError) as err:
        raise UsageError(str(err)) from err
    failed = []
    for trial in analysis.trials:
        if trial.status == "TERMINATED" and trial.last_result:
            print(f"done: {trial.trial_id}: {_summary_line(trial.last_result, trial.logdir)}")
        else:
            failed.append(trial)
            print(f"{trial.status}: {trial.trial_id}: see {trial.error_file or trial.logdir}")
    if failed:
        print(
            f"hpcrl: error: {len(failed)} of {len(analysis.trials)} trials failed", file=sys.stderr
        )
        return 1
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from hpcrl.io.checkpoint import CheckpointError

    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    try:
        metrics, env = _evaluate_checkpoint(args)
    except (CheckpointError, ValueError, TypeError, ImportError) as err:
        raise UsageError(str(err)) from err
    for number, (ret, length) in enumerate(
        zip(metrics["episode_returns"], metrics["episode_lengths"])
    ):
        print(f"episode {number}: return {ret:.2f}, length {length}")
    for pid, returns in sorted(metrics.get("policy_returns", {}).items()):
        print(f"policy {pid}: mean return {returns.mean():.2f} over {len(returns)} agent episodes")
    print(
        f"mean return {metrics['episode_reward_mean']:.2f} over {args.episodes} episodes "
        f"(min {metrics['episode_reward_min']:.2f}, max {metrics['episode_reward_max']:.2f}, "
        f"mean length {metrics['episode_len_mean']:.1f}) on {env}"
    )
    return 0


def _evaluate_checkpoint(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Play a checkpoint's policy (or, on a multi-agent env, all its policies)."""
    from hpcrl.env.atari import atari_preprocessing_options
    from hpcrl.env.registry import EnvContext, make_worker_envs
    from hpcrl.evaluation.policy_evaluation import evaluate_policies, evaluate_policy
    from hpcrl.io.checkpoint import CHECKPOINT_JSON, read_checkpoint_meta
    from hpcrl.policy.policy import Policy

    trainer_checkpoint = os.path.isfile(
        os.path.join(os.path.expanduser(args.checkpoint), CHECKPOINT_JSON)
    )
    meta = read_checkpoint_meta(args.checkpoint, check_files=False) if trainer_checkpoint else {}
    pids = meta.get("policies", [None])  # each policy's files are checked as it loads
    policy = Policy.from_checkpoint(args.checkpoint, policy_id=args.policy_id or pids[0])
    env = args.env or policy.config.get("env")
    if not isinstance(env, str):
        raise UsageError(f"the checkpoint's config names no env by id ({env!r}); give --env ENV")
    env_config = policy.config.get("env_config") or {}
    probe = make_worker_envs(
        env,
        1,
        EnvContext(env_config),
        preprocessor_pref=policy.config.get("preprocessor_pref", "deepmind"),
        atari_preprocessing=atari_preprocessing_options(policy.config),
    )
    multi_agent = isinstance(probe, list)
    for copy in probe if multi_agent else [probe]:
        copy.close()
    if not multi_agent or args.policy_id:
        metrics = evaluate_policy(
            policy, env, args.episodes, env_config=env_config, seed=args.seed, explore=args.explore
        )
        return metrics, env
    mapping = args.policy_mapping_fn or policy.config.get("multiagent", {}).get("policy_mapping_fn")
    if mapping is not None and not (isinstance(mapping, str) and ":" in mapping):
        raise UsageError(
            f"the checkpoint's policy_mapping_fn ({mapping!r}) cannot be loaded by name; give "
            "--policy-mapping-fn module:function"
        )
    policies = {pid: Policy.from_checkpoint(args.checkpoint, policy_id=pid) for pid in pids}
    metrics = evaluate_policies(
        policies,
        env,
        args.episodes,
        policy_mapping_fn=mapping,
        env_config=env_config,
        seed=args.seed,
        explore=args.explore,
    )
    return metrics, env


def _result_printer(verbosity: int) -> Any:
    if verbosity <= 0:
        return None

    def show(result: dict[str, Any]) -> None:
        if verbosity >= 2:
            print(json.dumps(result, default=repr, sort_keys=True))
        else:
            keys = ("training_iteration", "timesteps_total", "episode_reward_mean", "time_total_s")
            print(", ".join(f"{k}={result.get(k)}" for k in keys))
        sys.stdout.flush()

    return show


def _show_info_logs() -> None:
    """hpcrl's INFO log lines (not other libraries') on stderr."""
    import logging

    logger = logging.getLogger("hpcrl")
    logger.setLevel(logging.INFO)
    if any(getattr(h, "hpcrl_cli", False) for h in logger.handlers):
        return  # main() ran before in this process: one handler, or every line twice
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpcrl: %(message)s"))
    handler.hpcrl_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Let --env module:EnvId find modules in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if getattr(args, "verbose", 0):
        _show_info_logs()
    try:
        if args.command == "train":
            return train_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
    except UsageError as err:
        print(f"hpcrl: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hpcrl: interrupted", file=sys.stderr)
        return 130
    return 0


def run_command(argv: list[str] | None = None) -> NoReturn:
    """The ``hpcrl`` and ``python -m hpcrl`` entry point: ``main`` and then
    ``exit_process`` with its exit code."""
    exit_process(main(argv))


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` once its exit handlers have run, skipping the
    interpreter's teardown of every module.

    After ``import torch`` that teardown (clearing some hundred thousand module
    objects through the garbage collector) takes about 0.4 s on a 2-core VM, an
    eighth of the whole time to train PPO on CartPole-v1 (benchmarks/README.md,
    "Time to solve"). Everything an exit must do still happens: the ``atexit``
    handlers (logging's flush, multiprocessing's and Dask's cleanup,
    ``weakref.finalize`` callbacks) run, and the standard streams are flushed.
    A process with a non-daemon thread still running, an MPI rank (mpi4py calls
    MPI_Finalize from the interpreter's teardown), or a Python without
    ``atexit._run_exitfuncs`` exits the ordinary way.
    """
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if run_exitfuncs is None or others or _mpi_running():
        sys.exit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: nothing more can be written to it.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _mpi_running() -> bool:
    """Whether MPI is initialised and not yet finalised in this process: mpi4py
    finalises MPI from the interpreter's own last exit step, not from ``atexit``,
    and a rank that skipped MPI_Finalize would leave the others waiting in theirs."""
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized()


if __name__ == "__main__":
    run_command()
