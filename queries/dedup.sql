-- Fleet-wide dedup: bytes as shipped, after layer dedup, after file dedup; the top savings.
-- Over every ingested image: the bytes as shipped, after layer dedup (each distinct layer
-- once) and after file-level dedup (each distinct content once), with the ratios; then the
-- top :top contents by bytes saved.
-- Rows of section 'total': bytes at that level; saved_bytes: against 'as shipped'; ratio:
-- as shipped / bytes; count: layer references, distinct layers, distinct contents. Also the
-- compressed blobs as shipped and what the layerdb cache stores. Rows of section 'top':
-- item is the content's first path; bytes: one copy; saved_bytes: (copies - 1) x size;
-- count: copies in distinct layers; detail: sha256 and the images holding it (3 named).
-- Tar bytes throughout (file-level dedup subtracts duplicate content bytes from them).
-- Example: layerdb report dedup -p top 20
-- @param top 20
with shipped as (
  select count(*) as refs, count(distinct image_id) as images,
         coalesce(sum(size), 0) as bytes, coalesce(sum(compressed_size), 0) as compressed
  from image_layers
),
distinct_layers as (
  select count(*) as n, coalesce(sum(size), 0) as bytes, coalesce(sum(stored_size), 0) as stored
  from layers where diff_id in (select diff_id from image_layers)
),
contents as (  -- each distinct content once, keyed by its sha256's first 128 bits (two
               -- 64-bit halves: compact keys for the one big aggregate)
  select ('0x' || substr(sha256, 1, 16))::ubigint as h1,
         ('0x' || substr(sha256, 17, 16))::ubigint as h2,
         any_value(size) as size, count(*) as copies
  from files
  where type = 'file' and whiteout = 'none' and sha256 is not null
    and layer in (select diff_id from image_layers)
  group by all
),
file_level as (
  select count(*) as n, coalesce(sum(size * (copies - 1)), 0) as saved from contents
),
ranked as (select *, size * (copies - 1) as saved from contents where copies >= 2 and size > 0),
cut as (  -- the :top-th largest saving: nothing below it makes the list
  select coalesce(min(saved), 0) as least from (
    select saved from ranked order by saved desc limit greatest(coalesce(:top, 0), 0))
),
top_keys as (  -- those contents (ties at the cut too: sha256 settles them below)
  select r.* from ranked r, cut c where r.saved >= c.least and coalesce(:top, 0) > 0
),
top as (  -- the sha256 and first path of the few contents that make the list
  select k.size, k.copies, k.saved, f.sha256, min(f.path) as path,
         row_number() over (order by k.saved desc, f.sha256) as rank
  from top_keys k join files f
    on ('0x' || substr(f.sha256, 1, 16))::ubigint = k.h1
   and ('0x' || substr(f.sha256, 17, 16))::ubigint = k.h2
  where f.type = 'file' and f.whiteout = 'none'
    and f.layer in (select diff_id from image_layers)
  group by k.size, k.copies, k.saved, f.sha256
  qualify rank <= :top
),
top_images as (
  select t.sha256, list(distinct il.image order by il.image) as images
  from top t join files f on f.sha256 = t.sha256
  join image_layers il on il.diff_id = f.layer
  group by t.sha256
),
totals(section, rank, item, bytes, count, detail) as (
  select 'total', 1, 'as shipped', s.bytes, s.refs,
         s.images || ' images, ' || s.refs || ' layer references' from shipped s
  union all
  select 'total', 2, 'after layer dedup', d.bytes, d.n, d.n || ' distinct layers'
  from distinct_layers d
  union all
  select 'total', 3, 'after file dedup', d.bytes - f.saved, f.n, f.n || ' distinct contents'
  from distinct_layers d, file_level f
  union all
  select 'total', 4, 'compressed, as shipped', s.compressed, s.refs, 'blob bytes' from shipped s
  union all
  select 'total', 5, 'layerdb cache', d.stored, d.n, 'zstd frames of the distinct layers'
  from distinct_layers d
)
select t.section, t.rank, t.item, t.bytes::bigint as bytes,
       (s.bytes - t.bytes)::bigint as saved_bytes,
       case when t.bytes > 0 then s.bytes::double / t.bytes::double end as ratio,
       t.count, t.detail
from totals t, shipped s
union all
select 'top', t.rank, t.path, t.size, t.saved::bigint, null, t.copies,
       t.sha256 || ' in ' || array_to_string(list_slice(i.images, 1, 3), ', ')
         || case when len(i.images) > 3 then ' and ' || (len(i.images) - 3) || ' more' else '' end
from top t join top_images i using (sha256)
order by 1 desc, 2
