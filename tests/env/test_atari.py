"""Atari games (hpcrl.env.atari): the ids, the deepmind preprocessing on both vector
envs checked against each other and against frames made by hand, episode boundaries
through the sampler, clip_rewards, life loss, the errors, and training from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

ale_py = pytest.importorskip("ale_py")
cv2 = pytest.importorskip("cv2")

from hpcrl.algorithms.config import COMMON_CONFIG, merge_config  # noqa: E402
from hpcrl.algorithms.pg import PGTorchPolicy  # noqa: E402
from hpcrl.cli import main  # noqa: E402
from hpcrl.env.atari import (  # noqa: E402
    AleVectorEnv,
    _has_atari_id_form,
    is_atari_env_id,
    make_atari_env,
    make_atari_vector_env,
    registered_atari_id,
)
from hpcrl.env.multi_agent_env import make_multi_agent  # noqa: E402
from hpcrl.env.registry import resolve_env_creator  # noqa: E402
from hpcrl.evaluation.rollout_worker import RolloutWorker  # noqa: E402
from hpcrl.models import ModelCatalog  # noqa: E402
from hpcrl.models.torch_model import TorchModel  # noqa: E402
from hpcrl.policy.sample_batch import SampleBatch  # noqa: E402

MODES = ["vector_entry_point", "sync"]
# Deterministic play: no sticky actions, no no-op starts.
EXACT = {"repeat_action_probability": 0.0}
NO_NOOPS = {"noop_max": 0}


class TinyPixelModel(TorchModel):
    """Mean brightness of each stacked frame -> logits and value: enough to act on
    frames of any layout, without the catalog's conv net."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.frames = obs_space.shape[0]
        self.pi = torch.nn.Linear(self.frames, num_outputs)
        self.vf = torch.nn.Linear(self.frames, 1)

    def forward(self, input_dict, state, seq_lens):
        obs = input_dict["obs"]
        self._features = obs.float().reshape(len(obs), self.frames, -1).mean(-1) / 255.0
        return self.pi(self._features), state

    def value_function(self):
        return self.vf(self._features).squeeze(-1)


ModelCatalog.register_custom_model("tiny_pixels", TinyPixelModel)
TINY = {"model": {"custom_model": "tiny_pixels"}}


def random_actions(envs, steps, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, envs.single_action_space.n, size=(steps, envs.num_envs))


# -- ids and errors ------------------------------------------------------------
def test_atari_ids_are_known_from_their_form():
    ale_ids = [i for i, s in gym.registry.items() if str(s.entry_point).startswith("ale_py")]
    assert len(ale_ids) > 300  # ALE/Xxx-v5, Xxx-v0/v4 and XxxNoFrameskip-v0/v4
    assert all(_has_atari_id_form(i) for i in ale_ids)
    others = [i for i in gym.registry if i not in ale_ids]
    assert not any(_has_atari_id_form(i) for i in others)  # CartPole-v0, Acrobot-v1...
    assert is_atari_env_id("ale_py:ALE/Pong-v5") and is_atari_env_id("BreakoutDeterministic-v4")
    assert not is_atari_env_id("Pong-v1") and not is_atari_env_id(lambda cfg: None)
    assert registered_atari_id("BreakoutDeterministic-v4") == "BreakoutNoFrameskip-v4"
    assert resolve_env_creator("PongDeterministic-v4") == "PongDeterministic-v4"
    with pytest.raises(ValueError, match="did you mean 'ALE/Pong-v5'"):
        resolve_env_creator("ALE/Pongg-v5")


def test_missing_ale_py_names_the_env_and_the_extra():
    code = (
        "import sys\n"
        "sys.modules['ale_py'] = None  # import ale_py now fails\n"
        "from hpcrl.env.atari import is_atari_env_id\n"
        "from hpcrl.env.registry import resolve_env_creator\n"
        "assert is_atari_env_id('ALE/Pong-v5') and is_atari_env_id('PongNoFrameskip-v4')\n"
        "try:\n"
        "    resolve_env_creator('ALE/Pong-v5')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'ALE/Pong-v5' is an Atari game" in out.stdout
    assert 'pip install "hpcrl[atari]"' in out.stdout


@pytest.mark.parametrize(
    "config, message",
    [
        ({"atari_preprocessing": {"frame_stak": 2}}, "did you mean 'frame_stack'"),
        ({"atari_preprocessing": {"nope": 1}}, "valid keys: noop_max, frame_skip"),
        ({"atari_preprocessing": {"frame_skip": 0}}, r"\['frame_skip'\] must be an int >= 1"),
        ({"atari_preprocessing": {"grayscale": "yes"}}, "must be True or False, got 'yes'"),
        ({"preprocessor_pref": "dqn"}, "'deepmind', 'rllib' or None, got 'dqn'"),
        ({"clip_rewards": -1.0}, "a number c > 0"),
        (
            {"model": {"dim": 42}, "atari_preprocessing": {"screen_size": 84}},
            r"\['dim'\] is 42 and atari_preprocessing\['screen_size'\] is 84",
        ),
    ],
)
def test_bad_config_values_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        merge_config(COMMON_CONFIG, config)


def test_env_config_cannot_fight_the_preprocessing():
    with pytest.raises(ValueError, match=r"env_config\['frameskip'\].*atari_preprocessing"):
        make_atari_vector_env("ALE/Pong-v5", 1, {"frameskip": 3})
    with pytest.raises(ValueError, match="AtariVectorEnv cannot play it.*'mode'"):
        make_atari_vector_env("ALE/Pong-v5", 1, {"mode": 0}, "vector_entry_point")
    with pytest.raises(ValueError, match="observes the console's RAM"):
        make_atari_vector_env("ALE/Pong-ram-v5", 1)
    with pytest.raises(ValueError, match="always preprocesses"):
        make_atari_vector_env("ALE/Pong-v5", 1, {}, "vector_entry_point", preprocessor_pref=None)
    fallback = make_atari_vector_env("ALE/Pong-v5", 1, {"mode": 0})  # "auto": the wrappers
    assert isinstance(fallback, gym.vector.SyncVectorEnv)
    fallback.close()


# -- spaces and frames -----------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "options, shape",
    [
        ({}, (4, 84, 84)),
        ({"grayscale": False, "screen_size": 42, "frame_stack": 2}, (2, 42, 42, 3)),
    ],
)
def test_both_vector_envs_give_uint8_stacks(mode, options, shape):
    envs = make_atari_vector_env("ALE/Pong-v5", 2, {}, mode, atari_preprocessing=options)
    assert envs.single_observation_space == gym.spaces.Box(0, 255, shape, np.uint8)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, infos = envs.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (2, *shape)
    obs, rewards, *_, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert obs.dtype == np.uint8 and obs.shape == (2, *shape)
    assert rewards.dtype == np.float64
    assert {"lives", "frame_number", "episode_frame_number"} <= set(infos)
    assert isinstance(
        envs, AleVectorEnv if mode == "vector_entry_point" else gym.vector.SyncVectorEnv
    )
    envs.close()


def test_raw_frames_without_deepmind_preprocessing():
    envs = make_atari_vector_env("ALE/Pong-v5", 2, {}, "auto", preprocessor_pref="rllib")
    assert envs.single_observation_space.shape == (210, 160, 3)
    envs.close()
    env = make_atari_env("PongDeterministic-v4", {}, None)
    assert env.spec.id == "PongNoFrameskip-v4" and env.spec.kwargs["frameskip"] == 4
    assert env.spec.kwargs["repeat_action_probability"] == 0.0
    env.close()


def test_the_two_vector_envs_give_the_same_frames():
    """Independent implementations (C++ threads; gymnasium's wrappers) agree bit for bit
    on frame skip, max-pooling, resizing and stacking when no-op starts are off."""
    ale = make_atari_vector_env("ALE/Pong-v5", 2, EXACT, "vector_entry_point", "deepmind", NO_NOOPS)
    wrapped = make_atari_vector_env("ALE/Pong-v5", 2, EXACT, "sync", "deepmind", NO_NOOPS)
    first = ale.reset(seed=3)[0]
    np.testing.assert_array_equal(first, wrapped.reset(seed=3)[0])
    for actions in random_actions(ale, 120):
        a, b = ale.step(actions), wrapped.step(actions)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    ale.close()
    wrapped.close()


def test_frames_are_the_max_of_the_last_two_of_four_resized():
    """The newest frame of a step, made by hand from the emulator's screens."""
    envs = make_atari_vector_env(
        "ALE/Pong-v5", 1, EXACT, "vector_entry_point", "deepmind", NO_NOOPS
    )
    game = gym.make("ALE/Pong-v5", frameskip=1, obs_type="grayscale", **EXACT)
    obs, _ = envs.reset(seed=0)
    screen, _ = game.reset(seed=0)

    def shrink(frame):
        return cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)

    np.testing.assert_array_equal(obs[0, -1], shrink(screen))
    assert not obs[0, :3].any()  # zeros before the first frame
    for action in random_actions(envs, 60, seed=1)[:, 0]:
        screens = [game.step(action)[0] for _ in range(4)]
        obs = envs.step(np.array([action]))[0]
        np.testing.assert_array_equal(obs[0, -1], shrink(np.maximum(screens[2], screens[3])))
    envs.close()
    game.close()


@pytest.mark.parametrize("mode", MODES)
def test_stack_skip_and_noop_starts(mode):
    envs = make_atari_vector_env(
        "ALE/Pong-v5", 8, {}, mode, atari_preprocessing={"frame_skip": 3, "noop_max": 30}
    )
    obs, infos = envs.reset(seed=5)
    starts = infos["episode_frame_number"]
    assert ((starts >= 0) & (starts <= 30)).all() and len(set(starts.tolist())) > 2
    for actions in random_actions(envs, 30):
        new_obs, _, terminated, truncated, infos = envs.step(actions)
        # The newest 3 frames of a step are the oldest 3 of the next.
        np.testing.assert_array_equal(new_obs[:, :3], obs[:, 1:])
        assert not (terminated | truncated).any()
        obs = new_obs
    np.testing.assert_array_equal(infos["episode_frame_number"], starts + 30 * 3)
    envs.close()


# -- episodes through the sampler ---------------------------------------------------
class Recorder(gym.vector.VectorWrapper):
    """What the vector env returned at each step."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = []

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        self.steps.append((rewards.copy(), terminated | truncated, infos["episode_frame_number"]))
        return obs, rewards, terminated, truncated, infos


def true_returns(steps, env):
    """Returns of env ``env``'s finished episodes: a done step ends one, and the step
    after it resets the game (next-step autoreset), with no reward, frame 0."""
    returns, total, skip = [], 0.0, False
    for rewards, done, frame in steps:
        if skip:
            assert rewards[env] == 0 and frame[env] == 0
            skip = False
            continue
        total += rewards[env]
        if done[env]:
            returns.append(total)
            total, skip = 0.0, True
    return returns


@pytest.mark.parametrize("mode", MODES)
def test_sampler_episodes_match_the_games(mode, one_torch_thread):
    config = {
        **TINY,
        "env_config": {**EXACT, "max_num_frames_per_episode": 400},  # 100 steps
        "atari_preprocessing": NO_NOOPS,
        "vectorization_mode": mode,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 250,
        "seed": 0,
    }
    worker = RolloutWorker("ALE/Pong-v5", PGTorchPolicy, config)
    worker.env = recorder = Recorder(worker.env)
    batch = worker.sample()
    assert batch[SampleBatch.OBS].dtype == np.uint8
    assert batch[SampleBatch.OBS].shape == (batch.count, 4, 84, 84)
    assert batch[SampleBatch.NEXT_OBS].dtype == np.uint8
    metrics = worker.get_metrics()
    assert metrics["episode_lengths"].tolist() == [100] * 4
    expected = [r for env in range(2) for r in true_returns(recorder.steps, env)]
    assert sorted(metrics["episode_returns"]) == sorted(expected)
    assert any(expected)  # the opponent scored
    for eps_id in np.unique(batch[SampleBatch.EPS_ID]):
        rows = batch[SampleBatch.EPS_ID] == eps_id
        t = batch[SampleBatch.T][rows]
        np.testing.assert_array_equal(t, np.arange(len(t)))
        assert not batch[SampleBatch.OBS][rows][0, :3].any()  # each starts from a reset
        if len(t) == 100:
            assert batch[SampleBatch.TRUNCATEDS][rows][-1]
            assert batch[SampleBatch.REWARDS][rows].sum() in expected
    worker.stop()


def test_the_sampler_refuses_other_autoreset_modes():
    def same_step(env_config):
        return ale_py.AtariVectorEnv("pong", 2, autoreset_mode="SameStep")

    worker = RolloutWorker(same_step, PGTorchPolicy, {**TINY, "num_envs_per_worker": 2})
    with pytest.raises(ValueError, match="needs next-step autoreset"):
        worker.sample()
    worker.stop()


def test_rllib_model_dim_sets_the_frame_size():
    worker = RolloutWorker("ALE/Pong-v5", PGTorchPolicy, {"model": {**TINY["model"], "dim": 42}})
    assert worker.env.single_observation_space.shape == (4, 42, 42)
    worker.stop()


def test_pong_rewards_are_clipped_by_default_only_with_deepmind_frames():
    pong = RolloutWorker("ALE/Pong-v5", PGTorchPolicy, {**TINY})
    assert pong._clip_rewards is np.sign
    pong.stop()
    raw = RolloutWorker("ALE/Pong-v5", PGTorchPolicy, {**TINY, "preprocessor_pref": None})
    assert raw._clip_rewards is None and raw.env.single_observation_space.shape == (210, 160, 3)
    raw.stop()
    cartpole = RolloutWorker("CartPole-v1", PGTorchPolicy, {})
    assert cartpole._clip_rewards is None
    cartpole.stop()


class FixedRewards(gym.Env):
    """Four steps with rewards 5, -3, 0.5, 0: return 2.5."""

    REWARDS = (5.0, -3.0, 0.5, 0.0)
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = self.REWARDS[self.t]
        self.t += 1
        return np.zeros(1, np.float32), reward, self.t == len(self.REWARDS), False, {}


MultiAgentFixedRewards = make_multi_agent(lambda config: FixedRewards())


@pytest.mark.parametrize(
    "clip_rewards, rows",
    [
        (None, [5.0, -3.0, 0.5, 0.0]),  # not Atari: not clipped
        (False, [5.0, -3.0, 0.5, 0.0]),
        (True, [1.0, -1.0, 1.0, 0.0]),
        (2.0, [2.0, -2.0, 0.5, 0.0]),
        (0.25, [0.25, -0.25, 0.25, 0.0]),
    ],
)
@pytest.mark.parametrize("multi_agent", [False, True], ids=["vector", "multi_agent"])
def test_clip_rewards_clips_the_batch_not_the_metrics(clip_rewards, rows, multi_agent):
    env = (
        (lambda cfg: MultiAgentFixedRewards({"num_agents": 2}))
        if multi_agent
        else (lambda cfg: FixedRewards())
    )
    config = {
        "clip_rewards": clip_rewards,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 8,
        "batch_mode": "complete_episodes",
        "model": {"fcnet_hiddens": [4]},
        "gamma": 1.0,
    }
    worker = RolloutWorker(env, PGTorchPolicy, config)
    batch = worker.sample()
    if multi_agent:
        [batch] = batch.policy_batches.values()
    np.testing.assert_allclose(batch[SampleBatch.REWARDS], np.take(rows, batch[SampleBatch.T]))
    metrics = worker.get_metrics()
    per_episode = 2.5 * (2 if multi_agent else 1)  # summed over the agents
    np.testing.assert_allclose(metrics["episode_returns"], per_episode)
    for pid_returns in metrics["policy_returns"].values():
        np.testing.assert_allclose(pid_returns, 2.5)
    worker.stop()


# -- life loss -------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_lost_life_ends_the_episode_but_not_the_game(mode):
    envs = make_atari_vector_env(
        "ALE/Breakout-v5",
        2,
        EXACT,
        mode,
        atari_preprocessing={"terminal_on_life_loss": True, "noop_max": 0},
    )
    _, infos = envs.reset(seed=0)
    lives, frames = infos["lives"].copy(), infos["episode_frame_number"].copy()
    life_losses = game_overs = 0
    ended = np.zeros(2, dtype=bool)
    for actions in random_actions(envs, 400):
        _, _, terminated, truncated, infos = envs.step(actions)
        now, frame = infos["lives"], infos["episode_frame_number"]
        for i in range(2):
            if ended[i] and lives[i] > 0:  # the step after a lost life: the game goes on
                assert now[i] == lives[i] and frame[i] > frames[i]
            elif ended[i]:  # the step after the game's end: a new game
                assert now[i] == 5 and frame[i] < frames[i]
            elif now[i] < lives[i]:
                assert terminated[i]
                life_losses += now[i] > 0
                game_overs += now[i] == 0
            else:
                assert not terminated[i]
        ended = terminated | truncated
        lives, frames = now.copy(), frame.copy()
    assert life_losses >= 4 and game_overs >= 1
    envs.close()


def test_without_the_option_a_lost_life_goes_on():
    envs = make_atari_vector_env("ALE/Breakout-v5", 1, EXACT, "sync", "deepmind", NO_NOOPS)
    _, infos = envs.reset(seed=0)
    lives = [int(infos["lives"][0])]
    for actions in random_actions(envs, 100):
        _, _, terminated, *_, infos = envs.step(actions)
        assert not terminated[0]
        lives.append(int(infos["lives"][0]))
    assert lives[-1] < lives[0]
    envs.close()


# -- training ------------------------------------------------------------------------
def test_hpcrl_train_and_evaluate_on_pong(tmp_path, capsys):
    config = {
        **TINY,
        "train_batch_size": 64,
        "rollout_fragment_length": 32,
        "num_envs_per_worker": 2,
        "env_config": {"max_num_frames_per_episode": 200},  # 50 steps
    }
    args = ["--config", json.dumps(config), "--stop", '{"training_iteration": 1}']
    args += ["--local-dir", str(tmp_path), "--checkpoint-at-end", "--quiet"]
    assert main(["train", "--run", "PG", "--env", "ALE/Pong-v5", *args]) == 0
    [trial] = [path.parent for path in tmp_path.glob("*/*/params.json")]
    params = json.loads((trial / "params.json").read_text())
    assert params["preprocessor_pref"] == "deepmind" and params["clip_rewards"] is None
    [checkpoint] = [path for path in trial.iterdir() if path.name.startswith("checkpoint")]
    capsys.readouterr()
    # The checkpoint's config says how its frames were made: evaluate makes them so.
    assert main(["evaluate", str(checkpoint), "--episodes", "2", "--seed", "1"]) == 0
    assert "mean length 50.0" in capsys.readouterr().out
