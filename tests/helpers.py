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
    "sampler.steps=2",
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


def write_tiny_diffusers_pixel(path: Path, num_timesteps: int = 100) -> Path:
    """A random 2-level diffusers UNet2DModel + DDPMScheduler, saved as a pipeline directory."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=num_timesteps)).save_pretrained(path)
    return path


def write_tiny_stable_diffusion(path: Path, num_timesteps: int = 100, prediction_type: str = "epsilon") -> Path:
    """A random Stable Diffusion pipeline (VAE with 2x downsampling, 1-layer CLIP text encoder with a
    character vocabulary, 2-level conditional U-Net), saved as a pipeline directory: offline, seconds."""
    import string

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    chars = string.ascii_lowercase + string.digits
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    # transformers 5: vocab=/merges= objects (vocab_file= keywords would silently give an empty vocabulary)
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokens), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16, projection_dim=16,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=32)  # fmt: skip
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=2)  # fmt: skip
    scheduler = DDIMScheduler(num_train_timesteps=num_timesteps, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1, prediction_type=prediction_type)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(path)
    return path


def tiny_module(**kwargs):
    """A seeded 2-source x0/residual DiffusionFusionModule with an 8-channel U-Net (module-level tests)."""
    import torch

    from fusiondiff.diffusion import make_schedule
    from fusiondiff.models import ConditionalUNet
    from fusiondiff.training import DiffusionFusionModule

    torch.manual_seed(0)
    net = ConditionalUNet(image_channels=3, num_sources=2, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    return DiffusionFusionModule(net, make_schedule("cosine", 50), lambda params: torch.optim.AdamW(params, 1e-3),
                                 ema_decay=0, prediction="x0", residual=True, **kwargs)  # fmt: skip


def tiny_batch():
    """A seeded batch of two 32 px two-source samples for :func:`tiny_module`."""
    import torch

    g = torch.Generator().manual_seed(1)
    return {"sources": torch.rand(2, 2, 3, 32, 32, generator=g) * 2 - 1, "target": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}


class SignalAt:
    """A Lightning callback (``+callbacks.x._target_=helpers.SignalAt``) for interrupt tests: after training step
    ``step`` it sends ``signal`` to its own process (``kill``), or only touches ``path`` (a marker for a test
    that sends the signal from outside)."""

    def __new__(cls, step: int, signal: str = "SIGINT", path: str | None = None, kill: bool = True):
        import os
        import signal as signals
        from pathlib import Path

        import lightning as L

        class _SignalAt(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == step:
                    if path:
                        Path(path).touch()
                    if kill:
                        os.kill(os.getpid(), getattr(signals, signal))

        return _SignalAt()
