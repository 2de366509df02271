"""Evaluate fusion methods on a dataset (see conf/evaluate.yaml and fusiondiff.cli.evaluate).

python scripts/evaluate.py dataset=../shared/data/mfif/lytro output_dir=outputs/eval/lytro
"""

import hydra
from omegaconf import DictConfig

from fusiondiff.cli.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
    print((__import__("pathlib").Path(cfg.output_dir) / "summary.md").read_text())


if __name__ == "__main__":
    main()
