-- Image efficiency as dive scores it, and the bytes really wasted; one row per image.
-- size_bytes: the sum of the layers' member sizes (tar header sizes, hardlinks 0);
-- user_size_bytes: the same without the base layer (position 0).
-- efficiency: dive's score, sum(smallest) / sum(cumulative) over every path, where each layer
-- adds, for each member with nothing under it in that layer, its size, and for a whiteout the
-- bytes it deletes from the stack below when it deletes a directory (0 for a file); an opaque
-- directory counts as a whiteout of each lower child (dive ignores those).
-- efficiency_dive, wasted_bytes_dive, wasted_user_percent_dive: what dive 0.13 prints
-- (opaque markers ignored; a directory only implied by a layer's deeper paths counts as
-- a file there); dive's wasted bytes add up every copy of each path met in two or more layers,
-- the kept copy too.
-- wasted_bytes: the bytes upper layers shadow or delete (the kept copy not counted);
-- wasted_user_percent: wasted / user size. inefficient_paths: paths met in two or more layers;
-- hidden_entries: members the running image never sees. See efficiency-paths for the list.
-- Example: layerdb report efficiency --image myapp:latest --format json
-- @param image null
with
-- @include _dive-accounting: ims, m, hid, mk, gone, units, unit_size, multi, cand, parents
leaves as (  -- dive visits the members nothing else in the same layer sits below; only the
             -- paths that may count twice are listed (every other one counts its size once)
  select d.image_id, d.position, d.k1, d.k2, d.size from cand d
  anti join parents p on p.layer = d.layer and p.path = d.path and d.type = 'dir'
),
dive_dir as (  -- dive 0.13 takes a directory's type from the last layer below with anything
               -- at or under it (deletes_from_position): a layer that only implies the
               -- directory makes it a non-dir
  select t.image_id, t.position, t.k1, t.k2 from (
    select image_id, position, k1, k2, max(deletes_from_position) as last from mk
    where kind = 'whiteout' group by all) t
  semi join m on m.image_id = t.image_id and m.position = t.last and m.k1 = t.k1
    and m.k2 = t.k2 and m.type = 'dir' and m.whiteout = 'none'
),
contrib as (  -- what each layer adds to each path: size, size as dive 0.13 counts it, kind
  select image_id, position, k1, k2, size, size as size_dive, 'leaf' as kind from leaves
  union all
  select w.image_id, w.position, w.k1, w.k2, coalesce(u.size, 0),
         case when d.k1 is not null then coalesce(u.size, 0) else 0 end, 'whiteout'
  from mk w
  left join unit_size u on u.image_id = w.image_id and u.ev_pos = w.position
    and u.kind = 'whiteout' and u.k1 = w.k1 and u.k2 = w.k2
  left join dive_dir d on d.image_id = w.image_id and d.position = w.position
    and d.k1 = w.k1 and d.k2 = w.k2
  where w.kind = 'whiteout'
  union all
  select image_id, ev_pos, k1, k2, size, null, kind from unit_size
  where kind = 'opaque'
),
per_path as (
  select image_id, k1, k2, count(*) as n, sum(size) as cum, min(size) as small,
         count(size_dive) as n_dive, sum(size_dive) as cum_dive, min(size_dive) as small_dive
  from contrib group by all
),
sizes as (  -- sizes, and the bytes of every member outside per_path, which counts once
            -- (cumulative = smallest = its size): all file bytes less those at multi paths
  select a.image_id, a.size, a.user_size, a.nondir - coalesce(b.nondir, 0) as leaf_bytes
  from (select image_id, sum(size) as size,
               coalesce(sum(size) filter (where position > 0), 0) as user_size,
               coalesce(sum(size) filter (where whiteout = 'none' and type <> 'dir'), 0) as nondir
        from m group by image_id) a
  left join (select image_id, sum(size) as nondir from m semi join multi using (image_id, k1, k2)
             where whiteout = 'none' and type <> 'dir' group by image_id) b using (image_id)
),
score as (
  select s.image_id, s.leaf_bytes + coalesce(p.cum, 0) as cum,
         s.leaf_bytes + coalesce(p.small, 0) as small,
         s.leaf_bytes + coalesce(p.cum_dive, 0) as cum_dive,
         s.leaf_bytes + coalesce(p.small_dive, 0) as small_dive,
         coalesce(p.wasted_dive, 0) as wasted_dive, coalesce(p.inefficient, 0) as inefficient_paths
  from sizes s
  left join (select image_id, sum(cum) as cum, sum(small) as small, sum(cum_dive) as cum_dive,
                    sum(small_dive) as small_dive,
                    sum(cum_dive) filter (where n_dive >= 2) as wasted_dive,
                    count(*) filter (where n >= 2) as inefficient
             from per_path group by all) p using (image_id)
),
waste as (
  select image_id, sum(size) as wasted, count(*) as hidden from hid
  where whiteout = 'none' group by all
)
select i.name as image, i.id as image_id, i.layer_count as layers,
       coalesce(s.size, 0)::bigint as size_bytes,
       coalesce(s.user_size, 0)::bigint as user_size_bytes,
       case when coalesce(c.cum, 0) = 0 then 1.0
            else c.small::double / c.cum::double end as efficiency,
       case when coalesce(c.cum_dive, 0) = 0 then 1.0
            else c.small_dive::double / c.cum_dive::double end as efficiency_dive,
       coalesce(w.wasted, 0)::bigint as wasted_bytes,
       coalesce(c.wasted_dive, 0)::bigint as wasted_bytes_dive,
       case when coalesce(w.wasted, 0) = 0 then 0.0 when s.user_size > 0
            then w.wasted::double / s.user_size::double end as wasted_user_percent,
       case when coalesce(c.wasted_dive, 0) = 0 then 0.0 when s.user_size > 0
            then c.wasted_dive::double / s.user_size::double end as wasted_user_percent_dive,
       coalesce(c.inefficient_paths, 0) as inefficient_paths,
       coalesce(w.hidden, 0) as hidden_entries
from images i join ims x on x.id = i.id
left join sizes s on s.image_id = x.iid
left join score c on c.image_id = x.iid
left join waste w on w.image_id = x.iid
where :image is null or i.id = :image
order by i.name, i.id
