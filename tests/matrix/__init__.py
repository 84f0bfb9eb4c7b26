"""The generated input matrix and its oracle (see ``tests/test_matrix.py``).

Everything here is test code written independently of pyimgopt: a raw PNG
writer (every colour type, bit depth, tRNS variant, interlacing and ancillary
chunk), a hand-written ICC profile builder, generators for the other formats,
and a reference decoder (pyvips, or the generator's own ground truth) that
never calls into the pipeline.
"""
