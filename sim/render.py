"""Batched offscreen rendering of task states, for VLM rewards and evaluation videos.

One frame costs ~27 ms with ``mujoco.Renderer``'s defaults on a CPU (llvmpipe),
mostly the 4096^2 shadow map, at any resolution. :class:`BatchRenderer` turns off
shadows, reflections and the skybox, and draws a whole batch as tiles of one
offscreen buffer (one ``mjr_render`` per tile into its own viewport) that it reads
back with a single ``mjr_readPixels``: ~1 ms per 64x64 cart-pole frame at batch 64.
Large floor planes cost more (MuJoCo draws a plane as up to 200x200 quads for its
per-vertex lighting; the third size of a finite plane sets their spacing).

Each frame needs only the pose: ``mj_kinematics`` (plus ``mj_comPos`` where a camera
or light tracks a centre of mass) and ``mj_camlight`` on a private ``MjData``, no
dynamics.

Threads: an OpenGL context is current in one thread at a time. Every ``render``
makes the renderer's context current and releases it afterwards (~5 us), so a
renderer may be called from any thread and several renderers may share a thread;
calls into one renderer are serialized by a lock.

Headless machines need ``MUJOCO_GL=egl`` (or ``osmesa``); without it and without a
``DISPLAY``, EGL is used.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import mujoco
import numpy as np

from robotrl.sim.task import SimState

MAX_SIZE = 4096  # per frame, in pixels


@dataclass(frozen=True)
class RenderConfig:
    camera: str  # camera name in the task's MJCF
    width: int
    height: int
    interval: int  # env steps between frames scored by a VLM (>= 1)


def camera_names(model: mujoco.MjModel) -> list[str]:
    return [model.camera(i).name for i in range(model.ncam) if model.camera(i).name]


def _model_name(model: mujoco.MjModel) -> str:
    return bytes(model.names).split(b"\0", 1)[0].decode()


def _camera_id(model: mujoco.MjModel, name: str, owner: str) -> int:
    cams = camera_names(model)
    if not cams:
        raise ValueError(f"{owner} has no named camera to render from; add a <camera name=...> to its MJCF")
    if name not in cams:
        raise ValueError(f"{owner} has no camera {name!r}; its cameras: {', '.join(cams)}")
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)


def render_config(task) -> RenderConfig:
    """The task's ``render`` config, checked against its model. ``camera: null``
    means the MJCF's first named camera."""
    cfg = dict(task.config.get("render") or {})
    owner = f"task {task.name} ({task.asset})"
    cams = camera_names(task.model)
    camera = cfg.get("camera") or (cams[0] if cams else "")
    _camera_id(task.model, camera, owner)
    out = RenderConfig(
        camera=camera,
        width=int(cfg.get("width", 64)),
        height=int(cfg.get("height", 64)),
        interval=int(cfg.get("interval", 1)),
    )
    for key in ("width", "height"):
        if not 1 <= getattr(out, key) <= MAX_SIZE:
            raise ValueError(f"{owner}: render.{key} must be in [1, {MAX_SIZE}], got {getattr(out, key)}")
    if out.interval < 1:
        raise ValueError(f"{owner}: render.interval must be >= 1, got {out.interval}")
    return out


def _load_triton_first() -> None:
    # torch's CUDA wheels ship triton, whose bundled LLVM segfaults when it loads
    # into a process where Mesa's llvmpipe (EGL/OSMesa on a CPU) already loaded its
    # own LLVM (torch.optim imports triton lazily, so the first optimizer built after
    # rendering crashed). Loaded the other way round, both work.
    try:
        import triton._C.libtriton  # noqa: F401
    except Exception:  # no triton (CPU wheels), or one that does not load here
        pass


def _gl_context(width: int, height: int):
    _load_triton_first()
    # MuJoCo's default on Linux (GLFW) needs a display; a headless server has EGL.
    if sys.platform.startswith("linux") and not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
        from mujoco.egl import GLContext

        return GLContext(width, height)
    return mujoco.GLContext(width, height)


class BatchRenderer:
    """Frames of many states of one model from one camera, ``max_batch`` per pass."""

    def __init__(self, model: mujoco.MjModel, cfg: RenderConfig, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not (1 <= cfg.width <= MAX_SIZE and 1 <= cfg.height <= MAX_SIZE):
            raise ValueError(f"frame size must be within {MAX_SIZE}x{MAX_SIZE}, got {cfg.width}x{cfg.height}")
        self.cfg = cfg
        self.camera_id = _camera_id(model, cfg.camera, f"model {_model_name(model)!r}")
        w, h = cfg.width, cfg.height
        self.cols = math.ceil(math.sqrt(max_batch))
        self.rows = math.ceil(max_batch / self.cols)
        self.max_batch = max_batch
        # The offscreen buffer is sized from the model: a private copy, so the
        # task's model stays as written.
        self.model = m = copy.copy(model)
        m.vis.global_.offwidth = self.cols * w
        m.vis.global_.offheight = self.rows * h
        self.data = mujoco.MjData(m)
        self._lock = threading.Lock()
        self._ctx = _gl_context(m.vis.global_.offwidth, m.vis.global_.offheight)
        with self._ctx.as_current():
            self._con = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_100)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        if (self._con.offWidth, self._con.offHeight) != (m.vis.global_.offwidth, m.vis.global_.offheight):
            self.close()
            raise ValueError(f"the GL driver cannot hold {max_batch} frames of {w}x{h}; lower max_batch")
        self._scene = mujoco.MjvScene(m, maxgeom=1000)
        rnd = mujoco.mjtRndFlag
        for flag in (rnd.mjRND_SHADOW, rnd.mjRND_REFLECTION, rnd.mjRND_SKYBOX):
            self._scene.flags[flag] = 0
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = self.camera_id
        com_modes = (mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM, mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODYCOM)
        self._needs_com = bool(np.isin(m.cam_mode, com_modes).any() or np.isin(m.light_mode, com_modes).any())

    def render(
        self,
        qpos: np.ndarray,
        mocap_pos: np.ndarray | None = None,
        mocap_quat: np.ndarray | None = None,
        site_pos: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """uint8 frames ``(B, H, W, 3)`` of ``qpos`` ``(B, nq)``. ``mocap_pos``
        ``(B, nmocap, 3)`` and ``mocap_quat`` ``(B, nmocap, 4)`` place mocap bodies;
        ``site_pos`` moves world-body sites (visual markers of task variables such
        as targets) by name to ``(B, 3)`` positions."""
        qpos = np.asarray(qpos, dtype=np.float64)
        m = self.model
        if qpos.ndim != 2 or qpos.shape[1] != m.nq:
            raise ValueError(f"qpos must have shape (B, {m.nq}), got {qpos.shape}")
        n = len(qpos)
        if mocap_pos is not None:
            mocap_pos = np.asarray(mocap_pos, np.float64).reshape(n, m.nmocap, 3)
        if mocap_quat is not None:
            mocap_quat = np.asarray(mocap_quat, np.float64).reshape(n, m.nmocap, 4)
        sites = {self._site_id(k): np.asarray(v, np.float64).reshape(n, 3) for k, v in (site_pos or {}).items()}
        out = np.empty((n, self.cfg.height, self.cfg.width, 3), dtype=np.uint8)
        d = self.data
        with self._lock, self._ctx.as_current():
            for start in range(0, n, self.max_batch):
                stop = min(start + self.max_batch, n)
                for i in range(start, stop):
                    d.qpos[:] = qpos[i]
                    if mocap_pos is not None:
                        d.mocap_pos[:] = mocap_pos[i]
                    if mocap_quat is not None:
                        d.mocap_quat[:] = mocap_quat[i]
                    self._draw(i - start, {k: v[i] for k, v in sites.items()})
                out[start:stop] = self._read(stop - start)
        return out

    def _site_id(self, name: str) -> int:
        i = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)
        if i < 0 or self.model.site_bodyid[i] != 0:
            world = [self.model.site(j).name for j in range(self.model.nsite) if self.model.site_bodyid[j] == 0]
            raise ValueError(f"no world-body site {name!r} to move; world sites: {', '.join(filter(None, world))}")
        return i

    def _draw(self, tile: int, sites: dict[int, np.ndarray]) -> None:
        """Draw the pose in ``self.data`` into a tile of the buffer."""
        m, d = self.model, self.data
        mujoco.mj_kinematics(m, d)
        if self._needs_com:
            mujoco.mj_comPos(m, d)
        mujoco.mj_camlight(m, d)
        # World-body sites keep their model position through kinematics; the
        # scene reads site_xpos, so this moves the marker.
        for i, pos in sites.items():
            d.site_xpos[i] = pos
        mujoco.mjv_updateScene(m, d, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        # Tiles fill the buffer from OpenGL's origin (bottom left), row by row, so
        # a small batch is read back as one small rectangle.
        r, c = divmod(tile, self.cols)
        w, h = self.cfg.width, self.cfg.height
        mujoco.mjr_render(mujoco.MjrRect(c * w, r * h, w, h), self._scene, self._con)

    def _read(self, count: int) -> np.ndarray:
        w, h = self.cfg.width, self.cfg.height
        cols = min(count, self.cols)
        rows = math.ceil(count / self.cols)
        buf = np.empty((rows * h, cols * w, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(buf, None, mujoco.MjrRect(0, 0, cols * w, rows * h), self._con)
        # OpenGL rows run bottom-up: flip each tile and take them in tile order.
        tiles = buf.reshape(rows, h, cols, w, 3).transpose(0, 2, 1, 3, 4)[:, :, ::-1]
        return tiles.reshape(rows * cols, h, w, 3)[:count]

    def close(self) -> None:
        con, ctx = getattr(self, "_con", None), getattr(self, "_ctx", None)
        self._con = self._ctx = None
        if con is not None:
            with ctx.as_current():
                con.free()
        if ctx is not None:
            ctx.free()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def render_states(renderer: BatchRenderer, task, state: SimState, ids=None) -> np.ndarray:
    """Frames of the envs ``ids`` (all for None) in a batch of a task's states, with
    the task's visual markers (``Task.render_state``)."""
    ids = slice(None) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    rows = SimState(
        qpos=np.asarray(state.qpos)[ids],
        qvel=np.asarray(state.qvel)[ids],
        sensordata=np.asarray(state.sensordata)[ids],
        ctrl=np.asarray(state.ctrl)[ids],
        task={k: np.asarray(v)[ids] for k, v in state.task.items()},
    )
    extra: dict[str, Any] = task.render_state(np, rows)
    return renderer.render(rows.qpos, **extra)
