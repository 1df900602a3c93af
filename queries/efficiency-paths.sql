-- The paths that make an image inefficient, biggest first (dive's list, and what is hidden).
-- Every path set or deleted in two or more layers (dive's "inefficient files", an opaque
-- directory counted as deleting each lower child), and every path whose bytes the running
-- image never sees (a later copy, a whiteout, an opaque directory or a file over a directory
-- hides them).
-- count: how many layers set or delete the path; cumulative_bytes: what they add up to (dive's
-- figure); wasted_bytes: bytes at the path that upper layers hide; layers: the positions that
-- set or delete it; deleted_at: the layer whose deletion removed it (empty while it is still
-- there); dive: whether dive lists the path. At most :limit rows per image (null: all).
-- Example: layerdb report efficiency-paths --image myapp:latest -p limit 20
-- @param image null
-- @param limit 100
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
units as (  -- a whiteout deletes its path; an opaque marker each lower child of its directory
  select image_id, ev_pos, kind, path, type, size,
         case when kind = 'whiteout' then prefix
              else rtrim(prefix, '/') || '/' ||
                   split_part(substr(path, length(rtrim(prefix, '/')) + 2), '/', 1)
         end as unit
  from gone where kind in ('whiteout', 'opaque')
),
unit_size as (  -- the stacked size below a deleted directory; 0 for a deleted file
  select image_id, ev_pos, kind, unit,
         case when bool_or(path <> unit or type = 'dir') then sum(size) else 0 end as size
  from units group by all
),
multi as (  -- the only paths that can count in two layers: hidden ones and deleted ones
  select image_id, key from hid union select image_id, unit from unit_size
),
contrib as (  -- what each layer adds to those paths (dive's leaves, whiteouts, opaque children)
  select d.image_id, d.position, d.key, d.size, 'leaf' as kind
  from (select * from m semi join multi using (image_id, key)) d
  where d.whiteout = 'none' and d.path <> '/' and (d.type <> 'dir' or not exists (
    select 1 from files c where c.layer = d.layer and c.parent = d.path))
  union all
  select w.image_id, w.position, w.hides, coalesce(u.size, 0), 'whiteout' from hid w
  left join unit_size u on u.image_id = w.image_id and u.ev_pos = w.position
    and u.kind = 'whiteout' and u.unit = w.hides
  where w.whiteout = 'whiteout'
  union all
  select image_id, ev_pos, unit, size, kind from unit_size where kind = 'opaque'
),
per_path as (
  select image_id, key, count(*) as n, sum(size) as cum,
         count(*) filter (where kind <> 'opaque') as n_dive,
         list(distinct position order by position) as layers
  from contrib group by all
),
hidden as (
  select image_id, path as key, sum(size) as wasted,
         max(kill_pos) filter (where anc_pos = kill_pos
           or (next_whiteout = 'whiteout' and next_pos = kill_pos)) as deleted_at
  from killed group by all
)
select i.name as image, coalesce(p.key, h.key) as path, coalesce(p.n, 0) as count,
       coalesce(p.cum, 0)::bigint as cumulative_bytes,
       coalesce(h.wasted, 0)::bigint as wasted_bytes,
       coalesce(p.layers, []::integer[]) as layers, h.deleted_at,
       coalesce(p.n_dive, 0) >= 2 as dive
from per_path p
full join hidden h on h.image_id = p.image_id and h.key = p.key
join images i on i.id = coalesce(p.image_id, h.image_id)
where coalesce(p.n, 0) >= 2 or coalesce(h.wasted, 0) > 0
qualify :limit is null or row_number() over (
  partition by i.id order by coalesce(p.cum, 0) desc, coalesce(h.wasted, 0) desc,
  coalesce(p.key, h.key)) <= :limit
order by i.name, i.id, cumulative_bytes desc, wasted_bytes desc, path
