"""Shared plumbing of the benchmark scripts: arguments, the table, the JSON."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--quick", action="store_true", help="reduced size (what CI runs as a smoke test)")
    return p


def default_device() -> str:
    """"cuda" when torch or JAX sees a GPU, else "cpu" (the benchmarks' --device default)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    try:
        import jax

        return "cuda" if jax.devices()[0].platform == "gpu" else "cpu"
    except Exception:  # JAX absent, or no backend it can start
        return "cpu"


def pin_jax_platform(device: str) -> None:
    """Keep JAX off a GPU it would otherwise pick by default when the run is asked
    for the CPU (Brax's trainer takes its devices from JAX's default backend).
    Effective only before JAX starts a backend, so call it before any JAX work."""
    if str(device).split(":")[0] == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def machine() -> dict:
    import mujoco
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """``columns``: (key, header). Numbers print with thousands separators."""

    def fmt(v):
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def write_json(path: Path | None, name: str, rows: list[dict], **extra) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "rows": rows, **extra}, indent=2))
    print(f"wrote {path}")
