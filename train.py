"""Train a diffusion fusion model: ``python train.py experiment=quickstart`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from fusiondiff.cli.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/ssim"))


if __name__ == "__main__":
    main()
