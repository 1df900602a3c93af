-- Each package with the versions present across the fleet, and the images per version.
-- One row per (ecosystem, name, version), oldest version first as the ecosystem orders
-- versions; versions: how many different versions of the package the fleet ships; newest:
-- this is the newest of them; images: how many images ship this version, image_names which.
-- -p min_versions 2 shows only packages shipped in several versions (version drift);
-- :name matches the package name or its source package (openssl finds libssl3).
-- Example: layerdb report package-versions -p min_versions 2 -p ecosystem deb
-- @param ecosystem null
-- @param name null
-- @param min_versions 1
with v as (
  select ecosystem, name, version, any_value(version_key) as k,
         count(distinct image_id) as images, list(distinct image order by image) as image_names
  from packages
  where (:ecosystem is null or ecosystem = :ecosystem)
    and (:name is null or name = :name or source = :name)
  group by ecosystem, name, version
)
select ecosystem, name, version,
       count(*) over (partition by ecosystem, name) as versions,
       k = max(k) over (partition by ecosystem, name) as newest,
       images, image_names
from v
qualify versions >= :min_versions
order by ecosystem, name, k, version
