"""Train a diffusion fusion model: ``python train.py experiment=quickstart`` (see conf/train.yaml)."""

from fusiondiff.cli.main import train_main

if __name__ == "__main__":
    train_main()
