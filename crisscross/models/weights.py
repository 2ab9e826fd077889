"""Backbone weights in the released format: a bare state_dict, one file per modality.

Released files are named `vid_crisscross_<db>.pth.tar` and `aud_crisscross_<db>.pth.tar`; they hold
no wrapper key and no `module.` prefix, and evaluation loads them strictly.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crisscross.models.backbone import Backbone
from crisscross.models.factory import backbone_modality, create_backbone
from crisscross.models.video import STAGE_NAMES, VIDEO_DEPTHS

_SHOW = 5  # keys listed per kind of mismatch


class WeightsError(ValueError):
    """A weights file that cannot be read or does not match the architecture asked for."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a weights file holds: a registered backbone name and its width."""

    name: str
    width: int

    @property
    def modality(self) -> str:
        return backbone_modality(self.name)

    def describe(self) -> str:
        return f"{self.modality} backbone {self.name!r} (width {self.width})"


def save_backbone(module: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write `module`'s weights as a bare state_dict, atomically, without DDP/compile wrappers."""
    module = getattr(module, "_orig_mod", module)  # torch.compile
    module = getattr(module, "module", module)  # DistributedDataParallel
    state = {key: tensor.detach().cpu() for key, tensor in module.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a bare state_dict safely (weights_only); raise WeightsError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise WeightsError(
            f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        keys = list(state)[:_SHOW] if isinstance(state, dict) else []
        raise WeightsError(
            f"{path}: expected a bare state_dict (parameter name -> tensor), got "
            f"{type(state).__name__}{f' with keys {keys}' if keys else ''}; a full training "
            "checkpoint must be exported with save_backbone first"
        )
    return state


def detect_backbone(state: dict[str, torch.Tensor], *, source: str = "weights") -> BackboneSpec:
    """Tell the backbone (name and width) a released-format state_dict belongs to."""
    if any(key.startswith("module.") for key in state):
        raise WeightsError(
            f"{source}: keys start with 'module.' (a DistributedDataParallel wrapper); the "
            "released format has bare keys such as 'conv1.0.weight'"
        )
    stem = state.get("conv1.0.weight")
    if stem is not None and stem.dim() == 5 and any(k.startswith("conv2x.") for k in state):
        blocks = tuple(_count_blocks(state, stage) for stage in STAGE_NAMES)
        depth = next((d for d, layout in VIDEO_DEPTHS.items() if layout == blocks), None)
        if depth is None:
            raise WeightsError(
                f"{source}: video weights with {blocks} blocks per stage match no R(2+1)D depth "
                f"({', '.join(f'{d}: {lay}' for d, lay in VIDEO_DEPTHS.items())})"
            )
        return BackboneSpec(f"r2plus1d_{depth}", int(stem.shape[0]))
    if stem is not None and stem.dim() == 4 and any(k.startswith("block1.") for k in state):
        return BackboneSpec("resnet18_audio", int(stem.shape[0]))
    raise WeightsError(
        f"{source}: neither video (conv1.0.weight 5-D, conv2x.*) nor audio (conv1.0.weight 4-D, "
        f"block1.*) backbone weights; first keys: {list(state)[:_SHOW]}"
    )


def load_backbone(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    modality: str | None = None,
    **kwargs: object,
) -> Backbone:
    """Build the backbone a released-format file holds and load it strictly.

    With `name` (and e.g. `width=`), that architecture is built and must match the file; with
    `modality` ("video" or "audio"), the file must hold that modality. A mismatch, or missing,
    unexpected or mis-shaped keys, raises WeightsError naming both. Extra keyword arguments (such
    as `pool="max"`) go to the factory.
    """
    return backbone_from_state(
        read_state_dict(path), source=str(path), name=name, modality=modality, **kwargs
    )


def backbone_from_state(
    state: dict[str, torch.Tensor],
    *,
    source: str,
    name: str | None = None,
    modality: str | None = None,
    **kwargs: object,
) -> Backbone:
    """`load_backbone` for a state_dict already in memory; `source` names it in errors."""
    found = detect_backbone(state, source=source)
    if modality is not None and found.modality != modality:
        raise WeightsError(
            f"{source}: holds {found.describe()}, but {_article(modality)} {modality} backbone "
            "was asked for"
        )
    if name is None:
        kwargs.setdefault("width", found.width)
        model = create_backbone(found.name, **kwargs)
    else:
        model = create_backbone(name, **kwargs)
        if model.modality != found.modality:
            raise WeightsError(
                f"{source}: holds {found.describe()}, but {_article(model.modality)} "
                f"{model.modality} backbone {name!r} "
                "was asked for"
            )
    _load_strict(model, state, source=source, found=found)
    return model


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a whole-model state_dict under `prefix` (e.g. "video."), prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(
    model: Backbone, state: dict[str, torch.Tensor], *, source: str, found: BackboneSpec
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {list(state[k].shape)} in file, {list(v.shape)} in model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        wanted = BackboneSpec(model.arch_name, model.width)
        lines = [f"{source}: holds {found.describe()}, which does not match {wanted.describe()}:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                lines.append(f"  {label} keys ({len(keys)}): {_first(keys)}")
        if misshaped:
            lines.append(f"  mis-shaped keys ({len(misshaped)}): {_first(misshaped)}")
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _count_blocks(state: dict[str, torch.Tensor], stage: str) -> int:
    pattern = re.compile(rf"^{stage}\.(\d+)\.")
    return len({m.group(1) for key in state if (m := pattern.match(key))})


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")
