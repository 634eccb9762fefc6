"""Stage 4, protocols: the paper's splits as jobs (protocol), named settings (presets), running
a plan resumably (sweep, workers), one training on one split (single), and the
shortcut control (variants, shortcut).
"""
