-- Setuid and setgid files (and hardlinks to them) in each image.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- mode: octal permission bits; position: the layer that provides the entry (0 = base).
-- Example: layerdb report setuid --image myapp:latest -p hidden 1
-- @param image null
-- @param hidden 0
with hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'visible' as status
  from fs where (:image is null or image_id = :image)
    and type in ('file', 'hardlink') and (mode & 3072) <> 0
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image)
    and type in ('file', 'hardlink') and (mode & 3072) <> 0
)
select image, path, type, printf('%04o', mode) as mode, (mode & 2048) <> 0 as setuid,
       (mode & 1024) <> 0 as setgid, uid, gid, uname, gname, size, position, status
from hits order by image, path, position
