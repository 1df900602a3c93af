"""The one check every source's images must pass (after go-containerregistry's
``validate.Image``): blob bytes re-hashed from their ``FileSegment``, layers decompressed
(compression told from magic bytes) and their diff_ids compared with the config, base first.
"""
from __future__ import annotations

import json
import pickle

from layerdb import compression
from layerdb.digest import Digest, HashingReader
from layerdb.model import LAYER_TYPES, Image, LayerRef


def assert_valid_image(image: Image, *, check_media_types: bool = True) -> None:
    """Raise ``AssertionError`` naming the first thing wrong with ``image``.

    Checks: ``id`` is the sha256 of ``manifest``; ``config_digest`` that of ``config.raw``;
    one layer per ``config.diff_ids``, in order (base first); each layer's blob: size,
    blob digest (when the source gives one), and the sha256 of its decompressed bytes equal
    to the diff_id at its position; media type known and (``check_media_types``) agreeing
    with the compression the bytes show; manifest layer descriptors agree with the layers;
    the ``FileSegment`` pickles (worker processes receive it).
    """
    where = f"image {image.id} ({image.source})"
    assert image.id == Digest.of_bytes(image.manifest), f"{where}: id is not the manifest digest"
    assert image.config_digest == Digest.of_bytes(image.config.raw), \
        f"{where}: config digest does not match config bytes"
    assert len(image.layers) == len(image.config.diff_ids), \
        f"{where}: {len(image.layers)} layers but {len(image.config.diff_ids)} diff_ids"
    assert image.platform.os == image.config.os and \
        image.platform.architecture == image.config.architecture, \
        f"{where}: platform {image.platform} disagrees with the config"
    _check_manifest(image, where)
    for i, layer in enumerate(image.layers):
        assert layer.diff_id == image.config.diff_ids[i], f"{where}: layer {i}: diff_id order"
        _check_layer(layer, f"{where}: layer {i}", check_media_types)


def _check_manifest(image: Image, where: str) -> None:
    doc = json.loads(image.manifest)
    assert doc["config"]["digest"] == str(image.config_digest), f"{where}: manifest config"
    assert doc["config"]["size"] == len(image.config.raw), f"{where}: manifest config size"
    descs = doc["layers"]
    assert len(descs) == len(image.layers), f"{where}: manifest layer count"
    for i, (d, layer) in enumerate(zip(descs, image.layers)):
        assert d["mediaType"] == layer.media_type, f"{where}: layer {i}: media type"
        assert d["size"] == layer.size, f"{where}: layer {i}: size"
        if layer.digest is not None:
            assert d["digest"] == str(layer.digest), f"{where}: layer {i}: digest"


def _check_layer(layer: LayerRef, where: str, check_media_types: bool) -> None:
    assert layer.media_type in LAYER_TYPES, f"{where}: unknown media type {layer.media_type}"
    assert pickle.loads(pickle.dumps(layer.blob)) == layer.blob, f"{where}: segment pickles"
    assert layer.blob.size() == layer.size, f"{where}: blob size {layer.blob.size()}"
    raw = HashingReader(layer.blob.open(), where)
    kind, stream = compression.open_decompressed(raw)  # type: ignore[arg-type]
    tar = HashingReader(stream, where)
    tar.drain()
    raw.drain()  # decompressors may stop before the end of the raw bytes
    raw.close()
    assert raw.bytes_read == layer.size, f"{where}: read {raw.bytes_read} of {layer.size} bytes"
    if layer.digest is not None:
        assert raw.digest() == layer.digest, f"{where}: blob digest {raw.digest()}"
    assert tar.digest() == layer.diff_id, f"{where}: diff_id {tar.digest()} != {layer.diff_id}"
    if check_media_types:
        assert LAYER_TYPES[layer.media_type] == kind, \
            f"{where}: media type {layer.media_type} but the bytes are {kind}"
