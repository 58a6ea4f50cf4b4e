"""Label Studio ML backend for segmentation assist (SAM + a custom extreme-point model)."""
