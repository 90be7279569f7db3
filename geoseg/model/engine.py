"""The inference engine: normalized batches in, softmax probabilities out.

The engine owns the model, its device and precision, test-time augmentation and padding to the
model's stride. It never reads rasters and never blends: it maps a batch of windows to a batch of
probability maps, always in the same way, so a window's probabilities do not depend on which
batch or worker computed it (given the same batch).

Several threads may call one engine. On a GPU the calls run one at a time. On the CPU as many
run at once as the cores hold at torch's threads per call (``cores // threads``): with torch's
default (every core) that is one call at a time; with one thread per call (what ``geoseg
predict`` uses in-process) every core runs its own call. Independent single-threaded calls
are the faster layout on a CPU (``benchmarks/bench_predict.py`` measures both): a
multi-threaded call stalls at each OpenMP barrier whenever reads or stitching preempt one of
its threads.

On CUDA the model and its inputs use the ``channels_last`` memory format (faster convolutions
under bf16 autocast, the default precision there) and :meth:`Engine.predict_proba_device` hands
the probabilities over on the GPU. ``compile`` wraps the model with ``torch.compile`` on first
use, on any device; a compiler that fails there is a :class:`~geoseg.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import numpy as np

from geoseg.errors import ConfigError
from geoseg.model.checkpoint import ModelMeta

log = logging.getLogger("geoseg.model.engine")

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
TTA = Literal["none", "flip", "d4"]
TTA_MODES: tuple[str, ...] = get_args(TTA)


def normalize(x: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Scale raw pixel values and apply per-band normalization.

    Parameters
    ----------
    x : ndarray
        Raw values, (bands, H, W) or (batch, bands, H, W).
    meta : ModelMeta
        Supplies ``scale``, ``mean`` and ``std`` (one per band).

    Returns
    -------
    ndarray
        float32 ``(x / scale - mean) / std``; ``x / scale`` first mapped onto the training
        distribution when the checkpoint was adapted by histogram matching.
    """
    return standardize(scale_input(x, meta), meta)


def scale_input(x: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """``x / scale`` as float32, mapped onto the training distribution when hist-adapted.

    The first step of :func:`normalize`; training and adaptation change colours after it.
    """
    scaled = np.asarray(x, np.float32) / np.float32(meta.scale)
    if meta.input_quantiles is not None:  # adapted by histogram matching
        from geoseg.core.histogram import match_histograms

        scaled = match_histograms(scaled, meta.input_quantiles, meta.quantiles)
    return scaled


def standardize(scaled: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """``(scaled - mean) / std`` per band, in place: :func:`normalize` after the scaling.

    Training changes colours between the two steps (in scaled units, about 0..1).
    """
    shape = (-1, 1, 1)
    scaled -= np.asarray(meta.mean, np.float32).reshape(shape)
    scaled /= np.asarray(meta.std, np.float32).reshape(shape)
    return scaled


def resolve_device(device: str | None) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; check ``cuda`` is there."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda': no CUDA GPU is visible; use cpu or auto", option="device")
    if device not in ("cpu", "cuda"):
        raise ConfigError(
            f"device {device!r} is unknown; choose auto, cpu or cuda", option="device"
        )
    return device


def resolve_precision(precision: str | None, device: str) -> str:
    """Map ``auto`` to bf16 (or fp16) on CUDA and fp32 on the CPU; refuse fp16 on the CPU."""
    import torch

    precision = precision or "auto"
    if precision == "auto":
        if device != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device != "cuda":
        raise ConfigError(
            "precision 'fp16' needs a GPU; use fp32 (or bf16) on the CPU", option="precision"
        )
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(
            f"precision {precision!r} is unknown; choose auto, fp32, bf16 or fp16",
            option="precision",
        )
    return precision


def tta_transforms(mode: str) -> list[tuple[int, bool]]:
    """(rot90 count, horizontal flip) pairs for a TTA mode."""
    if mode == "none":
        return [(0, False)]
    if mode == "flip":
        return [(0, False), (0, True)]
    if mode == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    raise ConfigError(
        f"tta {mode!r} is unknown; choose one of {', '.join(TTA_MODES)}", option="tta"
    )


def model_stride(model) -> int:
    """Return the factor input sides must be divisible by (the encoder output stride)."""
    encoder = getattr(model, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    return int(stride) if stride else 32


def pad_amounts(size: int, multiple: int) -> int:
    """Pixels to add so that ``size`` becomes a multiple of ``multiple``."""
    return (-size) % multiple


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def kept_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit (engines with ``threads`` change it)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CallGate:
    """Admit at most ``limit()`` callers at once; the limit is read as each caller enters.

    Parameters
    ----------
    limit : callable
        Returns the number of callers allowed inside (at least 1).
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._inside = 0

    def __enter__(self) -> None:
        limit = max(1, self._limit())
        with self._cond:
            self._cond.wait_for(lambda: self._inside < limit)
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify()


class Engine:
    """Run a segmentation model on batches of windows.

    Parameters
    ----------
    model : torch.nn.Module
        An smp model; it is moved to ``device`` and put in eval mode (a copy is not made: the
        engine owns the model it is given).
    meta : ModelMeta
        Checkpoint metadata (normalization, classes).
    device, precision, tta : str
        See :func:`resolve_device`, :func:`resolve_precision`, :func:`tta_transforms`.
    threads : int, optional
        On the CPU, torch intra-op threads for each call, set in the calling thread (torch's
        thread count is per thread once set). ``None`` leaves torch's setting alone.
    compile : bool
        Run the model through ``torch.compile`` (built at the first call). ``model`` stays the
        plain module.
    """

    def __init__(
        self,
        model,
        meta: ModelMeta,
        device: str | None = "auto",
        precision: str | None = "auto",
        tta: str = "none",
        threads: int | None = None,
        compile: bool = False,
    ) -> None:
        import torch

        self.meta = meta
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tta = tta
        self._transforms = tta_transforms(tta)
        self.model = model.to(self.device).eval()
        if self.device == "cuda":  # faster convolutions under autocast; the CPU keeps NCHW
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stride = model_stride(model)
        self.threads = threads if self.device == "cpu" else None
        self._gate = CallGate(self.max_concurrent_calls)
        self._dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self._warned_pad: set[tuple[int, int]] = set()
        self.compile = compile
        self._compiled = None  # the torch.compile wrapper, built at the first call
        self._compiled_ok = False  # a compiled call has succeeded (compiler errors end there)
        self._compile_lock = threading.Lock()

    def max_concurrent_calls(self) -> int:
        """Calls allowed at once: one on a GPU; on the CPU, cores // the caller's torch threads."""
        import torch

        if self.device != "cpu":
            return 1
        return max(1, available_cores() // torch.get_num_threads())

    def _set_threads(self) -> None:
        """Give the calling thread ``self.threads`` torch threads (a per-thread setting)."""
        import torch

        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    @classmethod
    def from_checkpoint(
        cls,
        path,
        device: str | None = "auto",
        precision: str | None = "auto",
        tta: str = "none",
        threads: int | None = None,
        compile: bool = False,
    ) -> Engine:
        """Load a checkpoint (no pickle executed) and wrap it in an engine."""
        from geoseg.model.checkpoint import load_checkpoint

        model, meta = load_checkpoint(path)
        return cls(
            model, meta, device=device, precision=precision, tta=tta, threads=threads,
            compile=compile,
        )  # fmt: skip

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities for a batch of raw windows.

        Parameters
        ----------
        batch : ndarray
            (B, bands, H, W) raw pixel values (float32); normalized here.

        Returns
        -------
        ndarray
            (B, classes, H, W) float32 probabilities, TTA-averaged.
        """
        return self.predict_proba_device(batch).cpu().numpy()

    def predict_proba_device(self, batch: np.ndarray):
        """:meth:`predict_proba` as a torch tensor on the engine's device (no host copy).

        Returns a (B, classes, H, W) float32 tensor on ``self.device``, TTA-averaged and
        cropped like :meth:`predict_proba`. An inference tensor: use it in out-of-place
        operations (blending), not in autograd. On CUDA its memory format may be
        ``channels_last``.
        """
        x = normalize(batch, self.meta)
        h, w = x.shape[-2:]
        ph, pw = pad_amounts(h, self.stride), pad_amounts(w, self.stride)
        if ph or pw:
            if (h, w) not in self._warned_pad:
                self._warned_pad.add((h, w))
                log.debug(
                    "tile %dx%d is not a multiple of the model stride %d; padding to %dx%d "
                    "internally (reflect) and cropping back",
                    h,
                    w,
                    self.stride,
                    h + ph,
                    w + pw,
                )
            mode = "reflect" if ph < h and pw < w else "edge"
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        return self._forward(x, h, w)

    def _run(self, inp):
        import torch

        if self._dtype is None:
            return self._call_model(inp)
        with torch.autocast(self.device, dtype=self._dtype):
            return self._call_model(inp)

    def _call_model(self, inp):
        """The model's output for ``inp``, through ``torch.compile`` when asked."""
        import torch

        if not self.compile:
            return self.model(inp)
        with self._compile_lock:
            if self._compiled is None:
                self._compiled = _compile_model(self.model)
        if self._compiled_ok:
            return self._compiled(inp)
        try:
            out = self._compiled(inp)
        except torch.cuda.OutOfMemoryError:  # not the compiler's fault
            raise
        except Exception as e:  # the first call compiles: a missing or broken compiler
            raise compile_error(e) from e
        self._compiled_ok = True
        return out

    def _forward(self, x: np.ndarray, h: int, w: int):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.device == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        # TTA views are extra batch entries; rot90 of a non-square window changes its shape, so
        # views are grouped by shape (one forward pass per shape).
        groups: dict[tuple[int, ...], list[tuple[int, bool]]] = {}
        for k, f in self._transforms:
            groups.setdefault(tuple(_transform(t[:1, :1], k, f).shape), []).append((k, f))
        acc = None
        self._set_threads()
        with self._gate, torch.inference_mode():
            for tfs in groups.values():
                inp = torch.cat([_transform(t, k, f) for k, f in tfs])
                if self.device == "cuda":
                    inp = inp.contiguous(memory_format=torch.channels_last)
                probs = torch.softmax(self._run(inp).float(), dim=1)
                for (k, f), p in zip(tfs, probs.chunk(len(tfs)), strict=True):
                    p = _untransform(p, k, f)
                    acc = p if acc is None else acc + p
            if len(self._transforms) > 1:
                acc = acc / len(self._transforms)
            return acc[:, :, :h, :w]


def _compile_model(model):
    """``torch.compile(model)``; refused (e.g. Python too new for dynamo) as a ConfigError."""
    import torch

    try:
        return torch.compile(model)
    except Exception as e:
        raise compile_error(e) from e


def compile_error(e: BaseException) -> ConfigError:
    """The one-line ConfigError of a failed ``torch.compile`` (``--compile``).

    It names the innermost error (dynamo wraps the compiler's own) by its first line.
    """
    seen = {id(e)}
    while (inner := getattr(e, "inner_exception", None) or e.__cause__) and id(inner) not in seen:
        seen.add(id(inner))
        e = inner
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    why = f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
    return ConfigError(
        f"torch.compile failed on this machine ({why}); drop --compile (or compile: true "
        "from the config file) to run the model uncompiled",
        option="compile",
    )


def _transform(t, k: int, flip: bool):
    import torch

    if flip:
        t = torch.flip(t, dims=(-1,))
    return torch.rot90(t, k, dims=(-2, -1)) if k else t


def _untransform(t, k: int, flip: bool):
    import torch

    if k:
        t = torch.rot90(t, -k, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if flip else t


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine in any process: a picklable, hashable recipe."""

    checkpoint: str
    device: str | None = "auto"
    precision: str | None = "auto"
    tta: str = "none"
    threads: int | None = None
    compile: bool = False


def cached_engine(spec: EngineSpec) -> Engine:
    """Load an engine once per process (workers keep it between tasks).

    Locked, so that threads asking at once (the rasters of a batch side by side, a worker's
    first tasks) load it once.
    """
    with _ENGINE_LOCK:
        return _load_engine(spec)


_ENGINE_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load_engine(spec: EngineSpec) -> Engine:
    return Engine.from_checkpoint(
        spec.checkpoint, spec.device, spec.precision, spec.tta, spec.threads, spec.compile
    )
