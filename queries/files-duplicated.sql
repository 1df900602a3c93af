-- The same content (sha256) stored in two or more different layers, the biggest savings first.
-- copies: tar members with that content across every distinct layer (each layer counted
-- once, however many images carry it); layers: how many distinct layers hold it; size: bytes
-- of one copy; bytes_saved: what storing it once would save, (copies - 1) x size; paths and
-- images: up to 5 of each, sorted. Files smaller than :min_size bytes are left out; at most
-- :limit rows (null: all). With --image, only contents of that image's layers.
-- Example: layerdb report files-duplicated -p min_size 1048576 -p limit 20
-- @param image null
-- @param min_size 1
-- @param limit 100
with mine as (  -- with --image: the contents of that image's layers (else nothing to read)
  select distinct f.sha256 from image_layers il join files f on f.layer = il.diff_id
  where il.image_id = :image and f.type = 'file'
),
dup as (
  select sha256, any_value(size) as size, count(*) as copies
  from files
  where type = 'file' and whiteout = 'none' and sha256 is not null and size >= :min_size
  group by sha256
  having min(layer) <> max(layer)
     and (:image is null or sha256 in (select sha256 from mine))
  order by any_value(size) * (count(*) - 1) desc, sha256
  limit coalesce(:limit, 9223372036854775807)
),
hits as (
  select f.sha256, f.layer, f.path, il.image
  from files f join dup d on d.sha256 = f.sha256
  join image_layers il on il.diff_id = f.layer
  where f.type = 'file' and f.whiteout = 'none'
),
per as (
  select sha256, count(distinct layer) as layers, count(distinct image) as images,
         list_slice(list(distinct path order by path), 1, 5) as paths,
         list_slice(list(distinct image order by image), 1, 5) as image_names
  from hits group by sha256
)
select d.sha256, d.size, d.copies, p.layers, p.images,
       (d.size * (d.copies - 1))::bigint as bytes_saved, p.paths, p.image_names
from dup d join per p using (sha256)
order by bytes_saved desc, d.sha256
