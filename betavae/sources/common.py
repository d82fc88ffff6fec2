"""What every dataset shares: the image side, and reading a file that may be gzipped."""

IMAGE_SIZE = 64  # pixels per side of every image a dataset returns


def first_file(folders, name: str) -> str | None:
    """The path of `name` or `name`.gz in the first of `folders` that holds either, else None."""
    import os

    for folder in folders:
        for candidate in (name, name + ".gz"):
            if os.path.isfile(os.path.join(folder, candidate)):
                return os.path.join(folder, candidate)
    return None


def read_bytes(path: str, source: str) -> bytes:
    """The whole file, gunzipped when its name ends in .gz; a DataError sentence naming `source` when it cannot be."""
    import gzip

    from betavae.errors import DataError

    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as file:
            return file.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path} cannot be read ({error}); download it again ({source}).") from None
