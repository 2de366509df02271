"""Every config group option composes and instantiates; unknown names give helpful errors."""

import lightning as L
import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from fusiondiff.diffusion import NoiseSchedule, get_sampler
from fusiondiff.models import ConditionalUNet

from helpers import CONF, SYNTHETIC_TINY, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", options("model"))
def test_models_instantiate(model, tmp_path):
    cfg = compose_config("train", [f"model={model}"], tmp_path)
    net = instantiate(cfg.model)
    from fusiondiff.models import SpaceToDepthNet

    shared = getattr(net, "unet", None)  # the N-frame network: one shared U-Net
    assert isinstance(net, (ConditionalUNet, SpaceToDepthNet)) or isinstance(shared, ConditionalUNet)


@pytest.mark.parametrize("diffusion", options("diffusion"))
def test_schedules_instantiate(diffusion, tmp_path):
    cfg = compose_config("train", [f"diffusion={diffusion}"], tmp_path)
    assert isinstance(instantiate(cfg.diffusion), NoiseSchedule)


@pytest.mark.parametrize("sampler", options("sampler"))
def test_samplers_resolve(sampler, tmp_path):
    from fusiondiff.pipeline import SamplerConfig

    cfg = compose_config("train", [f"sampler={sampler}"], tmp_path)
    config = SamplerConfig.from_config(cfg.sampler).check(2000)  # every option is one the sampler takes
    assert config.name == sampler and get_sampler(config.name) is not None


@pytest.mark.parametrize("trainer", [t for t in options("trainer") if t not in ("gpu",)])
def test_trainers_instantiate(trainer, tmp_path):
    overrides = [f"trainer={trainer}", "trainer.accelerator=cpu"] + (["trainer.devices=1"] if trainer == "ddp" else [])
    cfg = compose_config("train", overrides, tmp_path)
    assert isinstance(instantiate(cfg.trainer, logger=False, enable_checkpointing=False), L.Trainer)


def test_gpu_trainer_config_builds_a_gpu_trainer_or_says_there_is_none(tmp_path):
    import torch

    cfg = compose_config("train", ["trainer=gpu"], tmp_path)
    if torch.cuda.is_available():
        assert instantiate(cfg.trainer, logger=False).accelerator.__class__.__name__ == "CUDAAccelerator"
    else:
        with pytest.raises(Exception, match="(?i)gpu|cuda"):
            instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_instantiate(logger, tmp_path):
    from lightning.pytorch.loggers import Logger

    cfg = compose_config("train", [f"logger={logger}"], tmp_path)
    assert isinstance(instantiate(cfg.logger), Logger)


def test_callbacks_and_data_instantiate(tmp_path, fusiondiff_folder):
    cfg = compose_config("train", SYNTHETIC_TINY, tmp_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert len(callbacks) == 2
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["sources"].shape == (8, 2, 3, 16, 16)  # 8 samples < batch 16
    cfg = compose_config(
        "train", ["data=paired_folder", f"data.train.root={fusiondiff_folder}", "data.train.crop_size=16"], tmp_path
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 1


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.trainer.max_steps > 0
    instantiate(cfg.model)


@pytest.mark.parametrize("mode", [m for m in options("mode") if not m.startswith("_")])
def test_every_infer_mode_composes_with_only_its_own_keys(mode):
    from fusiondiff.cli.infer import infer_modes

    cfg = compose_config("infer", [f"mode={mode}"])
    assert cfg.mode == mode and mode in infer_modes()
    trained = mode in ("fuse", "hdr", "restore")
    assert ("sampler" in cfg and "ckpt" in cfg) == trained  # zero-shot modes take a prior, no sampler
    assert ("prior" in cfg) == (not trained) and ("fusion" in cfg) == (mode in ("noise_fusion", "style_fusion", "inpaint"))
    with pytest.raises(ConfigCompositionException, match="fusion.ratio" if trained else "sampler.steps"):
        compose_config("infer", [f"mode={mode}", "fusion.ratio=0.3" if trained else "sampler.steps=4"])


def test_unknown_names_list_valid_options(tmp_path):
    with pytest.raises(ConfigCompositionException, match="(?s)Could not find 'model/unet_huge'.*unet_small"):
        compose_config("train", ["model=unet_huge"], tmp_path)
    cfg = compose_config("train", ["diffusion.name=sigmoid"], tmp_path)
    with pytest.raises(Exception, match="valid: cosine, linear"):
        instantiate(cfg.diffusion)
