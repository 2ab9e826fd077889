"""Per-worker loops: pretext training, fine-tuning, feature extraction."""
