"""``reward=vlm``: a VecEnv whose reward a vision-language model computes from frames.

Three ways to keep the VLM from becoming the bottleneck, chosen by ``vlm.mode``:

* ``sync``: every ``interval`` steps all envs are rendered and scored before
  ``step`` returns; between scorings an env keeps its last score. Simple, slowest.
* ``async``: frames go to a background worker and ``step`` returns placeholder
  rewards; the rollout's real rewards are handed to the learner by
  :meth:`end_rollout`, before it computes returns (VLM-RL writes its rewards back
  into the buffer after each rollout chunk the same way).
* ``distilled``: a random ``fraction`` of env steps is rendered and scored in the
  background; a small state-based reward model learns from those scores and gives
  every step its reward. Until it has seen ``warmup_frames`` scores, steps are
  scored synchronously.

The wrapped env's episode statistics stay those of the task's own reward, so the
training curve shows the true return of a policy trained on the VLM's.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from robotrl.sim.vecenv import VecEnv
from robotrl.vlm.distill import DistillConfig, DistilledReward
from robotrl.vlm.rewards import combine
from robotrl.vlm.worker import ScoringWorker

MODES = ("sync", "async", "distilled")
COMBINE = ("none", "sum", "product", "gate")


class VlmRewardEnv(VecEnv):
    def __init__(self, env: VecEnv, score: Callable[[np.ndarray], np.ndarray], cfg: dict[str, Any], seed: int = 0):
        mode, how = cfg.get("mode", "distilled"), cfg.get("combine", "none")
        if mode not in MODES:
            raise ValueError(f"vlm.mode must be one of {MODES}, got {mode!r}")
        if how not in COMBINE:
            raise ValueError(f"vlm.combine must be one of {COMBINE}, got {how!r}")
        if cfg.get("as_cost") and mode == "async":
            raise ValueError("vlm.as_cost needs the cost at every step: use mode=sync or mode=distilled")
        self.env = env
        self.score = score
        self.mode, self.how = mode, how
        self.weight = float(cfg.get("weight", 1.0))
        self.as_cost = bool(cfg.get("as_cost", False))
        self.interval = int(cfg.get("interval") or 1)
        if self.interval < 1:
            raise ValueError(f"vlm.interval must be >= 1, got {self.interval}")
        self.deferred_rewards = mode == "async"
        n = env.num_envs
        self._held = torch.zeros(n, device=env.device)
        self._step = 0
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._awaiting: dict[int, torch.Tensor] = {}
        self._previous: list[int] = []  # keys sent during the rollout before the current one
        self._rng = np.random.default_rng(seed)
        self._owed = 0.0  # frames the distilled mode is due to score
        self.worker = ScoringWorker(score) if mode != "sync" else None
        self.distill = None
        if mode == "distilled":
            self.distill_cfg = DistillConfig.from_dict(cfg.get("distill"))
            self._state_group = "critic" if "critic" in env.obs_sizes else "policy"
            self.distill = DistilledReward(env.obs_sizes[self._state_group], self.distill_cfg, env.device, seed)
        self.frames_scored = 0
        self.distill_loss = float("nan")

    # The VecEnv surface the learners read, taken from the wrapped env.
    def __getattr__(self, name: str):
        if name == "env":  # not set yet (failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    @property
    def device(self) -> torch.device:
        return self.env.device

    def reset(self):
        return self.env.reset()

    def get_observations(self):
        return self.env.get_observations()

    def randomize_episode_start(self) -> None:
        self.env.randomize_episode_start()

    def render_frames(self, ids=None) -> np.ndarray:
        return self.env.render_frames(ids)

    # ---------------------------------------------------------------- scoring
    def _score_now(self, ids=None) -> torch.Tensor:
        frames = self.env.render_frames(ids)
        self.frames_scored += len(frames)
        return torch.as_tensor(np.asarray(self.score(frames)), dtype=torch.float32, device=self.device)

    def _mix(self, vlm: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if self.how == "none":
            return self.weight * vlm
        return torch.as_tensor(combine(vlm, state.float(), mode=self.how, weight=self.weight), dtype=torch.float32)

    def _harvest(self) -> None:
        # At a rollout's end, the scores of frames sent during the rollout before it:
        # they are ready by now, so training does not wait on the worker, and the
        # reward model sees the same pairs at the same point of training whatever
        # the worker's timing, so a seed fixes the run.
        for key in self._previous:
            scores = self.worker.wait(key)
            self.distill.add(self._awaiting.pop(key), scores)
            self.frames_scored += len(scores)
        self._previous = list(self._awaiting)

    def step(self, actions):
        obs, state_reward, dones, extras = self.env.step(actions)
        step = self._step
        self._step += 1
        if self.mode == "sync":
            if step % self.interval == 0:
                self._held = self._score_now()
            vlm = self._held
        elif self.mode == "async":
            # Counted from the rollout's start: a rollout's rewards never wait on
            # frames of the one before.
            if len(self._pending) % self.interval == 0:
                self.worker.submit(step, self.env.render_frames())
                self._last_key = step
            self._pending.append((self._last_key, state_reward.detach().clone()))
            vlm = None
        else:
            vlm = self._distilled_step(obs, dones)
        if vlm is None:
            reward = torch.zeros_like(state_reward)
        elif self.as_cost:
            reward = state_reward
            extras = dict(extras)
            extras["cost"] = vlm.clone()
        else:
            reward = self._mix(vlm, state_reward)
        if vlm is not None:
            extras = dict(extras)
            extras["vlm_reward"] = float(vlm.mean())
        return obs, reward, dones, extras

    def _distilled_step(self, obs, dones) -> torch.Tensor:
        state = obs[self._state_group]
        # Envs that just finished already show their reset observation while the
        # frame shows the terminal state: such pairs would teach the model nonsense.
        alive = np.flatnonzero(~dones.cpu().numpy().astype(bool))
        if not self.distill.ready:
            scores = self._score_now()
            self.distill.add(state[alive], scores[alive].cpu().numpy())
            return scores
        self._owed += self.distill_cfg.fraction * len(alive)
        batch = min(self.distill_cfg.render_batch, len(alive))
        if batch and self._owed >= batch:
            ids = np.sort(self._rng.choice(alive, size=batch, replace=False))
            self._owed -= batch
            self._awaiting[self._step] = state[ids].detach().clone()
            self.worker.submit(self._step, self.env.render_frames(ids))
        return self.distill.predict(state)

    def end_rollout(self) -> torch.Tensor | None:
        """At the end of a rollout: the deferred rewards (steps, envs) in async mode,
        else None; the distilled reward model takes its training steps here."""
        if self.mode == "distilled":
            self._harvest()
            self.distill_loss = self.distill.fit()
            return None
        if self.mode == "sync":
            return None
        scores = dict(self.worker.wait_all())
        self.frames_scored += sum(len(v) for v in scores.values())
        rows = [
            self._mix(torch.as_tensor(scores[key], dtype=torch.float32, device=self.device), r)
            for key, r in self._pending
        ]
        self._pending.clear()
        return torch.stack(rows) if rows else None

    def stats(self) -> dict[str, float]:
        out = {"frames_scored": float(self.frames_scored)}
        if self.distill is not None:
            out["distill_loss"] = self.distill_loss
            out["distill_pairs"] = float(self.distill.seen)
        return out

    def state_dict(self) -> dict:
        return {"distill": self.distill.state_dict()} if self.distill is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.distill is not None and "distill" in state:
            self.distill.load_state_dict(state["distill"])

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.env.close()


def make_vlm_env(env: VecEnv, task, cfg: dict[str, Any], seed: int = 0, device="cpu") -> VlmRewardEnv:
    """The training config's ``vlm`` section around ``env``: the reward model loads
    here (a missing weights file fails before any training), and the scoring
    interval defaults to the task's ``render.interval``."""
    from robotrl.sim.render import render_config
    from robotrl.vlm.rewards import VlmReward

    render = render_config(task)  # a task without a camera fails here, by name
    cfg = dict(cfg)
    if not cfg.get("weights"):
        raise ValueError(
            "reward=vlm needs vlm.weights: a local open_clip weights file, or the folder written by "
            "`robotrl vlm finetune task=... out=DIR` (nothing is downloaded at run time)"
        )
    cfg["device"] = str(device)
    cfg["interval"] = cfg.get("interval") or render.interval
    return VlmRewardEnv(env, VlmReward(cfg), cfg, seed=seed)
