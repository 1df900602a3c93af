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
leaves as (  -- dive visits the members nothing else in the same layer sits below; only the
             -- paths that may count twice are listed (every other one counts its size once)
  select d.image_id, d.position, d.key, d.size
  from (select * from m semi join multi using (image_id, key)) d
  where d.whiteout = 'none' and d.path <> '/' and (d.type <> 'dir' or not exists (
    select 1 from files c where c.layer = d.layer and c.parent = d.path))
),
touch as (  -- dive 0.13 takes a directory's type from the last layer below with anything
            -- at or under it: a layer that only implies the directory makes it a non-dir
  select image_id, ev_pos, prefix, max(position) as last from (
    select image_id, ev_pos, prefix, position from anc where kind = 'whiteout'
    union all
    select image_id, next_pos, key, position from killed where next_whiteout = 'whiteout')
  group by all
),
dive_dir as (
  select t.image_id, t.ev_pos, t.prefix from touch t
  semi join m on m.image_id = t.image_id and m.position = t.last and m.path = t.prefix
    and m.type = 'dir' and m.whiteout = 'none'
),
contrib as (  -- what each layer adds to each path: size, size as dive 0.13 counts it, kind
  select image_id, position, key, size, size as size_dive, 'leaf' as kind from leaves
  union all
  select w.image_id, w.position, w.hides, coalesce(u.size, 0),
         case when d.prefix is not null then coalesce(u.size, 0) else 0 end, 'whiteout'
  from hid w
  left join unit_size u on u.image_id = w.image_id and u.ev_pos = w.position
    and u.kind = 'whiteout' and u.unit = w.hides
  left join dive_dir d on d.image_id = w.image_id and d.ev_pos = w.position
    and d.prefix = w.hides
  where w.whiteout = 'whiteout'
  union all
  select image_id, ev_pos, unit, size, null, kind from unit_size where kind = 'opaque'
),
per_path as (
  select image_id, key, count(*) as n, sum(size) as cum, min(size) as small,
         count(size_dive) as n_dive, sum(size_dive) as cum_dive, min(size_dive) as small_dive
  from contrib group by all
),
score as (  -- every member outside per_path counts once: cumulative = smallest = its size
  select s.image_id, s.leaf_bytes + coalesce(p.cum, 0) as cum,
         s.leaf_bytes + coalesce(p.small, 0) as small,
         s.leaf_bytes + coalesce(p.cum_dive, 0) as cum_dive,
         s.leaf_bytes + coalesce(p.small_dive, 0) as small_dive,
         coalesce(p.wasted_dive, 0) as wasted_dive, coalesce(p.inefficient, 0) as inefficient_paths
  from (select x.image_id, coalesce(sum(m.size), 0) as leaf_bytes
        from (select distinct image_id from m) x
        left join (m anti join multi using (image_id, key)) on m.image_id = x.image_id
          and m.whiteout = 'none' and m.type <> 'dir' group by all) s
  left join (select image_id, sum(cum) as cum, sum(small) as small, sum(cum_dive) as cum_dive,
                    sum(small_dive) as small_dive,
                    sum(cum_dive) filter (where n_dive >= 2) as wasted_dive,
                    count(*) filter (where n >= 2) as inefficient
             from per_path group by all) p using (image_id)
),
sizes as (
  select image_id, sum(size) as size, coalesce(sum(size) filter (where position > 0), 0)
         as user_size
  from m group by all
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
from images i
left join sizes s on s.image_id = i.id
left join score c on c.image_id = i.id
left join waste w on w.image_id = i.id
where :image is null or i.id = :image
order by i.name, i.id
