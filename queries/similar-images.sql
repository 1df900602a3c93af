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
with c as (  -- each image's distinct contents, and one layer that provides each
  select image_id, sha256, any_value(size) as size, min(content_layer) as layer
  from fs where type = 'file' and sha256 is not null and size > 0
  group by image_id, sha256
),
tot as (select image_id, sum(size) as bytes from c group by image_id),
carried as (select distinct image_id, diff_id from image_layers),
pairs as (
  select a.image_id as a, b.image_id as b, sum(a.size) as common,
         coalesce(sum(a.size) filter (where l.diff_id is null), 0) as unshared
  from c a join c b on a.sha256 = b.sha256 and a.image_id < b.image_id
  left join carried l on l.image_id = b.image_id and l.diff_id = a.layer
  where :image is null or a.image_id = :image or b.image_id = :image
  group by all
),
layers as (
  select a.image_id as a, b.image_id as b, count(distinct a.diff_id) as n
  from carried a join carried b on a.diff_id = b.diff_id and a.image_id < b.image_id
  group by all
)
select ia.name as image_a, ib.name as image_b, p.common::bigint as common_bytes,
       p.common::double / (ta.bytes + tb.bytes - p.common)::double as share,
       p.common::double / ta.bytes::double as share_a,
       p.common::double / tb.bytes::double as share_b,
       coalesce(l.n, 0) as shared_layers, p.unshared::bigint as unshared_common_bytes,
       ta.bytes::bigint as bytes_a, tb.bytes::bigint as bytes_b
from pairs p
join tot ta on ta.image_id = p.a join tot tb on tb.image_id = p.b
join images ia on ia.id = p.a join images ib on ib.id = p.b
left join layers l on l.a = p.a and l.b = p.b
order by share desc, common_bytes desc, image_a, image_b
limit coalesce(:limit, 9223372036854775807)
