"""Stage 2, the network: the paper's CNN (cnn), its file format (weights), ONNX export (onnx),
and the fused CPU kernels of its conv/pool blocks (kernels/: the loader and fused.c).
"""
