"""Shared test data: a synthetic dataset, and policy artifacts made without
training: a hand-written energy-pumping swing-up controller for pendulum_swingup
exported as a real artifact (policy.onnx + policy.yaml), so "expert" data is
cheap and reproducible."""
import numpy as np
import pytest
import torch

from robotrl.datasets import Dataset
from robotrl.export import export_artifact
from robotrl.sim import make_env


class EnergyPump(torch.nn.Module):
    """Pump energy towards that of the upright rest state: obs = (cos, sin, angvel)."""

    def __init__(self, gain: float = 1.0, target: float = 20.0):
        super().__init__()
        self.gain, self.target = gain, target

    def forward(self, obs):
        cos, vel = obs[:, 0:1], obs[:, 2:3]
        return torch.tanh(self.gain * vel * (self.target * (1.0 - cos) - 0.5 * vel * vel))


def export_pump(folder, **kwargs):
    with make_env("pendulum_swingup", 1, nthread=1) as env:
        return export_artifact(EnergyPump(**kwargs), env.task, env.obs_layout["policy"], folder, {"note": "hand-written"})


@pytest.fixture(scope="session")
def pendulum_expert(tmp_path_factory):
    return export_pump(tmp_path_factory.mktemp("artifacts") / "expert")


@pytest.fixture(scope="session")
def pendulum_run_artifacts(tmp_path_factory):
    """Two artifacts "along a training run": a weak early one, then the expert."""
    root = tmp_path_factory.mktemp("run_artifacts")
    early = export_pump(root / "it0100", target=8.0)
    late = export_pump(root / "it0200")
    return [early, late]
"""Shared test data: a synthetic dataset, and policy artifacts made without
training: a hand-written energy-pumping swing-up controller for pendulum_swingup
exported as a real artifact (policy.onnx + policy.yaml), so "expert" data is
cheap and reproducible."""
import numpy as np
import pytest
import torch

from robotrl.datasets import Dataset
from robotrl.export import export_artifact
from robotrl.sim import make_env


class EnergyPump(torch.nn.Module):
    """Pump energy towards that of the upright rest state: obs = (cos, sin, angvel)."""

    def __init__(self, gain: float = 1.0, target: float = 20.0):
        super().__init__()
        self.gain, self.target = gain, target

    def forward(self, obs):
        cos, vel = obs[:, 0:1], obs[:, 2:3]
        return torch.tanh(self.gain * vel * (self.target * (1.0 - cos) - 0.5 * vel * vel))


def export_pump(folder, **kwargs):
    with make_env("pendulum_swingup", 1, nthread=1) as env:
        return export_artifact(EnergyPump(**kwargs), env.task, env.obs_layout["policy"], folder, {"note": "hand-written"})


@pytest.fixture(scope="session")
def pendulum_expert(tmp_path_factory):
    return export_pump(tmp_path_factory.mktemp("artifacts") / "expert")


@pytest.fixture(scope="session")
def pendulum_run_artifacts(tmp_path_factory):
    """Two artifacts "along a training run": a weak early one, then the expert."""
    root = tmp_path_factory.mktemp("run_artifacts")
    early = export_pump(root / "it0100", target=8.0)
    late = export_pump(root / "it0200")
    return [early, late]


def make_small_dataset(n=10, obs_width=5, num_actions=1, ends=(3, 9)) -> Dataset:
    """A synthetic cartpole-shaped dataset (5 observations, 1 action) of two episodes."""
    rng = np.random.default_rng(0)
    terminated = np.zeros(n, bool)
    terminated[list(ends)] = True
    layout = {"policy": [("pos", 2), ("vel", obs_width - 2)], "critic": [("state", obs_width)]}
    return Dataset(
        obs={"policy": rng.normal(size=(n, obs_width)).astype(np.float32),
             "critic": rng.normal(size=(n, obs_width)).astype(np.float32)},
        action=rng.uniform(-1, 1, (n, num_actions)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32),
        cost=np.zeros(n, np.float32),
        next_obs={"policy": rng.normal(size=(n, obs_width)).astype(np.float32),
                  "critic": rng.normal(size=(n, obs_width)).astype(np.float32)},
        terminated=terminated,
        truncated=np.zeros(n, bool),
        meta={"task": "cartpole_swingup", "obs_layout": layout, "action_names": [f"j{i}" for i in range(num_actions)],
              "domain": "sim"},
    )


@pytest.fixture
def small_dataset():
    return make_small_dataset
