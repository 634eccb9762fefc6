"""Stage 1, images in: dataset layouts (loaders), decoding any image file to uint8 RGB at the
model's size (decode), the on-disk cache (cache), near-duplicates (duplicates), stain
segmentation of the cell (segment), seeded synthetic cells (synthetic), and the one
container everything downstream reads: `CellImages` (cellimages). `dataset` puts them
together: `load_dataset`, `inspect_dataset`.
"""
