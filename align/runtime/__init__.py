"""The runtime layer: what every process needs beside the maths: distributed set-up (ZeRO, gathers),
precision, numerics guards, seeds, and the padded forward with token-budget micro-batches."""
