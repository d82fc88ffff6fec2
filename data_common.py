"""What every dataset module shares: the image side and DataError, so data.py → celeba.py runs one way."""

IMAGE_SIZE = 64  # pixels per side of every image a dataset returns


class DataError(Exception):
    """A user-fixable data problem; message is one sentence saying what to do."""
