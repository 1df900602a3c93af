-- Files with file capabilities (the security.capability xattr), decoded as getcap prints them.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- capabilities: e.g. cap_net_raw=ep; permitted, inheritable: the names; effective: the
-- effective bit; version: vfs_cap_data revision (3 adds rootid, the namespace root uid).
-- Example: layerdb report capabilities
-- @param image null
-- @param hidden 0
with hits as (  -- the merged filesystem, and with :hidden the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'visible' as status
  from fs where (:image is null or image_id = :image)
    and xattrs['security.capability'] is not null
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image)
    and xattrs['security.capability'] is not null
),
raw as (
  select *, hex(xattrs['security.capability']) as h from hits
),
le as (  -- little-endian 32-bit words: magic_etc, permitted lo, inheritable lo, hi words
  select *,
    ('0x' || substr(h, 7, 2) || substr(h, 5, 2) || substr(h, 3, 2) || substr(h, 1, 2))::ubigint
      as magic,
    ('0x' || substr(h, 15, 2) || substr(h, 13, 2) || substr(h, 11, 2) || substr(h, 9, 2))::ubigint
      as p_lo,
    ('0x' || substr(h, 23, 2) || substr(h, 21, 2) || substr(h, 19, 2) || substr(h, 17, 2))::ubigint
      as i_lo,
    case when length(h) >= 40 then ('0x' || substr(h, 31, 2) || substr(h, 29, 2)
      || substr(h, 27, 2) || substr(h, 25, 2))::ubigint else 0 end as p_hi,
    case when length(h) >= 40 then ('0x' || substr(h, 39, 2) || substr(h, 37, 2)
      || substr(h, 35, 2) || substr(h, 33, 2))::ubigint else 0 end as i_hi,
    case when length(h) >= 48 then ('0x' || substr(h, 47, 2) || substr(h, 45, 2)
      || substr(h, 43, 2) || substr(h, 41, 2))::ubigint end as rootid
  from raw
),
caps as (
  select *, p_lo | (p_hi << 32) as p, i_lo | (i_hi << 32) as i, (magic & 1) = 1 as effective,
         (magic >> 24)::integer as version,
         ['cap_chown', 'cap_dac_override', 'cap_dac_read_search', 'cap_fowner', 'cap_fsetid',
          'cap_kill', 'cap_setgid', 'cap_setuid', 'cap_setpcap', 'cap_linux_immutable',
          'cap_net_bind_service', 'cap_net_broadcast', 'cap_net_admin', 'cap_net_raw',
          'cap_ipc_lock', 'cap_ipc_owner', 'cap_sys_module', 'cap_sys_rawio', 'cap_sys_chroot',
          'cap_sys_ptrace', 'cap_sys_pacct', 'cap_sys_admin', 'cap_sys_boot', 'cap_sys_nice',
          'cap_sys_resource', 'cap_sys_time', 'cap_sys_tty_config', 'cap_mknod', 'cap_lease',
          'cap_audit_write', 'cap_audit_control', 'cap_setfcap', 'cap_mac_override',
          'cap_mac_admin', 'cap_syslog', 'cap_wake_alarm', 'cap_block_suspend',
          'cap_audit_read', 'cap_perfmon', 'cap_bpf', 'cap_checkpoint_restore'] as names
  from le
),
named as (
  select *,
    array_to_string(list_transform(list_filter(range(64), lambda b: ((p >> b) & 1) = 1),
      lambda b: coalesce(names[b + 1], 'cap_' || b)), ',') as permitted,
    array_to_string(list_transform(list_filter(range(64), lambda b: ((i >> b) & 1) = 1),
      lambda b: coalesce(names[b + 1], 'cap_' || b)), ',') as inheritable
  from caps
)
select image, path, type,
       concat_ws(' ',
         case when permitted <> '' then permitted || '=' || case when effective then 'e' else '' end
           || 'p' || case when inheritable = permitted then 'i' else '' end end,
         case when inheritable <> '' and inheritable <> permitted then inheritable || '=i' end)
         as capabilities,
       permitted, inheritable, effective, version, rootid, printf('%04o', mode) as mode, uid,
       gid, size, position, status
from named order by image, path, position
