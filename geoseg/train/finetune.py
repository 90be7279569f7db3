"""Starting from a checkpoint: compatibility checks and a new head for a new class set."""

from __future__ import annotations

from geoseg.errors import CheckpointError, ConfigError
from geoseg.model.checkpoint import ModelMeta, build_model


def class_mapping(
    old: list[str], new: list[str], class_map: dict[str, str]
) -> dict[int, list[int]]:
    """New class id -> old class ids whose head rows initialise it.

    Without ``class_map`` classes are matched by name; ``class_map`` maps old names to new
    names (several old classes may merge into one new class).
    """
    pairs = class_map or {n: n for n in old if n in new}
    out: dict[int, list[int]] = {}
    for o, n in pairs.items():
        if o not in old:
            raise ConfigError(f"class_map: {o!r} is not a class of the checkpoint ({old})")
        if n not in new:
            raise ConfigError(f"class_map: {n!r} is not one of the new classes ({new})")
        out.setdefault(new.index(n), []).append(old.index(o))
    return out


def head_layer(model):
    """The final convolution of an smp model's segmentation head."""
    import torch

    convs = [m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise CheckpointError("the model's segmentation head has no convolution to replace")
    return convs[-1]


def with_new_classes(model, meta: ModelMeta, new_meta: ModelMeta, class_map: dict[str, str]):
    """A model for ``new_meta``'s classes: body from ``model``, head rows mapped from old ones.

    New classes without an old counterpart keep a fresh random initialisation.
    """
    import torch

    mapping = class_mapping(meta.class_names, new_meta.class_names, class_map)
    new_model = build_model(new_meta)
    old_head, new_head = head_layer(model), head_layer(new_model)
    head_names = {n for n, _ in new_model.named_parameters() if n.startswith("segmentation_head")}
    body = {k: v for k, v in model.state_dict().items() if k not in head_names}
    new_model.load_state_dict(body, strict=False)
    with torch.no_grad():
        for j, olds in mapping.items():
            new_head.weight[j] = old_head.weight[olds].mean(0)
            if new_head.bias is not None and old_head.bias is not None:
                new_head.bias[j] = old_head.bias[olds].mean(0)
    return new_model
