"""Every path of a catalog directory, in one place (see docs/catalog.md).

Nothing outside the catalog package builds a path inside the catalog directory; it asks a
``Layout``. Importing this module loads nothing heavy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

FORMAT_VERSION = 3  # of the whole catalog: bump when tables, files or columns change


def _hex(digest: object) -> str:
    s = str(digest)
    return s.split(":", 1)[1] if ":" in s else s


@dataclass(frozen=True)
class Layout:
    root: str

    @classmethod
    def at(cls, root: str | None = None) -> Layout:
        from ..settings import settings

        return cls(os.path.abspath(root or settings().home))

    # directories
    @property
    def files_dir(self) -> str:
        return os.path.join(self.root, "files")

    @property
    def members_dir(self) -> str:
        return os.path.join(self.root, "members")

    @property
    def blobs_dir(self) -> str:
        return os.path.join(self.root, "blobs")

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.root, "tmp")

    def dirs(self) -> tuple[str, ...]:
        return (self.root, self.files_dir, self.members_dir, self.blobs_dir, self.tmp_dir)

    # files
    @property
    def db(self) -> str:
        return os.path.join(self.root, "catalog.duckdb")

    @property
    def lookup(self) -> str:
        return os.path.join(self.root, "lookup.sqlite")

    @property
    def lock(self) -> str:
        return os.path.join(self.root, "catalog.lock")

    def files(self, diff_id: object) -> str:
        """A layer's tar members (Parquet, tar order)."""
        return os.path.join(self.files_dir, _hex(diff_id) + ".parquet")

    def layer_index(self, diff_id: object) -> str:
        """A layer's members sorted by path, for lookups without duckdb (``layerindex``)."""
        return os.path.join(self.files_dir, _hex(diff_id) + ".idx")

    def members(self, image_id: object) -> str:
        """An image's members with their fate (Parquet, layer by layer in tar order)."""
        return os.path.join(self.members_dir, _hex(image_id) + ".parquet")

    def fate(self, image_id: object) -> str:
        """An image's fate in the compact form lookups read (``members.write_fate``)."""
        return os.path.join(self.members_dir, _hex(image_id) + ".fate")

    def packages(self, diff_id: object) -> str:
        """A layer's installed-package records (``layerdb.packages``), if it has any."""
        return os.path.join(self.root, "packages", _hex(diff_id) + ".parquet")

    def blob(self, diff_id: object) -> str:
        return os.path.join(self.blobs_dir, "sha256", _hex(diff_id) + ".zst")

    def exists(self) -> bool:
        return os.path.exists(self.db)
