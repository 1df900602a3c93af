-- Which images ship package :name, in which version and layer (-p below V: older than V).
-- -p below V keeps versions older than V as the package's ecosystem orders them (dpkg, rpm,
-- apk, PEP 440, semver), so -p below 3.0.13 is right for 3.0.9 and for 3.0.11-1~deb12u1.
-- :name matches the package name or its source package (openssl finds libssl3 and openssl);
-- :ecosystem (deb, apk, rpm, python, npm, go) limits it to one. installed_position and
-- installed_layer: the layer that installed the version (0 = base); record_path: the file that
-- records it (for go: the executable that embeds the module).
-- Example: layerdb report package-where -p name openssl -p below 3.0.13
-- @param image null
-- @param below null
-- @param ecosystem null
select image, ecosystem, name, version, source, arch, installed_position, installed_layer,
       record_path, purl
from packages
where (name = :name or source = :name)
  and (:image is null or image_id = :image)
  and (:ecosystem is null or ecosystem = :ecosystem)
  and (:below is null or version_lt(ecosystem, version, :below::varchar))
order by image, ecosystem, name, version_key, record_path
