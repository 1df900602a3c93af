-- Which images ship package :name, in which version and layer (-p below V: older than V).
-- -p below V keeps versions older than V as the package's ecosystem orders them (dpkg, rpm,
-- apk, PEP 440, semver, Maven), so -p below 3.0.13 is right for 3.0.9 and for 3.0.11-1~deb12u1.
-- :name matches the package name or its source package (openssl finds libssl3 and openssl);
-- :ecosystem (deb, apk, rpm, python, npm, go, maven) limits it to one. installed_position and
-- installed_layer: the layer that installed the version (0 = base); record_path: the file that
-- records it (for go: the executable that embeds the module; for maven the jar, a nested
-- one as /app.jar!/BOOT-INF/lib/x.jar).
-- Example: layerdb report package-where -p name openssl -p below 3.0.13
-- @param image null
-- @param below null
-- @param ecosystem null
with below as (  -- :below as each ecosystem's key, computed once per ecosystem, not per row
  select e as ecosystem, version_key(e, :below::varchar) as k
  from (select distinct ecosystem as e from package_records) where :below is not null)
select p.image, p.ecosystem, p.name, p.version, p.source, p.arch, p.installed_position,
       p.installed_layer, p.record_path, p.purl
from packages p left join below b on b.ecosystem = p.ecosystem
where (p.name = :name or p.source = :name)
  and (:image is null or p.image_id = :image)
  and (:ecosystem is null or p.ecosystem = :ecosystem)
  and (:below is null or p.version_key < b.k)
order by p.image, p.ecosystem, p.name, p.version_key, p.record_path
