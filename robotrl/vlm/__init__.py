"""Rewards from language: a vision-language model scores rendered frames.

- :mod:`~robotrl.vlm.encoders`: CLIP image/text embeddings from local weights (open_clip).
- :mod:`~robotrl.vlm.rewards`: the reward formulas (VLM-RL contrasting goal, VLM-RMs
  goal-baseline, cosine) as pure functions, and :class:`~robotrl.vlm.rewards.VlmReward`.
- :mod:`~robotrl.vlm.captions`: captions of a task's frames from its state.
- :mod:`~robotrl.vlm.finetune`: ``robotrl vlm finetune``, a small CLIP trained on a task's renders.

Nothing is imported here: open_clip is heavy, and must be imported before the first
software-OpenGL context (see :func:`robotrl.vlm.encoders._open_clip`).
"""
