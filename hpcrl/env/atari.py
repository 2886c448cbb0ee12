"""Atari games (ale-py) with DeepMind-style preprocessing.

With ``preprocessor_pref="deepmind"`` (the default) an Atari id
(``ALE/Pong-v5``, ``PongNoFrameskip-v4``, ``Pong-v4``...) is played as in the
DQN papers (Mnih et al. 2015): up to 30 no-op actions after each reset, each
action repeated for 4 frames with the last two max-pooled, frames resized to
84x84 grayscale, the last 4 stacked on the first axis: observations are
``uint8[4, 84, 84]``, never converted to float (the model scales them). The
options are ``config["atari_preprocessing"]`` (``ATARI_PREPROCESSING_DEFAULTS``).
With ``"rllib"`` or None the env's own frames are returned.

Two implementations of the preprocessing return the same observations (bit
for bit when no-op starts are off; tests/env/test_atari.py):

- ale-py's ``AtariVectorEnv``: the envs step in C++ threads. The default
  (``vectorization_mode`` "auto" or "vector_entry_point"): about twice as
  fast as the other with 8 and 32 envs on 2 cores (``benchmarks/atari_envs.py``).
- gymnasium's ``AtariPreprocessing`` and ``FrameStackObservation`` around each
  env, in a ``SyncVectorEnv`` ("sync") or ``AsyncVectorEnv`` ("async").

Both reset an env on the step after its episode ends (gymnasium's next-step
autoreset, which hpcrl's sampler expects) and return the game's own rewards:
rewards are clipped in the sampler (``clip_rewards``), so the episode metrics
keep the real return.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import numbers
import os
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

logger = logging.getLogger("hpcrl.env.atari")

ATARI_PREPROCESSING_DEFAULTS: dict[str, Any] = {
    # After each reset, a random number of no-op actions, at most this many; 0: none.
    "noop_max": 30,
    # Frames each action is repeated for; the observation is the max of the last two.
    "frame_skip": 4,
    # Frames are resized to screen_size x screen_size.
    "screen_size": 84,
    # One luminance channel; False: RGB, observations [frame_stack, size, size, 3].
    "grayscale": True,
    # The last frame_stack frames, oldest first, on the first axis (zeros before the first).
    "frame_stack": 4,
    # Losing a life ends the episode for learning (terminated); the game goes on from there
    # and only its real end resets it (DeepMind's "episodic life"). The episode metrics
    # then count each life as an episode.
    "terminal_on_life_loss": False,
}

PREPROCESSOR_PREFS = ("deepmind", "rllib", None)

# Games that have classic ids (Pong-v0, PongNoFrameskip-v4, PongDeterministic-v4...).
# ALE/ ids need no list: the namespace says it.
_CLASSIC_GAMES = frozenset(
    """Adventure AirRaid Alien Amidar Assault Asterix Asteroids Atlantis BankHeist BattleZone
    BeamRider Berzerk Bowling Boxing Breakout Carnival Centipede ChopperCommand CrazyClimber
    Defender DemonAttack DoubleDunk ElevatorAction Enduro FishingDerby Freeway Frostbite Gopher
    Gravitar Hero IceHockey Jamesbond JourneyEscape Kangaroo Krull KungFuMaster
    MontezumaRevenge MsPacman NameThisGame Phoenix Pitfall Pong Pooyan PrivateEye Qbert
    Riverraid RoadRunner Robotank Seaquest Skiing Solaris SpaceInvaders StarGunner Tennis
    TimePilot Tutankham UpNDown Venture VideoPinball WizardOfWor YarsRevenge Zaxxon""".split()  # noqa: SIM905
)
_ALE_ID = re.compile(r"ALE/[A-Za-z0-9]+(-ram)?-v\d+")
_CLASSIC_ID = re.compile(
    r"(?P<game>[A-Za-z]+?)(?P<ram>-ram)?(?P<kind>Deterministic|NoFrameskip)?-v(?P<version>[04])"
)
# env_config keys that ale-py's AtariVectorEnv takes as the single env does.
_VECTOR_ENV_KEYS = (
    "repeat_action_probability",
    "full_action_space",
    "max_num_frames_per_episode",
    "continuous",
    "continuous_action_threshold",
)
# env_config keys the deepmind preprocessing sets itself.
_PREPROCESSING_OWNS = {
    "frameskip": "atari_preprocessing['frame_skip']",
    "obs_type": "atari_preprocessing['grayscale']",
}
_ALE_MISSING = (
    "{env_id!r} is an Atari game, played with ale-py, an optional extra of hpcrl; install "
    'it with pip install "hpcrl[atari]"'
)


def is_atari_env_id(env: Any) -> bool:
    """Whether ``env`` names an Atari game of ale-py (``"module:"`` prefix allowed).

    Decided from the string where ale-py is not imported yet: ``ALE/Xxx-v5``, and
    ``Xxx-v0``/``Xxx-v4`` with ``NoFrameskip`` or ``Deterministic`` for the games
    that have such ids; an id gymnasium knows is Atari when ale-py registered it.

    Example:
        >>> is_atari_env_id("ALE/Pong-v5"), is_atari_env_id("PongNoFrameskip-v4")
        (True, True)
        >>> is_atari_env_id("CartPole-v0")
        False
    """
    if not isinstance(env, str):
        return False
    env_id = env.split(":", 1)[-1]
    spec = gym.registry.get(env_id)
    if spec is not None:
        entry = spec.entry_point
        return (entry if isinstance(entry, str) else entry.__module__).startswith("ale_py")
    return _has_atari_id_form(env_id)


def _has_atari_id_form(env_id: str) -> bool:
    if _ALE_ID.fullmatch(env_id):
        return True
    match = _CLASSIC_ID.fullmatch(env_id)
    return match is not None and match["game"] in _CLASSIC_GAMES


def require_ale(env_id: str) -> ModuleType:
    """Import ``ale_py`` (which registers its envs with gymnasium) and return it, or
    say how to install it.

    Raises:
        ImportError: ale-py is not installed.
    """
    try:
        import ale_py
    except ImportError as error:
        raise ImportError(_ALE_MISSING.format(env_id=env_id)) from error
    gym.register_envs(ale_py)
    return ale_py


def uses_deepmind_preprocessing(env: Any, preprocessor_pref: str | None) -> bool:
    """Whether ``env`` is played with the deepmind preprocessing (and so, by default,
    with clipped rewards)."""
    return preprocessor_pref == "deepmind" and is_atari_env_id(env)


def check_preprocessor_pref(value: Any) -> None:
    """Raise ValueError unless ``value`` is a valid ``preprocessor_pref``."""
    if value not in PREPROCESSOR_PREFS:
        raise ValueError(
            f"config key 'preprocessor_pref' must be 'deepmind', 'rllib' or None, got {value!r}"
        )


def check_atari_preprocessing(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` over ``ATARI_PREPROCESSING_DEFAULTS``, each key and value checked.

    Raises:
        ValueError: an unknown key (naming the closest and the valid ones) or a bad value.

    Example:
        >>> check_atari_preprocessing({"frame_stack": 2})["frame_stack"]
        2
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValueError(
            f"config key 'atari_preprocessing' must be a dict, got {type(options).__name__} "
            f"{options!r}"
        )
    valid = list(ATARI_PREPROCESSING_DEFAULTS)
    for key, value in options.items():
        if key not in ATARI_PREPROCESSING_DEFAULTS:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown atari_preprocessing key {key!r}; {hint}valid keys: {', '.join(valid)}"
            )
        _check_option(key, value)
    return {**ATARI_PREPROCESSING_DEFAULTS, **options}


def atari_preprocessing_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a trainer or worker ``config``: its ``atari_preprocessing`` over
    the defaults, with ``screen_size`` from RLlib's ``model["dim"]`` where that is set
    (RLlib's Atari files set ``dim: 42``).

    Raises:
        ValueError: a bad option, or ``dim`` and ``screen_size`` that disagree.

    Example:
        >>> atari_preprocessing_options({"model": {"dim": 42}})["screen_size"]
        42
    """
    options = dict(config.get("atari_preprocessing") or {})
    dim = (config.get("model") or {}).get("dim")
    if dim is not None and options.setdefault("screen_size", dim) != dim:
        raise ValueError(
            f"config['model']['dim'] is {dim!r} and atari_preprocessing['screen_size'] is "
            f"{options['screen_size']!r}: both are the side of the frames; set one of them"
        )
    return check_atari_preprocessing(options)


_MINIMUM = {"noop_max": 0, "frame_skip": 1, "screen_size": 1, "frame_stack": 1}


def _check_option(key: str, value: Any) -> None:
    if key in _MINIMUM:
        minimum = _MINIMUM[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(
                f"atari_preprocessing[{key!r}] must be an int >= {minimum}, got {value!r}"
            )
    elif not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"atari_preprocessing[{key!r}] must be True or False, got {value!r}")


# -- making envs -------------------------------------------------------------
def make_atari_vector_env(
    env_id: str,
    num_envs: int,
    env_config: Mapping[str, Any] | None = None,
    vectorization_mode: str = "auto",
    preprocessor_pref: str | None = "deepmind",
    atari_preprocessing: Mapping[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the Atari game ``env_id`` as one vector env.

    Args:
        env_id: an Atari id (``is_atari_env_id``).
        num_envs: number of copies.
        env_config: keyword arguments of the game (``repeat_action_probability``,
            ``full_action_space``, ``mode``...), over the id's own.
        vectorization_mode: "auto" or "vector_entry_point" (ale-py's AtariVectorEnv;
            "auto" falls back to "sync" where it cannot play the game as configured),
            "sync" or "async" (gymnasium's wrappers around each copy).
        preprocessor_pref: "deepmind" (preprocessed frames) or "rllib"/None (raw frames).
        atari_preprocessing: options over ``ATARI_PREPROCESSING_DEFAULTS``.

    Example:
        >>> envs = make_atari_vector_env("ALE/Pong-v5", 2)
        >>> envs.single_observation_space
        Box(0, 255, (4, 84, 84), uint8)
        >>> envs.close()
    """
    require_ale(env_id)
    check_preprocessor_pref(preprocessor_pref)
    options = check_atari_preprocessing(atari_preprocessing)
    env_config = dict(env_config or {})
    deepmind = preprocessor_pref == "deepmind"
    if deepmind:
        _check_env_config(env_id, env_config)
    mode = _vector_mode(env_id, env_config, vectorization_mode, deepmind)
    if mode == "vector_entry_point":
        return _ale_vector_env(env_id, num_envs, env_config, options)
    make_one = functools.partial(make_atari_env, env_id, env_config, preprocessor_pref, options)
    if mode == "async":
        return gym.vector.AsyncVectorEnv([make_one] * num_envs)
    return gym.vector.SyncVectorEnv([make_one] * num_envs)


def make_atari_env(
    env_id: str,
    env_config: Mapping[str, Any] | None = None,
    preprocessor_pref: str | None = "deepmind",
    atari_preprocessing: Mapping[str, Any] | None = None,
) -> gym.Env:
    """One Atari env: with ``preprocessor_pref="deepmind"``, the game without frame
    skipping wrapped in gymnasium's ``AtariPreprocessing`` and ``FrameStackObservation``
    (and ``EpisodicLife`` for ``terminal_on_life_loss``); else the game as gymnasium
    makes it.

    Example:
        >>> make_atari_env("PongNoFrameskip-v4").observation_space
        Box(0, 255, (4, 84, 84), uint8)
    """
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    require_ale(env_id)
    check_preprocessor_pref(preprocessor_pref)
    options = check_atari_preprocessing(atari_preprocessing)
    registered, kwargs = registered_atari_id(env_id), _game_kwargs(env_id, env_config or {})
    if preprocessor_pref != "deepmind":
        return gym.make(registered, **kwargs)
    _check_env_config(env_id, env_config or {})
    # The wrapper skips frames itself, so the game must not; it reads the screen from
    # the emulator, so the game's own observation is only made as cheap as it can be.
    kwargs.update(frameskip=1, obs_type="grayscale" if options["grayscale"] else "rgb")
    env = AtariPreprocessing(
        gym.make(registered, **kwargs),
        noop_max=options["noop_max"],
        frame_skip=options["frame_skip"],
        screen_size=options["screen_size"],
        grayscale_obs=options["grayscale"],
    )
    # Zeros before the first frame, as AtariVectorEnv has them.
    env = FrameStackObservation(env, options["frame_stack"], padding_type="zero")
    if options["terminal_on_life_loss"]:
        env = EpisodicLife(env)
    return env


class EpisodicLife(gym.Wrapper):
    """Losing a life is the end of an episode (``terminated``) while the game goes on:
    the next ``reset()`` takes a no-op step from where the game is, and only after the
    game's real end resets it (DeepMind's episodic life; ale-py's AtariVectorEnv does
    the same with ``life_loss_info=True``).

    Example:
        >>> env = EpisodicLife(make_atari_env("ALE/Breakout-v5"))
        >>> obs, info = env.reset(seed=0)
        >>> info["lives"]
        5
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


def registered_atari_id(env_id: str) -> str:
    """The id ale-py registers for the Atari id ``env_id``: itself, or for
    ``XxxDeterministic-v4`` (which ale-py no longer registers) ``XxxNoFrameskip-v4``,
    played with a frame skip of 4.

    Example:
        >>> registered_atari_id("BreakoutDeterministic-v4")
        'BreakoutNoFrameskip-v4'
    """
    env_id = env_id.split(":", 1)[-1]
    match = _CLASSIC_ID.fullmatch(env_id)
    if match is None or match["kind"] != "Deterministic" or env_id in gym.registry:
        return env_id
    return f"{match['game']}{match['ram'] or ''}NoFrameskip-v{match['version']}"


def _game_kwargs(env_id: str, env_config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the game beyond its registered id's: ``env_config``."""
    if registered_atari_id(env_id) != env_id.split(":", 1)[-1]:
        return {"frameskip": 4, **env_config}
    return dict(env_config)


def _check_env_config(env_id: str, env_config: Mapping[str, Any]) -> None:
    """Raise ValueError where the game as configured cannot be preprocessed."""
    if "-ram" in env_id:
        raise ValueError(
            f"{env_id!r} observes the console's RAM; the deepmind preprocessing works on "
            "screens: set preprocessor_pref=None, or play the screen id"
        )
    for key, owner in _PREPROCESSING_OWNS.items():
        if key in env_config:
            raise ValueError(
                f"env_config[{key!r}]={env_config[key]!r} for {env_id!r}: the deepmind "
                f"preprocessing sets it; use {owner}, or preprocessor_pref=None for the "
                "game's own frames"
            )


def _vector_mode(env_id: str, env_config: dict[str, Any], mode: str, deepmind: bool) -> str:
    if mode in ("sync", "async"):
        return mode
    explicit = mode == "vector_entry_point"
    why = _why_not_ale_vector_env(env_id, env_config, deepmind)
    if why is None:
        return "vector_entry_point"
    if explicit:
        raise ValueError(
            f"vectorization_mode='vector_entry_point' for {env_id!r}: ale-py's "
            f"AtariVectorEnv cannot play it ({why}); use 'sync' or 'async'"
        )
    logger.debug("%s: SyncVectorEnv, as AtariVectorEnv cannot play it (%s)", env_id, why)
    return "sync"


def _why_not_ale_vector_env(env_id: str, env_config: dict[str, Any], deepmind: bool) -> str | None:
    """Why ale-py's AtariVectorEnv cannot stand for the game as configured; None if it can."""
    import ale_py

    if not deepmind:
        return "it always preprocesses the frames; these are the raw ones"
    vector_env = getattr(ale_py, "AtariVectorEnv", None)
    if vector_env is None or "autoreset_mode" not in inspect.signature(vector_env).parameters:
        return f"ale-py {ale_py.__version__} has no AtariVectorEnv with autoreset_mode; >= 0.12"
    unsupported = sorted(set(env_config) - set(_VECTOR_ENV_KEYS))
    if unsupported:
        return f"it takes no env_config key {', '.join(map(repr, unsupported))}"
    return None


def _ale_vector_env(
    env_id: str, num_envs: int, env_config: dict[str, Any], options: dict[str, Any]
) -> gym.vector.VectorEnv:
    import ale_py

    game_kwargs = {**gym.spec(registered_atari_id(env_id)).kwargs, **env_config}
    game = game_kwargs.pop("game")
    env = ale_py.AtariVectorEnv(
        game,
        num_envs,
        **{k: v for k, v in game_kwargs.items() if k in _VECTOR_ENV_KEYS},
        num_threads=min(num_envs, _usable_cores()),
        autoreset_mode="NextStep",  # hpcrl's sampler expects it; see hpcrl.evaluation.sampler
        img_height=options["screen_size"],
        img_width=options["screen_size"],
        grayscale=options["grayscale"],
        stack_num=options["frame_stack"],
        frameskip=options["frame_skip"],
        maxpool=options["frame_skip"] > 1,
        noop_max=options["noop_max"],
        episodic_life=False,  # that one resets the game at each lost life
        life_loss_info=options["terminal_on_life_loss"],
        reward_clipping=False,  # the sampler clips, and the metrics keep the real return
        use_fire_reset=False,  # gymnasium's AtariPreprocessing does not press FIRE either
    )
    return AleVectorEnv(env)


def _usable_cores() -> int:
    """Cores this process may run on (its affinity mask, under MPI or Slurm binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class AleVectorEnv(gym.vector.VectorWrapper):
    """ale-py's ``AtariVectorEnv`` returning what the gymnasium wrapper path returns:
    float rewards (it gives int32) and infos without ``env_id`` (each env's own index,
    in its synchronous use)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        infos.pop("env_id", None)
        return obs, infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        infos.pop("env_id", None)
        return obs, rewards.astype(np.float64), terminated, truncated, infos
