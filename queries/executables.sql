-- Executable files (any execute bit; hardlinks too) in each image, under :under.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- Example: layerdb report executables --image myapp:latest -p under /usr/local
-- @param image null
-- @param hidden 0
-- @param under /
with visible as (
  select v.image, v.image_id, v.position, v.idx, v.layer, v.path, v.name, v.type, v.size, v.mode,
         v.uid, v.gid, v.uname, v.gname, v.linkname, v.sha256, v.xattrs, 'visible' as status
  from fs v
  where (:image is null or v.image_id = :image)
    and v.type in ('file', 'hardlink') and (v.mode & 73) <> 0
    and (:under = '/' or v.path = :under or starts_with(v.path, rtrim(:under, '/') || '/'))
),
hidden as (  -- members of the image's layers that upper layers shadow or delete
  select il.image, il.image_id, il.position, v.idx, v.layer, v.path, v.name, v.type, v.size,
         v.mode, v.uid, v.gid, v.uname, v.gname, v.linkname, v.sha256, v.xattrs,
         'hidden' as status
  from image_layers il join files v on v.layer = il.diff_id
  where :hidden::boolean and (:image is null or il.image_id = :image) and v.whiteout = 'none'
    and v.type in ('file', 'hardlink') and (v.mode & 73) <> 0
    and (:under = '/' or v.path = :under or starts_with(v.path, rtrim(:under, '/') || '/'))
    and not exists (select 1 from visible s where s.image_id = il.image_id
                    and s.position = il.position and s.idx = v.idx)
),
hits as (select * from visible union all select * from hidden)
select image, path, type, size, printf('%04o', mode) as mode, (mode & 3072) <> 0 as setid,
       uid, gid, linkname, position, status
from hits order by image, path, position
