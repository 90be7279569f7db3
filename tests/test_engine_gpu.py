"""The engine's GPU path: on-device probabilities, torch.compile, channels_last and bf16 on CUDA.

The CPU tests run everywhere; the CUDA ones only where a GPU is visible
(``benchmarks/gpu.sh`` runs them on one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.model.engine import Engine, EngineSpec, cached_engine

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "dubai-demo"
DEMO_IMAGE = REPO / "demo" / "dubai_tile3_part009.tif"

NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU on this machine: the CUDA path (bf16 autocast, channels_last, "
    "on-device probabilities) runs only with one",
)


def _batch(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 3, size, size)) * 255).astype(np.float32)


def test_compile_defaults_to_off_and_specs_stay_hashable(ckpt):
    spec = EngineSpec(str(ckpt), "cpu", "fp32", "none", 1)  # positional, as before
    assert spec.compile is False
    assert spec == EngineSpec(str(ckpt), "cpu", "fp32", "none", 1, False)
    assert hash(spec) == hash(EngineSpec(str(ckpt), "cpu", "fp32", "none", 1))
    assert spec != EngineSpec(str(ckpt), "cpu", "fp32", "none", 1, compile=True)
    engine = cached_engine(spec)
    assert engine is cached_engine(EngineSpec(str(ckpt), "cpu", "fp32", "none", 1))
    assert engine.compile is False
    assert engine.model.training is False


def test_cpu_keeps_the_contiguous_memory_format(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cpu")
    weights = [p for p in engine.model.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous() for p in weights)


@pytest.mark.parametrize(("tta", "size"), [("none", 64), ("flip", 50), ("d4", 40)])
def test_device_probabilities_on_cpu_equal_predict_proba(ckpt, tta, size):
    engine = Engine.from_checkpoint(ckpt, device="cpu", tta=tta)
    x = _batch(size=size)
    on_device = engine.predict_proba_device(x)
    assert isinstance(on_device, torch.Tensor)
    assert on_device.device.type == "cpu" and on_device.dtype == torch.float32
    assert tuple(on_device.shape) == (2, 4, size, size)  # cropped back from the stride
    probs = engine.predict_proba(x)
    assert isinstance(probs, np.ndarray) and probs.dtype == np.float32
    np.testing.assert_array_equal(on_device.numpy(), probs)


@pytest.mark.slow  # inductor's first compile on the CPU: about 40 s (4 s with its cache)
def test_compile_on_cpu_matches_or_is_refused_in_one_line(ckpt):
    x = _batch()
    plain = Engine.from_checkpoint(ckpt, device="cpu").predict_proba(x)
    compiled = Engine.from_checkpoint(ckpt, device="cpu", compile=True)
    assert compiled.compile is True
    try:
        probs = compiled.predict_proba(x)
    except ConfigError as e:  # no working compiler here
        msg = str(e)
        assert "\n" not in msg and "drop --compile" in msg
        assert e.option == "compile"
        return
    np.testing.assert_allclose(probs, plain, atol=1e-4)
    np.testing.assert_allclose(compiled.predict_proba(x), plain, atol=1e-4)  # compiled once


class _CompilerFailed(RuntimeError):
    """Like dynamo's BackendCompilerFailed: the compiler's own error as ``inner_exception``."""

    def __init__(self, inner: Exception) -> None:
        super().__init__("backend='inductor' raised:\n" + str(inner))
        self.inner_exception = inner


def test_a_compiler_failure_is_a_config_error(ckpt, monkeypatch):
    def broken(model, **kw):
        def call(inp):
            raise _CompilerFailed(RuntimeError("Compiler: cc is not found\nmore detail"))

        return call

    monkeypatch.setattr(torch, "compile", broken)
    engine = Engine.from_checkpoint(ckpt, device="cpu", compile=True)
    with pytest.raises(ConfigError, match="drop --compile") as info:
        engine.predict_proba(_batch())
    assert "cc is not found" in str(info.value) and "\n" not in str(info.value)


def test_torch_compile_refused_at_wrapping_is_a_config_error(ckpt, monkeypatch):
    def refused(model, **kw):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refused)
    engine = Engine.from_checkpoint(ckpt, device="cpu", compile=True)
    with pytest.raises(ConfigError, match="Dynamo is not supported.*drop --compile"):
        engine.predict_proba(_batch())


@NO_CUDA
def test_cuda_defaults_to_bf16_and_channels_last(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cuda")
    assert engine.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    weights = [p for p in engine.model.parameters() if p.ndim == 4]
    assert weights
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(p.device.type == "cuda" for p in engine.model.parameters())


@NO_CUDA
def test_cuda_probabilities_stay_on_the_gpu(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cuda", tta="flip")
    x = _batch(size=50)
    probs = engine.predict_proba_device(x)
    assert probs.device.type == "cuda" and probs.dtype == torch.float32
    assert tuple(probs.shape) == (2, 4, 50, 50)
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-4, rtol=0)
    host = engine.predict_proba(x)
    np.testing.assert_allclose(probs.cpu().numpy(), host, atol=1e-3)  # cuDNN may vary


@NO_CUDA
def test_cpu_and_cuda_class_maps_agree():
    # the trained demo model on its own imagery: a random model's near-ties would flip under
    # bf16 (fp32 vs bf16 on the CPU: 99.9% here, 99.1% for the tiny random checkpoint)
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    if not (DEMO_MODEL.is_dir() and DEMO_IMAGE.exists()):
        pytest.skip("the demo model or image is absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(DEMO_IMAGE) as ds:
            img = ds.read(window=((0, 512), (0, 512))).astype(np.float32)
    x = np.stack([img[:, r : r + 256, c : c + 256] for r in (0, 256) for c in (0, 256)])
    cpu = Engine.from_checkpoint(DEMO_MODEL, device="cpu").predict_proba(x).argmax(1)
    gpu = Engine.from_checkpoint(DEMO_MODEL, device="cuda").predict_proba(x).argmax(1)
    assert (cpu == gpu).mean() >= 0.99
