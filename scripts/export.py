"""Turn a Lightning checkpoint into an inference bundle (EMA weights + config, one .safetensors file).

    python scripts/export.py runs/quickstart/checkpoints/last.ckpt model.safetensors [--half]

``infer.py ckpt=model.safetensors`` then needs neither the training config nor Lightning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusiondiff.models.bundle import export_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    args = parser.parse_args()
    out = export_bundle(args.checkpoint, args.output, half=args.half)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
