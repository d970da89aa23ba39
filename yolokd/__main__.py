# yolokd, AGPL-3.0 License
"""``python -m yolokd``: the same as the ``yolokd`` command."""

from yolokd.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
