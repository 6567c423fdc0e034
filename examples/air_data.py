"""Scenes of a few digits each, for the AIR example (`examples/air.py`); nothing is downloaded.

Each scene is a square canvas with 0 to `max_objects` digits pasted at random positions and
sizes, and the number of digits is kept for evaluating inferred counts. The digits are
scikit-learn's bundled 8x8 images (grey levels 0-16), upscaled by bilinear interpolation, or MNIST
digits read from IDX files the user points to (the multi-MNIST scenes of the AIR paper). A digit
covers at most a quarter of another's square (so that every count can be told from the image);
where they overlap, the brighter pixel is kept. One seed fixes the whole data set.

    >>> scenes = make_scenes(digit_images("digits"), 4, side=32, seed=0)
    >>> scenes.images.shape, scenes.images.dtype, scenes.counts.tolist()
    ((4, 32, 32), dtype('float32'), [2, 1, 1, 0])
"""

from __future__ import annotations

import gzip
import pathlib
import struct
from typing import NamedTuple

import numpy as np

PAPER_SIDE = 50  # the canvas of multi-MNIST in the AIR paper and the PLDI artifact


class Scenes(NamedTuple):
    images: np.ndarray  # (N, side, side) float32 in [0, 1]
    counts: np.ndarray  # (N,) int32: how many digits each image holds


def read_idx(path: pathlib.Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format), optionally gzipped, as a numpy array."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: it does not start with two zero bytes.")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX type code {raw[2]:#04x}; only unsigned bytes (0x08) are "
                         "read.")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file has "
                         f"{len(raw)} bytes; is it truncated?")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"--mnist {folder}: no {stem} (or {stem}.gz) there. Put the MNIST IDX file "
        f"{stem} in that folder; this script never downloads it.")


def digit_images(source: str | pathlib.Path) -> np.ndarray:
    """Single digits as float32 arrays (M, h, w) in [0, 1].

    Args:
      source: ``"digits"`` for scikit-learn's 8x8 digits, or a folder holding MNIST's
        ``train-images-idx3-ubyte`` (optionally gzipped).
    """
    if str(source) == "digits":
        from sklearn.datasets import load_digits

        return (load_digits().images / 16.0).astype(np.float32)
    folder = pathlib.Path(source).expanduser()
    return (read_idx(_find(folder, "train-images-idx3-ubyte")) / 255.0).astype(np.float32)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """`image` (h, w) resampled bilinearly to (size, size), pixel centres aligned."""
    h, w = image.shape
    rows = (np.arange(size) + 0.5) * h / size - 0.5
    cols = (np.arange(size) + 0.5) * w / size - 0.5
    r0 = np.clip(np.floor(rows).astype(int), 0, h - 1)
    c0 = np.clip(np.floor(cols).astype(int), 0, w - 1)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr = np.clip(rows - r0, 0.0, 1.0)[:, None]
    fc = np.clip(cols - c0, 0.0, 1.0)[None, :]
    top = image[r0][:, c0] * (1 - fc) + image[r0][:, c1] * fc
    bottom = image[r1][:, c0] * (1 - fc) + image[r1][:, c1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def _overlap(a, b) -> float:
    """The larger of the fractions of square a covered by square b and of b covered by a."""
    (top_a, left_a, size_a), (top_b, left_b, size_b) = a, b
    rows = max(0, min(top_a + size_a, top_b + size_b) - max(top_a, top_b))
    cols = max(0, min(left_a + size_a, left_b + size_b) - max(left_a, left_b))
    return rows * cols / min(size_a, size_b) ** 2


def make_scenes(digits: np.ndarray, num: int, *, side: int = PAPER_SIDE, max_objects: int = 2,
                sizes: tuple[float, float] | None = None, max_overlap: float = 0.25,
                seed: int = 0) -> Scenes:
    """`num` canvases of `side` x `side` pixels with 0 to `max_objects` digits each.

    The count is uniform on 0..max_objects; each digit is drawn from `digits`, resized to a
    random width in `sizes` (pixels; by default 0.24 to 0.34 of the canvas, so that an 8x8
    digit, which its ink fills, fits the model's prior window, a third of the canvas wide) and
    pasted whole at a uniformly random position, drawn again (up to 100 times) while its square
    covers more than `max_overlap` of an earlier digit's square or the earlier one covers more
    than that of it. MNIST's 28x28 images are pasted at 28 pixels when `sizes` is None and the
    canvas is the paper's.

    Returns:
      `Scenes` with float32 images in [0, 1] and int32 counts.
    """
    if side < 12:
        raise ValueError(f"side={side}: a canvas needs at least 12 pixels a side.")
    if max_objects < 0:
        raise ValueError(f"max_objects={max_objects}: it must be at least 0.")
    rng = np.random.default_rng(seed)
    if sizes is None:
        if digits.shape[1:] == (28, 28) and side == PAPER_SIDE:
            sizes = (28, 28)
        else:
            sizes = (0.24 * side, 0.34 * side)
    low, high = int(round(sizes[0])), int(round(sizes[1]))
    if not 1 <= low <= high <= side:
        raise ValueError(f"sizes={sizes}: digit widths must lie in [1, side={side}].")
    images = np.zeros((num, side, side), np.float32)
    counts = rng.integers(0, max_objects + 1, num).astype(np.int32)
    for i, count in enumerate(counts):
        boxes = []
        for _ in range(count):
            size = int(rng.integers(low, high + 1))
            digit = digits[rng.integers(len(digits))]
            if digit.shape != (size, size):
                digit = resize(digit, size)
            for _ in range(100):
                top, left = rng.integers(0, side - size + 1, 2)
                if all(_overlap((top, left, size), box) <= max_overlap for box in boxes):
                    break
            boxes.append((top, left, size))
            window = images[i, top : top + size, left : left + size]
            np.maximum(window, digit, out=window)
    return Scenes(images, counts)
