"""A background thread that scores frames in batches while simulation goes on.

Rendering stays on the caller's thread (an EGL context belongs to the thread that
made it current); the worker only encodes and scores, which in torch releases the
GIL, so a 2-core machine overlaps physics with the VLM. Every submission carries a
key, and results come back under that key, in submission order, so a reward is
always matched with the env step and frames it was computed from.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Hashable

import numpy as np


class ScoringWorker:
    def __init__(self, score: Callable[[np.ndarray], np.ndarray], max_pending: int = 64):
        self._score = score
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._done: dict[Hashable, np.ndarray] = {}
        self._order: list[Hashable] = []
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vlm-scoring", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, frames = job
            try:
                scores = np.asarray(self._score(frames), dtype=np.float32)
                if scores.shape != (len(frames),):
                    raise ValueError(f"the scorer returned shape {scores.shape} for {len(frames)} frames")
            except BaseException as e:  # handed to the caller on its next call
                with self._cond:
                    self._error = e
                    self._cond.notify_all()
                return
            with self._cond:
                self._done[key] = scores
                self._cond.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the VLM scoring worker failed: {self._error!r}") from self._error
        if self._closed:
            raise RuntimeError("the VLM scoring worker is closed")

    def submit(self, key: Hashable, frames: np.ndarray) -> None:
        """Queue ``frames`` (B, H, W, 3) for scoring; blocks only when ``max_pending``
        batches are already waiting, which bounds memory when the VLM falls behind."""
        self._check()
        with self._cond:
            if key in self._done or key in self._order:
                raise KeyError(f"key {key!r} was already submitted")
            self._order.append(key)
        self._jobs.put((key, frames))

    def ready(self) -> list[tuple[Hashable, np.ndarray]]:
        """The results finished so far (oldest first), without waiting."""
        with self._cond:
            self._check()
            out = []
            while self._order and self._order[0] in self._done:
                key = self._order.pop(0)
                out.append((key, self._done.pop(key)))
            return out

    def wait(self, key: Hashable, timeout: float | None = None) -> np.ndarray:
        """The scores of ``key``, waiting for them if needed."""
        with self._cond:
            if key not in self._order:
                raise KeyError(f"key {key!r} was never submitted or was already taken")
            ok = self._cond.wait_for(lambda: key in self._done or self._error is not None, timeout)
            self._check()
            if not ok:
                raise TimeoutError(f"no VLM scores for {key!r} within {timeout} s")
            self._order.remove(key)
            return self._done.pop(key)

    def wait_all(self, timeout: float | None = None) -> list[tuple[Hashable, np.ndarray]]:
        """Every outstanding result, in submission order."""
        with self._cond:
            keys = list(self._order)
        return [(k, self.wait(k, timeout)) for k in keys]

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._order)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def __enter__(self) -> "ScoringWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
