"""The original edit-friendly-DDPM tool's YAML job format: a list of entries with ``init_img``,
``second_image``, ``source_prompt``, ``target_prompts`` and optional per-entry settings, as fusiondiff jobs.

Unknown keys are an error (listing the known ones), not silently ignored; relative image paths are
relative to the YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusiondiff.errors import ConfigError, MissingInputError

# keys of the original edit-friendly-DDPM tool's YAML (a list of entries) -> ours
YAML_KEYS = {
    "init_img": "first image",
    "second_image": "second image",
    "second_img": "second image",
    "images": "all images (N >= 2), instead of init_img / second_image",
    "source_prompt": "fusion.prompt_src",
    "target_prompts": "fusion.prompt_tar (one output per prompt)",
    "target_prompt": "fusion.prompt_tar",
    "fusion_ratio": "fusion.ratio",
    "fusion_mode": "fusion.mode",
    "skip": "fusion.skip",
    "cfg_src": "fusion.cfg_src",
    "cfg_tar": "fusion.cfg_tar",
    "num_diffusion_steps": "fusion.steps",
    "eta": "fusion.eta",
    "weights": "fusion.weights",
    "output": "output",
}


@dataclass
class NoiseFusionJob:
    images: list[Path]
    output: Path
    fusion: dict


def jobs_from_yaml(path: str | Path, fusion: dict, output: Path) -> list[NoiseFusionJob]:
    """Jobs from a YAML in the original tool's format: one entry (or a list) with ``init_img``,
    ``second_image``, ``source_prompt``, ``target_prompts`` and optional per-entry settings."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"fusion.input_yaml not found: {path}")
    entries = yaml.safe_load(path.read_text())
    entries = [entries] if isinstance(entries, dict) else entries
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: expected a mapping or a list of mappings with init_img, second_image, source_prompt, ...")
    jobs = []
    for k, entry in enumerate(entries):
        unknown = sorted(set(entry) - set(YAML_KEYS))
        if unknown:
            raise ConfigError(f"{path}, entry {k}: unknown key(s) {unknown}; known: {', '.join(YAML_KEYS)}")
        if "images" in entry:
            images = list(entry["images"])
        else:
            second = entry.get("second_image", entry.get("second_img"))
            if "init_img" not in entry or second is None:
                raise ConfigError(f"{path}, entry {k}: give init_img and second_image (or images: [...])")
            images = [entry["init_img"], second]
        images = [Path(p) if Path(p).is_absolute() else path.parent / p for p in images]
        settings = dict(fusion)
        for key, ours in (("fusion_ratio", "ratio"), ("fusion_mode", "mode"), ("skip", "skip"), ("cfg_src", "cfg_src"),
                          ("cfg_tar", "cfg_tar"), ("num_diffusion_steps", "steps"), ("eta", "eta"),
                          ("weights", "weights"), ("source_prompt", "prompt_src")):  # fmt: skip
            if key in entry:
                settings[ours] = entry[key]
        targets = entry.get("target_prompts", entry.get("target_prompt"))
        targets = [targets] if isinstance(targets, str) or targets is None else list(targets)
        base = Path(entry.get("output", output))
        for j, target in enumerate(targets):
            name = base if len(entries) == 1 and len(targets) == 1 else base.with_name(f"{base.stem}_{k}_{j}{base.suffix}")
            jobs.append(NoiseFusionJob(images, name, {**settings, "prompt_tar": target}))
    return jobs
