"""``layerdb inspect``: an image's config and manifest as ingested, like ``skopeo inspect
--config`` and ``docker inspect``. The catalog keeps both documents as they were in the
archive (``image_meta.config`` / ``.manifest``); nothing here re-derives them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import CatalogError


@dataclass(frozen=True)
class Inspection:
    """One image: its row in ``images`` and its two documents, exact text as stored."""

    id: str
    name: str
    refs: list[str]
    platform: str
    config_digest: str
    source: str
    config_text: str
    manifest_text: str

    def config(self) -> dict[str, Any]:
        return _load(self.config_text, f"{self.id}: config")

    def manifest(self) -> dict[str, Any]:
        return _load(self.manifest_text, f"{self.id}: manifest")

    def summary(self) -> dict[str, Any]:
        """docker-inspect-like: identity, then the config's runtime fields, history and the
        manifest."""
        doc = self.config()
        cfg = doc.get("config") or doc.get("container_config") or {}
        return {
            "Id": self.id,
            "Name": self.name,
            "RepoTags": self.refs,
            "ConfigDigest": self.config_digest,
            "Platform": self.platform,
            "Created": doc.get("created"),
            "Author": doc.get("author"),
            "Entrypoint": cfg.get("Entrypoint"),
            "Cmd": cfg.get("Cmd"),
            "Env": cfg.get("Env"),
            "WorkingDir": cfg.get("WorkingDir") or "",
            "User": cfg.get("User") or "",
            "Labels": cfg.get("Labels") or {},
            "ExposedPorts": cfg.get("ExposedPorts") or {},
            "Volumes": cfg.get("Volumes") or {},
            "StopSignal": cfg.get("StopSignal") or "",
            "History": doc.get("history") or [],
            "RootFS": doc.get("rootfs") or {},
            "Source": self.source,
            "Manifest": self.manifest(),
        }


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text) if text else {}
    except ValueError as e:  # ingest validated it: the catalog is damaged
        raise CatalogError(f"{where}: stored document is not JSON: {e}") from e
    return doc if isinstance(doc, dict) else {}


def inspect_image(root: str, image: str, platform: str | None) -> Inspection:
    """The image ``image`` names (ref, id or config digest), with its documents."""
    from .catalog import Catalog

    with Catalog(root) as cat:
        row = cat.resolve_image(image, platform)
        _, found = cat.query(
            "select i.source, m.config, m.manifest from images i join image_meta m on m.id = i.id "
            "where i.id = $id", {"id": row.id})
    source, config, manifest = found[0] if found else ("", "", "")
    return Inspection(row.id, row.name, list(row.refs), row.platform, row.config_digest,
                      source or "", config or "", manifest or "")


def table_lines(ins: Inspection) -> list[tuple[str, str]]:
    """(field, value) pairs for the human view; values are JSON where they are lists/maps."""
    s = ins.summary()
    out: list[tuple[str, str]] = []
    for key in ("Id", "Name", "RepoTags", "ConfigDigest", "Platform", "Created", "Author",
                "Entrypoint", "Cmd", "WorkingDir", "User", "StopSignal", "Source"):
        v = s[key]
        out.append((key, ", ".join(v) if isinstance(v, list) else "" if v is None else str(v)))
    for e in s["Env"] or []:
        out.append(("Env", str(e)))
    for k, v in sorted(s["Labels"].items()):
        out.append(("Label", f"{k}={v}"))
    for p in sorted(s["ExposedPorts"]):
        out.append(("ExposedPort", str(p)))
    for p in sorted(s["Volumes"]):
        out.append(("Volume", str(p)))
    for i, h in enumerate(s["History"]):
        if isinstance(h, dict):
            mark = " (empty layer)" if h.get("empty_layer") else ""
            out.append((f"History[{i}]", f"{h.get('created') or ''}  {h.get('created_by') or ''}{mark}"))
    return out
