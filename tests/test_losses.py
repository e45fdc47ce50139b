"""Tests for kseg.losses against numpy formulas, hand values and torch references.

Run on each backend: KERAS_BACKEND={tensorflow,jax,torch} pytest tests/test_losses.py
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

import kseg.losses as L
from tests.backend_utils import value_and_grad as backend_value_and_grad
from tests.harness import assert_config_round_trip

B, H, W = 3, 5, 5
# From the registry: a new loss gets every per-name check below (values, sample weights,
# serialization, mixed precision, a training step) without a line in this file.
SINGLE_NAMES = tuple(L.REGISTRY)
NAMES = L.available()


def _data(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(B, H, W, 1)) * scale).astype("float32")
    y = (rng.random(size=(B, H, W, 1)) < 0.4).astype("float32")
    return y, x


def _np(t):
    return np.asarray(ops.convert_to_numpy(t), dtype="float64")


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, "float64")))  # no exp overflow


# Independent float64 references, written from the textbook definitions.
def ref_bce(y, x):
    # softplus(x) - x*y == -y log s(x) - (1-y) log(1-s(x)); logaddexp avoids overflow.
    x = np.asarray(x, "float64")
    return (np.logaddexp(0.0, x) - x * y).mean(axis=(1, 2, 3))


def ref_dice(y, x, smooth=1.0):
    p = _sigmoid(x)
    inter = (y * p).sum(axis=(1, 2, 3))
    return 1.0 - (2.0 * inter + smooth) / (y.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3)) + smooth)


def ref_focal(y, x, gamma=2.0, alpha=None):
    p = _sigmoid(x)
    p_t = np.where(y == 1, p, 1.0 - p)
    loss = -((1.0 - p_t) ** gamma) * np.log(p_t)
    if alpha is not None:
        loss = loss * np.where(y == 1, alpha, 1.0 - alpha)
    return loss.mean(axis=(1, 2, 3))


def ref_tversky(y, x, alpha=0.5, beta=0.5, smooth=1.0):
    p = _sigmoid(x)
    tp = (y * p).sum(axis=(1, 2, 3))
    fp = ((1.0 - y) * p).sum(axis=(1, 2, 3))
    fn = (y * (1.0 - p)).sum(axis=(1, 2, 3))
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def ref_focal_tversky(y, x, alpha=0.5, beta=0.5, gamma=0.75, smooth=1.0):
    return ref_tversky(y, x, alpha, beta, smooth) ** gamma


# A port of lovasz_grad / lovasz_hinge_flat from Berman et al.'s reference code
# (github.com/bermanmaxim/LovaszSoftmax, pytorch/lovasz_losses.py), torch -> numpy.
def lovasz_grad(gt_sorted):
    """Gradient of the Lovasz extension w.r.t. sorted errors (see the paper's Alg. 1)."""
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_hinge_flat(logits, labels):
    """Binary Lovasz hinge loss of flat logits [P] and 0/1 labels [P]."""
    if len(labels) == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    perm = np.argsort(-errors, kind="stable")  # torch.sort(errors, descending=True)
    errors_sorted = errors[perm]
    gt_sorted = labels[perm]
    grad = lovasz_grad(gt_sorted)
    return np.dot(np.maximum(errors_sorted, 0.0), grad)  # F.relu


def ref_lovasz(y, x, per_image=True):
    """Berman's lovasz_hinge, but one value per image; per_image=False repeats the batch value."""
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    if per_image:
        return np.array([lovasz_hinge_flat(xi.ravel(), yi.ravel()) for xi, yi in zip(x, y)])
    return np.full(len(x), lovasz_hinge_flat(x.ravel(), y.ravel()))


def value_and_grad(loss, y, x):
    """Loss value and d loss / d logits with the active backend's autodiff."""
    value, grad = backend_value_and_grad(lambda t: loss(y, t), x)
    return float(value), grad


# --------------------------------------------------------------------------- values


def test_bce_matches_numpy_reference():
    y, x = _data()
    per_image = _np(L.BCE(reduction="none")(y, x))
    np.testing.assert_allclose(per_image, ref_bce(y, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(L.BCE()(y, x)), ref_bce(y, x).mean(), rtol=1e-5)


def test_bce_matches_torch():
    torch = pytest.importorskip("torch", reason="torch not installed: no torch reference")
    F = torch.nn.functional
    y, x = _data(1)
    want = F.binary_cross_entropy_with_logits(
        torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    ).item()
    np.testing.assert_allclose(float(L.BCE()(y, x)), want, rtol=1e-5)
    # Probabilities (not saturated, so clipping does not matter).
    p = _sigmoid(np.clip(x, -8, 8))
    want_p = F.binary_cross_entropy(torch.tensor(p), torch.tensor(y, dtype=torch.float64)).item()
    got_p = float(L.BCE(from_logits=False)(y, p.astype("float32")))
    np.testing.assert_allclose(got_p, want_p, rtol=1e-4)


def test_dice_hand_value():
    # p = 0.5 everywhere, one foreground pixel: 1 - (2*0.5 + 1) / (1 + 2 + 1) = 0.5
    y = np.array([[1, 0], [0, 0]], "float32").reshape(1, 2, 2, 1)
    assert float(L.Dice()(y, np.zeros_like(y))) == pytest.approx(0.5, abs=1e-6)
    # smooth=0: 1 - 2*0.5 / (1 + 2) = 2/3
    assert float(L.Dice(smooth=0.0)(y, np.zeros_like(y))) == pytest.approx(2 / 3, abs=1e-6)


@pytest.mark.parametrize("smooth", [1.0, 0.1])
def test_dice_matches_numpy_reference(smooth):
    y, x = _data(2)
    got = _np(L.Dice(smooth=smooth, reduction="none")(y, x))
    np.testing.assert_allclose(got, ref_dice(y, x, smooth), rtol=1e-5, atol=1e-6)


def test_dice_probabilities_equal_logits():
    y, x = _data(3)
    from_p = float(L.Dice(from_logits=False)(y, _sigmoid(x).astype("float32")))
    assert from_p == pytest.approx(float(L.Dice()(y, x)), abs=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_numpy_reference(gamma, alpha):
    y, x = _data(4)
    got = _np(L.Focal(gamma=gamma, alpha=alpha, reduction="none")(y, x))
    np.testing.assert_allclose(got, ref_focal(y, x, gamma, alpha), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_torch_formula(alpha):
    # torchvision.ops.sigmoid_focal_loss, written out so torchvision is not needed.
    torch = pytest.importorskip("torch", reason="torch not installed: no torch reference")
    F = torch.nn.functional
    y, x = _data(5)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    p = torch.sigmoid(xt)
    ce = F.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    p_t = p * yt + (1 - p) * (1 - yt)
    want = ce * (1 - p_t) ** 2
    if alpha is not None:
        want = (alpha * yt + (1 - alpha) * (1 - yt)) * want
    got = float(L.Focal(gamma=2.0, alpha=alpha)(y, x))
    np.testing.assert_allclose(got, want.mean().item(), rtol=1e-5)


def test_focal_gamma0_is_bce_and_probabilities_equal_logits():
    y, x = _data(6)
    assert float(L.Focal(gamma=0.0)(y, x)) == pytest.approx(float(L.BCE()(y, x)), rel=1e-5)
    x = np.clip(x, -8, 8)  # keep probabilities away from the clipping epsilon
    from_p = float(L.Focal(from_logits=False)(y, _sigmoid(x).astype("float32")))
    assert from_p == pytest.approx(float(L.Focal()(y, x)), rel=1e-4)


# Two foreground pixels of 2x2 with p = 0.5: TP = 0.5, FP = 1.5, FN = 0.5 (y = [1, 0, 0, 0]).
@pytest.mark.parametrize(
    "alpha, beta, smooth, want",
    [
        (0.5, 0.5, 1.0, 1 - 1.5 / (0.5 + 0.75 + 0.25 + 1)),  # 0.4
        (0.7, 0.3, 1.0, 1 - 1.5 / (0.5 + 1.05 + 0.15 + 1)),  # 4/9: false positives weigh more
        (0.3, 0.7, 1.0, 1 - 1.5 / (0.5 + 0.45 + 0.35 + 1)),  # 8/23
        (1.0, 1.0, 0.0, 1 - 0.5 / (0.5 + 1.5 + 0.5)),  # 0.8, the soft Jaccard loss
    ],
)
def test_tversky_hand_value(alpha, beta, smooth, want):
    y = np.array([[1, 0], [0, 0]], "float32").reshape(1, 2, 2, 1)
    got = float(L.Tversky(alpha=alpha, beta=beta, smooth=smooth)(y, np.zeros_like(y)))
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("alpha, beta, smooth", [(0.5, 0.5, 1.0), (0.3, 0.7, 1.0), (0.7, 0.3, 0.1), (1.0, 1.0, 0.0)])
def test_tversky_matches_numpy_reference(alpha, beta, smooth):
    y, x = _data(13)
    got = _np(L.Tversky(alpha=alpha, beta=beta, smooth=smooth, reduction="none")(y, x))
    np.testing.assert_allclose(got, ref_tversky(y, x, alpha, beta, smooth), rtol=1e-5, atol=1e-6)
    from_p = _np(L.Tversky(alpha, beta, smooth, from_logits=False, reduction="none")(y, _sigmoid(x).astype("float32")))
    np.testing.assert_allclose(from_p, got, atol=1e-5)


@pytest.mark.parametrize("smooth", [0.0, 0.5, 1.0])
def test_tversky_half_half_is_dice(smooth):
    # TP + FP/2 + FN/2 = (sum(y) + sum(p)) / 2, so with alpha = beta = 0.5
    # (TP + s) / ((sum y + sum p) / 2 + s) = (2 TP + 2s) / (sum y + sum p + 2s): Dice with smooth 2s.
    y, x = _data(14)
    got = _np(L.Tversky(alpha=0.5, beta=0.5, smooth=smooth, reduction="none")(y, x))
    want = _np(L.Dice(smooth=2.0 * smooth, reduction="none")(y, x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if smooth == 0.0:  # without smoothing, the same loss as Dice
        np.testing.assert_allclose(got, _np(L.Dice(smooth=0.0, reduction="none")(y, x)), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.75, 1.0, 2.0])
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.7)])
def test_focal_tversky_is_tversky_to_the_gamma(gamma, alpha, beta):
    y, x = _data(15)
    got = _np(L.FocalTversky(alpha=alpha, beta=beta, gamma=gamma, reduction="none")(y, x))
    np.testing.assert_allclose(got, ref_focal_tversky(y, x, alpha, beta, gamma), rtol=1e-5, atol=1e-7)
    tversky = _np(L.Tversky(alpha=alpha, beta=beta, reduction="none")(y, x))
    np.testing.assert_allclose(got, tversky**gamma, rtol=1e-5)
    assert L.FocalTversky().gamma == 0.75  # Abraham & Khan's 1/gamma with gamma = 4/3


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("seed", [16, 17])
def test_lovasz_matches_berman_reference(per_image, seed):
    y, x = _data(seed)
    got = _np(L.LovaszHinge(per_image=per_image, reduction="none")(y, x))
    assert got.shape == (B,)
    np.testing.assert_allclose(got, ref_lovasz(y, x, per_image), rtol=1e-5, atol=1e-6)
    # The default reduction of per_image=False is Berman's batch-wide value.
    if not per_image:
        assert float(L.LovaszHinge(per_image=False)(y, x)) == pytest.approx(ref_lovasz(y, x, False)[0], rel=1e-5)


def test_lovasz_hand_values():
    # 1x2, y = (1, 0), x = (2, 1): errors 1 - 2 = -1 and 1 + 1 = 2. Sorted: (2, y=0), (-1, y=1);
    # gts = 1, intersection = (1, 0), union = (2, 2), jaccard = (1/2, 1), grad = (1/2, 1/2):
    # loss = 1/2 * relu(2) + 1/2 * relu(-1) = 1.
    y = np.array([1, 0], "float32").reshape(1, 1, 2, 1)
    x = np.array([2, 1], "float32").reshape(1, 1, 2, 1)
    assert float(L.LovaszHinge()(y, x)) == pytest.approx(1.0, abs=1e-6)
    # 2x2, y = [[1, 0], [1, 0]], x = [[3, -2], [0.5, 1]]: errors [[-2, -1], [0.5, 2]].
    # Sorted: 2 (y=0), 0.5 (y=1), -1 (y=0), -2 (y=1); gts = 2, intersection = (2, 1, 1, 0),
    # union = (3, 3, 4, 4), jaccard = (1/3, 2/3, 3/4, 1), grad = (1/3, 1/3, 1/12, 1/4):
    # loss = 2/3 + 0.5/3 = 5/6.
    y = np.array([[1, 0], [1, 0]], "float32").reshape(1, 2, 2, 1)
    x = np.array([[3, -2], [0.5, 1]], "float32").reshape(1, 2, 2, 1)
    assert float(L.LovaszHinge()(y, x)) == pytest.approx(5 / 6, abs=1e-6)
    # From probabilities: the same loss.
    p = _sigmoid(x).astype("float32")
    assert float(L.LovaszHinge(from_logits=False)(y, p)) == pytest.approx(5 / 6, abs=1e-5)


@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_empty_mask_is_finite(per_image):
    # Image 0 has an empty mask: union = cumsum(1 - y) >= 1, so the gradient of the
    # Lovasz extension is (1, 0, ..., 0) and only the largest error counts.
    y, x = _data(18)
    y[0] = 0.0
    loss = L.LovaszHinge(per_image=per_image, reduction="none")
    value, grad = backend_value_and_grad(lambda t: loss(y, t), x)  # one value per image
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), (value, grad)
    np.testing.assert_allclose(value, ref_lovasz(y, x, per_image), rtol=1e-5, atol=1e-6)
    if per_image:
        assert value[0] == pytest.approx(max(1.0 + x[0].max(), 0.0), rel=1e-6)
    # Every mask empty.
    value, grad = value_and_grad(L.LovaszHinge(per_image=per_image), np.zeros_like(y), x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_combo_is_weighted_sum():
    y, x = _data(7)
    combo = L.Combo([L.BCE(), L.Dice(), L.Focal(gamma=1.0)], weights=[0.5, 2.0, 3.0])
    want = 0.5 * ref_bce(y, x) + 2.0 * ref_dice(y, x) + 3.0 * ref_focal(y, x, 1.0)
    np.testing.assert_allclose(float(combo(y, x)), want.mean(), rtol=1e-5)
    assert combo.name == "bce_dice_focal"


@pytest.mark.parametrize("name", NAMES)
def test_per_image_values_and_sample_weight(name):
    y, x = _data(8)
    loss = L.get(name)
    per_image = _np(loss.call(y, x))
    assert per_image.shape == (B,)
    assert np.ptp(per_image) > 0  # the weights below must matter
    w = np.array([1.0, 0.0, 2.0], "float32")
    # sum_over_batch_size: sum(w * loss) / B, exactly as keras' own losses.
    want = (per_image * w).sum() / B
    assert float(loss(y, x, sample_weight=w)) == pytest.approx(want, rel=1e-5)
    # (B, H, W) masks are accepted for (B, H, W, 1) logits.
    assert float(loss(y[..., 0], x)) == pytest.approx(per_image.mean(), rel=1e-5)


# --------------------------------------------------------------- numerical safety


# Each image: (mask, logits); the logits are the saturated correct (+) or wrong (-)
# answer for that mask. Expected values below are worked out by hand.
def _saturated(kind, correct):
    masks = {
        "empty": np.zeros((2, 2)),
        "full": np.ones((2, 2)),
        "half": np.array([[1.0, 0.0], [1.0, 0.0]]),
    }
    y = masks[kind].reshape(1, 2, 2, 1).astype("float32")
    sign = 1.0 if correct else -1.0
    x = (sign * np.where(y == 1, 1e4, -1e4)).astype("float32")
    return y, x


HAND = {
    # (loss, mask kind, correct?) -> value
    ("bce", True): lambda kind: 0.0,
    ("bce", False): lambda kind: 1e4,
    ("focal", True): lambda kind: 0.0,
    ("focal", False): lambda kind: 1e4,  # (1 - p_t)^2 = 1
    # correct: (2|y| + 1) / (2|y| + 1) -> 0; wrong: p = 1 - y, so
    # 1 - 1 / (|y| + |1-y| + 1) = 1 - 1/5 for 4 pixels.
    ("dice", True): lambda kind: 0.0,
    ("dice", False): lambda kind: 0.8,
    # correct: TP = |y|, FP = FN = 0 -> 0; wrong: TP = 0, FP = |1-y|, FN = |y|, so
    # 1 - 1 / (0.5 |1-y| + 0.5 |y| + 1) = 1 - 1/3 for 4 pixels.
    ("tversky", True): lambda kind: 0.0,
    ("tversky", False): lambda kind: 2 / 3,
    ("focal_tversky", True): lambda kind: 0.0,  # 0 ** 0.75, with a finite gradient
    ("focal_tversky", False): lambda kind: (2 / 3) ** 0.75,
    # correct: every error 1 - 1e4 < 0; wrong: every error 1 + 1e4, and the gradient of
    # the Lovasz extension sums to jaccard_N = 1 for any mask.
    ("lovasz", True): lambda kind: 0.0,
    ("lovasz", False): lambda kind: 1e4 + 1,
}


@pytest.mark.parametrize("kind", ["empty", "full", "half"])
@pytest.mark.parametrize("correct", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_saturated_logits_finite_values_and_gradients(name, kind, correct):
    y, x = _saturated(kind, correct)
    value, grad = value_and_grad(L.get(name), y, x)
    assert np.isfinite(value), value
    assert np.all(np.isfinite(grad)), grad
    parts = name.split("+")
    want = sum(HAND[(part, correct)](kind) for part in parts)
    assert value == pytest.approx(want, rel=1e-4, abs=1e-4)
    if name == "bce":
        # d/dx mean(bce) = (sigmoid(x) - y) / N exactly, even when saturated.
        np.testing.assert_allclose(grad, (_sigmoid(x) - y) / y.size, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    # Catches a stable-looking formula with a wrong derivative.
    y, x = _data(9, scale=2.0)
    loss = L.get(name)
    _, grad = value_and_grad(loss, y, x)
    idx = (1, 2, 3, 0)
    h = 1e-2
    if "lovasz" in name:
        # The Lovasz hinge is piecewise linear: its kinks are where two hinge errors of an
        # image tie (the sort order changes) or one crosses 0 (the relu). The random logits
        # have no ties; a small step that crosses no kink gives the exact slope.
        h = 1e-3
        errors = (1.0 - x * (2.0 * y - 1.0))[idx[0]].ravel()
        own = errors[np.ravel_multi_index(idx[1:], x.shape[1:])]
        others = np.delete(errors, np.ravel_multi_index(idx[1:], x.shape[1:]))
        assert np.min(np.abs(others - own)) > 2 * h and abs(own) > h
    xp, xm = x.astype("float64").copy(), x.astype("float64").copy()
    xp[idx] += h
    xm[idx] -= h
    refs = {
        "bce": ref_bce,
        "dice": ref_dice,
        "focal": ref_focal,
        "tversky": ref_tversky,
        "focal_tversky": ref_focal_tversky,
        "lovasz": ref_lovasz,
    }
    f = lambda v: sum(refs[p](y, v).mean() for p in name.split("+"))  # noqa: E731
    numeric = (f(xp) - f(xm)) / (2 * h)
    assert grad[idx] == pytest.approx(numeric, rel=1e-2, abs=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_any_gamma_saturated_gradients_finite(gamma):
    # pow(1 - p_t, gamma) has an infinite derivative at 0 for gamma < 1, so a
    # naive focal loss gives inf * 0 = NaN for confidently correct pixels.
    y = np.array([1, 0, 1, 0], "float32").reshape(1, 2, 2, 1)
    x = np.array([1e4, -1e4, -1e4, 1e4], "float32").reshape(1, 2, 2, 1)
    value, grad = value_and_grad(L.Focal(gamma=gamma, alpha=0.25), y, x)
    assert value == pytest.approx((0.25 * 1e4 + 0.75 * 1e4) / 4, rel=1e-5)
    assert np.all(np.isfinite(grad)), grad
    # Wrong pixels pull with alpha_t * 1 / N; right ones not at all.
    np.testing.assert_allclose(grad.ravel(), [0.0, 0.0, -0.25 / 4, 0.75 / 4], atol=1e-6)


def test_dice_smooth0_empty_mask_stays_finite():
    y = np.zeros((1, 2, 2, 1), "float32")
    x = np.full_like(y, -1e4)  # sigmoid underflows to exactly 0: 0/0 without a floor
    value, grad = value_and_grad(L.Dice(smooth=0.0), y, x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


# ---------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("name", NAMES)
def test_mixed_bfloat16_inputs(name, mixed_bfloat16):
    y, x = _data(10)
    x_bf16 = ops.cast(x, "bfloat16")
    loss = L.get(name)
    got = loss(ops.cast(y, "bfloat16"), x_bf16)
    assert ops.convert_to_numpy(got).dtype == np.float32
    # Same value as float32 math on the bf16-rounded logits.
    want = float(loss(y, _np(ops.cast(x_bf16, "float32")).astype("float32")))
    assert float(got) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_train_step_mixed_bfloat16_saturated_logits(name, mixed_bfloat16):
    # A 1x1 conv with kernel 1e4 on +-1 inputs gives +-1e4 logits in bfloat16.
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(1e4))
    model = keras.Model(inputs, conv(inputs))
    assert model.outputs[0].dtype == "bfloat16"
    # No loss scaling for bfloat16, so a NaN gradient would reach the weights.
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=L.get(name))
    rng = np.random.default_rng(11)
    x = np.where(rng.random((2, 4, 4, 1)) < 0.5, -1.0, 1.0).astype("float32")
    y = np.stack([np.zeros((4, 4, 1)), (x[1] > 0)]).astype("float32")
    y[1] = 1.0 - y[1]  # image 1 is confidently wrong: large, but finite, gradients
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    for w in model.weights:
        assert np.all(np.isfinite(_np(w))), w.path
    if name not in ("dice", "tversky", "focal_tversky"):  # sigmoid' is exactly 0 at +-1e4: no pull
        # The step really moved the weights: gradients were computed, not zeros.
        assert _np(conv.kernel).item() != pytest.approx(1e4, abs=1e-3)


# ------------------------------------------------------------------ serialization


CONFIGURED = [
    lambda: L.BCE(from_logits=False, reduction="sum", name="b"),
    lambda: L.Dice(from_logits=False, smooth=0.25, reduction="none", name="d"),
    lambda: L.Focal(gamma=1.5, alpha=0.3, from_logits=False, reduction="sum", name="f"),
    lambda: L.Tversky(alpha=0.3, beta=0.7, smooth=0.5, from_logits=False, reduction="sum", name="t"),
    lambda: L.FocalTversky(alpha=0.7, beta=0.3, gamma=1.5, smooth=2.0, from_logits=False, reduction="none", name="ft"),
    lambda: L.LovaszHinge(per_image=False, from_logits=False, reduction="sum", name="l"),
    lambda: L.Combo([L.BCE(), L.Focal(gamma=1.0, alpha=0.4)], weights=[0.3, 0.7], name="c"),
]
CONFIGURED_IDS = ["bce", "dice", "focal", "tversky", "focal_tversky", "lovasz", "combo"]


def _probs():
    y, x = _data(12)
    return y, _sigmoid(np.clip(x, -5, 5)).astype("float32")


@pytest.mark.parametrize("make", CONFIGURED, ids=CONFIGURED_IDS)
def test_get_config_round_trip(make):
    loss = make()
    clone = assert_config_round_trip(loss)
    y, p = _probs()
    np.testing.assert_allclose(_np(clone(y, p)), _np(loss(y, p)), rtol=1e-6)


@pytest.mark.parametrize("make", CONFIGURED, ids=CONFIGURED_IDS)
def test_serialize_keras_object_round_trip(make):
    import kseg.metrics  # noqa: F401  registers a metric Dice as well: names must not clash

    loss = make()
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
    y, p = _probs()
    np.testing.assert_allclose(_np(clone(y, p)), _np(loss(y, p)), rtol=1e-6)
    assert L.get(blob).get_config() == loss.get_config()


def test_combo_sub_losses_survive_round_trip():
    combo = L.Combo([L.Dice(smooth=3.0), "focal", L.FocalTversky(gamma=2.0)], weights=[1.0, 2.0, 0.5])
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(combo))
    assert [type(s) for s in clone.losses] == [L.Dice, L.Focal, L.FocalTversky]
    assert clone.losses[0].smooth == 3.0
    assert clone.losses[2].gamma == 2.0
    assert clone.weights == [1.0, 2.0, 0.5]


# --------------------------------------------------------------------- get/available


def test_a_registered_loss_is_available_by_name(monkeypatch):
    monkeypatch.setitem(L.REGISTRY, "squared_hinge_logits", L.BCE)  # a stand-in class
    assert "squared_hinge_logits" in L.available() and set(SINGLE_NAMES) <= set(L.available())
    assert isinstance(L.get("bce+squared_hinge_logits"), L.Combo)


def test_available_names_all_resolve():
    names = L.available()
    assert {"bce", "dice", "focal", "bce+dice", "tversky", "focal_tversky", "lovasz"} <= set(names)
    for name in names:
        loss = L.get(name)
        assert isinstance(loss, keras.losses.Loss)
        assert loss.name == name.replace("+", "_")  # "+" is no valid TF scope name


def test_get_builds_combo_and_passes_instances_through():
    combo = L.get(" BCE + Dice ")
    assert isinstance(combo, L.Combo)
    assert [type(s) for s in combo.losses] == [L.BCE, L.Dice]
    assert combo.weights == [1.0, 1.0]
    assert isinstance(L.get("focal"), L.Focal)
    assert isinstance(L.get("tversky"), L.Tversky)
    assert type(L.get("focal_tversky")) is L.FocalTversky
    assert isinstance(L.get("lovasz"), L.LovaszHinge)
    assert [type(s) for s in L.get("bce+lovasz").losses] == [L.BCE, L.LovaszHinge]
    inst = L.Focal(gamma=3.0)
    assert L.get(inst) is inst


@pytest.mark.parametrize("bad", ["jaccard", "bce+hausdorff", ""])
def test_get_unknown_name_lists_known_names(bad):
    with pytest.raises(ValueError) as err:
        L.get(bad)
    for name in ("bce", "dice", "focal", "bce+dice", "tversky", "focal_tversky", "lovasz"):
        assert name in str(err.value)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        L.Dice(smooth=-1.0)
    with pytest.raises(ValueError):
        L.Focal(gamma=-0.5)
    with pytest.raises(ValueError):
        L.Focal(alpha=1.5)
    with pytest.raises(ValueError):
        L.Combo([L.BCE(), L.Dice()], weights=[1.0])
    with pytest.raises(ValueError):
        L.get(3)
    with pytest.raises(ValueError, match=r"`alpha` must be >= 0. Received: alpha=-0.1"):
        L.Tversky(alpha=-0.1)
    with pytest.raises(ValueError, match=r"`beta` must be >= 0. Received: beta=-1"):
        L.FocalTversky(beta=-1)
    with pytest.raises(ValueError, match=r"`smooth` must be >= 0"):
        L.Tversky(smooth=float("nan"))
    with pytest.raises(ValueError, match=r"`gamma` must be > 0. Received: gamma=0"):
        L.FocalTversky(gamma=0)
