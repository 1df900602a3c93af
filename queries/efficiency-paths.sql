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
-- @include _dive-accounting: ims, m, hid, mk, gone, units, unit_size, multi, cand, parents
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
