"""Checkpoints as JSON and HDF5 directories, without pickle.

A trainer checkpoint (``Trainer.save()``) is a directory::

    checkpoint_000010/
      checkpoint.json           metadata only, for people and tools: format, format_version,
                                algorithm, iteration, timesteps_total, counters, policy ids,
                                config, every file's size and sha256, the sha256 of
                                this metadata itself (written last)
      trainer_state.h5          trainer counters and metrics window, optimizer state,
                                each rollout worker's state (episodes, env state,
                                policy random generators), the driver's random generators
      policies/<policy_id>/     one policy checkpoint per policy of the local worker:
        policy.json             class, spaces, config
        policy_state.h5         weights, optimizer state, counters, random generators,
                                the observation filter (the driver's, merged)

HDF5 files hold arrays as datasets and everything else as JSON attributes
(``hpcrl.io.hdf5_tree``); loading reads JSON and arrays and never runs code.
The directory is written as ``.checkpoint_000010.tmp-<pid>`` and renamed when
every file is on disk (``fsync``), so a ``checkpoint_*`` directory is always
complete; loading checks every file's size and sha256 (and the metadata's own)
first, so a truncated or damaged file is an error naming it, never garbage loaded
or an error from inside h5py. Every array and every optimizer's state (the policies', the
policy optimizer's, data-parallel learners') is in the HDF5 files; the JSON
holds metadata only. Observation filters are part of each policy's state (the
remote workers' own in ``trainer_state.h5``), so ``Policy.from_checkpoint``
plays with the filter it was trained with.

``Policy.export_checkpoint(dir)`` writes a policy checkpoint alone;
``Policy.from_checkpoint(dir)`` loads one (or a policy of a trainer checkpoint).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
from typing import TYPE_CHECKING, Any

import h5py

from hpcrl.io.hdf5_tree import read_tree, write_tree
from hpcrl.io.json_values import json_safe
from hpcrl.io.spaces import space_from_json, space_to_json
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID

if TYPE_CHECKING:
    from hpcrl.algorithms.trainer import Trainer
    from hpcrl.policy.policy import Policy

CHECKPOINT_FORMAT = "hpcrl.trainer_checkpoint"
POLICY_FORMAT = "hpcrl.policy_checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"
TRAINER_STATE = "trainer_state.h5"
POLICY_JSON = "policy.json"
POLICY_STATE = "policy_state.h5"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names the file and why."""


# -- trainer checkpoints ---------------------------------------------------
def save_trainer_checkpoint(trainer: Trainer, parent_dir: str) -> str:
    """Write ``parent_dir/checkpoint_<iteration>/`` and prune old checkpoints
    (``keep_checkpoints_num``); returns the checkpoint's path."""
    parent = os.path.abspath(os.path.expanduser(parent_dir))
    os.makedirs(parent, exist_ok=True)
    name = f"checkpoint_{trainer.iteration:06d}"
    final = os.path.join(parent, name)
    temporary = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    state = trainer.get_state()
    policies = state.pop("policies")
    for pid, policy_state in policies.items():
        policy = trainer.workers.local_worker().get_policy(pid)
        _write_policy(policy, policy_state, os.path.join(temporary, "policies", pid))
    _write_h5(os.path.join(temporary, TRAINER_STATE), state)
    trainer.optimizer.save_files(temporary)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": trainer._name,
        "iteration": trainer.iteration,
        "timesteps_total": trainer.optimizer.num_steps_sampled,
        "episodes_total": state["metrics"]["episodes_total"],
        "time_total_s": state["time_total_s"],
        "counters": {
            "num_steps_sampled": trainer.optimizer.num_steps_sampled,
            "num_steps_trained": trainer.optimizer.num_steps_trained,
        },
        "policies": list(policies),
        "config": json_safe(trainer.config),
        "hpcrl_version": _hpcrl_version(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        **_file_sizes_and_digests(temporary),
    }
    _write_json(os.path.join(temporary, CHECKPOINT_JSON), meta)
    _fsync_dir(temporary)
    _replace_dir(temporary, final)
    _fsync_dir(parent)
    prune_checkpoints(parent, trainer.config.get("keep_checkpoints_num"), keep=final)
    return final


def restore_trainer_checkpoint(trainer: Trainer, path: str) -> None:
    """Load the checkpoint at ``path`` into ``trainer`` (built with the same algorithm)."""
    meta = read_checkpoint_meta(path)
    if meta["algorithm"] != trainer._name:
        raise CheckpointError(
            f"checkpoint {path!r} was written by {meta['algorithm']}, not {trainer._name}: "
            f"restore it into a {meta['algorithm']} trainer (hpcrl.get_trainer_class("
            f"{meta['algorithm']!r})), or load only its policy with Policy.from_checkpoint"
        )
    state = _read_h5(path, TRAINER_STATE)
    state["policies"] = {
        pid: _read_h5(os.path.join(path, "policies", pid), POLICY_STATE) for pid in meta["policies"]
    }
    trainer.set_state(state)
    trainer.optimizer.restore_files(os.path.abspath(path))


def read_checkpoint_meta(path: str, check_files: bool = True) -> dict[str, Any]:
    """``checkpoint.json`` of a trainer checkpoint, checked: format, version and (with
    ``check_files``) the sizes and sha256 of its files.

    Raises:
        CheckpointError: not a complete checkpoint, a newer format, or a truncated,
            damaged or missing file.
    """
    meta = _read_json(path, CHECKPOINT_JSON, CHECKPOINT_FORMAT)
    if check_files:
        _check_files(path, meta)
    return meta


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """``(iteration, path)`` of the complete checkpoints in ``directory``, oldest first."""
    directory = os.path.abspath(os.path.expanduser(directory))
    found = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        match = _CHECKPOINT_NAME.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isfile(os.path.join(path, CHECKPOINT_JSON)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: str) -> str | None:
    """The newest checkpoint in ``directory`` (``checkpoint_<iteration>``), checked; None
    when there is none (a save that was interrupted leaves none: see above).

    Raises:
        CheckpointError: the newest one fails its checks. It is not skipped for an
            earlier one: resuming from that would overwrite it and the results after
            it; the message names what to move away to do so.
    """
    directory = os.path.abspath(os.path.expanduser(directory))
    found = sorted(
        (int(match.group(1)), os.path.join(directory, name))
        for name in (os.listdir(directory) if os.path.isdir(directory) else [])
        if (match := _CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(directory, name))
    )
    if not found:
        return None
    path = found[-1][1]
    try:
        read_checkpoint_meta(path)
    except CheckpointError as err:
        earlier = f"from {os.path.basename(found[-2][1])}" if len(found) > 1 else "afresh"
        raise CheckpointError(
            f"{err} (to resume {earlier}, move {path!r} out of {directory!r})"
        ) from None
    return path


def prune_checkpoints(directory: str, keep_num: int | None, keep: str | None = None) -> None:
    """Delete all but the newest ``keep_num`` checkpoints (None: keep all), never
    ``keep``; also remove temporary directories left by interrupted saves."""
    for name in os.listdir(directory):
        if name.startswith(".checkpoint_") and ".tmp-" in name:
            pid = name.rsplit("-", 1)[-1]
            if pid != str(os.getpid()) and not _process_alive(pid):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if keep_num is None:
        return
    if isinstance(keep_num, bool) or not isinstance(keep_num, int) or keep_num < 1:
        raise ValueError(f"keep_checkpoints_num must be an int >= 1 or None, got {keep_num!r}")
    checkpoints = [path for _, path in list_checkpoints(directory)]
    for path in checkpoints[:-keep_num]:
        if path != keep:
            shutil.rmtree(path)


# -- policy checkpoints ----------------------------------------------------
def export_policy_checkpoint(policy: Policy, export_dir: str) -> str:
    """Write ``policy.json`` and ``policy_state.h5`` for ``policy`` into ``export_dir``."""
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    _write_policy(policy, policy.get_state(), export_dir)
    return export_dir


def load_policy_checkpoint(
    checkpoint_dir: str,
    policy_class: type[Policy] | None = None,
    policy_id: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Policy:
    """The policy in a policy checkpoint, or policy ``policy_id`` of a trainer checkpoint."""
    path = os.path.abspath(os.path.expanduser(checkpoint_dir))
    if os.path.isfile(os.path.join(path, CHECKPOINT_JSON)) or os.path.isdir(
        os.path.join(path, "policies")  # a trainer checkpoint whose checkpoint.json is lost
    ):
        meta = read_checkpoint_meta(path, check_files=False)  # the policy's files: below
        policy_id = policy_id or DEFAULT_POLICY_ID
        if policy_id not in meta["policies"]:
            raise CheckpointError(
                f"checkpoint {path!r} has no policy {policy_id!r}; it has {meta['policies']}"
            )
        path = os.path.join(path, "policies", policy_id)
    meta = _read_json(path, POLICY_JSON, POLICY_FORMAT)
    _check_files(path, meta)
    cls = policy_class or _import_class(meta["policy_class"], path)
    config = {**meta["config"], **(config_overrides or {})}
    policy = cls(
        space_from_json(meta["observation_space"]), space_from_json(meta["action_space"]), config
    )
    policy.set_state(_read_h5(path, POLICY_STATE))
    return policy


def _write_policy(policy: Policy, state: dict[str, Any], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    _write_h5(os.path.join(directory, POLICY_STATE), state)
    meta = {
        "format": POLICY_FORMAT,
        "format_version": FORMAT_VERSION,
        "policy_class": _class_path(type(policy)),
        "observation_space": space_to_json(policy.observation_space),
        "action_space": space_to_json(policy.action_space),
        "config": json_safe(policy.config),
        "hpcrl_version": _hpcrl_version(),
        "files": {POLICY_STATE: os.path.getsize(os.path.join(directory, POLICY_STATE))},
        "sha256": {POLICY_STATE: _sha256(os.path.join(directory, POLICY_STATE))},
    }
    _write_json(os.path.join(directory, POLICY_JSON), meta)


def _class_path(cls: type) -> str:
    """``module:qualname`` that imports ``cls`` (searching loaded modules for classes
    built at run time, e.g. by ``with_updates``, whose ``__module__`` is elsewhere)."""
    if _resolve(cls.__module__, cls.__qualname__) is cls:
        return f"{cls.__module__}:{cls.__qualname__}"
    for name, module in list(sys.modules.items()):
        if name != "__main__" and getattr(module, cls.__name__, None) is cls:
            return f"{name}:{cls.__name__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(module: str, qualname: str) -> Any:
    target = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


def _import_class(class_path: str, where: str) -> type:
    module, _, qualname = class_path.partition(":")
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise CheckpointError(
            f"cannot import module {module!r} for the policy class {class_path!r} recorded in "
            f"{where!r} ({err}); call YourPolicyClass.from_checkpoint(...) with the class instead"
        ) from err
    cls = _resolve(module, qualname)
    if not isinstance(cls, type):
        raise CheckpointError(
            f"the policy class {class_path!r} recorded in {where!r} is not found; call "
            "YourPolicyClass.from_checkpoint(...) with the class instead"
        )
    from hpcrl.policy.policy import Policy  # here: hpcrl.policy imports this module

    # A checkpoint from elsewhere may name any importable class: build only Policies.
    if not issubclass(cls, Policy):
        raise CheckpointError(
            f"the policy class {class_path!r} recorded in {where!r} is not a Policy subclass; "
            "call YourPolicyClass.from_checkpoint(...) with the class instead"
        )
    return cls


# -- files -------------------------------------------------------------------
def _write_h5(path: str, tree: dict[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        write_tree(f, tree)
    _fsync_file(path)


def _read_h5(directory: str, name: str) -> dict[str, Any]:
    path = os.path.join(directory, name)
    try:
        with h5py.File(path, "r") as f:
            return read_tree(f)
    except OSError as err:
        raise CheckpointError(
            f"cannot read {path!r} ({err}): the file is damaged; use an earlier checkpoint"
        ) from None


def _write_json(path: str, data: dict[str, Any]) -> None:
    data = json.loads(json.dumps(data))  # as it reads back (int keys become strings)
    data["meta_sha256"] = _meta_digest(data)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _read_json(directory: str, name: str, expected_format: str) -> dict[str, Any]:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        parent, base = os.path.split(os.path.normpath(directory))
        if os.path.isdir(parent) and any(n.startswith(f".{base}.tmp-") for n in os.listdir(parent)):
            detail = "not complete: its save was interrupted"
        elif any(os.path.exists(os.path.join(directory, n)) for n in (TRAINER_STATE, POLICY_STATE)):
            detail = "damaged (its other files are there); use an earlier checkpoint"
        else:
            detail = "not a checkpoint directory"
        raise CheckpointError(f"{path!r} does not exist: {directory!r} is {detail}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise CheckpointError(f"cannot parse {path!r} ({err}); use an earlier checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path!r} is not an {expected_format} file (format {found!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has format version {version!r}; this hpcrl reads versions up to "
            f"{FORMAT_VERSION}: upgrade hpcrl to load it"
        )
    # Checkpoints written before digests were recorded have neither; one alone is damage.
    if ("meta_sha256" in meta or "sha256" in meta) and meta.get("meta_sha256") != _meta_digest(
        {key: value for key, value in meta.items() if key != "meta_sha256"}
    ):
        raise CheckpointError(
            f"{path!r} is damaged (its content does not match its meta_sha256); use an earlier "
            "checkpoint"
        )
    return meta


def _check_files(directory: str, meta: dict[str, Any]) -> None:
    """Every file ``meta`` lists has its size and (when recorded) its sha256."""
    digests = meta.get("sha256", {})
    for name, size in meta.get("files", {}).items():
        path = os.path.join(directory, name)
        actual = os.path.getsize(path) if os.path.isfile(path) else None
        if actual != size:
            state = "missing" if actual is None else f"{actual} bytes, expected {size}"
            raise CheckpointError(
                f"{path!r} is truncated or damaged ({state}); use an earlier checkpoint"
            )
        if name in digests and _sha256(path) != digests[name]:
            raise CheckpointError(
                f"{path!r} is damaged (its sha256 differs from the one recorded when it was "
                "written); use an earlier checkpoint"
            )


def _file_sizes_and_digests(directory: str) -> dict[str, dict[str, Any]]:
    """``files`` (name: size) and ``sha256`` (name: hex digest) of every file under
    ``directory``, for its ``checkpoint.json``."""
    sizes, digests = {}, {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, directory)] = os.path.getsize(path)
            digests[os.path.relpath(path, directory)] = _sha256(path)
    return {"files": sizes, "sha256": digests}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of the metadata as JSON (keys sorted), whitespace aside."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _replace_dir(source: str, target: str) -> None:
    if os.path.exists(target):  # saved again at the same iteration
        old = f"{target}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old)
    else:
        os.replace(source, target)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    for root, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            _fsync_file(os.path.join(root, name))
    _fsync_file(path)


def _process_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _hpcrl_version() -> str:
    from hpcrl import __version__

    return __version__
