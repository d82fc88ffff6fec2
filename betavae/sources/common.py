"""The image side shared by every dataset."""

IMAGE_SIZE = 64  # pixels per side of every image a dataset returns
