"""Version order per ecosystem (layerdb.packages.versions) against the real tools: dpkg
--compare-versions, packaging.version (PEP 440), rpm's own rpm.vercmp, and npm's semver, on
generated cases; and the SQL functions built on it."""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import duckdb
import pytest
from packaging.version import Version

from layerdb.packages import catalog_sql
from layerdb.packages.versions import compare, version_key

SEED = 20261203


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _mutate(rng: random.Random, v: str, alphabet: str) -> str:
    """A version close to ``v``: one character changed, added or removed."""
    i = rng.randrange(len(v) + 1)
    op = rng.choice("cad")
    if op == "d" and i < len(v) and len(v) > 1:
        return v[:i] + v[i + 1:]
    c = rng.choice(alphabet)
    return v[:i] + c + v[i + (1 if op == "c" else 0):]


def _dpkg_version(rng: random.Random) -> str:
    up = str(rng.randrange(4)) + "".join(rng.choice("0123456789..~+abz") for _ in range(rng.randrange(6)))
    v = (f"{rng.randrange(3)}:" if rng.random() < 0.2 else "") + up
    if rng.random() < 0.6:
        v += "-" + "".join(rng.choice("0123456789.~+abz") for _ in range(1 + rng.randrange(4)))
    return v


_DPKG_OK = re.compile(r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")


def _dpkg_valid(v: str) -> bool:
    if not _DPKG_OK.match(v) or v.endswith("-"):
        return False
    return "-" not in v or bool(re.fullmatch(r"[A-Za-z0-9.+~]+", v.rsplit("-", 1)[1]))


@pytest.mark.skipif(not shutil.which("dpkg"), reason="dpkg is not installed")
def test_dpkg_order_matches_dpkg_compare_versions() -> None:
    rng = random.Random(SEED)
    pairs = []
    while len(pairs) < 200:
        a = _dpkg_version(rng)
        b = _mutate(rng, a, "0123456789.~+az") if rng.random() < 0.7 else _dpkg_version(rng)
        if _dpkg_valid(a) and _dpkg_valid(b):
            pairs.append((a, b))
    pairs += [("1.0~rc1", "1.0"), ("1.0", "1.0+b1"), ("1:0.1", "2.0"), ("1.0-1", "1.0-1~bpo1"),
              ("3.0.11-1~deb12u1", "3.0.13"), ("1.0", "1.0-0"), ("1.a", "1.a0"), ("1.0", "1.0.")]
    script = "".join(f"if dpkg --compare-versions '{a}' lt '{b}'; then echo -1; "
                     f"elif dpkg --compare-versions '{a}' eq '{b}'; then echo 0; else echo 1; fi\n"
                     for a, b in pairs)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == len(pairs)
    for (a, b), want in zip(pairs, out):
        assert compare("deb", a, b) == int(want), (a, b)


def _pep440(rng: random.Random) -> str:
    v = (f"{rng.randrange(3)}!" if rng.random() < 0.1 else "")
    v += ".".join(str(rng.choice([0, 0, 1, 2, 10])) for _ in range(1 + rng.randrange(4)))
    if rng.random() < 0.3:
        v += rng.choice(["a", "b", "rc", "alpha", "c", "pre"]) + str(rng.randrange(3))
    if rng.random() < 0.25:
        v += rng.choice([".post", "-", ".rev"]) + str(rng.randrange(3))
    if rng.random() < 0.25:
        v += ".dev" + str(rng.randrange(3))
    if rng.random() < 0.15:
        v += "+" + ".".join(rng.choice(["ubuntu", "1", "2", "abc", "10"]) for _ in range(1 + rng.randrange(2)))
    return v


def test_python_order_matches_packaging_version() -> None:
    rng = random.Random(SEED)
    vs = [_pep440(rng) for _ in range(300)]
    for a, b in zip(vs, vs[1:] + vs[:1]):
        va, vb = Version(a), Version(b)
        want = -1 if va < vb else 0 if va == vb else 1
        assert compare("python", a, b) == want, (a, b)
    ordered = sorted(vs, key=lambda v: version_key("python", v))  # type: ignore[arg-type,return-value]
    assert [Version(v) for v in ordered] == sorted(Version(v) for v in vs)
    # not PEP 440: below every valid version, never an error
    assert compare("python", "not a version", "0.0.1") == -1


@pytest.mark.skipif(not shutil.which("rpm"), reason="rpm is not installed (apt-get install rpm)")
def test_rpm_order_matches_rpm_vercmp() -> None:
    rng = random.Random(SEED)
    vs = []
    for _ in range(300):
        v = "".join(rng.choice("0123456789..ab~^_") for _ in range(1 + rng.randrange(7)))
        vs.append(v)
    pairs = [(a, _mutate(rng, a, "0123456789.a~^")) for a in vs] + [
        ("1.0~rc1", "1.0"), ("1.0^git1", "1.0"), ("1.0^git1", "1.0.1"), ("1.0", "1_0"),
        ("1.0a", "1.0"), ("1.01", "1.1"), ("2.0", "10")]
    table = "{" + ",".join("{" + json.dumps(a) + "," + json.dumps(b) + "}" for a, b in pairs) + "}"
    lua = f"for _, p in ipairs({table}) do print(rpm.vercmp(p[1], p[2]) .. \" \") end"
    out = subprocess.run(["rpm", "--eval", "%{lua:" + lua + "}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(out) == len(pairs)
    for (a, b), want in zip(pairs, out):
        # version only: rpm_key reads "a-b" as version-release, so compare dash-free strings
        if "-" in a or "-" in b:
            continue
        assert compare("rpm", a, b) == _sign(int(want)), (a, b)
    assert compare("rpm", "1:1.0-1", "2.0-1") == 1 and compare("rpm", "1.0-2.el9", "1.0-10.el9") == -1


NODE_SEMVER = "/usr/lib/node_modules/npm/node_modules/semver"


@pytest.mark.skipif(not shutil.which("node") or not shutil.os.path.isdir(NODE_SEMVER),  # type: ignore[attr-defined]
                    reason="node with npm's bundled semver is not installed")
def test_npm_order_matches_node_semver() -> None:
    rng = random.Random(SEED)
    vs = []
    for _ in range(200):
        v = ".".join(str(rng.choice([0, 1, 2, 10])) for _ in range(3))
        if rng.random() < 0.5:
            v += "-" + ".".join(rng.choice(["alpha", "beta", "rc", "0", "1", "11", "2", "x-y"])
                                for _ in range(1 + rng.randrange(3)))
        if rng.random() < 0.2:
            v += "+build." + str(rng.randrange(9))
        vs.append(v)
    pairs = list(zip(vs, vs[1:]))
    js = (f"const s=require({json.dumps(NODE_SEMVER)});"
          f"for (const [a,b] of {json.dumps(pairs)}) console.log(s.compare(a,b));")
    out = subprocess.run(["node", "-e", js], capture_output=True, text=True, check=True).stdout.split()
    for (a, b), want in zip(pairs, out):
        assert compare("npm", a, b) == int(want), (a, b)


def test_semver_spec_go_and_apk_examples() -> None:
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]  # semver.org, item 11
    assert sorted(chain, key=lambda v: version_key("npm", v)) == chain  # type: ignore[arg-type,return-value]
    go = ["v0.0.0-20190101000000-abcdefabcdef", "v0.1.0", "v1.2.3-pre", "v1.2.3",
          "v2.0.0+incompatible", "v2.1.0"]
    assert sorted(reversed(go), key=lambda v: version_key("go", v)) == go  # type: ignore[arg-type,return-value]
    apk = ["1.2_alpha1", "1.2_beta", "1.2_rc2", "1.2", "1.2-r1", "1.2_p1", "1.2a", "1.2.1", "1.10"]
    assert sorted(reversed(apk), key=lambda v: version_key("apk", v)) == apk  # type: ignore[arg-type,return-value]


def test_sql_functions_agree_with_the_keys() -> None:
    con = duckdb.connect(":memory:")
    catalog_sql.register_functions(con)
    catalog_sql.register_functions(con)  # a second definition of the views keeps them
    got = con.execute(
        "select version_lt('deb', '3.0.11-1~deb12u1', '3.0.13'), version_lt('deb', '1:1.0', '2.0'),"
        " version_ge('python', '1.0.post1', '1.0'), version_eq('python', '1.0', '1.0.0'),"
        " version_gt('rpm', '1.0^git1', '1.0'), version_le('npm', '1.0.0-rc.1', '1.0.0'),"
        " version_cmp('go', 'v1.2.3', 'v1.10.0'), version_lt('deb', null, '1'),"
        " version_key('deb', '1.0~rc1') < version_key('deb', '1.0')").fetchall()
    assert got == [(True, False, True, True, True, True, -1, None, True)]
    # string order would say the opposite for each of these
    assert "3.0.9" > "3.0.13" and compare("deb", "3.0.9", "3.0.13") == -1
