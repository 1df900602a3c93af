-- The :limit largest regular files of each image, biggest first.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- Example: layerdb report largest-files --image myapp:latest -p limit 10 -p hidden 1
-- @param image null
-- @param hidden 0
-- @param limit 20
with cut as (  -- the :limit-th largest size of each image: nothing smaller can make the list
  select image_id, list_min(max(size, coalesce(:limit, 1))) as least_size from (
    select image_id, size from fs
    where not :hidden::boolean and type = 'file' and (:image is null or image_id = :image)
    union all  -- with -p hidden 1: every file member of the image's layers
    select image_id, size from members
    where :hidden::boolean and type = 'file' and whiteout = 'none' and idx >= 0
      and (:image is null or image_id = :image))
  group by image_id
),
hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select v.image, v.image_id, v.position, v.idx, v.path, v.size, v.mode, v.uid, v.gid,
         v.sha256, case when v.visible then 'visible' else 'hidden' end as status
  from members v join cut c on c.image_id = v.image_id
  where v.type = 'file' and (v.visible or (:hidden::boolean and v.whiteout = 'none'))
    and (v.size >= c.least_size or :limit is null)
)
select image, path, size, printf('%04o', mode) as mode, uid, gid, position, status, sha256
from hits
qualify :limit is null
     or row_number() over (partition by image_id order by size desc, path, position) <= :limit
order by image, size desc, path, position
