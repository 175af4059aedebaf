"""``robotrl vlm finetune``: train a small CLIP on a task's own renders and captions.

A CLIP trained on photographs knows little about flat-shaded MuJoCo renders; a
small one trained here on the task's frames, captioned from the state, gives
rewards that follow the state on a CPU. States are sampled over the whole space a
policy will visit (every pole angle, most of the rail), rendered with the task's
camera, captioned (:mod:`robotrl.vlm.captions`) and learnt with the CLIP loss:
each image classifies the batch's captions through the text tower, and each
caption classifies the batch's images (those of its class are its positives).

The output folder is open_clip's ``local-dir:`` layout (``open_clip_config.json``
and ``open_clip_model.safetensors``) plus ``vlm.yaml`` (model, captions, render
camera, training statistics, held-out accuracy, the reward check) and
``summary.json``; :class:`~robotrl.vlm.encoders.ClipEncoder` loads it by path. It is
written into a temporary folder beside ``out`` and renamed into place at the end,
so a crash leaves nothing half-written.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from robotrl.vlm.captions import CaptionSpec, caption_spec
from robotrl.vlm.encoders import (CONFIG_FILE, META_FILE, TINY, WEIGHTS_FILE, ClipEncoder, build_clip,
                                  preprocess_frames, register_model_configs)
from robotrl.vlm.rewards import contrasting_goal, cosine, goal_baseline


@dataclass
class FinetuneConfig:
    task: str
    out: str
    task_config: dict | None = None  # overrides of the task's default_config() (e.g. its render camera)
    base_model: str = TINY
    base_weights: str | None = None  # null: train base_model from scratch
    frames: int = 3000  # rendered states; ``holdout`` of them are kept for the accuracy
    holdout: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3  # from scratch; fine-tuning a large pretrained CLIP wants ~1e-5
    weight_decay: float = 0.05
    check_states: int = 512  # fresh random states for the reward check
    seed: int = 0
    # CPU threads for training; null keeps torch's. Sums split over another thread count
    # round differently, so the same seed gives other weights: fix it to repeat a run.
    torch_threads: int | None = None
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False

    @classmethod
    def from_dict(cls, cfg: dict) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise KeyError(f"unknown vlm finetune keys {unknown}; known: {sorted(known)}")
        out = cls(**cfg)
        # "???" is Hydra's unset mandatory value, which composing leaves in place.
        if not out.task or not out.out or out.out == "???":
            raise ValueError("give task=NAME and out=DIR")
        if not 0.0 < out.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {out.holdout}")
        if out.torch_threads is not None and out.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or null, got {out.torch_threads}")
        if out.frames < 10 or out.epochs < 1 or out.batch_size < 2:
            raise ValueError(f"need frames >= 10, epochs >= 1, batch_size >= 2 (got {out.frames}, "
                             f"{out.epochs}, {out.batch_size})")
        return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation, ties given their mean rank."""
    def ranks(x):
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
        return mean_rank[inverse]

    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def render_dataset(task, spec: CaptionSpec, n: int, rng: np.random.Generator, progress: bool = False):
    """Sampled states (n, nq) and their frames (n, H, W, 3) uint8."""
    from robotrl.sim.render import BatchRenderer, render_config

    qpos = spec.sample(task, rng, n)
    renderer = BatchRenderer(task.model, render_config(task))
    try:
        step = renderer.max_batch * 4
        frames = np.concatenate([renderer.render(qpos[i:i + step])
                                 for i in tqdm(range(0, n, step), desc="render", disable=not progress)])
    finally:
        renderer.close()
    return qpos, frames


def clip_loss(image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Both directions of the CLIP loss with one text per class and soft labels
    ``targets`` (B, C): each image classifies the captions, and each caption
    classifies the batch's images, its target spread over them by their labels."""
    logits = scale * image @ text.T  # (B, C)
    to_text = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    per_caption = targets.T / targets.T.sum(1, keepdim=True).clamp_min(1e-12)  # (C, B)
    to_image = -(per_caption * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (to_text + to_image) / 2


def train_clip(model, tokenizer, frames, targets, classes, cfg: FinetuneConfig, rng: np.random.Generator) -> dict:
    device = torch.device(cfg.device)
    pp = dict(model.visual.preprocess_cfg)
    # Each step shows one random phrasing of every class, so all phrasings get learnt.
    phrasings = [p for c in classes for p in c]
    first = np.cumsum([0] + [len(c) for c in classes])[:-1]
    tokens = tokenizer(phrasings).to(device)
    targets_t = torch.as_tensor(targets, dtype=torch.float32, device=device)
    steps_per_epoch = math.ceil(len(frames) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    bar = tqdm(total=total, desc="train", disable=not cfg.progress)
    loss_sum = correct = seen = 0.0
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(frames))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            pick = first + rng.integers(0, [len(c) for c in classes])
            image = model.encode_image(preprocess_frames(frames[idx], pp, device), normalize=True)
            text = model.encode_text(tokens[pick], normalize=True)
            y = targets_t[idx]
            loss = clip_loss(image, text, y, model.logit_scale.exp().clamp(max=100))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_value = loss.item()
            if epoch == cfg.epochs - 1:  # statistics of the last epoch
                loss_sum += loss_value * len(idx)
                correct += float(((image @ text.T).argmax(1) == y.argmax(1)).sum())
                seen += len(idx)
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss_value:.3f}")
    bar.close()
    model.eval()
    return {"steps": total, "final_loss": round(loss_sum / seen, 4), "final_train_accuracy": round(correct / seen, 4)}


def caption_accuracy(encoder: ClipEncoder, frames, labels, classes) -> float:
    """Share of frames whose closest canonical caption is their own class's."""
    image = torch.cat([encoder.encode_images(frames[i:i + 256]) for i in range(0, len(frames), 256)])
    text = encoder.encode_text([c[0] for c in classes])
    return float(((image @ text.T).argmax(1).cpu().numpy() == labels).mean())


def reward_check(encoder: ClipEncoder, spec: CaptionSpec, qpos, frames) -> dict:
    """Spearman correlation of each reward kind, with the spec's goal and negative
    captions, against the state quantity the goal stands for (e.g. cos(pole angle))."""
    x = torch.cat([encoder.encode_images(frames[i:i + 256]) for i in range(0, len(frames), 256)])
    pos, neg = encoder.encode_text([spec.goal]), encoder.encode_text([spec.negative])
    truth = -spec.coordinate(qpos)  # ranks as cos(pole angle) does for the poles
    z = (x @ neg.T - x @ pos.T)[:, 0].cpu().numpy()
    scores = {
        "contrast": -z,  # cos(x, goal) - cos(x, negative), before the clip
        "cosine": cosine(x, pos),
        "goal_baseline_alpha0.5": goal_baseline(x, pos, neg, 0.5),
        "goal_baseline_alpha1": goal_baseline(x, pos, neg, 1.0),
        "contrasting_delta0.03": contrasting_goal(x, pos, neg, 0.03),
    }
    # A delta matched to this model's spread of z: the contrasting reward then
    # falls gradually over the swing instead of being nearly a step.
    delta = max(float(np.quantile(z, 0.95) - np.quantile(z, 0.05)), 1e-3)
    scores[f"contrasting_delta{delta:.3g}"] = contrasting_goal(x, pos, neg, delta)
    out = {"states": len(qpos), "goal": spec.goal, "negative": spec.negative, "suggested_delta": round(delta, 3),
           "spearman": {k: round(spearman(np.asarray(v.cpu() if torch.is_tensor(v) else v), truth), 4)
                        for k, v in scores.items()}}
    return out


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; choose another out= or pass overwrite=true")
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def finetune(cfg: FinetuneConfig) -> dict:
    from safetensors.torch import save_file

    from robotrl.sim import make_task
    from robotrl.sim.render import render_config

    out = Path(cfg.out).expanduser().resolve()
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; choose another out= or pass overwrite=true")
    spec = caption_spec(cfg.task)
    register_model_configs()  # open_clip before the first GL context (see encoders._open_clip)
    task = make_task(cfg.task, cfg.task_config)
    rng = np.random.default_rng(cfg.seed)
    started = time.perf_counter()
    qpos, frames = render_dataset(task, spec, cfg.frames + cfg.check_states, rng, cfg.progress)
    labels = spec.label(qpos)
    n_hold = max(1, int(round(cfg.frames * cfg.holdout)))
    n_train = cfg.frames - n_hold
    train, hold, check = slice(0, n_train), slice(n_train, cfg.frames), slice(cfg.frames, None)
    render_s = time.perf_counter() - started

    # fork_rng: a fixed seed for the initial weights without moving the caller's RNG.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cfg.torch_threads or threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model, tokenizer = build_clip(cfg.base_model, cfg.base_weights, cfg.device)
            stats = train_clip(model, tokenizer, frames[train], spec.targets(qpos[train]), spec.classes, cfg, rng)
    finally:
        torch.set_num_threads(threads)
    stats["seconds"] = round(time.perf_counter() - started - render_s, 2)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        model_cfg = _model_config(cfg)
        (tmp / CONFIG_FILE).write_text(json.dumps(
            {"model_cfg": model_cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg)}, indent=2, default=list))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        # safetensors writes owner-only files; give the weights the config's (umask) mode.
        os.chmod(tmp / WEIGHTS_FILE, (tmp / CONFIG_FILE).stat().st_mode)
        meta = {
            "model": cfg.base_model,
            "model_cfg": model_cfg,
            "weights": WEIGHTS_FILE,
            "base_weights": cfg.base_weights,
            "task": cfg.task,
            "render": asdict(render_config(task)),
            "captions": [list(c) for c in spec.classes],
            "caption_centers": list(spec.centers),  # on the spec's state coordinate (e.g. degrees of tilt)
            "caption_width": spec.width,
            "goal": spec.goal,
            "negative": spec.negative,
        }
        (tmp / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        # Measured with the written folder, so the numbers are those of what loads back.
        encoder = ClipEncoder(cfg.base_model, tmp, cfg.device)
        counts = np.bincount(labels[hold], minlength=len(spec.classes))
        evaluation = {
            "holdout_frames": int(n_hold),
            "holdout_accuracy": round(caption_accuracy(encoder, frames[hold], labels[hold], spec.classes), 4),
            "chance": round(float(counts.max() / counts.sum()), 4),  # always guessing the commonest class
            "reward_check": reward_check(encoder, spec, qpos[check], frames[check]),
        }
        training = {**{k: getattr(cfg, k) for k in ("frames", "holdout", "epochs", "batch_size", "lr",
                                                     "weight_decay", "seed", "torch_threads")},
                    "render_seconds": round(render_s, 2), **stats}
        meta.update(training=training, evaluation=evaluation)
        (tmp / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        summary = {"out": str(out), "task": cfg.task, "model": cfg.base_model, **evaluation, "training": training}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        _publish(tmp, out, cfg.overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _model_config(cfg: FinetuneConfig) -> dict:
    from open_clip import get_model_config

    if cfg.base_weights and Path(cfg.base_weights).is_dir():
        return json.loads((Path(cfg.base_weights) / CONFIG_FILE).read_text())["model_cfg"]
    return get_model_config(cfg.base_model)


def format_summary(s: dict) -> str:
    rc = s["reward_check"]
    lines = [f"fine-tuned {s['model']} on {s['task']} -> {s['out']}",
             f"  held-out caption accuracy {s['holdout_accuracy']:.3f} (chance {s['chance']:.3f}, "
             f"{s['holdout_frames']} frames); training {s['training']['seconds']:.1f} s",
             f"  reward vs the state ({rc['states']} random states; goal {rc['goal']!r}, "
             f"negative {rc['negative']!r}), Spearman:"]
    lines += [f"    {k:28s} {v:+.3f}" for k, v in rc["spearman"].items()]
    return "\n".join(lines)


def finetune_cmd(cfg: dict) -> dict:
    """``robotrl vlm finetune``, from the composed ``vlm_finetune.yaml``."""
    cfg = dict(cfg)
    task = cfg.pop("task", None) or {}
    cfg.pop("sim", None)
    if not task.get("name"):
        raise ValueError("which task? give task=NAME")
    summary = finetune(FinetuneConfig.from_dict({**cfg, "task": task["name"], "task_config": task.get("config") or None}))
    print(format_summary(summary))
    return summary
