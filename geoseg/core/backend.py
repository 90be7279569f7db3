"""Where a strip's sums live: numpy arrays on the host, or torch tensors on the model's GPU.

On CUDA the weighted accumulation, the normalization and the argmax of a strip run on the GPU,
next to the probabilities the model left there (:meth:`Engine.predict_proba_device`); only the
class ids (and the uint8 layers asked for, and a strip's two seams) are copied to the host. The
numpy backend is the default, and the one every CPU run uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    """Array operations of the stitcher, on the host (``device=None``) or a torch device."""

    device: str | None = None

    @property
    def on_host(self) -> bool:
        """Whether arrays are numpy arrays."""
        return self.device is None

    def empty(self, shape: tuple[int, ...]) -> Any:
        """An uninitialized float32 array (the stitcher writes each element before it is read)."""
        if self.on_host:
            return np.empty(shape, np.float32)
        import torch

        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def multiply(self, a: Any, b: Any, out: Any) -> None:
        """``out[...] = a * b`` with no temporary (``out`` may be a strided view)."""
        if self.on_host:
            np.multiply(a, b, out=out)
        else:
            import torch

            torch.mul(a, b, out=out)

    def asarray(self, array: np.ndarray) -> Any:
        """A host array as this backend's (a copy on the device)."""
        if self.on_host:
            return array
        import torch

        return torch.tensor(array, device=self.device)  # a copy: the array may be read-only

    def concat(self, arrays: Sequence[Any], axis: int) -> Any:
        """Arrays joined along ``axis``."""
        if self.on_host:
            return np.concatenate(arrays, axis=axis)
        import torch

        return torch.cat(list(arrays), dim=axis)


HOST = Backend()


def to_host(array: Any) -> np.ndarray:
    """A numpy array of ``array`` (a copy when it is a device tensor)."""
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()


def device_classes(sums: Any, weights: Any, nodata: int, dtype: str) -> tuple[Any, np.ndarray]:
    """Normalize torch sums and take the argmax on their device; class ids come to the host.

    Returns the normalized probabilities (still on the device, zero where nothing was
    weighted) and the host class ids, ``nodata`` where nothing was weighted. Ties go to the
    lower class, as with :func:`geoseg.core.stitch.to_classes` (``argmax`` returns the first
    maximum).
    """
    import torch

    weighted = weights > 0
    probs = torch.where(weighted[None], sums / torch.where(weighted, weights, 1)[None], 0)
    ids = torch.where(weighted, probs.argmax(0).to(torch.int32), nodata)
    small = torch.uint8 if dtype == "uint8" else torch.int32
    return probs, ids.to(small).cpu().numpy().astype(dtype, copy=False)
