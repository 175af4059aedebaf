"""The networks' own ELU: torch's values and gradients, and torch's op in the exported ONNX."""
import numpy as np
import onnx
import pytest
import torch

from robotrl.policies.networks import ELU, mlp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elu_matches_torch(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4096, generator=g, dtype=dtype) * 3,
                   torch.tensor([0.0, -0.0, 1e-9, -1e-9, -80.0, 80.0, -1e30, 1e30], dtype=dtype)])
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ELU()(a), torch.nn.functional.elu(b)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ya, yb, atol=tol, rtol=tol)
    w = torch.randn(x.shape, generator=g, dtype=dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=tol, rtol=tol)


def test_elu_gradcheck():
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ELU(), (x,))


def test_elu_exports_as_onnx_elu(tmp_path):
    from robotrl.policies.artifact import export_onnx

    net = mlp(5, [16, 16], 2, "elu").eval()
    path = tmp_path / "p.onnx"
    export_onnx(net, 5, path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Elu" in ops and "Exp" not in ops
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    out = ort.InferenceSession(str(path)).run(None, {"obs": x})[0]
    np.testing.assert_allclose(out, net(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
