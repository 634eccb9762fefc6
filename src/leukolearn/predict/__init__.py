"""Applying models to new cells: loading a model or a run as a predictor, the threshold and the
classifier's error rates, and per-sample blast counts with their intervals (counts).
"""
