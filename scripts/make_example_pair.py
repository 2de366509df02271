"""Write the built-in example pair (src/fusiondiff/assets/example_{A,B,GT}.png).

It is made with the synthetic multi-focus generator from scikit-image's ``rocket`` photo,
which is held out from the quickstart's training photos:

    python scripts/make_example_pair.py [--out src/fusiondiff/assets] [--size 256] [--seed 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from fusiondiff.data.datasets import make_multifocus_triplet, skimage_photos
from fusiondiff.data.io import write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/fusiondiff/assets")
    parser.add_argument("--photo", default="rocket")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    photo = skimage_photos([args.photo])[0]
    h, w = photo.shape[-2:]
    height = round(h * args.width / w)
    sharp = F.interpolate(photo[None], (height, args.width), mode="area")[0]
    gen = torch.Generator().manual_seed(args.seed)
    sources, _ = make_multifocus_triplet(sharp, gen, max_sigma=3.0, mask_kinds=("half_plane",))
    for tag, img in (("A", sources[0]), ("B", sources[1]), ("GT", sharp)):
        print(write_image(args.out / f"example_{tag}.png", img.clamp(-1, 1)))


if __name__ == "__main__":
    main()
