"""A deliberately unsafe policy for shield tests: it drives straight at the goal
(read from the goal lidar, as a robot would) and ignores every hazard."""
import numpy as np


class GoalSeeker:
    def __init__(self, env):
        self.obs_layout = list(env.obs_layout["policy"])
        self.action_names = list(env.action_names)
        start = 0
        for name, width in self.obs_layout:
            if name == "goal_lidar":
                self.cols, self.bins = slice(start, start + width), width
            start += width

    def reset(self, env_ids=None):
        pass

    def act(self, obs):
        obs = np.asarray(obs, np.float32)
        k = obs[:, self.cols].argmax(axis=1)
        bearing = (k + 0.5) * 2 * np.pi / self.bins
        bearing = np.where(bearing > np.pi, bearing - 2 * np.pi, bearing)
        ahead = np.clip(np.cos(bearing), 0.0, 1.0)
        return np.stack([ahead, np.clip(2.0 * bearing, -1, 1)], axis=1).astype(np.float32)
