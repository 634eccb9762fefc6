"""Stage 3, fitting a network: augmentation, the one training loop (loop: early stopping,
best weights, history, dead-network restarts), and K networks trained at once on one
device (batched), which runs the same loop's bookkeeping.
"""
