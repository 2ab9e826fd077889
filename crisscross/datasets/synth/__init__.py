"""Synthetic media in the real dataset layouts, for tests, the quickstart and benchmarks."""

from crisscross.datasets.synth.writers import WRITERS, SynthSpec, synthesize

__all__ = ["WRITERS", "SynthSpec", "synthesize"]
