"""Segmenters turn one image plus one prompt into one mask."""
