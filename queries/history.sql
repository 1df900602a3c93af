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
-- stack: begin (the same block in efficiency, efficiency-paths and history; a test keeps it so)
m as (  -- every tar member of every selected image, keyed by the path it sets or deletes
  select il.image_id, il.position, f.layer, f.idx, f.path, f.type, f.size, f.whiteout, f.hides,
         case when f.whiteout = 'whiteout' then f.hides else f.path end as key
  from image_layers il join files f on f.layer = il.diff_id
  where :image is null or il.image_id = :image
),
hid as (  -- members a running container does not see: not in fs (whiteout markers included)
  select m.* from m anti join (
    select image_id, position, idx from fs where :image is null or image_id = :image) v
  on v.image_id = m.image_id and v.position = m.position and v.idx = m.idx
),
seq as (  -- the members before and after each one at the same key, base first; a key with
          -- two members or a whiteout has a hidden member, so only those keys are looked at
  select image_id, position, idx, layer, key, path, type, size, whiteout,
         lead(position) over w as next_pos, lead(whiteout) over w as next_whiteout,
         lag(position) over w as prev_pos, lag(idx) over w as prev_idx,
         lag(layer) over w as prev_layer, lag(whiteout) over w as prev_whiteout,
         lag(type) over w as prev_type
  from m semi join (select distinct image_id, key from hid) k using (image_id, key)
  window w as (partition by image_id, key order by position, idx)
),
ev as (  -- deletions of subtrees: whiteouts, opaque markers, a non-directory over a directory
  select image_id, position, hides as prefix, whiteout as kind from hid where whiteout <> 'none'
  union all
  select image_id, position, key, 'replace' from seq
  where whiteout = 'none' and type <> 'dir' and prev_type = 'dir' and prev_whiteout = 'none'
),
anc as (  -- (hidden member, deletion of one of its ancestors in a layer above it)
  select h.image_id, h.position, h.idx, e.position as ev_pos, e.prefix, e.kind
  from (select h.image_id, h.position, h.idx, unnest(list_transform(
               range(1, len(string_split(h.path, '/'))),
               lambda i: coalesce(nullif(
                 array_to_string(list_slice(string_split(h.path, '/'), 1, i), '/'), ''), '/')
             )) as a
        from hid h join (select image_id, max(position) as top from ev group by image_id) t
          on t.image_id = h.image_id and h.position < t.top
        where h.path <> '/') h
  join ev e on e.image_id = h.image_id and e.prefix = h.a and e.position > h.position
),
killed as (  -- each hidden entry (markers aside) and the layer where it leaves the stack
  select h.image_id, h.position, h.idx, h.key, h.path, h.type, h.size, s.next_pos,
         s.next_whiteout, a.anc_pos, least(s.next_pos, a.anc_pos) as kill_pos
  from hid h join seq s using (image_id, position, idx)
  left join (select image_id, position, idx, min(ev_pos) as anc_pos from anc group by all) a
    using (image_id, position, idx)
  where h.whiteout = 'none'
),
gone as (  -- (deletion, entry it removes from the stack just below the deleting layer)
  select a.image_id, a.ev_pos, a.prefix, a.kind, k.path, k.type, k.size, k.position, k.idx
  from anc a join killed k using (image_id, position, idx) where a.ev_pos = k.kill_pos
  union all
  select image_id, kill_pos, key, 'whiteout', path, type, size, position, idx from killed
  where next_whiteout = 'whiteout' and next_pos = kill_pos
),
-- stack: end
again as (  -- members at a path that has an earlier member (or whiteout) below them
  select s.image_id, s.position,
         case
           when s.prev_pos is null or s.prev_whiteout <> 'none'
             or coalesce(k.anc_pos < s.position, false) then 'added'
           when s.type <> s.prev_type or a.sha256 is distinct from b.sha256 or a.mode <> b.mode
             or a.uid <> b.uid or a.gid <> b.gid or a.linkname is distinct from b.linkname
             then 'modified'
           else 'unchanged'
         end as change
  from seq s
  join files a on a.layer = s.layer and a.idx = s.idx
  left join files b on b.layer = s.prev_layer and b.idx = s.prev_idx
  left join killed k on k.image_id = s.image_id and k.position = s.prev_pos
    and k.idx = s.prev_idx
  where s.whiteout = 'none' and s.path <> '/'
),
counts as (
  select image_id, position,
         count(*) filter (where change = 'modified') as modified,
         count(*) filter (where change = 'unchanged') as unchanged
  from again group by all
),
sizes as (
  select image_id, position, sum(size) as size, count(*) as members,
         count(*) filter (where whiteout = 'none' and path <> '/') as entries,
         count(*) filter (where whiteout <> 'none') as removed
  from m group by all
),
deleted as (
  select image_id, ev_pos as position, sum(size) as removed_bytes
  from (select distinct image_id, ev_pos, position, idx, size from gone) group by all
),
hidden as (select image_id, position, sum(size) as hidden_bytes from killed group by all)
select il.image, il.position, coalesce(s.size, 0)::bigint as size,
       coalesce(s.members, 0) as members,
       coalesce(s.entries, 0) - coalesce(c.modified, 0) - coalesce(c.unchanged, 0) as added,
       coalesce(c.modified, 0) as modified, coalesce(c.unchanged, 0) as unchanged,
       coalesce(s.removed, 0) as removed, coalesce(d.removed_bytes, 0)::bigint as removed_bytes,
       coalesce(h.hidden_bytes, 0)::bigint as hidden_bytes, il.created_by, il.diff_id
from image_layers il
left join sizes s on s.image_id = il.image_id and s.position = il.position
left join counts c on c.image_id = il.image_id and c.position = il.position
left join deleted d on d.image_id = il.image_id and d.position = il.position
left join hidden h on h.image_id = il.image_id and h.position = il.position
where :image is null or il.image_id = :image
order by il.image, il.image_id, il.position
