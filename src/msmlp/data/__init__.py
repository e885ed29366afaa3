"""Data the backends share: image transforms (``transforms``), the sample photographs, ImageNet labels."""
