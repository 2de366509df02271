"""Console entry points (``fusiondiff-train``, ``fusiondiff-infer``, ``fusiondiff-evaluate``; pyproject.toml) and
the bodies of ``train.py`` / ``infer.py`` / ``scripts/evaluate.py``: Hydra over the project's ``conf/``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[3] / "conf"


def _hydra(config_name: str, body: Callable[[Any], Any]) -> Any:
    import hydra

    if not CONF.is_dir():
        sys.exit(f"fusiondiff: no config folder at {CONF}; install from a clone with `pip install -e .`")
    _check_overrides(config_name, sys.argv[1:])
    return hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)(_boundary(body))()


def _debug() -> bool:
    import os

    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("FUSIONDIFF_DEBUG") == "1"


def _check_overrides(config_name: str, argv: list[str]) -> None:
    """Compose the config once before Hydra does, so that a mistyped key or value is one ``error:`` line and
    exit code 2 like every other user error (Hydra itself prints several lines and exits with 1). Flags
    (``--help``, ``--cfg``, ``-m`` ...) and debug mode are left to Hydra."""
    if _debug() or any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose(config_name=config_name, overrides=argv)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {_config_message(err, config_name, argv)}", file=sys.stderr)
        sys.exit(2)


def _config_message(err: Exception, config_name: str, argv: list[str]) -> str:
    """Hydra's and OmegaConf's multi-line messages as one line that says how to see the valid keys."""
    import re

    text, cause = str(err), err.__cause__
    while cause is not None:
        text, cause = f"{text}\n{cause}", cause.__cause__
    text = text.split("Config search path:")[0]
    mode = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("mode=")), None)
    helper = f"python {config_name}.py{f' mode={mode}' if mode else ''} --help"
    key = re.search(r"Could not override '([^']+)'", text)
    if key and ("not in struct" in text or "append to your config" in text):
        return f"unknown key {key.group(1)!r} for this command{f' (mode={mode})' if mode else ''}; `{helper}` lists the keys"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("full_key:", "object_type", "reference_type", "Set the environment"))]
    return " ".join(lines) + f" (`{helper}` lists the keys)"


def _boundary(body: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The error boundary: a project error (:mod:`fusiondiff.errors`) is one line on stderr and exit code 2;
    with ``HYDRA_FULL_ERROR=1`` (or ``FUSIONDIFF_DEBUG=1``) it keeps its traceback. Other errors are bugs and
    keep theirs."""
    import functools

    @functools.wraps(body)
    def guarded(cfg: Any) -> Any:
        try:
            return body(cfg)
        except Exception as err:
            user_error = _user_error(err)
            if user_error is None or _debug():
                raise
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(getattr(user_error, "exit_code", 2))

    return guarded


def _user_error(err: BaseException) -> BaseException | None:
    """The user-fixable error behind ``err``, or None for a bug. Hydra's ``instantiate`` wraps what a
    constructor raises: our own errors, a keyword the class does not take (a mistyped config key) and
    Lightning's misconfiguration errors are all settings the user can fix."""
    from hydra.errors import InstantiationException

    from fusiondiff.errors import ConfigError, FusiondiffError

    if isinstance(err, FusiondiffError):
        return err
    if isinstance(err, InstantiationException):
        cause = err.__cause__ or err.__context__
        if isinstance(cause, FusiondiffError):
            return cause
        if isinstance(cause, TypeError) or type(cause).__name__ == "MisconfigurationException":
            return ConfigError(" ".join(str(err).split()))
    return None


def train_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.train import train

        metrics, _ = train(cfg)
        return metrics.get(cfg.get("optimized_metric", "val/ssim"))

    return _hydra("train", body)


def infer_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.infer import infer

        infer(cfg)

    return _hydra("infer", body)


def evaluate_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.evaluate import evaluate

        evaluate(cfg)
        print((Path(cfg.output_dir) / "summary.md").read_text())

    return _hydra("evaluate", body)
