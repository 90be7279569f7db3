"""Training, fine-tuning and unsupervised adaptation of segmentation models.

Modules: :mod:`config` (checked options), :mod:`sources` (labelled samples from folders,
raster pairs and vector labels), :mod:`chips` (sampling), :mod:`augment`, :mod:`losses`,
:mod:`stats` (normalization and class statistics), :mod:`loop` (the training loop),
:mod:`runs` (run-directory I/O: state, log, checkpoints) and :mod:`adapt`.
"""
