"""The built-in ``digit_pairs`` task: two digits apart, labelled by the one that sits higher.

The real digits are replaced by coded 8x8 images (row 0 holds the digit, row 1 the source
index), so every composed image can be decoded and checked against the rule: the label is the
higher digit, the two digits differ, sit in the left and right thirds with at least
``PAIR_MIN_DROP`` rows between their tops, and no source image is used in both splits."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators import data as D
from evaluators.data import DataSpec, load_dataset


@pytest.fixture
def coded_digits(monkeypatch):
    n = 300
    labels = np.arange(n) % 10
    x = np.zeros((n, 8, 8, 1), dtype=np.uint8)
    for i in range(n):
        x[i, :, :, 0] = 1                  # a visible block (the digit's footprint)
        x[i, 0, :, 0] = 10 + labels[i]     # row 0: which digit
        x[i, 1, 0, 0] = 1 + i % 250        # row 1: which source image
        x[i, 1, 1, 0] = 1 + i // 250
    monkeypatch.setattr(D, "_digits", lambda: (x, labels.astype(np.int64), [str(d) for d in range(10)]))
    return x, labels


def _decode(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top row, left column, digit, source index) of the two 8x8 blocks of a canvas."""
    out = []
    for lo, hi in ((0, 12), (12, 24)):
        ys, xs = np.nonzero(img[:, lo:hi, 0])
        r, c = int(ys.min()), int(xs.min()) + lo
        out.append((r, c, int(img[r, c, 0]) - 10, int(img[r + 1, c, 0]) - 1 + 250 * (int(img[r + 1, c + 1, 0]) - 1)))
    return out


def test_digit_pairs_labels_follow_the_rule(coded_digits):
    d = load_dataset(DataSpec(dataset="digit_pairs", img_size=D.PAIR_CANVAS, in_chans=1))
    assert d.num_classes == 10 and d.train_x.shape[1:] == (24, 24, 1)
    assert len(d.train_y) == 2 * 240 and len(d.val_y) == 2 * 60  # two pairs per source image
    sources = []
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y)):
        used = set()
        for img, label in zip(x.numpy(), y.tolist()):
            (ra, ca, da, ia), (rb, cb, db, ib) = _decode(img)
            assert 0 <= ca <= 2 and 14 <= cb <= 16       # left third, right third: >= 4 px apart
            assert abs(ra - rb) >= D.PAIR_MIN_DROP
            assert da != db
            assert label == (da if ra < rb else db)      # the digit that sits higher
            assert coded_digits[1][ia] == da and coded_digits[1][ib] == db
            used |= {ia, ib}
        sources.append(used)
    assert not sources[0] & sources[1]  # no source image in both splits
    counts = np.bincount(d.train_y.numpy(), minlength=10)
    assert counts.min() > 0.5 * counts.mean()
    # both sides hold the higher digit about equally often
    left_top = sum(_decode(img)[0][0] < _decode(img)[1][0] for img in d.train_x.numpy())
    assert 0.35 < left_top / len(d.train_y) < 0.65


def test_digit_pairs_is_deterministic_resized_and_subset(coded_digits):
    a = load_dataset(DataSpec(dataset="digit_pairs", img_size=16, subset=100, seed=3))
    b = load_dataset(DataSpec(dataset="digit_pairs", img_size=16, subset=100, seed=3))
    assert a.train_x.shape == (100, 16, 16, 3) and len(a.val_y) == 100
    assert bool((a.train_x == b.train_x).all()) and bool((a.val_y == b.val_y).all())
    c = load_dataset(DataSpec(dataset="digit_pairs", img_size=16, subset=100, seed=4))
    assert not bool((a.train_x == c.train_x).all())
    assert not a.flip_ok  # a flip swaps left and right and mirrors the digits


def test_digit_pairs_needs_no_root():
    assert DataSpec(dataset="digit_pairs").root is None
