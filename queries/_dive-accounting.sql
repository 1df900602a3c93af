-- dive's per-path accounting, shared by the efficiency and efficiency-paths reports: not a
-- report of its own, but the first common table expressions of theirs. A report takes them with
-- a line "-- @include _dive-accounting: ims, m, hid, ..." inside its "with" (the loader puts
-- this text there, a comma after it; `layerdb report NAME --sql` prints the result).
-- Over the images :image selects (null: every image):
--   ims: the images as small integers; m: their tar members, keyed by the path each sets or
--   deletes (key; k1, k2: the key as 128 bits), with their fate; hid: the members a running
--   container does not see; mk: whiteout and opaque markers; gone, units, unit_size: what each
--   marker deletes, and the stacked size below a deleted directory (0 for a file); multi: the
--   only paths that can count in two layers; cand: the members at those paths; parents: the
--   directories among them that hold something in their own layer (the others are leaves).
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
)
