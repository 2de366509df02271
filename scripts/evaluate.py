"""Evaluate methods of a task on a test suite (see conf/evaluate.yaml and fusiondiff.cli.evaluate).

python scripts/evaluate.py task=multifocus dataset=../shared/data/mfif/lytro output_dir=outputs/eval/lytro
python scripts/evaluate.py task=hdr dataset=data/hdr_synthetic methods='[model:runs/hdr/model.safetensors,linear_merge]'
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from fusiondiff.cli.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
    print((Path(cfg.output_dir) / "summary.md").read_text())


if __name__ == "__main__":
    main()
