-- Layers (diff_ids) carried by two or more images, the biggest savings first.
-- images: how many images carry it; refs: how many times (an image may carry it twice);
-- size: uncompressed tar bytes; bytes_saved: what sharing it saves against every image
-- shipping its own copy, (refs - 1) x size; positions: where it sits in those images (0 =
-- base). With --image, only the layers of that image that others carry too.
-- Example: layerdb report layers-shared --format json
-- @param image null
with uses as (
  select diff_id, count(distinct image_id) as images, count(*) as refs,
         list(distinct image order by image) as image_names,
         list(distinct position order by position) as positions,
         any_value(created_by) as created_by
  from image_layers group by diff_id
  having count(distinct image_id) >= 2
     and (:image is null or bool_or(image_id = :image))
)
select u.diff_id, u.images, u.refs, l.size, l.compressed_size, l.member_count as members,
       ((u.refs - 1) * l.size)::bigint as bytes_saved, u.positions, u.image_names,
       u.created_by
from uses u join layers l on l.diff_id = u.diff_id
order by bytes_saved desc, u.diff_id
