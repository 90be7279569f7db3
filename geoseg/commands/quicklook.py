"""``geoseg quicklook``: an image beside its colour class map, with a legend, as a PNG."""

from __future__ import annotations

import io

import click
import numpy as np

from geoseg.commands.options import Command, overwrite_opt, verbose_opt

# Largest accepted --max-size and --dpi: the figure is about (2 * max-size + 2.2 * dpi) x
# (max-size + 0.6 * dpi) pixels of RGBA, so these keep one canvas under ~1 GiB.
MAX_PANEL = 8192
MAX_DPI = 1200
# At most this many legend entries: a class map without names gets one per id up to its
# largest id, and matplotlib slows to a crawl with thousands.
MAX_LEGEND = 256


def stretch(image: np.ndarray) -> np.ndarray:
    """(bands, H, W) raw values -> (H, W, 3) float in [0, 1] (2-98 % per-band stretch)."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    out = np.empty(rgb.shape[1:] + (3,), np.float32)
    for b in range(3):
        band = rgb[b].astype(np.float32)
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
        out[..., b] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def colourize(classes: np.ndarray, colours: list[tuple[int, int, int]], nodata: int | None):
    """(H, W) ids -> (H, W, 4) RGBA in [0, 1]; nodata and unknown ids are transparent.

    The lookup table has one entry per legend colour plus one transparent entry for every
    other id, so a huge id (2e9) costs nothing.
    """
    k = len(colours)
    lut = np.zeros((k + 1, 4), np.float32)
    if k:
        lut[:k, :3] = np.asarray(colours, np.float32) / 255.0
        lut[:k, 3] = 1.0
    ids = np.asarray(classes)
    index = np.where((ids >= 0) & (ids < k), ids, k).astype(np.intp)
    rgba = lut[index]
    if nodata is not None:
        rgba[ids == nodata] = 0.0
    return rgba


def overlay(image_rgb: np.ndarray, rgba: np.ndarray, alpha: float) -> np.ndarray:
    """Class colours over the image at opacity ``alpha``; transparent pixels show the image."""
    a = rgba[..., 3:] * np.float32(alpha)
    return image_rgb * (1 - a) + rgba[..., :3] * a


# (upper hue bound in degrees, name) of the colour wheel, for legend labels
HUE_NAMES = ((15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"),
             (255, "blue"), (290, "purple"), (335, "pink"), (360, "red"))  # fmt: skip


def colour_name(rgb: tuple[int, int, int]) -> str:
    """A plain name for an RGB colour ("orange", "dark blue"), so the legend says which is which.

    Dataset palettes are arbitrary (Dubai's Water is orange): the name beside each swatch saves
    the reader matching shades by eye.
    """
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.2:
        return "black"
    if s < 0.15:
        return "white" if v > 0.85 else "grey"
    name = next(n for top, n in HUE_NAMES if h * 360 < top)
    if name == "orange" and v < 0.6:
        return "brown"
    return f"dark {name}" if v < 0.65 else name


def _read(path: str, max_size: int, classmap: bool = False):
    from geoseg.io.raster import read_preview

    what = "class map" if classmap else "raster"
    return read_preview(path, max_size, what, check=lambda src: _check_source(src, path, classmap))


def _check_source(src, path: str, classmap: bool) -> None:
    """A class map: one band of 8/16-bit integers; an image: no complex values."""
    from geoseg.errors import InputError
    from geoseg.io.raster import check_class_map

    if classmap:
        check_class_map(src.count, src.dtypes[0], path)
    elif np.dtype(src.dtypes[0]).kind == "c":
        raise InputError(
            f"raster {path} holds {src.dtypes[0]} values; quicklook shows real-valued images: "
            "convert it with gdal_translate -ot Float32 (e.g. of the amplitude)"
        )


def legend_for(classes_path: str, model_path: str | None, n: int, cmap, tags):
    """Class names and colours: the checkpoint's, else the class map's tags/colour table."""
    from geoseg.model.checkpoint import default_colours, read_meta

    if model_path:
        meta = read_meta(model_path)
        return list(meta.class_names), [tuple(c) for c in meta.colours]
    from geoseg.core.labels import class_names_from_tags

    names = class_names_from_tags(tags) or [f"class {i}" for i in range(n)]
    if cmap:
        colours = [tuple(cmap.get(i, (0, 0, 0, 255))[:3]) for i in range(len(names))]
    else:
        colours = default_colours(len(names))
    return names, colours


def render_png(
    image,
    classes,
    names,
    colours,
    nodata,
    out: str,
    overwrite: bool,
    dpi: int,
    inputs=(),
    alpha: float | None = None,
):
    """Draw the two panels and the legend with matplotlib (Agg) and write ``out`` atomically.

    ``out`` goes through :func:`geoseg.io.files.atomic_write` (exclusive temporary, umask's
    mode, never one of ``inputs``, never through a link). With ``alpha`` the second panel
    shows the classes over the image at that opacity.
    """
    from matplotlib.figure import Figure  # an object of its own: no pyplot state, any backend
    from matplotlib.patches import Patch

    from geoseg.io.files import atomic_write

    h, w = classes.shape
    fig = Figure(figsize=(2 * w / dpi + 2.2, h / dpi + 0.6), dpi=dpi)
    ax1, ax2 = fig.subplots(1, 2)
    rgb, rgba = stretch(image), colourize(classes, colours, nodata)
    ax1.imshow(rgb)
    ax1.set_title("image")
    ax2.imshow(rgba if alpha is None else overlay(rgb, rgba, alpha), interpolation="nearest")
    ax2.set_title("classes" if alpha is None else "classes over the image")
    for ax in (ax1, ax2):
        ax.set_axis_off()
    handles = [
        Patch(color=np.asarray(c) / 255.0, label=f"{n} ({colour_name(c)})")
        for n, c in zip(names, colours, strict=False)
    ]
    fig.legend(handles=handles, loc="center right", frameon=False)
    fig.subplots_adjust(left=0.01, right=0.85, wspace=0.03)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(out, buf.getvalue(), overwrite=overwrite, inputs=inputs, what="OUT")


@click.command("quicklook", cls=Command)
@click.argument("raster", type=click.Path())
@click.argument("classmap", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    help="Checkpoint for class names and colours (default: the class map's colour table and tags).",
)
@click.option(
    "--max-size",
    type=int,
    default=1200,
    show_default=True,
    help="Longest side of each panel in pixels (larger inputs are decimated).",
)
@click.option("--dpi", type=int, default=100, show_default=True)
@click.option(
    "--overlay",
    "alpha",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Show the classes over the image at this opacity (e.g. 0.5) instead of alone.",
)
@overwrite_opt
@verbose_opt
def quicklook(raster, classmap, out, model_path, max_size, dpi, alpha, overwrite) -> None:
    """Render RASTER beside the colour CLASSMAP with a legend into OUT (PNG)."""
    from geoseg.errors import AlignmentError
    from geoseg.io.files import check_target
    from geoseg.io.raster import raster_files

    for value, hint, top in ((max_size, "--max-size", MAX_PANEL), (dpi, "--dpi", MAX_DPI)):
        if not 1 <= value <= top:
            raise click.BadParameter(
                f"{value} is outside 1..{top}; e.g. {hint} {1200 if hint == '--max-size' else 100}",
                param_hint=hint,
            )
    inputs = [*raster_files(raster), *raster_files(classmap), model_path]
    check_target(out, overwrite=overwrite, inputs=inputs, what="OUT")
    image, _, _, _ = _read(raster, max_size)
    cls, nodata, cmap, tags = _read(classmap, max_size, classmap=True)
    classes = cls[0].astype(np.int64)
    if image.shape[1:] != classes.shape:
        raise AlignmentError(
            f"class map {classmap} ({classes.shape[1]}x{classes.shape[0]} after decimation) "
            f"does not match {raster} ({image.shape[2]}x{image.shape[1]}); pass the raster "
            "the class map was predicted from"
        )
    valid = classes[classes != nodata] if nodata is not None else classes
    n = min(int(valid.max(initial=0)) + 1, MAX_LEGEND)
    names, colours = legend_for(classmap, model_path, n, cmap, tags)
    names, colours = names[:MAX_LEGEND], colours[:MAX_LEGEND]
    render_png(image, classes, names, colours, nodata, out, overwrite, dpi, inputs, alpha)
    click.echo(f"quicklook: {out}")
