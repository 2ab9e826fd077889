"""The backbone registry and its named factories.

Torch-free to import: each factory imports its module when called, so that the config schema
can list and check backbone names without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crisscross.models.registry import Registry

if TYPE_CHECKING:
    from crisscross.models.backbone import Backbone, Pool

BACKBONES: Registry[Backbone] = Registry("backbone")


@BACKBONES.register("r2plus1d_10", modality="video", depth=10)
def r2plus1d_10(*, width: int = 64, pool: Pool = "avg") -> Backbone:
    from crisscross.models.video import R2Plus1D

    return R2Plus1D(depth=10, width=width, pool=pool)


@BACKBONES.register("r2plus1d_18", modality="video", depth=18)
def r2plus1d_18(*, width: int = 64, pool: Pool = "avg") -> Backbone:
    from crisscross.models.video import R2Plus1D

    return R2Plus1D(depth=18, width=width, pool=pool)


@BACKBONES.register("r2plus1d_34", modality="video", depth=34)
def r2plus1d_34(*, width: int = 64, pool: Pool = "avg") -> Backbone:
    from crisscross.models.video import R2Plus1D

    return R2Plus1D(depth=34, width=width, pool=pool)


@BACKBONES.register("resnet18_audio", modality="audio", depth=18)
def resnet18_audio(*, width: int = 64, pool: Pool = "avg") -> Backbone:
    from crisscross.models.audio import AudioResNet18

    return AudioResNet18(width=width, pool=pool)


def create_backbone(name: str, **kwargs: object) -> Backbone:
    """Build a registered backbone, e.g. `create_backbone("r2plus1d_18", width=16, pool="max")`.

    Keyword arguments: `width` (64 = paper; D = 8 * width) and `pool` ("avg" or "max").
    """
    return BACKBONES.create(name, **kwargs)


def list_backbones(modality: str | None = None) -> list[str]:
    """Registered backbone names, all or those of one modality ("video" or "audio")."""
    return BACKBONES.names() if modality is None else BACKBONES.names(modality=modality)


def backbone_modality(name: str) -> str:
    """ "video" or "audio" for a registered backbone name."""
    return str(BACKBONES.meta(name)["modality"])
