-- Files whose names look like keys and credentials (id_rsa, *.pem, *.key, .env, ...).
-- SSH private and host keys, *.pem, *.key, keystores, .env files, cloud, registry and
-- package-manager credentials (.aws/credentials, .docker/config.json, .npmrc, .pypirc),
-- .netrc, .git-credentials, kubeconfig, terraform state.
-- Over each image's merged filesystem; -p hidden 1 adds the members upper layers shadow or
-- delete (status hidden: still shipped in the image, so still readable by anyone who has it).
-- A secret deleted in an upper layer still ships: run with -p hidden 1. kind: what the name
-- suggests. Certificates under the usual CA bundle directories are left out.
-- Example: layerdb report secrets -p hidden 1
-- @param image null
-- @param hidden 0
with candidates as (  -- regular files and hardlinks: the merged filesystem, and with :hidden
                     -- the members it does not show
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'visible' as status
  from fs where (:image is null or image_id = :image) and type in ('file', 'hardlink')
  union all
  select image, image_id, position, idx, layer, path, name, type, size, mode, uid, gid,
         uname, gname, linkname, sha256, xattrs, 'hidden'
  from members where :hidden::boolean and not visible and whiteout = 'none'
    and (:image is null or image_id = :image) and type in ('file', 'hardlink')
),
hits as (  -- the names that look like keys and credentials
  select * from candidates v
  where (
      v.name in ('id_rsa', 'id_dsa', 'id_ecdsa', 'id_ed25519', 'id_ecdsa_sk', 'id_ed25519_sk',
                 'identity', '.env', '.npmrc', '.pypirc', '.netrc', '_netrc', '.git-credentials',
                 '.htpasswd', '.pgpass', '.s3cfg', 'credentials.json', '.vault-token',
                 '.dockercfg', 'secrets.yml', 'secrets.yaml')
      or v.name like '.env.%' or v.name like 'ssh_host_%_key'
      or regexp_matches(v.name, '\.(pem|key|p12|pfx|jks|keystore|ovpn|tfstate|kdbx|asc|gpg)$')
      or v.path like '%/.aws/credentials' or v.path like '%/.docker/config.json'
      or v.path like '%/.kube/config' or v.path like '%/.config/gcloud/%credentials%'
      or v.path like '%/.gnupg/private-keys-v1.d/%' or v.path like '%/.ssh/%_rsa')
    and not (regexp_matches(v.name, '\.(pem|crt)$') and (
      v.path like '/etc/ssl/certs/%' or v.path like '/usr/share/ca-certificates/%'
      or v.path like '/etc/pki/ca-trust/%' or v.path like '/etc/pki/tls/certs/%'
      or v.path like '/usr/local/share/ca-certificates/%' or v.path like '/etc/ca-certificates/%'
      or v.path like '%/certifi/cacert.pem'))
)
select image, path,
       case
         when name in ('id_rsa', 'id_dsa', 'id_ecdsa', 'id_ed25519', 'id_ecdsa_sk',
                       'id_ed25519_sk', 'identity') or path like '%/.ssh/%_rsa'
           then 'ssh private key'
         when name like 'ssh_host_%_key' then 'ssh host key'
         when name = '.env' or name like '.env.%' then 'environment file'
         when path like '%/.aws/credentials' then 'aws credentials'
         when path like '%/.config/gcloud/%' or name = 'credentials.json' then 'cloud credentials'
         when path like '%/.docker/config.json' or name = '.dockercfg' then 'registry credentials'
         when path like '%/.kube/config' then 'kubeconfig'
         when name in ('.npmrc', '.pypirc') then 'package registry token'
         when name in ('.netrc', '_netrc', '.git-credentials') then 'login credentials'
         when name in ('.htpasswd', '.pgpass') then 'password file'
         when name = '.vault-token' then 'vault token'
         when name like '%.pem' then 'pem (key or certificate)'
         when name like '%.key' then 'private key'
         when regexp_matches(name, '\.(p12|pfx|jks|keystore|kdbx)$') then 'keystore'
         when path like '%/.gnupg/%' or regexp_matches(name, '\.(asc|gpg)$') then 'pgp key'
         when name like '%.tfstate' then 'terraform state'
         when name like '%.ovpn' then 'vpn config'
         else 'secrets file'
       end as kind,
       type, size, printf('%04o', mode) as mode, uid, gid, position, status, sha256
from hits order by image, path, position
