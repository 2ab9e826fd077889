"""The CrissCross model: two backbones, their projector/predictor heads and the objective.

Legend: B batch, T frames, H/W pixels, F mel bins, S spectrogram frames, K projector size.
"""

from __future__ import annotations

import torch
from torch import nn

from crisscross.models.backbone import Backbone
from crisscross.models.heads import predictor, projector
from crisscross.models.objective import LossWeights, crisscross_loss, embedding_stats


class CrissCross(nn.Module):
    """Audio-visual SimSiam with intra-modal, synchronous and asynchronous cross-modal terms.

    `forward(v1, v2, a1, a2)` takes two video windows (B, 3, T, H, W) and two audio windows
    (B, 1, F, S) of the same videos and returns {"loss", "v1v2", "a1a2", "v1a1", "v2a2", "v1a2",
    "a1v2"} and the collapse indicators of `embedding_stats` ("embed_std/video",
    "embed_std/audio", "embed_cos/av", without gradient), each a scalar tensor.
    """

    def __init__(
        self,
        video_backbone: Backbone,
        audio_backbone: Backbone,
        *,
        projector_layers: int = 3,
        projector_dim: int = 2048,
        predictor_hidden: int = 512,
        weights: LossWeights | None = None,
    ) -> None:
        super().__init__()
        if video_backbone.modality != "video" or audio_backbone.modality != "audio":
            raise ValueError(
                "CrissCross takes a video backbone then an audio backbone, got "
                f"{video_backbone.modality} and {audio_backbone.modality}"
            )
        self.weights = weights if weights is not None else LossWeights()
        self.video = video_backbone
        self.audio = audio_backbone
        self.video_projector = projector(
            video_backbone.embed_dim, out_dim=projector_dim, layers=projector_layers
        )
        self.audio_projector = projector(
            audio_backbone.embed_dim, out_dim=projector_dim, layers=projector_layers
        )
        self.video_predictor = predictor(projector_dim, hidden=predictor_hidden)
        self.audio_predictor = predictor(projector_dim, hidden=predictor_hidden)

    def project(
        self, video_BCTHW: torch.Tensor, audio_B1FS: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections z_BK of one video window and one audio window."""
        z_video = self.video_projector(self.video(video_BCTHW))
        z_audio = self.audio_projector(self.audio(audio_B1FS))
        return z_video, z_audio

    def forward(
        self, v1: torch.Tensor, v2: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        z: dict[str, torch.Tensor] = {}
        z["v1"], z["a1"] = self.project(v1, a1)
        z["v2"], z["a2"] = self.project(v2, a2)
        p = {
            view: (self.video_predictor if view[0] == "v" else self.audio_predictor)(z_view)
            for view, z_view in z.items()
        }
        return crisscross_loss(z, p, self.weights) | embedding_stats(z)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The recipe's four optimiser groups: backbone+projector and predictor, per modality."""
        return {
            "video": [*self.video.parameters(), *self.video_projector.parameters()],
            "video_predictor": list(self.video_predictor.parameters()),
            "audio": [*self.audio.parameters(), *self.audio_projector.parameters()],
            "audio_predictor": list(self.audio_predictor.parameters()),
        }
