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
with ids as (  -- layers as small integers, in diff_id order (so min/max compare the same)
  select diff_id, (row_number() over (order by diff_id))::integer as lid from layers
),
keyed as not materialized (  -- file members, their sha256 as two 64-bit halves (compact keys
                             -- for the one big aggregate: its first 128 bits)
  select ('0x' || substr(f.sha256, 1, 16))::ubigint as h1,
         ('0x' || substr(f.sha256, 17, 16))::ubigint as h2, f.sha256, f.size, i.lid, f.layer,
         f.path
  from files f join ids i on i.diff_id = f.layer
  where f.type = 'file' and f.whiteout = 'none' and f.sha256 is not null
),
mine as (  -- with --image: the contents of that image's layers (else nothing to read)
  select distinct ('0x' || substr(f.sha256, 1, 16))::ubigint as h1,
         ('0x' || substr(f.sha256, 17, 16))::ubigint as h2
  from image_layers il join files f on f.layer = il.diff_id
  where il.image_id = :image and f.type = 'file' and f.sha256 is not null
),
dup as (
  select h1, h2, any_value(size) as size, count(*) as copies
  from keyed
  where size >= :min_size
  group by h1, h2
  having min(lid) <> max(lid)
     and (:image is null or (h1, h2) in (select (h1, h2) from mine))
  order by any_value(size) * (count(*) - 1) desc, h1, h2
  limit coalesce(:limit, 9223372036854775807)
),
hits as (
  select k.sha256, k.layer, k.path, il.image, k.h1, k.h2
  from keyed k join dup d on d.h1 = k.h1 and d.h2 = k.h2
  join image_layers il on il.diff_id = k.layer
),
per as (
  select h1, h2, any_value(sha256) as sha256, count(distinct layer) as layers,
         count(distinct image) as images,
         list_slice(list(distinct path order by path), 1, 5) as paths,
         list_slice(list(distinct image order by image), 1, 5) as image_names
  from hits group by h1, h2
)
select p.sha256, d.size, d.copies, p.layers, p.images,
       (d.size * (d.copies - 1))::bigint as bytes_saved, p.paths, p.image_names
from dup d join per p on p.h1 = d.h1 and p.h2 = d.h2
order by bytes_saved desc, p.sha256
