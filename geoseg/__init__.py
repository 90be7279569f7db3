"""geoseg: streaming, seamless, georeferenced semantic segmentation of very large rasters."""

__version__ = "0.1.0"
