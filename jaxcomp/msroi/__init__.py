"""MS-ROI semantic JPEG (thesis papers/001, Ch. 2): variable-quality JPEG from a saliency map."""

from jaxcomp.msroi.variable_jpeg import (block_levels, encode_variable_quality, levels,
                                         match_size, mosaic, select_blocks)

__all__ = ["block_levels", "encode_variable_quality", "levels", "match_size", "mosaic",
           "select_blocks"]
