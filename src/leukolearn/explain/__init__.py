"""Looking inside trained networks: saliency and LRP maps, the last hidden layer (embed), where
the relevance falls (focus), and the glue that reads a run for them (runs, measures).
"""
