-- Executable files (any execute bit; hardlinks too) in each image, under :under.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- Example: layerdb report executables --image myapp:latest -p under /usr/local
-- @param image null
-- @param hidden 0
-- @param under /
with hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'visible' as status
  from fs where (:image is null or image_id = :image)
    and type in ('file', 'hardlink') and (mode & 73) <> 0
    and (:under = '/' or path = :under or starts_with(path, rtrim(:under, '/') || '/'))
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image)
    and type in ('file', 'hardlink') and (mode & 73) <> 0
    and (:under = '/' or path = :under or starts_with(path, rtrim(:under, '/') || '/'))
)
select image, path, type, size, printf('%04o', mode) as mode, (mode & 3072) <> 0 as setid,
       uid, gid, linkname, position, status
from hits order by image, path, position
