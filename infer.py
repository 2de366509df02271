"""Fuse images: ``python infer.py`` (built-in example), ``inputs=[a.png,b.png]`` or ``input_dir=folder``."""

import hydra
from omegaconf import DictConfig

from fusiondiff.cli.infer import infer


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    infer(cfg)


if __name__ == "__main__":
    main()
