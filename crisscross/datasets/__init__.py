"""Dataset layouts, manifests, clip decoding, sampling, augmentation and Ray Data pipelines."""
