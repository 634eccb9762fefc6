"""Numbers from results, no figures: test metrics, the per-size summary, learning-curve fits
(`plan`), calibration and threshold choice.
"""
