-- What changes between two images' merged filesystems: paths added, removed, changed.
-- Changed means another type, content, mode, owner or link target; sizes from both sides.
-- :a and :b are image ids, names or refs (layerdb diff A B resolves prefixes and platforms
-- too). change: added (only in b), removed (only in a), changed; what: which attributes
-- differ; detail: their values, a -> b. Directory mtimes are not compared.
-- Then the installed packages (view packages) that differ, type package: change package
-- added, package removed, package upgraded or package downgraded (as the ecosystem orders
-- versions); path: the record file; what: the ecosystem; detail: name and versions a -> b.
-- Example: layerdb report diff -p a myapp:1 -p b myapp:2   (or: layerdb diff myapp:1 myapp:2)
with ia as (select id from images where id = :a or name = :a or list_contains(refs, :a)),
ib as (select id from images where id = :b or name = :b or list_contains(refs, :b)),
a as (select * from fs where image_id in (select id from ia)),
b as (select * from fs where image_id in (select id from ib)),
j as (
  select coalesce(a.path, b.path) as path, a.path is not null as in_a, b.path is not null as in_b,
         a.type as type_a, b.type as type_b, a.size as size_a, b.size as size_b,
         a.sha256 as sha_a, b.sha256 as sha_b, a.mode as mode_a, b.mode as mode_b,
         a.uid as uid_a, b.uid as uid_b, a.gid as gid_a, b.gid as gid_b,
         a.linkname as link_a, b.linkname as link_b, a.devmajor as major_a,
         b.devmajor as major_b, a.devminor as minor_a, b.devminor as minor_b
  from a full join b on a.path = b.path
),
d as (
  select *,
    list_filter([
      case when type_a <> type_b then 'type' end,
      case when type_a = type_b and (sha_a is distinct from sha_b or size_a <> size_b
             or major_a is distinct from major_b or minor_a is distinct from minor_b)
           then 'content' end,
      case when mode_a <> mode_b then 'mode' end,
      case when uid_a <> uid_b or gid_a <> gid_b then 'owner' end,
      case when link_a is distinct from link_b then 'link' end], lambda x: x is not null) as what
  from j
)
select case when not in_a then 'added' when not in_b then 'removed' else 'changed' end as change,
       path, coalesce(type_b, type_a) as type, size_a, size_b,
       (coalesce(size_b, 0) - coalesce(size_a, 0))::bigint as size_delta,
       array_to_string(what, ',') as what,
       array_to_string(list_filter([
         case when list_contains(what, 'type') then type_a || ' -> ' || type_b end,
         case when list_contains(what, 'mode')
              then printf('mode %04o -> %04o', mode_a, mode_b) end,
         case when list_contains(what, 'owner')
              then 'owner ' || uid_a || ':' || gid_a || ' -> ' || uid_b || ':' || gid_b end,
         case when list_contains(what, 'link')
              then 'link ' || coalesce(link_a, '') || ' -> ' || coalesce(link_b, '') end],
         lambda x: x is not null), '; ') as detail
from d
where not in_a or not in_b or len(what) > 0
union all
select * from (  -- packages (src/layerdb/packages): keyed by ecosystem, name, arch and record file
  with pa as (select * from packages where image_id in (select id from ia)),
  pb as (select * from packages where image_id in (select id from ib))
  select case when pa.name is null then 'package added' when pb.name is null then 'package removed'
              when pb.version_key > pa.version_key then 'package upgraded'
              else 'package downgraded' end as change,
         coalesce(pb.record_path, pa.record_path) as path, 'package' as type,
         null::bigint as size_a, null::bigint as size_b, 0::bigint as size_delta,
         coalesce(pb.ecosystem, pa.ecosystem) as what,
         coalesce(pb.name, pa.name) || ' ' || case when pa.name is null then pb.version
           when pb.name is null then pa.version else pa.version || ' -> ' || pb.version end as detail
  from pa full join pb on pa.ecosystem = pb.ecosystem and pa.name = pb.name
    and pa.arch is not distinct from pb.arch and pa.record_path = pb.record_path
  where pa.name is null or pb.name is null or pa.version_key <> pb.version_key)
order by type = 'package', path, detail
