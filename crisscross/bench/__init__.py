"""Benchmarks and their `crisscross bench` commands: the top layer.

It may import every other layer, and none of them imports it (`tests/test_structure.py` holds
that); the command line at `crisscross/cli.py` registers its `bench` group. What each module
measures: `data` (the decode pipeline), `feed` (the pipeline feeding a training step), `train`
and `train_steps` (Ray Train against bare torch), `step` (the training step's modes and FLOPs),
`learning` (does pretraining learn, with `supervised`, its labelled reference), `scale` (epoch
order and data positions at AudioSet size), `cli_start` (command start-up time).
"""
