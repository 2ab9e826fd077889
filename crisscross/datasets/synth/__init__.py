"""Synthetic media in the real dataset layouts, for tests, the quickstart and benchmarks."""

from crisscross.datasets.synth.writers import CONTENTS, WRITERS, SynthSpec, synthesize

__all__ = ["CONTENTS", "WRITERS", "SynthSpec", "synthesize"]
