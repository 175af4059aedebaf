import os

# Tests share 2 cores between MuJoCo's threads and torch; keep torch from
# oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# mujoco picks its GL backend when it is imported; with no display, tests that use
# mujoco.Renderer itself (as a reference) need EGL, which robotrl's renderer picks
# on its own.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
