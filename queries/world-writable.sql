-- World-writable files, directories and devices (symlinks aside: their mode means nothing).
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- sticky: the directory's sticky bit (1777 /tmp is the usual, safe case).
-- Example: layerdb report world-writable --format csv
-- @param image null
-- @param hidden 0
with visible as (
  select v.image, v.image_id, v.position, v.idx, v.layer, v.path, v.name, v.type, v.size, v.mode,
         v.uid, v.gid, v.uname, v.gname, v.linkname, v.sha256, v.xattrs, 'visible' as status
  from fs v
  where (:image is null or v.image_id = :image)
    and v.type <> 'symlink' and (v.mode & 2) <> 0
),
hidden as (  -- members of the image's layers that upper layers shadow or delete
  select il.image, il.image_id, il.position, v.idx, v.layer, v.path, v.name, v.type, v.size,
         v.mode, v.uid, v.gid, v.uname, v.gname, v.linkname, v.sha256, v.xattrs,
         'hidden' as status
  from image_layers il join files v on v.layer = il.diff_id
  where :hidden::boolean and (:image is null or il.image_id = :image) and v.whiteout = 'none'
    and v.type <> 'symlink' and (v.mode & 2) <> 0
    and not exists (select 1 from visible s where s.image_id = il.image_id
                    and s.position = il.position and s.idx = v.idx)
),
hits as (select * from visible union all select * from hidden)
select image, path, type, printf('%04o', mode) as mode,
       type = 'dir' and (mode & 512) <> 0 as sticky,
       uid, gid, size, position, status
from hits order by image, path, position
