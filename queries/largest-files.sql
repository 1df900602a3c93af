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
    select il.image_id, f.size from image_layers il join files f on f.layer = il.diff_id
    where :hidden::boolean and f.type = 'file' and f.whiteout = 'none'
      and (:image is null or il.image_id = :image))
  group by image_id
),
visible as (
  select v.image, v.image_id, v.position, v.idx, v.path, v.size, v.mode, v.uid, v.gid,
         v.sha256, 'visible' as status
  from fs v join cut c on c.image_id = v.image_id
  where v.type = 'file' and (v.size >= c.least_size or :limit is null)
),
hidden as (  -- members of the image's layers that upper layers shadow or delete
  select il.image, il.image_id, il.position, v.idx, v.path, v.size, v.mode, v.uid, v.gid,
         v.sha256, 'hidden' as status
  from image_layers il join files v on v.layer = il.diff_id join cut c on c.image_id = il.image_id
  where :hidden::boolean and v.whiteout = 'none' and v.type = 'file'
    and (v.size >= c.least_size or :limit is null)
    and not exists (select 1 from visible s where s.image_id = il.image_id
                    and s.position = il.position and s.idx = v.idx)
),
hits as (select * from visible union all select * from hidden)
select image, path, size, printf('%04o', mode) as mode, uid, gid, position, status, sha256
from hits
qualify :limit is null
     or row_number() over (partition by image_id order by size desc, path, position) <= :limit
order by image, size desc, path, position
