from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from gymnasium import spaces

from hpcrl.algorithms.ppo import PPOTorchPolicy
from hpcrl.evaluation.postprocessing import Postprocessing
from hpcrl.models import (
    ActionMaskModel,
    Categorical,
    FullyConnectedNetwork,
    ModelCatalog,
    MultiCategorical,
    TorchModel,
)
from hpcrl.models.action_mask import observation_without_mask
from hpcrl.policy.sample_batch import SampleBatch

NUM_ACTIONS = 7
OBS_SPACE = spaces.Dict(
    {
        "observation": spaces.Box(-1.0, 1.0, (5,)),
        "action_mask": spaces.Box(0, 1, (NUM_ACTIONS,), np.int8),
    }
)
FLOAT_MIN = torch.finfo(torch.float32).min


def random_masks(rng: np.random.Generator, rows: int, num_actions: int) -> np.ndarray:
    """0/1 masks with at least one legal action per row (a few rows have exactly one)."""
    masks = (rng.random((rows, num_actions)) < rng.random((rows, 1))).astype(np.int8)
    masks[np.arange(rows), rng.integers(num_actions, size=rows)] = 1
    masks[: rows // 10] = 0
    masks[np.arange(rows // 10), rng.integers(num_actions, size=rows // 10)] = 1
    return masks


def random_obs(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    # Large observations give the policy peaked logits, often on illegal actions.
    observation = rng.uniform(-50.0, 50.0, (rows, 5)).astype(np.float32)
    return {"observation": observation, "action_mask": random_masks(rng, rows, NUM_ACTIONS)}


class RecordingModel(TorchModel):
    """Returns zero logits and remembers the observation it was given."""

    def forward(self, input_dict, state, seq_lens):
        self.seen_obs = input_dict["obs"]
        return torch.zeros(len(self.seen_obs), self.num_outputs), state

    def value_function(self):
        return torch.full((len(self.seen_obs),), 3.0)


def test_catalog_wraps_the_usual_model_built_without_the_mask() -> None:
    model = ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(NUM_ACTIONS), NUM_ACTIONS, {})
    assert isinstance(model, ActionMaskModel)
    assert isinstance(model.inner_model, FullyConnectedNetwork)
    assert model.inner_model.obs_space == OBS_SPACE["observation"]
    assert model.obs_space == OBS_SPACE
    assert all(key.startswith("inner_model.") for key in model.state_dict())
    assert model.state_dict().keys() == {
        f"inner_model.{key}" for key in model.inner_model.state_dict()
    }


def test_mask_columns_are_cut_out_wherever_the_mask_sits() -> None:
    # An OrderedDict keeps this order: the mask between two observation entries.
    obs_space = spaces.Dict(
        OrderedDict(
            [
                ("position", spaces.Box(-1.0, 1.0, (2,))),
                ("action_mask", spaces.MultiBinary(3)),
                ("phase", spaces.Discrete(2)),
            ]
        )
    )
    inner_space = observation_without_mask(obs_space)
    assert list(inner_space.spaces) == ["position", "phase"]
    ModelCatalog.register_custom_model("recording", RecordingModel)
    model = ModelCatalog.get_model(obs_space, spaces.Discrete(3), 3, {"custom_model": "recording"})
    assert isinstance(model.inner_model, RecordingModel)
    assert model.inner_model.obs_space == inner_space

    obs = {"position": [[0.5, -0.5]], "action_mask": [[1, 0, 1]], "phase": [1]}
    flat = ModelCatalog.get_preprocessor(obs_space).transform(obs)
    logits, _ = model({"obs": torch.from_numpy(flat)}, [], None)

    expected_inner = ModelCatalog.get_preprocessor(inner_space).transform(
        {"position": obs["position"], "phase": obs["phase"]}
    )
    np.testing.assert_array_equal(model.inner_model.seen_obs.numpy(), expected_inner)
    assert logits.tolist() == [[0.0, FLOAT_MIN, 0.0]]
    assert model.value_function().tolist() == [3.0]


def test_mask_size_must_match_the_actions() -> None:
    with pytest.raises(ValueError, match=r"has 7 entries but .* has 4 actions.*one 0/1 entry"):
        ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(4), 4, {})


def test_mask_needs_a_discrete_action_space() -> None:
    with pytest.raises(ValueError, match="Discrete or MultiDiscrete action space"):
        ModelCatalog.get_model(OBS_SPACE, spaces.Box(-1.0, 1.0, (7,)), 14, {})


def test_mask_must_be_flags() -> None:
    obs_space = spaces.Dict(
        {"observation": spaces.Box(-1, 1, (2,)), "action_mask": spaces.Discrete(3)}
    )
    with pytest.raises(ValueError, match="Box or MultiBinary"):
        ModelCatalog.get_model(obs_space, spaces.Discrete(3), 3, {})


def test_policy_never_samples_an_illegal_action() -> None:
    policy = PPOTorchPolicy(OBS_SPACE, spaces.Discrete(NUM_ACTIONS), {"seed": 0})
    assert isinstance(policy.model, ActionMaskModel)
    rng = np.random.default_rng(0)
    for _ in range(10):
        obs = random_obs(rng, 2000)
        legal = obs["action_mask"].astype(bool)
        actions, _, extra = policy.compute_actions(obs)
        assert legal[np.arange(len(actions)), actions].all()
        assert np.isfinite(extra[SampleBatch.ACTION_LOGP]).all()
        greedy, _, _ = policy.compute_actions(obs, explore=False)
        assert legal[np.arange(len(greedy)), greedy].all()
    # Every legal action is still drawn: one state, one mask, many samples.
    one = {"observation": np.zeros((4000, 5), np.float32), "action_mask": np.zeros((4000, 7))}
    one["action_mask"][:, [1, 4, 6]] = 1
    actions, _, _ = policy.compute_actions(one)
    assert set(actions.tolist()) == {1, 4, 6}


def test_masked_losses_and_gradients_are_finite() -> None:
    config = {"seed": 0, "kl_coeff": 1.0, "entropy_coeff": 0.01}
    policy = PPOTorchPolicy(OBS_SPACE, spaces.Discrete(NUM_ACTIONS), config)
    rng = np.random.default_rng(1)
    obs = random_obs(rng, 256)
    actions, _, extra = policy.compute_actions(obs)
    # The policy's own loss (PPO: logp ratio, KL to the sampling logits, entropy, value).
    rows = [{key: value[i] for key, value in obs.items()} for i in range(256)]
    batch = SampleBatch(
        {
            SampleBatch.OBS: rows,
            SampleBatch.ACTIONS: actions,
            Postprocessing.ADVANTAGES: rng.standard_normal(256).astype(np.float32),
            Postprocessing.VALUE_TARGETS: rng.standard_normal(256).astype(np.float32),
            **extra,
        }
    )
    grads, _ = policy.compute_gradients(batch)
    assert all(g is not None and np.isfinite(g).all() for g in grads)

    # Directly: entropy and KL between two masked distributions, and their gradients.
    flat = torch.from_numpy(policy.preprocessor.transform(obs))
    logits, _ = policy.model({"obs": flat}, [], None)
    dist = Categorical(logits, policy.model)
    other = Categorical(logits.detach() * 0.5, policy.model)
    entropy, kl = dist.entropy(), dist.kl(other)
    assert torch.isfinite(entropy).all() and torch.isfinite(kl).all()
    assert (entropy >= 0).all() and (kl >= -1e-6).all()
    policy.model.zero_grad()
    (kl.mean() - entropy.mean() - dist.logp(torch.from_numpy(actions)).mean()).backward()
    policy_head = policy.model.inner_model.logits.weight.grad
    assert policy_head is not None and policy_head.abs().sum() > 0
    assert all(
        torch.isfinite(p.grad).all() for p in policy.model.parameters() if p.grad is not None
    )


def test_an_action_of_probability_zero_is_never_drawn_even_if_the_noise_is_zero(
    monkeypatch,
) -> None:
    # Exp(1) noise of exactly 0 (CPU: probability ~2**-53 per entry) once made 0 / 0 = nan,
    # which argmax picks.
    monkeypatch.setattr(torch.Tensor, "exponential_", lambda self, *args, **kwargs: self.zero_())
    logits = torch.tensor([[FLOAT_MIN, 0.0, FLOAT_MIN], [2.0, FLOAT_MIN, 1.0]])
    assert Categorical(logits).sample().tolist() == [1, 0]


def test_multidiscrete_mask_covers_the_concatenated_sub_actions() -> None:
    nvec = [3, 4]
    obs_space = spaces.Dict(
        {"observation": spaces.Box(-1.0, 1.0, (5,)), "action_mask": spaces.MultiBinary(7)}
    )
    policy = PPOTorchPolicy(obs_space, spaces.MultiDiscrete(nvec), {"seed": 0})
    assert policy.dist_class is MultiCategorical
    rng = np.random.default_rng(2)
    masks = np.concatenate([random_masks(rng, 3000, n) for n in nvec], axis=1)
    obs = {"observation": rng.uniform(-50, 50, (3000, 5)).astype(np.float32), "action_mask": masks}
    for explore in (True, False):
        actions, _, extra = policy.compute_actions(obs, explore=explore)
        rows = np.arange(3000)
        assert masks[rows, actions[:, 0]].all()
        assert masks[rows, nvec[0] + actions[:, 1]].all()
        assert np.isfinite(extra[SampleBatch.ACTION_LOGP]).all()


def test_pettingzoo_tictactoe_games_only_make_legal_moves() -> None:
    tictactoe_v3 = pytest.importorskip("pettingzoo.classic.tictactoe_v3")
    env = tictactoe_v3.env()
    obs_space = env.observation_space("player_1")
    policy = PPOTorchPolicy(obs_space, env.action_space("player_1"), {"seed": 0})
    assert isinstance(policy.model, ActionMaskModel)
    moves = 0
    for game in range(30):
        env.reset(seed=game)
        for _agent in env.agent_iter():
            obs, _, terminated, truncated, _ = env.last()
            if terminated or truncated:
                env.step(None)
                continue
            batch = {key: value[None] for key, value in obs.items()}
            action = int(policy.compute_actions(batch)[0][0])
            assert obs["action_mask"][action] == 1
            env.step(action)
            moves += 1
    env.close()
    assert moves >= 30 * 5
