#!/usr/bin/env python3
"""Writes the committed seed corpus of the `differential` target: a few
deterministic pseudo-random inputs of various lengths (each decodes into a
memory size, regions and an operation sequence)."""
import os
import random

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "differential")
os.makedirs(out, exist_ok=True)
rng = random.Random(0x6B70616C)
for i, length in enumerate([8, 24, 64, 128, 256, 256, 512, 512, 1024, 1024, 2048, 4096]):
    with open(os.path.join(out, f"seed-{i:02}"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(length)))
