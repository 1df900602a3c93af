-- Each image's layers, base first: size, members, and paths added, modified and removed.
-- What each layer does to the filesystem below it: dive's layer view, as a table.
-- size: bytes of the layer's members (tar header sizes, hardlinks 0, as dive counts);
-- members: tar members; added: paths not in the layers below; modified: paths below with
-- another type, content, mode, owner or link target; unchanged: paths written again as they
-- were; removed: whiteouts and opaque markers; removed_bytes: the bytes the layer deletes
-- from below (with those, or with a file over a directory);
-- hidden_bytes: bytes of this layer that upper layers hide (so never seen, still shipped).
-- The root directory itself is not counted.
-- Example: layerdb report history --image myapp:latest
-- @param image null
with
m as not materialized (  -- the tar members of the selected images (implied directories aside),
                         -- with their fate (members)
  select image_id, position, layer, idx, path, type, size, whiteout, visible,
         hidden_by_position as kill_pos, hidden_by_kind, hidden_by_markers, sha256, mode, uid,
         gid, linkname
  from members where idx >= 0 and (:image is null or image_id = :image)
),
hid as materialized (  -- the entries a running container does not see (markers aside)
  select * exclude (visible) from m where not visible and whiteout = 'none'
),
deleted as (  -- the bytes each layer removes from below (whiteouts, opaque directories, a
              -- file over a directory), also those a later copy in that layer replaces too
  select image_id, kill_pos as position, sum(size) as removed_bytes from hid
  where hidden_by_kind in ('whiteout', 'opaque', 'ancestor') or hidden_by_markers is not null
  group by all
),
hidden as (select image_id, position, sum(size) as hidden_bytes from hid group by all),
again as (  -- an entry shadowed by a later copy, and that copy (the next member at its path)
  select h.image_id, il.position, case
           when h.type <> f.type or h.sha256 is distinct from f.sha256 or h.mode <> f.mode
             or h.uid <> f.uid or h.gid <> f.gid or h.linkname is distinct from f.linkname
             then 'modified'
           else 'unchanged'
         end as change
  from hid h
  join image_layers il on il.image_id = h.image_id and il.position = h.kill_pos
  join files f on f.layer = il.diff_id and f.path = h.path
    and (il.position > h.position or f.idx > h.idx)
  where h.hidden_by_kind = 'override' and f.path <> '/'
  qualify row_number() over (partition by h.image_id, h.position, h.idx order by f.idx) = 1
),
counts as (
  select image_id, position,
         count(*) filter (where change = 'modified') as modified,
         count(*) filter (where change = 'unchanged') as unchanged
  from again group by all
),
per_layer as (  -- what is the same in every image carrying the layer, counted once
  select layer, sum(size) as size, count(*) as members,
         count(*) filter (where whiteout = 'none' and path <> '/') as entries,
         count(*) filter (where whiteout <> 'none') as removed
  from files where layer in (select diff_id from image_layers
                             where :image is null or image_id = :image)
  group by layer
)
select il.image, il.position, coalesce(s.size, 0)::bigint as size,
       coalesce(s.members, 0) as members,
       coalesce(s.entries, 0) - coalesce(c.modified, 0) - coalesce(c.unchanged, 0) as added,
       coalesce(c.modified, 0) as modified, coalesce(c.unchanged, 0) as unchanged,
       coalesce(s.removed, 0) as removed, coalesce(d.removed_bytes, 0)::bigint as removed_bytes,
       coalesce(h.hidden_bytes, 0)::bigint as hidden_bytes, il.created_by, il.diff_id
from image_layers il
left join per_layer s on s.layer = il.diff_id
left join counts c on c.image_id = il.image_id and c.position = il.position
left join deleted d on d.image_id = il.image_id and d.position = il.position
left join hidden h on h.image_id = il.image_id and h.position = il.position
where :image is null or il.image_id = :image
order by il.image, il.image_id, il.position
