"""scikit-learn's bundled 8x8 digits written as a small ImageFolder (no download).

``python -m examples.digits OUT [--size 32]`` writes ``OUT/train/<class>/*.png`` and
``OUT/validation/<class>/*.png`` (80/20 split, fixed seed), upscaled to ``size`` pixels, RGB.
``--per-class N`` keeps the first N images of each class in each split (tiny sets for tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: Path, size: int = 32, seed: int = 0, per_class: int | None = None) -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.images))
    cut = int(0.8 * len(order))
    for split, indices in (("train", order[:cut]), ("validation", order[cut:])):
        if per_class is not None:
            indices = np.concatenate([indices[data.target[indices] == c][:per_class] for c in range(10)])
        for i in indices:
            folder = out / split / str(data.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (data.images[i] * (255.0 / 16.0)).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
            image.save(folder / f"{i:04d}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=None)
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error(f"--per-class {args.per_class} is invalid; allowed: an int >= 1")
    write_digits(args.out, args.size, per_class=args.per_class)


if __name__ == "__main__":
    main()
