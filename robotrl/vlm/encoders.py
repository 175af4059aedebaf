"""CLIP image and text encoders loaded from local weight files through open_clip.

Nothing is downloaded: ``weights`` is a checkpoint file for an open_clip model name
(``.safetensors`` preferred; other files go through ``torch.load(weights_only=True)``,
which refuses to unpickle arbitrary objects), or a folder written by
``robotrl vlm finetune`` (open_clip's ``local-dir:`` layout plus ``vlm.yaml``).

Frames are preprocessed in torch as one batch (resize of the shorter side, centre
crop, the model's mean/std), so scoring a rollout costs no per-frame PIL work.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
TINY = "robotrl-tiny"
# The finetune folder's files; open_clip finds the weights by this name in local-dir mode.
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
META_FILE = "vlm.yaml"


def _open_clip():
    """open_clip, imported so that it cannot crash the process.

    open_clip imports torchvision, which imports triton; triton's library carries
    its own LLVM, and loading it after Mesa's software OpenGL (llvmpipe, whose
    libLLVM comes in with the first EGL/OSMesa context) crashes the process in
    LLVM's static initializers. Imported before any rendering, all is well; after,
    triton is hidden from torch, which only costs torch.compile's GPU kernels,
    and a machine rendering with llvmpipe runs this model on the CPU anyway.
    """
    if "open_clip" not in sys.modules and "triton" not in sys.modules:
        try:
            mesa_llvm = "libLLVM" in Path("/proc/self/maps").read_text()
        except OSError:  # not Linux
            mesa_llvm = False
        if mesa_llvm:
            logging.getLogger(__name__).warning(
                "software OpenGL (Mesa's LLVM) is loaded before open_clip: torch runs without triton here")
            sys.modules["triton"] = None  # `import triton` now raises ImportError, which torch handles
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(
            f"VLM rewards need open_clip ({e}): pip install 'robotrl[vlm]' with a torchvision that matches "
            "your torch (e.g. torch==2.14.1 torchvision==0.29.1)"
        ) from e
    return open_clip


def register_model_configs() -> None:
    """Make robotrl's architectures (``robotrl-tiny``) known to open_clip by name."""
    open_clip = _open_clip()
    if TINY not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS)


def _missing_weights(model: str | None, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"VLM weights {path} not found (nothing is downloaded). Give weights= a local open_clip "
        f"checkpoint for model {model or TINY!r} (.safetensors, or a torch state dict), or make a "
        f"small model for a task with `robotrl vlm finetune task=cartpole_swingup out=DIR` and "
        f"pass weights=DIR")


def _resolve(model: str | None, weights: str | Path) -> tuple[str, str | None]:
    """The open_clip model name and ``pretrained`` argument for a weights file or folder."""
    open_clip = _open_clip()

    path = Path(weights).expanduser().resolve()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() or not (path / META_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a `robotrl vlm finetune` folder (it needs {CONFIG_FILE}, {WEIGHTS_FILE} "
                f"and {META_FILE}); give a weights file or such a folder")
        if not (path / WEIGHTS_FILE).is_file():
            raise _missing_weights(model, path / WEIGHTS_FILE)
        trained = yaml.safe_load((path / META_FILE).read_text()).get("model")
        if model is not None and model != trained:
            raise ValueError(f"{path} holds a fine-tuned {trained!r} model, not {model!r}; "
                             f"set model={trained} (or leave it unset)")
        # The folder's own config fixes the architecture, so a renamed or edited
        # built-in config cannot silently change what the weights mean.
        return f"local-dir:{path}", None
    if model is None:
        raise ValueError(f"which open_clip model do the weights {path} belong to? set model=NAME")
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; e.g. {TINY}, ViT-B-32 "
                         f"(open_clip.list_models() lists them all)")
    if not path.is_file():
        raise _missing_weights(model, path)
    return model, str(path)


def _mismatch(model_name: str, weights: str) -> str:
    """Which keys and shapes of a checkpoint disagree with the architecture."""
    open_clip = _open_clip()
    from open_clip.factory import load_state_dict

    want = open_clip.create_model(model_name, pretrained=None).state_dict()
    have = load_state_dict(weights, weights_only=True)

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    lines = []
    if missing := sorted(set(want) - set(have)):
        lines.append(f"missing {len(missing)} keys: {listed(missing)}")
    if unexpected := sorted(set(have) - set(want)):
        lines.append(f"unexpected {len(unexpected)} keys: {listed(unexpected)}")
    if shapes := [f"{k} {tuple(have[k].shape)} (model {tuple(want[k].shape)})"
                  for k in sorted(set(want) & set(have)) if have[k].shape != want[k].shape]:
        lines.append(f"{len(shapes)} shape mismatches: {listed(shapes)}")
    return "; ".join(lines)


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_clip(model: str | None, weights: str | Path | None, device: str | torch.device = "cpu"):
    """An open_clip model (eval mode) and its tokenizer. ``weights=None`` gives a
    randomly initialized ``model`` (to train from scratch)."""
    from safetensors import SafetensorError

    register_model_configs()
    open_clip = _open_clip()
    if weights is None:
        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}; e.g. {TINY}, ViT-B-32")
        name, pretrained = model, None
    else:
        name, pretrained = _resolve(model, weights)
    try:
        if pretrained is None:
            # open_clip warns "Model initialized randomly" on the root logger; from
            # scratch is what was asked for here.
            with _quiet_root_logger():
                clip = open_clip.create_model(name, pretrained=None, device=device, weights_only=True)
        else:
            clip = open_clip.create_model(name, pretrained=pretrained, device=device, weights_only=True)
    except (RuntimeError, AssertionError) as e:
        # open_clip fails on a foreign checkpoint either in its positional-embedding
        # resizing (an assert) or in the strict load; both read as "wrong model".
        if isinstance(e, RuntimeError) and "Error(s) in loading state_dict" not in str(e):
            raise
        detail = _mismatch(name, pretrained) or str(e)
        raise ValueError(f"the weights {weights} do not fit model {name!r}: {detail}") from None
    except (pickle.UnpicklingError, SafetensorError, EOFError) as e:
        raise ValueError(f"cannot read VLM weights {weights} as a weights-only checkpoint: {e}") from None
    return clip.eval(), open_clip.get_tokenizer(name)


def preprocess_frames(frames, preprocess_cfg: dict, device: torch.device) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) -> the float batch (B, 3, S, S) the image tower reads,
    as open_clip's eval transform does (shorter side resized, centre crop, mean/std)."""
    if not isinstance(frames, (np.ndarray, torch.Tensor)) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be an array (B, H, W, 3), got {getattr(frames, 'shape', type(frames))}")
    if frames.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    x = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float().div_(255.0)
    size = preprocess_cfg["size"]
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    h, w = x.shape[-2:]
    if (h, w) != (out_h, out_w):
        scale = max(out_h / h, out_w / w)
        new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
        mode = "bilinear" if preprocess_cfg.get("interpolation") == "bilinear" else "bicubic"
        x = F.interpolate(x, (new_h, new_w), mode=mode, antialias=True, align_corners=False).clamp_(0, 1)
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        x = x[..., top:top + out_h, left:left + out_w]
    mean = torch.tensor(preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def check_prompts(prompts, what: str = "prompts") -> list[str]:
    """A non-empty list of non-empty strings (a single string is a list of one)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise ValueError(f"{what}: give at least one text prompt")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{what}: every prompt must be a non-empty string, got {p!r}")
    return prompts


class ClipEncoder:
    """L2-normalized CLIP embeddings of frames and prompts, from local weights."""

    def __init__(self, model: str | None, weights: str | Path, device: str | torch.device = "cpu"):
        if weights is None:
            raise _missing_weights(model, Path("(none given)"))
        self.device = torch.device(device)
        self.model, self.tokenizer = build_clip(model, weights, self.device)
        self.preprocess_cfg = dict(self.model.visual.preprocess_cfg)
        self.dim = int(self.model.visual.output_dim)
        # Prompts are few and fixed for a run: each is encoded once.
        self._text: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def encode_images(self, frames) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> unit-norm embeddings (B, D)."""
        x = preprocess_frames(frames, self.preprocess_cfg, self.device)
        if len(x) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        return self.model.encode_image(x, normalize=True).float()

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> unit-norm embeddings (P, D), each prompt encoded once per encoder."""
        prompts = check_prompts(prompts)
        new = list(dict.fromkeys(p for p in prompts if p not in self._text))
        if new:
            tokens = self.tokenizer(new).to(self.device)
            for p, e in zip(new, self.model.encode_text(tokens, normalize=True).float()):
                self._text[p] = e
        return torch.stack([self._text[p] for p in prompts])
