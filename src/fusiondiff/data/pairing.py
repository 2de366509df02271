"""Find the source images (and ground truth) of each sample in a folder, by name.

Supported layouts (N >= 2 sources):

1. ``root/source_1/``, ``root/source_2/`` (, ``source_3/`` ...) and optionally ``root/full_clear/``
   (FusionDiff). Files match by stem after removing the source's letter suffix
   (``-A``/``_A`` in ``source_1``, ``-B``/``_B`` in ``source_2``, ...), so ``lytro-01-A.jpg``
   pairs with ``lytro-01-B.jpg`` and ``NYU-D (1).jpg`` with ``NYU-D (1).jpg``.
2. ``root/<name>/<name>_A.ext``, ``<name>_B.ext`` (, ``_C`` ...) with an optional
   ``<name>_GT.ext`` / ``<name>_F.ext`` ground truth.

Pairing never relies on the order of a directory listing. A name without all of its
partners is an error that lists it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fusiondiff.data.io import IMAGE_EXTENSIONS
from fusiondiff.errors import InputError, MissingInputError

GROUND_TRUTH_DIRS = ("full_clear", "ground_truth", "gt")
GROUND_TRUTH_SUFFIXES = ("GT", "F")


@dataclass(frozen=True)
class Sample:
    name: str
    sources: tuple[Path, ...]
    target: Path | None = None


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _strip(stem: str, letter: str) -> str:
    return re.sub(rf"[-_]{letter}$", "", stem, flags=re.IGNORECASE)


def _index(files: list[Path], letter: str | None, folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = _strip(f.stem, letter) if letter else f.stem
        if key in out:
            raise InputError(f"{folder}: {out[key].name!r} and {f.name!r} both map to the sample name {key!r}")
        out[key] = f
    return out


def _missing_error(root: Path, problems: list[str]) -> InputError:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return InputError(f"{root}: {len(problems)} sample(s) lack a partner image ({shown}); pair or remove them")


def _source_dirs(root: Path) -> list[Path]:
    dirs = []
    k = 1
    while (root / f"source_{k}").is_dir():
        dirs.append(root / f"source_{k}")
        k += 1
    return dirs


def find_samples(root: str | Path, require_target: bool = False) -> list[Sample]:
    """All samples under ``root`` in one of the supported layouts, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"dataset folder not found: {root}")
    source_dirs = _source_dirs(root)
    if source_dirs:
        samples = _folder_layout(root, source_dirs)
    else:
        samples = _per_sample_layout(root)
    if require_target:
        lacking = [s.name for s in samples if s.target is None]
        if lacking:
            raise InputError(
                f"{root}: training needs ground truth (full_clear/ or <name>_GT), missing for {len(lacking)} sample(s), "
                f"e.g. {lacking[:3]}"
            )
    return samples


def _folder_layout(root: Path, source_dirs: list[Path]) -> list[Sample]:
    if len(source_dirs) < 2:
        raise InputError(f"{root}: found only source_1/; a sample needs at least source_1/ and source_2/")
    indices = [_index(_images(d), chr(ord("A") + k), d) for k, d in enumerate(source_dirs)]
    gt_dir = next((root / g for g in GROUND_TRUTH_DIRS if (root / g).is_dir()), None)
    gt_index = _index(_images(gt_dir), None, gt_dir) if gt_dir else None
    names = sorted(set().union(*[set(i) for i in indices]))
    if not names:
        raise InputError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(d.name for d in source_dirs)}")
    problems = []
    for name in names:
        absent = [d.name for d, idx in zip(source_dirs, indices, strict=True) if name not in idx]
        if absent:
            problems.append(f"{name!r}: nothing in {', '.join(absent)}")
    if gt_index is not None:
        for name in names:
            if name not in gt_index:
                problems.append(f"{name!r}: nothing in {gt_dir.name}/")
    if problems:
        raise _missing_error(root, problems)
    return [Sample(name, tuple(idx[name] for idx in indices), gt_index[name] if gt_index is not None else None) for name in names]


def _per_sample_layout(root: Path) -> list[Sample]:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples, problems = [], []
    for d in subdirs:
        files = _images(d)
        by_letter: dict[str, Path] = {}
        target = None
        for f in files:
            m = re.match(rf"^{re.escape(d.name)}[-_]([A-Za-z]+)$", f.stem)
            if not m:
                continue
            tag = m.group(1).upper()
            if tag in GROUND_TRUTH_SUFFIXES:
                target = f
            elif len(tag) == 1:
                by_letter[tag] = f
        if not by_letter:
            continue
        letters = sorted(by_letter)
        expected = [chr(ord("A") + k) for k in range(max(2, len(letters)))]
        absent = [x for x in expected if x not in by_letter]
        if absent:
            problems.append(f"{d.name!r}: no {', '.join(f'{d.name}_{x}' for x in absent)}")
            continue
        samples.append(Sample(d.name, tuple(by_letter[x] for x in expected), target))
    if problems:
        raise _missing_error(root, problems)
    if not samples:
        raise InputError(
            f"{root}: no samples found. Expected source_1/ + source_2/ (+ full_clear/) folders, "
            "or one folder per sample holding <name>_A.ext and <name>_B.ext"
        )
    counts = {len(s.sources) for s in samples}
    if len(counts) > 1:
        raise InputError(f"{root}: samples have different numbers of sources ({sorted(counts)})")
    return samples
