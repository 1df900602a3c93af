-- Image pairs ranked by the share of file bytes they have in common (share a base?).
-- A hint for which images should share a base layer.
-- Each image counts each distinct content (sha256) of its merged filesystem once.
-- common_bytes: bytes of the contents both have; share: common / (bytes in either);
-- share_a, share_b: common / each image's own bytes; shared_layers: layers both carry;
-- unshared_common_bytes: common bytes whose layer in image_a image_b does not carry: what a
-- common base would store once. Only pairs with something in common; at most :limit rows.
-- With --image, only the pairs with that image.
-- Example: layerdb report similar-images -p limit 10
-- @param image null
-- @param limit 50
with ims as (  -- images and layers as small integers, in id order (compact join keys)
  select id, (row_number() over (order by id))::integer as iid from images
),
lds as (select diff_id, (row_number() over (order by diff_id))::integer as lid from layers),
c as (  -- each image's distinct contents (keyed by the first 128 bits of their sha256), and
        -- one layer that provides each
  select i.iid, ('0x' || substr(f.sha256, 1, 16))::ubigint as h1,
         ('0x' || substr(f.sha256, 17, 16))::ubigint as h2,
         any_value(f.size) as size, min(l.lid) as layer
  from fs f join ims i on i.id = f.image_id join lds l on l.diff_id = f.content_layer
  where f.type = 'file' and f.sha256 is not null and f.size > 0
  group by all
),
tot as (select iid, sum(size) as bytes from c group by iid),
carried as (
  select distinct i.iid, l.lid, il.diff_id from image_layers il
  join ims i on i.id = il.image_id join lds l on l.diff_id = il.diff_id
),
me as (select iid from ims where id = :image),
pairs as (
  select a.iid as a, b.iid as b, sum(a.size) as common,
         coalesce(sum(a.size) filter (where l.lid is null), 0) as unshared
  from c a join c b on a.h1 = b.h1 and a.h2 = b.h2 and a.iid < b.iid
  left join carried l on l.iid = b.iid and l.lid = a.layer
  where :image is null or a.iid in (select iid from me) or b.iid in (select iid from me)
  group by all
),
layers as (
  select a.iid as a, b.iid as b, count(distinct a.diff_id) as n
  from carried a join carried b on a.diff_id = b.diff_id and a.iid < b.iid
  group by all
),
named as (select i.iid, m.id, m.name from ims i join images m on m.id = i.id)
select ia.name as image_a, ib.name as image_b, p.common::bigint as common_bytes,
       p.common::double / (ta.bytes + tb.bytes - p.common)::double as share,
       p.common::double / ta.bytes::double as share_a,
       p.common::double / tb.bytes::double as share_b,
       coalesce(l.n, 0) as shared_layers, p.unshared::bigint as unshared_common_bytes,
       ta.bytes::bigint as bytes_a, tb.bytes::bigint as bytes_b
from pairs p
join tot ta on ta.iid = p.a join tot tb on tb.iid = p.b
join named ia on ia.iid = p.a join named ib on ib.iid = p.b
left join layers l on l.a = p.a and l.b = p.b
order by share desc, common_bytes desc, image_a, image_b
limit coalesce(:limit, 9223372036854775807)
