"""A run-time shield around any Policy, in the manner of a reflexive low-level
safety critic (Bresa) and Recovery RL.

At every control step the safety critic scores the policy's action: its risk is
the (discounted) probability that the robot violates a constraint from here on.
Above ``threshold`` the action is replaced, either by the candidate nearest the
policy's action whose risk is under the threshold (the least risky one when none is)
among ``num_candidates`` candidates (the policy's own action, actions sampled around it,
and, when the action bound is known, as many drawn across the whole action box)
or by a recovery policy's action, and the intervention is counted.

Like the artifact, the shield needs numpy and onnxruntime only: the critic ships
as ``shield_critic.onnx`` beside ``policy.onnx`` and the ``shield`` section of
``policy.yaml`` holds its settings, so the ROS 2 node runs the same shield.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from robotrl.policies.artifact import ArtifactError, ArtifactPolicy, load_meta
from robotrl.policies.base import policy_obs

CRITIC_FILE = "shield_critic.onnx"
# Where the line of "gentler" candidates starts (see Shield.candidates).
GENTLER = ("auto", "reverse", "zero")


class OnnxRiskCritic:
    """``risk(obs, action) -> (batch,)`` from an ONNX graph with inputs obs, action."""

    def __init__(self, path: str | os.PathLike):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{path}: cannot load the shield's critic: {exc}") from exc
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"obs", "action"}:
            raise ArtifactError(f"{path}: a shield critic takes inputs 'obs' and 'action', not {sorted(inputs)}")
        self.obs_dim, self.num_actions = int(inputs["obs"][-1]), int(inputs["action"][-1])

    def __call__(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        feed = {"obs": np.asarray(obs, np.float32), "action": np.asarray(action, np.float32)}
        return self.session.run(["risk"], feed)[0].reshape(-1)


class Shield:
    """Wraps ``policy``; implements the Policy interface itself."""

    def __init__(
        self,
        policy,
        critic: Callable[[np.ndarray, np.ndarray], np.ndarray],
        threshold: float,
        num_candidates: int = 32,
        noise_std: float = 0.5,
        action_clip: float | None = None,
        recovery=None,
        seed: int = 0,
        critic_obs_dim: int | None = None,
        wide_fraction: float = 0.5,
        gentler: str = "auto",
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"shield threshold is a risk (probability) in [0, 1], got {threshold}")
        if num_candidates < 1 and recovery is None:
            raise ValueError("a shield needs num_candidates >= 1 or a recovery policy")
        self.policy, self.critic, self.recovery = policy, critic, recovery
        self.threshold, self.num_candidates, self.noise_std = float(threshold), int(num_candidates), float(noise_std)
        self.action_clip, self.wide_fraction = action_clip, float(wide_fraction)
        if gentler not in GENTLER:
            raise ValueError(f"gentler must be one of {', '.join(GENTLER)}, got {gentler!r}")
        self.gentler = gentler
        self.obs_layout = list(policy.obs_layout)
        self.action_names = list(policy.action_names)
        self.meta = getattr(policy, "meta", {})  # an artifact's description passes through
        obs_dim = sum(int(w) for _, w in self.obs_layout)
        critic_obs_dim = critic_obs_dim if critic_obs_dim is not None else getattr(critic, "obs_dim", None)
        if critic_obs_dim is not None and critic_obs_dim != obs_dim:
            raise ValueError(
                f"the shield's critic takes {critic_obs_dim} observations but the policy's layout has {obs_dim} "
                f"({', '.join(f'{n}:{w}' for n, w in self.obs_layout)}); fit the critic on this policy's observations"
            )
        critic_actions = getattr(critic, "num_actions", None)
        if critic_actions is not None and critic_actions != len(self.action_names):
            raise ValueError(f"the shield's critic takes {critic_actions} actions but the policy gives {len(self.action_names)}")
        self._last_action = None  # columns of the observed last action, if any
        self._joint_pos = None  # columns of the joint positions (minus the default pose), if any
        start = 0
        for name, width in self.obs_layout:
            if name == "last_action" and int(width) == len(self.action_names):
                self._last_action = slice(start, start + int(width))
            if name == "joint_pos" and int(width) == len(self.action_names):
                self._joint_pos = slice(start, start + int(width))
            start += int(width)
        act_meta = self.meta.get("action", {}) if isinstance(self.meta, dict) else {}
        self._hold_scale = None
        if act_meta.get("type") == "position" and self._joint_pos is not None and act_meta.get("scale") is not None:
            # Position targets are default pose + scale * action, and the joint_pos term
            # is the position minus the default pose: the action that holds still.
            self._hold_scale = np.asarray(act_meta["scale"], np.float32)
        self.rng = np.random.default_rng(seed)
        self.interventions = 0
        self.steps = 0
        self.last_intervened = np.zeros(0, dtype=bool)
        self.last_risk = np.zeros(0)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self.policy.reset(env_ids)
        if self.recovery is not None:
            self.recovery.reset(env_ids)

    def act(self, obs: Any) -> np.ndarray:
        obs = policy_obs(obs)
        if hasattr(obs, "detach"):
            obs = obs.detach().cpu().numpy()
        x = np.asarray(obs, np.float32)
        if x.ndim == 1:
            x = x[None]
        action = np.asarray(self.policy.act(x), np.float32)
        if self.action_clip is not None:
            # The robot gets the clipped action, and the critic was fitted on what the
            # robot got: a Gaussian policy's raw output often lies far outside the box
            # (a PPO point_goal_hazards policy's forward force: 99% of steps, median 1.6),
            # where the critic extrapolates: one step before a hazard it rated the raw
            # action 0.45 on average, the clipped one at least 0.75.
            action = np.clip(action, -self.action_clip, self.action_clip)
        risk = self.critic(x, action)
        unsafe = risk > self.threshold
        if unsafe.any():
            rows = np.flatnonzero(unsafe)
            if self.recovery is not None:
                action[rows] = np.asarray(self.recovery.act(x[rows]), np.float32)
            else:
                action[rows], risk[rows] = self._least_risky(x[rows], action[rows])
        self.interventions += int(unsafe.sum())
        self.steps += len(x)
        self.last_intervened, self.last_risk = unsafe, risk
        return action

    def _least_risky(self, obs: np.ndarray, action: np.ndarray):
        cand = self.candidates(obs, action)
        return self._pick(obs, action, cand)

    def candidates(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """(batch, num_candidates, num_actions): what the shield may choose from, the
        policy's own action first. The critic's fitting data should contain such
        actions, or it judges them by extrapolation (robotrl.safety.critic.CandidateExplorer)."""
        b, n, a = len(obs), self.num_candidates, action.shape[1]
        noise = self.rng.standard_normal((b, n, a)).astype(np.float32) * self.noise_std
        noise[:, 0] = 0.0  # the policy's own action stays a candidate
        cand = action[:, None, :] + noise
        # A quarter of the candidates lie between the policy's action and a gentler
        # one (the first of them is that one), which slows the robot without the
        # random jerks of noise that cost return and balance. The gentler action:
        # under position control, the target of the joints' present position (hold
        # still: an arm stops where it is rather than swinging back through the
        # default pose); else the last action when observed, else zero (less push);
        # or, by ``gentler``, the reversed action or zero.
        shrink = n // 4
        if shrink:
            scale = np.linspace(0.0, 1.0, shrink, endpoint=False, dtype=np.float32)[None, :, None]
            cand[:, 1:1 + shrink] = self._gentler(obs, action)[:, None, :] * (1.0 - scale) + action[:, None, :] * scale
        if self.action_clip is not None:
            # Some candidates (wide_fraction) span the whole action box: the way out
            # (brake hard, turn away) can be far from what the policy wanted. But a
            # critic fitted near the policy's actions misjudges far ones, so the share
            # should not exceed what the fitting data covered (random_fraction).
            wide = int(n * self.wide_fraction)
            cand[:, n - wide:] = self.rng.uniform(-self.action_clip, self.action_clip, (b, wide, a))
            cand = np.clip(cand, -self.action_clip, self.action_clip)
        return cand

    def _gentler(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        # "reverse": the policy's action reversed, i.e. braking for a robot driven by
        # forces or wheel speeds (a PPO point robot saturates its force, and only the
        # opposite force stops it within the 5 steps a held-action critic looks at).
        if self.gentler == "reverse":
            return -action
        if self.gentler == "zero":
            return np.zeros_like(action)
        if self._hold_scale is not None:
            return obs[:, self._joint_pos] / self._hold_scale
        if self._last_action is not None:
            return obs[:, self._last_action]
        return np.zeros_like(action)

    def _pick(self, obs, action, cand):
        b, n, a = cand.shape
        risk = self.critic(np.repeat(obs, n, axis=0), cand.reshape(b * n, a)).reshape(b, n)
        # The candidate nearest the policy's action among those under the threshold:
        # the least risky one is often an extreme action that costs return (and, on a
        # hopper, balance). Only when none is acceptable does the least risky one win.
        dist = np.linalg.norm(cand - action[:, None, :], axis=2)
        best = np.where(risk <= self.threshold, dist, np.inf).argmin(axis=1)
        none_ok = ~(risk <= self.threshold).any(axis=1)
        best[none_ok] = risk[none_ok].argmin(axis=1)
        return cand[np.arange(b), best], risk[np.arange(b), best]

    def stats(self) -> dict[str, float]:
        return {
            "interventions": self.interventions,
            "steps": self.steps,
            "intervention_rate": self.interventions / max(self.steps, 1),
        }


def load_shielded_policy(folder: str | os.PathLike, seed: int = 0):
    """The artifact's policy, inside its shield when ``policy.yaml`` has one."""
    folder = Path(folder)
    policy = ArtifactPolicy(folder)
    spec = load_meta(folder).get("shield")
    if not spec:
        return policy
    critic_path = folder / spec.get("critic", CRITIC_FILE)
    if not critic_path.is_file():
        raise ArtifactError(f"{folder}: policy.yaml names a shield but {critic_path.name} is missing")
    layout = [(t["name"], int(t["size"])) for t in spec.get("observation_terms", [])]
    if layout and layout != policy.obs_layout:
        raise ArtifactError(f"{folder}: the shield's critic was fitted on observations {layout}, "
                            f"the policy reads {policy.obs_layout}")
    return Shield(
        policy, OnnxRiskCritic(critic_path), float(spec["threshold"]), int(spec.get("num_candidates", 32)),
        float(spec.get("noise_std", 0.5)), float(policy.meta["action"]["clip"]), seed=seed,
        wide_fraction=float(spec.get("wide_fraction", 0.5)), gentler=str(spec.get("gentler", "auto")),
    )
