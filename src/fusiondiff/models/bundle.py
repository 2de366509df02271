"""Inference bundles: build, load and export the networks trained here (no Lightning needed).

An *inference bundle* is one ``.safetensors`` file: the EMA weights of the network, and in its metadata
(key ``fusiondiff``) the JSON config that rebuilds the network, the noise schedule, the task and the data
convention. :func:`load_model` reads a bundle or a Lightning ``.ckpt`` written by ``train.py``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from fusiondiff.diffusion import NoiseSchedule, make_schedule
from fusiondiff.errors import MissingModelFileError, ModelFileError

BUNDLE_FORMAT = 1
# Only networks from these modules are built from a file's config (a bundle is data, not code).
ALLOWED_NET_MODULES = ("fusiondiff.models",)
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_BUNDLE = ASSETS / "multifocus_blend.safetensors"  # the shipped multi-focus model
DEFAULT_PRIOR = ASSETS / "unconditional_small.safetensors"  # the shipped unconditional prior (zero-shot)
STACK_BUNDLE = ASSETS / "multifocus_stack.safetensors"  # the shipped N-frame multi-focus model (experiment=multifocus_stack)
# the halo-correcting boundary model (experiment=multifocus_boundary: a 32-channel U-Net on a 2x coarser grid,
# 8000 steps; README "Defocus boundaries", session 15): opt-in, not the default (better in the band, lower Q^AB/F
# on real pairs)
BOUNDARY_BUNDLE = ASSETS / "multifocus_boundary.safetensors"
SHIPPED = {p.stem: p for p in (DEFAULT_BUNDLE, DEFAULT_PRIOR, STACK_BUNDLE, BOUNDARY_BUNDLE)}  # ckpt=<name> finds them


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or the name of a shipped bundle (``multifocus_blend``, ``multifocus_stack``, ``multifocus_boundary``,
    ``unconditional_small``) when no file of that name exists."""
    path = Path(path)
    if not path.exists() and str(path) in SHIPPED:
        return SHIPPED[str(path)]
    return path


def build_net(net_config: dict) -> nn.Module:
    """Instantiate ``{"_target_": "fusiondiff.models.X", **kwargs}``."""
    cfg = dict(net_config)
    target = cfg.pop("_target_", None)
    if not isinstance(target, str) or not target.startswith(ALLOWED_NET_MODULES):
        raise ModelFileError(f"refusing to build network {target!r}: only {ALLOWED_NET_MODULES} classes are allowed")
    module_name, _, cls_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**cfg)


def build_schedule(schedule_config: dict) -> NoiseSchedule:
    cfg = {k: v for k, v in schedule_config.items() if k != "_target_"}
    return make_schedule(**cfg)


def _state_from_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EMA weights (``ema.module.*``) if present, else the raw ones (``net.*``)."""
    for prefix in ("ema.module.", "net."):
        sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if sub:
            return sub
    raise ModelFileError("checkpoint holds no 'net.' or 'ema.module.' weights; was it written by fusiondiff's train.py?")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, NoiseSchedule, dict]:
    """(network in eval mode, schedule, config) from a ``.safetensors`` bundle, a ``.ckpt`` or a shipped
    bundle's name (:func:`resolve_model_path`)."""
    path = resolve_model_path(path)
    if not path.is_file():
        raise MissingModelFileError(f"model file not found: {path} (shipped bundles by name: {', '.join(SHIPPED)})")
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ModelFileError(f"unknown model file type {path.suffix!r}: give a .safetensors bundle or a .ckpt checkpoint")
    try:
        config, state = _read_model_file(path, map_location)
        net = build_net(config["net"])
        net.load_state_dict({k: v.float() for k, v in state.items()})
        schedule = build_schedule(config["schedule"])
    except ModelFileError:
        raise
    except Exception as err:  # a corrupt, truncated or foreign file: name it, and what it should be
        raise ModelFileError(f"cannot read {path} ({type(err).__name__}: {err}); is this a fusiondiff bundle or .ckpt?") from err
    return net.eval(), schedule, config


def _read_model_file(path: Path, map_location: str | torch.device) -> tuple[dict, dict[str, torch.Tensor]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if "fusiondiff" not in meta:
            raise ModelFileError(
                f"{path} is a safetensors file without fusiondiff metadata; export bundles with scripts/export.py"
            )  # noqa: E501
        return json.loads(meta["fusiondiff"]), load_file(str(path), device=str(map_location))
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    config = ckpt.get("fusiondiff") if isinstance(ckpt, dict) else None
    if not config:
        raise ModelFileError(f"{path} has no fusiondiff config; it was not written by fusiondiff's train.py")
    return config, _state_from_checkpoint(ckpt["state_dict"])


def export_bundle(checkpoint: str | Path, output: str | Path, half: bool = False) -> Path:
    """Write the EMA weights and config of a Lightning checkpoint as a safetensors bundle."""
    from safetensors.torch import save_file

    from fusiondiff.data.io import atomic_write_bytes

    net, _, config = load_model(checkpoint)
    config = {**config, "format": BUNDLE_FORMAT}
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp), metadata={"fusiondiff": json.dumps(config)})
    atomic_write_bytes(output, tmp.read_bytes())
    tmp.unlink()
    return output
