-- World-writable files, directories and devices (symlinks aside: their mode means nothing).
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- sticky: the directory's sticky bit (1777 /tmp is the usual, safe case).
-- Example: layerdb report world-writable --format csv
-- @param image null
-- @param hidden 0
with hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'visible' as status
  from fs where (:image is null or image_id = :image)
    and type <> 'symlink' and (mode & 2) <> 0
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image)
    and type <> 'symlink' and (mode & 2) <> 0
)
select image, path, type, printf('%04o', mode) as mode,
       type = 'dir' and (mode & 512) <> 0 as sticky,
       uid, gid, size, position, status
from hits order by image, path, position
