"""Re-create ``demo/dubai_tile3_part009.tif`` from the shared Dubai data (provenance script).

The image is part 009 of Tile 3 of "Semantic segmentation of aerial imagery" (Humans in the
Loop, Dubai, MBRSC satellites; public domain, CC0), a part held out from the demo model's
training. The source is a plain JPEG without georeference, so the GeoTIFF has no CRS and no
transform: none is invented.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared/data/dubai-aerial/Tile 3/images/image_part_009.jpg"
TARGET = REPO / "demo" / "dubai_tile3_part009.tif"


def main() -> None:
    """Write the demo GeoTIFF (deflate, tiled, no georeference)."""
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    rgb = np.moveaxis(np.asarray(Image.open(src).convert("RGB")), -1, 0)
    profile = dict(
        driver="GTiff",
        width=rgb.shape[2],
        height=rgb.shape[1],
        count=3,
        dtype="uint8",
        compress="deflate",
        predictor=2,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        photometric="RGB",
    )
    with rasterio.open(TARGET, "w", **profile) as dst:
        dst.write(rgb)
        dst.update_tags(
            SOURCE="Humans in the Loop, Semantic segmentation of aerial imagery "
            "(Dubai), Tile 3 image_part_009.jpg",
            LICENSE="CC0 1.0 (public domain)",
        )
    print(TARGET, TARGET.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
