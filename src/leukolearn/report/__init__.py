"""Stage 6, what a reader sees: figures (one style, plain numbers in, a Figure out), the
paper's reported numbers, and the self-contained HTML report of a run.
"""
