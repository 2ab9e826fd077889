"""Encoders, heads, the CrissCross objective and weight import/export (torch only)."""

from crisscross.models.audio import AudioResNet18
from crisscross.models.backbone import Backbone
from crisscross.models.classifier import Classifier, svm_features
from crisscross.models.crisscross import CrissCross
from crisscross.models.factory import (
    BACKBONES,
    backbone_modality,
    create_backbone,
    list_backbones,
)
from crisscross.models.heads import predictor, projector
from crisscross.models.objective import (
    STATS,
    TERMS,
    LossWeights,
    crisscross_loss,
    embedding_stats,
    negative_cosine,
    pair_loss,
)
from crisscross.models.video import R2Plus1D
from crisscross.models.weights import (
    BackboneSpec,
    WeightsError,
    backbone_from_state,
    detect_backbone,
    load_backbone,
    read_state_dict,
    save_backbone,
    submodule_state,
)

__all__ = [
    "BACKBONES",
    "STATS",
    "TERMS",
    "AudioResNet18",
    "Backbone",
    "BackboneSpec",
    "Classifier",
    "CrissCross",
    "LossWeights",
    "R2Plus1D",
    "WeightsError",
    "backbone_from_state",
    "backbone_modality",
    "create_backbone",
    "crisscross_loss",
    "detect_backbone",
    "embedding_stats",
    "list_backbones",
    "load_backbone",
    "negative_cosine",
    "pair_loss",
    "predictor",
    "projector",
    "read_state_dict",
    "save_backbone",
    "submodule_state",
    "svm_features",
]
