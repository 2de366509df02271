"""Compose the real Hydra configs and shrink them for CPU tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"

TINY = [
    "model=unet_tiny",
    "logger=csv",
    "callbacks.progress=null",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "task.module.val_steps=2",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "diffusion.num_timesteps=50",
]

SYNTHETIC_TINY = ["data.train.num_samples=8", "data.train.crop_size=16", "data.val.num_samples=2", "data.val.crop_size=16"]


def compose_config(name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def write_tiny_bundle(
    path: Path, num_sources: int = 2, num_timesteps: int = 100, init_std: float | None = 0.05, **config
) -> Path:
    """A tiny U-Net saved as an inference bundle; ``init_std=None`` keeps the zero-initialised output layer."""
    import json

    import torch
    from safetensors.torch import save_file

    from fusiondiff.models import ConditionalUNet

    net_cfg = {"_target_": "fusiondiff.models.ConditionalUNet", "image_channels": 3, "num_sources": num_sources,
               "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1}  # fmt: skip
    torch.manual_seed(0)
    net = ConditionalUNet(**{k: v for k, v in net_cfg.items() if k != "_target_"})
    if init_std is not None:
        for p in net.parameters():
            torch.nn.init.normal_(p, std=init_std)
    meta = {"net": net_cfg, "schedule": {"name": "cosine", "num_timesteps": num_timesteps}, **config}
    save_file(net.state_dict(), str(path), metadata={"fusiondiff": json.dumps(meta)})
    return path
