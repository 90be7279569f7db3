"""Parity of geoseg's metrics with the reference implementations users compare against."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from geoseg.core.metrics import confusion_matrix, summarize
from geoseg.data import open_dataset
from geoseg.data.cityscapes import MISS, label_ids_to_train_ids
from geoseg.run.scoring import evaluate_dataset, find_prediction


def perturb(labels, rng, frac, values):
    out = labels.copy()
    hit = rng.random(labels.shape) < frac
    out[hit] = rng.choice(values, size=int(hit.sum()))
    return out


@pytest.mark.parametrize("seed,frac", [(0, 0.05), (1, 0.3), (2, 0.7)])
def test_cityscapes_matches_cityscapesscripts(shared_data, tmp_path, monkeypatch, seed, frac):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    # cityscapesScripts still calls np.in1d, removed in numpy 2.4: give the reference the
    # function it expects (np.isin is its documented replacement).
    monkeypatch.setattr(np, "in1d", np.isin, raising=False)

    root = shared_data / "cityscapes-sample"
    gt = next(root.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    rng = np.random.default_rng(seed)
    labels = np.asarray(Image.open(gt))
    pred = perturb(labels, rng, frac, np.arange(0, 34)).astype(np.uint8)  # voids included
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    base = gt.name.replace("_gtFine_labelIds.png", "")
    Image.fromarray(pred).save(pred_dir / f"{base}.png")

    cs.args.quiet = True
    cs.args.JSONOutput = False
    cs.args.evalPixelAccuracy = True
    ref = cs.evaluateImgLists([str(pred_dir / f"{base}.png")], [str(gt)], cs.args)

    ds = open_dataset(f"cityscapes:{root}")
    cm = evaluate_dataset(
        ds,
        lambda s: label_ids_to_train_ids(
            np.asarray(Image.open(find_prediction(pred_dir, s.name))), prediction=True
        ),
        miss_value=MISS,
    )
    ours = summarize(cm, ds.config.names)
    for i, name in enumerate(ds.config.names):
        theirs = ref["classScores"][name]
        if np.isnan(theirs):
            assert np.isnan(ours.iou[i]), name
        else:
            assert ours.iou[i] == pytest.approx(theirs, abs=1e-9), name
    assert ours.miou == pytest.approx(ref["averageScoreClasses"], abs=1e-9)


def mmseg_reduce_zero_label_iou(preds, gts, num_classes=150, ignore_index=255):
    """Independent numpy port of mmseg's intersect_and_union with reduce_zero_label=True."""
    total_inter = np.zeros(num_classes)
    total_union = np.zeros(num_classes)
    for pred, gt in zip(preds, gts, strict=True):
        gt = gt.astype(np.int64)
        gt[gt == 0] = 255
        gt = gt - 1
        gt[gt == 254] = 255
        mask = gt != ignore_index
        p, g = pred[mask], gt[mask]
        inter = p[p == g]
        area_inter = np.histogram(inter, bins=num_classes, range=(0, num_classes - 1))[0]
        area_pred = np.histogram(p, bins=num_classes, range=(0, num_classes - 1))[0]
        area_gt = np.histogram(g, bins=num_classes, range=(0, num_classes - 1))[0]
        total_inter += area_inter
        total_union += area_pred + area_gt - area_inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return total_inter / total_union


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ade20k_matches_mmseg_reduce_zero_label(shared_data, seed):
    ds = open_dataset(f"ade20k:{shared_data / 'ade20k-sample'}")
    rng = np.random.default_rng(seed)
    raw_gts, preds = [], []
    for pair in ds.pairs:
        raw = np.asarray(Image.open(pair.mask)).astype(np.int64)
        train = np.where(raw == 0, 0, raw - 1)
        preds.append(perturb(train, rng, 0.2 + 0.2 * seed, np.arange(150)))
        raw_gts.append(raw)
    it = iter(preds)
    cm = evaluate_dataset(ds, lambda s: next(it), pred_nodata=None)
    ours = summarize(cm, ds.config.names)
    ref = mmseg_reduce_zero_label_iou(preds, raw_gts)
    np.testing.assert_allclose(ours.iou, ref, atol=1e-12, equal_nan=True)
    assert ours.miou == pytest.approx(np.nanmean(ref), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 12), ignore=st.booleans())
def test_torchmetrics_jaccard_parity(seed, k, ignore):
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, (3, 40, 30))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k, target.shape))
    ignore_index = 255 if ignore else None
    if ignore:
        target[rng.random(target.shape) < 0.1] = 255
    metric = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=ignore_index)
    ref = metric(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    ours = summarize(confusion_matrix(pred, target, k, ignore_index))
    present = ~np.isnan(ours.iou)
    np.testing.assert_allclose(ours.iou[present], ref[present], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    k=st.integers(1, 7),
    cuts_r=st.lists(st.integers(1, 59), max_size=4),
    cuts_c=st.lists(st.integers(1, 59), max_size=4),
)
def test_confusion_of_whole_equals_sum_over_any_partition(h, w, k, cuts_r, cuts_c):
    rng = np.random.default_rng(h * 100 + w)
    target = rng.integers(0, k, (h, w))
    target[rng.random((h, w)) < 0.1] = 255
    pred = rng.integers(0, k, (h, w))
    whole = confusion_matrix(pred, target, k)
    rows = sorted({0, h, *[c for c in cuts_r if c < h]})
    cols = sorted({0, w, *[c for c in cuts_c if c < w]})
    total = np.zeros_like(whole)
    for r0, r1 in zip(rows, rows[1:], strict=False):
        for c0, c1 in zip(cols, cols[1:], strict=False):
            total += confusion_matrix(pred[r0:r1, c0:c1], target[r0:r1, c0:c1], k)
    assert np.array_equal(total, whole)
