-- The installed packages of each image (one with --image), as a running container sees them.
-- From the package databases its layers write: dpkg (status, status.d), apk, rpm (SQLite),
-- Python dist-info/egg-info in site-packages/dist-packages, npm packages directly under a
-- node_modules, Go build info of executables, Maven artifacts in Java archives (and the jars
-- nested in them). A package whose record an upper layer removed is gone. record_path: the
-- file that records it; installed_position/installed_layer: the layer that installed this
-- version (0 = base); purl: the package URL. :ecosystem (deb, apk, rpm, python, npm, go,
-- maven) limits it to one. Versions sort as their ecosystem orders them.
-- Example: layerdb report packages --image myapp:latest -p ecosystem deb --format csv
-- @param image null
-- @param ecosystem null
select image, ecosystem, name, version, source, arch, purl, record_path, installed_position,
       installed_layer, distro
from packages
where (:image is null or image_id = :image) and (:ecosystem is null or ecosystem = :ecosystem)
order by image, ecosystem, name, version_key, record_path
