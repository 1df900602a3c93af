-- Bytes of regular files per directory, down to :depth levels (like du -d), per image.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- dir '/' (depth 0) is the whole image. files, bytes: what is visible below the directory;
-- hidden_files, hidden_bytes: members below it that upper layers shadow or delete (0 unless
-- -p hidden 1).
-- Example: layerdb report dir-sizes --image myapp:latest -p depth 3
-- @param image null
-- @param hidden 0
-- @param depth 2
with hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, parent, 'visible' as status
  from fs where (:image is null or image_id = :image)
    and type = 'file'
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, parent, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image)
    and type = 'file'
),
per_dir as (  -- files and bytes directly in each directory
  select image, image_id, parent, count(*) filter (where status = 'visible') as files,
         coalesce(sum(size) filter (where status = 'visible'), 0) as bytes,
         count(*) filter (where status = 'hidden') as hidden_files,
         coalesce(sum(size) filter (where status = 'hidden'), 0) as hidden_bytes
  from hits group by all
),
up as (  -- each of those sums under each ancestor of its directory down to :depth
  select image, image_id, files, bytes, hidden_files, hidden_bytes,
         unnest(list_transform(range(0, least(:depth, len(parts) - 1) + 1),
           lambda d: coalesce(nullif(array_to_string(list_slice(parts, 1, d + 1), '/'), ''),
                              '/'))) as dir
  from (select *, case when parent = '/' then [''] else string_split(parent, '/') end as parts
        from per_dir)
)
select image, dir, case when dir = '/' then 0 else len(string_split(dir, '/')) - 1 end as depth,
       sum(files)::bigint as files, sum(bytes)::bigint as bytes,
       sum(hidden_files)::bigint as hidden_files, sum(hidden_bytes)::bigint as hidden_bytes
from up group by image, image_id, dir
order by image, image_id, dir
