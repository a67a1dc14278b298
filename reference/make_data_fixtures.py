"""Fixtures for the data tests (tests/data/), made with the reference libraries.

- pil-*.idx: inputs and Pillow's BILINEAR resize to 32x32 (what torchvision's Resize runs on a
  PIL image), to check that src/data/resize.rs matches Pillow pixel for pixel.
- svhn-scipy-*.mat: small SVHN-format files written by scipy.io.savemat (MATLAB level 5;
  compressed and not), with the expected N x 3 x 32 x 32 images and labels computed the way
  torchvision's SVHN loader does (np.transpose(X, (3, 2, 0, 1)), label 10 -> 0).

Run: python reference/make_data_fixtures.py   (needs numpy, scipy, pillow)
"""
import os
import struct

import numpy as np
import scipy.io
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "data")


def write_idx(name, a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([0, 0, 8, a.ndim]))
        for d in a.shape:
            f.write(struct.pack(">I", d))
        f.write(a.tobytes())


def resize_case(tag, h, w, n, rng):
    imgs = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    # Smooth and sharp structure too: a gradient, a checkerboard, a bright blob on black.
    yy, xx = np.mgrid[0:h, 0:w]
    imgs[0] = (255 * (xx + yy) / max(1, h + w - 2)).astype(np.uint8)
    imgs[1] = (((xx // 3 + yy // 3) % 2) * 255).astype(np.uint8)
    imgs[2] = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 4) ** 2, 255, 0)
    out = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in imgs])
    write_idx(f"pil-in-{tag}.idx", imgs)
    write_idx(f"pil-out-{tag}.idx", out)


def svhn_case(tag, n, compress, y_dtype, rng):
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(y_dtype)
    y[0, 0] = 10  # the digit 0
    scipy.io.savemat(os.path.join(OUT, f"svhn-scipy-{tag}.mat"), {"X": x, "y": y},
                     do_compression=compress, format="5")
    expected = np.transpose(x, (3, 2, 0, 1))  # torchvision: N x C x H x W
    labels = y[:, 0].astype(np.int64)
    labels[labels == 10] = 0
    write_idx(f"svhn-scipy-{tag}-images.idx", expected)
    write_idx(f"svhn-scipy-{tag}-labels.idx", labels.astype(np.uint8))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20180618)
    resize_case("28", 28, 28, 6, rng)       # MNIST: enlarge
    resize_case("45x20", 45, 20, 4, rng)    # shrink rows (antialiased), enlarge columns
    resize_case("100x70", 100, 70, 3, rng)  # shrink both by about 3x (wide filter)
    resize_case("32x50", 32, 50, 3, rng)    # horizontal pass only
    resize_case("64x40", 64, 40, 3, rng)    # Pillow >= 11 runs the vertical pass first here
    svhn_case("compressed", 7, True, np.uint8, rng)
    svhn_case("plain", 5, False, np.float64, rng)


if __name__ == "__main__":
    main()
