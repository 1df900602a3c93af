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
ims as materialized (  -- images as small integers (compact join keys; image_id below is one)
  select id, (row_number() over (order by id))::integer as iid from images
  where :image is null or id = :image
),
m as not materialized (  -- the tar members of the selected images (implied directories aside),
                         -- keyed by the path each sets or deletes, with their fate (members)
  select x.iid as image_id, position, layer, idx, path, type, size, whiteout, hides, visible,
         hidden_by_position as kill_pos, hidden_by_kind, hidden_by_markers, deletes_from_position,
         case when whiteout = 'whiteout' then hides else path end as key,
         -- the key as 128 bits (two hashes): compact keys for the big joins and aggregates
         hash(case when whiteout = 'whiteout' then hides else path end) as k1,
         hash(case when whiteout = 'whiteout' then hides else path end || '|') as k2
  from members join ims x on x.id = members.image_id
  where idx >= 0
),
hid as not materialized (  -- members a running container does not see (markers included)
  select image_id, position, idx, path, type, size, whiteout, kill_pos, hidden_by_kind,
         hidden_by_markers, key, k1, k2
  from m where not visible
),
mk as materialized (  -- whiteout and opaque markers: the path each deletes or empties
  select image_id, position, idx, hides as prefix, whiteout as kind, k1, k2,
         deletes_from_position
  from m where whiteout <> 'none'
),
gone as (  -- (marker, hidden entry it removes from the stack just below its layer): every
           -- marker of the layer where the entry leaves the stack that deletes it (members)
  select h.image_id, h.kill_pos as ev_pos, e.prefix, e.kind, h.path, h.type, h.size,
         h.position, h.idx
  from (select image_id, position, idx, path, type, size, kill_pos,
               unnest(hidden_by_markers) as marker
        from hid where hidden_by_markers is not null) h
  join mk e on e.image_id = h.image_id and e.position = h.kill_pos and e.idx = h.marker
),
units as (  -- a whiteout deletes its path; an opaque marker each lower child of its directory
  select image_id, ev_pos, kind, path, type, size,
         case when kind = 'whiteout' then prefix
              else rtrim(prefix, '/') || '/' ||
                   split_part(substr(path, length(rtrim(prefix, '/')) + 2), '/', 1)
         end as unit
  from gone where kind in ('whiteout', 'opaque')
),
unit_size as (  -- the stacked size below a deleted directory; 0 for a deleted file
  select image_id, ev_pos, kind, unit, hash(unit) as k1, hash(unit || '|') as k2,
         case when bool_or(path <> unit or type = 'dir') then sum(size) else 0 end as size
  from units group by image_id, ev_pos, kind, unit
),
multi as not materialized (  -- the only paths that can count in two layers: hidden, deleted
  select image_id, k1, k2 from hid
  union select image_id, k1, k2 from unit_size
),
cand as not materialized (  -- the members at those paths (dive's leaves among them): the
                            -- hidden ones, and the visible ones at a hidden or deleted path
  select * from m where not visible and whiteout = 'none' and path <> '/'
  union all
  select m.* from m semi join multi using (image_id, k1, k2)
  where m.visible and m.whiteout = 'none' and m.path <> '/'
),
parents as (  -- the directories among them that hold something in their own layer
  select distinct f.layer, f.parent as path from files f
  semi join (select layer, path from cand where type = 'dir') d
    on d.layer = f.layer and d.path = f.parent
),
contrib as (  -- what each layer adds to those paths (dive's leaves, whiteouts, opaque children)
  select d.image_id, d.position, d.key, d.k1, d.k2, d.size, 'leaf' as kind from cand d
  anti join parents p on p.layer = d.layer and p.path = d.path and d.type = 'dir'
  union all
  select w.image_id, w.position, w.prefix, w.k1, w.k2, coalesce(u.size, 0), 'whiteout' from mk w
  left join unit_size u on u.image_id = w.image_id and u.ev_pos = w.position
    and u.kind = 'whiteout' and u.k1 = w.k1 and u.k2 = w.k2
  where w.kind = 'whiteout'
  union all
  select image_id, ev_pos, unit, k1, k2, size, kind from unit_size
  where kind = 'opaque'
),
per_path as (
  select image_id, k1, k2, any_value(key) as key, count(*) as n, sum(size) as cum,
         count(*) filter (where kind <> 'opaque') as n_dive,
         list(distinct position order by position) as layers
  from contrib group by image_id, k1, k2
),
hidden as (  -- deleted_at: the layer whose deletion (a marker, or a file over a directory)
             -- removed the path; an entry only shadowed by a later copy has none
  select image_id, k1, k2, any_value(path) as key, sum(size) as wasted,
         max(kill_pos) filter (where hidden_by_kind in ('whiteout', 'opaque', 'ancestor')
                                 or hidden_by_markers is not null) as deleted_at
  from hid where whiteout = 'none' group by image_id, k1, k2
)
select i.name as image, coalesce(p.key, h.key) as path, coalesce(p.n, 0) as count,
       coalesce(p.cum, 0)::bigint as cumulative_bytes,
       coalesce(h.wasted, 0)::bigint as wasted_bytes,
       coalesce(p.layers, []::integer[]) as layers, h.deleted_at,
       coalesce(p.n_dive, 0) >= 2 as dive
from per_path p
full join hidden h on h.image_id = p.image_id and h.k1 = p.k1 and h.k2 = p.k2
join ims x on x.iid = coalesce(p.image_id, h.image_id) join images i on i.id = x.id
where coalesce(p.n, 0) >= 2 or coalesce(h.wasted, 0) > 0
qualify :limit is null or row_number() over (
  partition by i.id order by coalesce(p.cum, 0) desc, coalesce(h.wasted, 0) desc,
  coalesce(p.key, h.key)) <= :limit
order by i.name, i.id, cumulative_bytes desc, wasted_bytes desc, path
