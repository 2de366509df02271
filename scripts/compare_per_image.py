"""Per-image comparison of two methods from an ``evaluate.py`` run's ``per_image.csv``.

    python scripts/compare_per_image.py runs/eval4/lytro/per_image.csv "fusiondiff (ddim, 1 steps)" decision_map

For each metric: on how many images A scores better than B (lower is better for ``qcv``), and the mean
paired difference A - B with a 95 % interval (1.96 standard errors).
"""

from __future__ import annotations

import argparse
import csv
import math

LOWER_IS_BETTER = {"qcv", "seconds"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("a", help="method label A (as in the CSV's method column)")
    parser.add_argument("b", help="method label B")
    parser.add_argument("--metrics", nargs="+", default=["qabf", "qcb", "qcv", "mi"])
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[str, str]]] = {}
    for r in csv.DictReader(open(args.csv, newline="")):
        rows.setdefault(r["method"], {})[r["image"]] = r
    for label in (args.a, args.b):
        if label not in rows:
            raise SystemExit(f"no method {label!r} in {args.csv}; methods: {', '.join(rows)}")
    images = sorted(set(rows[args.a]) & set(rows[args.b]))
    if not images:
        raise SystemExit(f"{args.a!r} and {args.b!r} share no image")
    print(f"{args.a} vs {args.b}, {len(images)} images")
    for m in args.metrics:
        d = [float(rows[args.a][i][m]) - float(rows[args.b][i][m]) for i in images]
        wins = sum((x < 0) if m in LOWER_IS_BETTER else (x > 0) for x in d)
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1))
        print(f"- {m}: A better on {wins}/{len(d)}, mean difference {mean:+.5f} ± {1.96 * sd / math.sqrt(len(d)):.5f}")


if __name__ == "__main__":
    main()
