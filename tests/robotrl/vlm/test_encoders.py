"""ClipEncoder: local weights only, batched preprocessing, cached prompts, clear errors."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from robotrl.vlm.encoders import ClipEncoder, build_clip, register_model_configs


def random_weights(path, model="robotrl-tiny", seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip, _ = build_clip(model, None)
    save_file(clip.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_weights(tmp_path_factory.mktemp("vlm") / "tiny.safetensors")


@pytest.fixture(scope="module")
def encoder(weights):
    return ClipEncoder("robotrl-tiny", weights)


def frames(n, h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_image_embeddings_are_unit_norm_and_batch_independent(encoder):
    f = frames(5)
    x = encoder.encode_images(f)
    assert x.shape == (5, encoder.dim)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(5))
    one_by_one = torch.cat([encoder.encode_images(f[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(x, one_by_one, atol=1e-5, rtol=1e-5)
    # Other frame sizes are resized (shorter side) and centre-cropped in torch.
    assert encoder.encode_images(frames(2, 48, 80)).shape == (2, encoder.dim)
    assert encoder.encode_images(frames(0)).shape == (0, encoder.dim)


def test_text_is_encoded_once_per_prompt(encoder):
    a = encoder.encode_text(["a pole standing upright", "a pole hanging down", "a pole standing upright"])
    assert a.shape == (3, encoder.dim)
    torch.testing.assert_close(a[0], a[2])
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    cached = dict(encoder._text)
    b = encoder.encode_text(["a pole hanging down"])
    assert encoder._text.keys() == cached.keys()  # nothing new was encoded ...
    assert all(encoder._text[p] is cached[p] for p in cached)  # ... nor encoded again
    torch.testing.assert_close(b[0], a[1])


def test_weights_load_the_same_from_torch_state_dicts(encoder, tmp_path):
    clip, _ = build_clip("robotrl-tiny", None)
    clip.load_state_dict(encoder.model.state_dict())
    torch.save(clip.state_dict(), tmp_path / "tiny.pt")
    other = ClipEncoder("robotrl-tiny", tmp_path / "tiny.pt")
    torch.testing.assert_close(other.encode_images(frames(2)), encoder.encode_images(frames(2)))


@pytest.mark.parametrize("prompts", [[], [""], ["ok", "  "], None])
def test_empty_prompts(encoder, prompts):
    with pytest.raises(ValueError, match="prompt"):
        encoder.encode_text(prompts)


@pytest.mark.parametrize("bad", [np.zeros((2, 64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8),
                                 np.zeros((2, 64, 64, 4), np.uint8)])
def test_bad_frames(encoder, bad):
    with pytest.raises(ValueError, match="frames"):
        encoder.encode_images(bad)


def test_missing_weights_say_how_to_get_some(tmp_path):
    with pytest.raises(FileNotFoundError, match="robotrl vlm finetune") as info:
        ClipEncoder("robotrl-tiny", tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(info.value)
    with pytest.raises(FileNotFoundError, match="robotrl vlm finetune"):
        ClipEncoder("robotrl-tiny", None)


def test_weights_of_another_architecture(tmp_path):
    import open_clip

    # A narrower sibling of robotrl-tiny, registered with open_clip like any model config.
    register_model_configs()
    cfg = open_clip.get_model_config("robotrl-tiny")
    cfg["text_cfg"]["width"] = 32
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "robotrl-test-narrow.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "configs")
    path = random_weights(tmp_path / "narrow.safetensors", "robotrl-test-narrow")
    with pytest.raises(ValueError, match="do not fit model 'robotrl-tiny'") as info:
        ClipEncoder("robotrl-tiny", path)
    assert "token_embedding.weight (49408, 32) (model (49408, 64))" in str(info.value)


def test_unknown_model_and_unsafe_checkpoints(weights, tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'robotrl-huge'"):
        ClipEncoder("robotrl-huge", weights)
    # A pickle that would run code on load is refused, not executed.
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": np.random.default_rng}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights-only"):
        ClipEncoder("robotrl-tiny", tmp_path / "evil.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_encoder_on_cuda(weights):
    enc = ClipEncoder("robotrl-tiny", weights, device="cuda")
    assert enc.encode_images(frames(2)).device.type == "cuda"
    assert enc.encode_text(["a pole"]).device.type == "cuda"
