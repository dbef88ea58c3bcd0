#!/usr/bin/env bash
# package_test: `make install` and `make package`.
#  1. `cmake --install` into a DESTDIR, for the default prefix and for /usr,
#     puts exactly the expected files at their FHS paths (binaries in bin,
#     configs in /etc/strata, units in lib/systemd/system whose ExecStart
#     names the prefix's bin, docs); a second install keeps a locally
#     changed config (the new one lands beside it as .new); each component
#     holds only its own files.
#  2. CPack builds strata-agent and strata-collector .debs (into the test's
#     directory): control fields, Depends covering every shared library the
#     binaries need (plus adduser), conffiles, executable maintainer
#     scripts that pass `sh -n` (and shellcheck when installed), file lists,
#     owners and modes.
#  3. The extracted packages run: --version, --check-config on the packaged
#     configs, the packaged agent delivering to the packaged collector with
#     the packaged configs (paths and ports swapped for the test's), and the
#     examples commented out in collector.yaml (targets, api.tokens) valid
#     once uncommented.
#  4. As root with mount namespaces and overlayfs: dpkg installs, upgrades,
#     removes and purges both packages in a throwaway overlay of / (the real
#     system is untouched), with systemd's presence faked and systemctl
#     stubbed: the strata user, state directories, enablement, start/restart/
#     stop, conffile preservation, purge.
source "$(dirname "$0")/lib.sh"

for tool in dpkg-deb cpack cmake; do
    command -v "$tool" >/dev/null || fail "$tool is required"
done
[[ -f "$ST_BIN/CPackConfig.cmake" ]] || fail "$ST_BIN/CPackConfig.cmake is missing (cmake/packaging.cmake not included?)"
VERSION=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$ST_BIN/CMakeCache.txt")
[[ -n "$VERSION" ]] || fail "no CMAKE_PROJECT_VERSION in $ST_BIN/CMakeCache.txt"
ARCH=$(dpkg --print-architecture)

# ---- 1. cmake --install ------------------------------------------------------------------

# files_under DIR: "mode path" of every file and symlink below DIR, sorted.
files_under() { (cd "$1" && find . \( -type f -o -type l \) -printf '%m %P\n' | sort -k2); }

# expected_files PREFIX COMPONENT(agent|collector|all): what an install holds.
expected_files() {
    local p=${1#/} c=$2
    {
        if [[ $c != collector ]]; then
            echo "644 etc/strata/agent.yaml"
            echo "755 $p/bin/strata-agent"
            echo "644 $p/lib/systemd/system/strata-agent.service"
            echo "644 $p/share/doc/strata-agent/README.md"
        fi
        if [[ $c != agent ]]; then
            echo "644 etc/strata/collector.yaml"
            echo "755 $p/bin/strata"
            echo "755 $p/bin/strata-collector"
            echo "644 $p/lib/systemd/system/strata-collector.service"
            echo "644 $p/share/doc/strata-collector/README.md"
        fi
    } | sort -k2
}

# install_into DIR PREFIX [COMPONENT]
install_into() {
    local args=(--prefix "$2")
    [[ -n "${3:-}" ]] && args+=(--component "$3")
    DESTDIR=$1 cmake --install "$ST_BIN" "${args[@]}" >"$1.log" 2>&1 ||
        fail "cmake --install ${args[*]}: $(tail -n 20 "$1.log")"
}

for prefix in /usr/local /usr; do
    d=$T/destdir${prefix//\//-}
    log "cmake --install --prefix $prefix (DESTDIR=$d)"
    install_into "$d" "$prefix"
    got=$(files_under "$d")
    want=$(expected_files "$prefix" all)
    [[ "$got" == "$want" ]] || fail "install --prefix $prefix: files differ (- expected, + installed):
$(diff <(echo "$want") <(echo "$got") || true)"
    for u in agent collector; do
        exec_start=$(sed -n 's/^ExecStart=//p' "$d$prefix/lib/systemd/system/strata-$u.service")
        assert_eq "$prefix/bin/strata-$u --config /etc/strata/$u.yaml" "$exec_start" "ExecStart of the unit installed to $prefix"
        cmp -s "$d/etc/strata/$u.yaml" "$ST_SRC/deploy/etc/$u.yaml" || fail "/etc/strata/$u.yaml is not deploy/etc/$u.yaml"
        if [[ $prefix == /usr ]]; then
            cmp -s "$d/usr/lib/systemd/system/strata-$u.service" "$ST_SRC/deploy/systemd/strata-$u.service" ||
                fail "installed to /usr, strata-$u.service differs from deploy/systemd/strata-$u.service"
        fi
    done
    "$d$prefix/bin/strata-agent" --version >/dev/null || fail "installed strata-agent --version failed"
done

log "cmake --install again over a locally changed config"
d=$T/destdir-usr-local
echo "# changed locally" >>"$d/etc/strata/agent.yaml"
install_into "$d" /usr/local
grep -q "^# changed locally" "$d/etc/strata/agent.yaml" || fail "a second install overwrote the changed /etc/strata/agent.yaml"
cmp -s "$d/etc/strata/agent.yaml.new" "$ST_SRC/deploy/etc/agent.yaml" || fail "no agent.yaml.new beside the changed config"
cmp -s "$d/etc/strata/collector.yaml" "$ST_SRC/deploy/etc/collector.yaml" || fail "the unchanged collector.yaml was not reinstalled"
[[ ! -e "$d/etc/strata/collector.yaml.new" ]] || fail "collector.yaml.new installed although collector.yaml was unchanged"

for c in agent collector; do
    d=$T/component-$c
    log "cmake --install --component $c"
    install_into "$d" /usr "$c"
    got=$(files_under "$d")
    want=$(expected_files /usr "$c")
    [[ "$got" == "$want" ]] || fail "component $c: files differ (- expected, + installed):
$(diff <(echo "$want") <(echo "$got") || true)"
done

# ---- 2. the .deb packages ----------------------------------------------------------------

log "cpack -G DEB (packages into $T/pkg)"
(cd "$T" && cpack -G DEB --config "$ST_BIN/CPackConfig.cmake" -B "$T/pkg") >"$T/cpack.log" 2>&1 ||
    fail "cpack: $(tail -n 30 "$T/cpack.log")"

# needed_packages BINARY...: the Debian packages that hold the binaries'
# shared libraries (this architecture's: libc.so.6 is also in libc6-i386).
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
needed_packages() {
    local -a pats
    mapfile -t pats < <(readelf -d "$@" | sed -n "s#.*(NEEDED).*\[\(.*\)\]#*/$MULTIARCH/\1#p" | sort -u)
    ((${#pats[@]} > 0)) || fail "readelf found no shared libraries in $*"
    { dpkg -S "${pats[@]}" 2>/dev/null || true; } | awk -F: '!/^diversion/ {print $1}' | sort -u
}

# deb_field DEB FIELD
deb_field() { dpkg-deb -f "$1" "$2"; }

declare -A DEB
ALL_DEPENDS=""
for c in agent collector; do
    pkg=strata-$c
    deb=$T/pkg/${pkg}_${VERSION}-1_${ARCH}.deb
    [[ -f "$deb" ]] || fail "no $deb; cpack made: $(ls "$T/pkg")"
    DEB[$c]=$deb
    log "inspecting $(basename "$deb")"
    assert_eq "$pkg" "$(deb_field "$deb" Package)" "$pkg Package"
    assert_eq "$VERSION-1" "$(deb_field "$deb" Version)" "$pkg Version"
    assert_eq "$ARCH" "$(deb_field "$deb" Architecture)" "$pkg Architecture"
    [[ -n "$(deb_field "$deb" Maintainer)" ]] || fail "$pkg: no Maintainer"
    desc=$(deb_field "$deb" Description)
    [[ $(wc -l <<<"$desc") -ge 2 ]] || fail "$pkg: no long description"

    # Depends: adduser for postinst, and the package of every library a binary needs.
    depends=$(deb_field "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | sort -u)
    log "$pkg Depends: $(echo $depends)"
    want_deps=adduser
    bins=("$AGENT_BIN")
    [[ $c == collector ]] && bins=("$COLLECTOR_BIN" "$CLI_BIN")
    libpkgs=$(needed_packages "${bins[@]}")
    grep -qx libc6 <<<"$libpkgs" || fail "dpkg -S cannot name the packages of the libraries of ${bins[*]}: '$libpkgs'"
    want_deps+=$'\n'$libpkgs
    for p in $(sort -u <<<"$want_deps"); do
        grep -qx "$p" <<<"$depends" || fail "$pkg: Depends lacks $p (needed by its binaries); Depends: $(echo $depends)"
    done
    ALL_DEPENDS+=" $depends"
    if [[ $c == agent ]]; then
        # opened with dlopen on first use: invisible to dpkg-shlibdeps
        recommends=$(deb_field "$deb" Recommends)
        for p in libcurl4 libpq5; do
            grep -qw -- "$p" <<<"$recommends" || fail "$pkg: Recommends lacks $p; Recommends: $recommends"
        done
        ALL_DEPENDS+=" $recommends"
    fi

    # Files: exactly the component's, owned by root, nothing from the build tree.
    got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\.\//, "", $6); print $1, $2, $6}' | sort -k3)
    want=$(expected_files /usr "$c" | awk '{m = ($1 == 755) ? "-rwxr-xr-x" : "-rw-r--r--"; print m, "root/root", $2}' | sort -k3)
    [[ "$got" == "$want" ]] || fail "$pkg: contents differ (- expected, + packaged):
$(diff <(echo "$want") <(echo "$got") || true)"

    # Control archive: conffiles and maintainer scripts.
    mkdir -p "$T/ctrl-$c"
    dpkg-deb -e "$deb" "$T/ctrl-$c"
    assert_eq "/etc/strata/$c.yaml" "$(cat "$T/ctrl-$c/conffiles")" "$pkg conffiles"
    for s in postinst prerm postrm; do
        f=$T/ctrl-$c/$s
        [[ -x "$f" ]] || fail "$pkg: no executable $s"
        sh -n "$f" || fail "$pkg: $s has a syntax error"
        if command -v shellcheck >/dev/null; then
            shellcheck -s sh "$f" >"$T/shellcheck.out" 2>&1 || fail "$pkg: shellcheck $s: $(cat "$T/shellcheck.out")"
        fi
        grep -q "strata-$c.service" "$f" || fail "$pkg: $s does not name strata-$c.service"
    done
    grep -q 'adduser --system --group' "$T/ctrl-$c/postinst" || fail "$pkg: postinst does not create the strata system user"
    grep -q 'deb-systemd-invoke stop' "$T/ctrl-$c/prerm" || fail "$pkg: prerm does not stop the unit"

    # Extracted, the binaries run and accept the packaged config.
    x=$T/x-$c
    dpkg-deb -x "$deb" "$x"
    for b in "$x"/usr/bin/*; do
        out=$("$b" --version 2>&1) || fail "$pkg: $(basename "$b") --version failed: $out"
        assert_contains "$out" "$VERSION" "$pkg: $(basename "$b") --version"
    done
    out=$("$x/usr/bin/strata-$c" --config "$x/etc/strata/$c.yaml" --check-config 2>&1) ||
        fail "$pkg: strata-$c --check-config on the packaged $c.yaml: $out"
    assert_contains "$out" "configuration OK" "$pkg: --check-config on the packaged $c.yaml"
done

# The libraries the lead asked for, between the two packages (the agent's
# lazily loaded ones as Recommends).
for p in libnng1 libprotobuf-c1 liblmdb0 libzstd1 libcurl4 libssl3 libyaml-0-2 libjansson4 \
    libpq5 libhiredis0.14 zlib1g; do
    grep -qw -- "$p" <<<"$ALL_DEPENDS" || fail "neither package Depends on $p"
done

# ---- 3. the packaged daemons with the packaged configs ----------------------------------

COLLECTOR_BIN=$T/x-collector/usr/bin/strata-collector
AGENT_BIN=$T/x-agent/usr/bin/strata-agent

# swap FILE SED-EXPR...: edits FILE, failing when an expression matched nothing.
swap() {
    local f=$1 e
    shift
    for e in "$@"; do
        local before
        before=$(md5sum <"$f")
        sed -i "$e" "$f"
        [[ "$(md5sum <"$f")" != "$before" ]] || fail "$(basename "$f"): '$e' matched nothing"
    done
}

log "the packaged collector and agent, with the packaged configs"
mkdir -p "$COLLECTOR_DIR" "$COLLECTOR_DATA"
cp "$T/x-collector/etc/strata/collector.yaml" "$COLLECTOR_DIR/collector.yaml"
swap "$COLLECTOR_DIR/collector.yaml" "s#^data_dir: /var/lib/strata\$#data_dir: $COLLECTOR_DATA#" \
    "s#^  url: tcp://127.0.0.1:9740\$#  url: $INGEST_URL#" "s#^  addr: 127.0.0.1:9741\$#  addr: $HTTP_ADDR#"
collector_start
agent_config 0 pkg-host app
cp "$T/x-agent/etc/strata/agent.yaml" "${AGENT_DIR[0]}/agent.yaml"
swap "${AGENT_DIR[0]}/agent.yaml" "s#^collector: tcp://127.0.0.1:9740\$#collector: $INGEST_URL#" \
    "s#^data_dir: /var/lib/strata-agent\$#data_dir: ${AGENT_DIR[0]}/data#" \
    "s#^flush_interval: 15s #flush_interval: 300ms #" "s#^\# host: web-17 #host: pkg-host #"
agent_start 0
wait_for 60 "the packaged agent to deliver frames" agent_seq_at_least 0 2
agent_stop 0
assert_eq 0 "$ST_RC" "packaged agent exit status after SIGTERM"
collector_stop
assert_eq 0 "$ST_RC" "packaged collector exit status after SIGTERM"

log "the examples commented out in collector.yaml are valid"
TOKEN=$(openssl rand -hex 32)
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
python3 - "$COLLECTOR_DIR/collector.yaml" "$SHA" <<'EOF'
import sys
path, sha = sys.argv[1], sys.argv[2]
out, on, n = [], False, 0
for line in open(path).read().splitlines():
    if line.startswith("# targets:") or line.startswith("# api:"):
        on = True
    if on and not line.strip():
        on = False
    if on and line.startswith("# "):
        line, n = line[2:], n + 1
    out.append(line.replace("<64 hex digits>", sha))
assert n > 10, "no commented targets/api blocks found"
open(path, "w").write("\n".join(out) + "\n")
EOF
grep -q "^targets:" "$COLLECTOR_DIR/collector.yaml" && grep -q "^api:" "$COLLECTOR_DIR/collector.yaml" ||
    fail "uncommenting the examples failed"
out=$("$COLLECTOR_BIN" --config "$COLLECTOR_DIR/collector.yaml" --check-config 2>&1) ||
    fail "collector.yaml with its examples uncommented: $out"
collector_start
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP_ADDR/v1/status")
assert_eq 401 "$code" "GET /v1/status without the example's token"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$HTTP_ADDR/v1/status")
assert_eq 200 "$code" "GET /v1/status with the example's token"
collector_stop

# ---- 4. dpkg in a throwaway overlay of / ------------------------------------------------

overlay_ok() {
    [[ $(id -u) == 0 ]] && command -v unshare >/dev/null && command -v chroot >/dev/null &&
        unshare -m --propagation private sh -c \
            "mkdir -p '$T/probe/u' '$T/probe/w' '$T/probe/m' && mount -t overlay overlay -o lowerdir=/,upperdir='$T/probe/u',workdir='$T/probe/w' '$T/probe/m'" 2>/dev/null
}

if ! overlay_ok; then
    log "SKIPPED dpkg install/remove: needs root, unshare -m and overlayfs over /"
    pass
fi
log "dpkg -i / -r / -P in an overlay of / (nothing reaches the real system)"
mkdir -p "$T/ov"
cp "${DEB[agent]}" "${DEB[collector]}" "$T/ov/"
cat >"$T/ov/inside.sh" <<'EOF'
# Runs chrooted in the overlay; prints INNER-FAIL and exits 1 on a failed check.
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fail() { echo "INNER-FAIL: $*"; exit 1; }
say() { echo "inside: $*"; }
L=/tmp/systemctl.log
calls() { cat "$L" 2>/dev/null; : >"$L"; }
expect_call() { echo "$1" | grep -q -- "$2" || fail "$3: expected systemctl '$2', calls were: $(echo "$1" | tr '\n' ';')"; }
owner() { stat -c '%U:%G %a' "$1"; }

# systemd "running" (postinst/prerm look for /run/systemd/system), and a
# systemctl that records its calls: what works offline (--root=, whether a
# unit is enabled) goes to the real one, every unit is inactive, and start,
# stop, restart and daemon-reload succeed without doing anything.
mkdir -p /run/systemd/system
cat >/usr/local/sbin/systemctl <<STUB
#!/bin/sh
echo "\$*" >>$L
for a; do last=\$a; done
case " \$* " in
*" --root="*) exec /usr/bin/systemctl "\$@" ;;
*" is-enabled "*) exec /usr/bin/systemctl --root=/ is-enabled "\$last" ;;
*" is-active "*) exit 3 ;;
esac
exit 0
STUB
chmod 755 /usr/local/sbin/systemctl
rm -f /usr/sbin/policy-rc.d
had_user=no
getent passwd strata >/dev/null && had_user=yes

say "dpkg -i both"
dpkg -i /tmp/pkg/strata-agent_*.deb /tmp/pkg/strata-collector_*.deb
c=$(calls)
for p in strata-agent strata-collector; do
    [ "$(dpkg-query -W -f='${Status}' $p)" = "install ok installed" ] || fail "$p is not installed"
    expect_call "$c" "start $p.service" "first installation of $p"
    [ -L /etc/systemd/system/multi-user.target.wants/$p.service ] || fail "$p.service is not enabled"
done
expect_call "$c" "daemon-reload" "installation"
entry=$(getent passwd strata) || fail "no strata user"
if [ $had_user = no ]; then
    uid=$(echo "$entry" | cut -d: -f3)
    [ "$uid" -lt 1000 ] || fail "strata is not a system user: $entry"
    [ "$(echo "$entry" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "strata can log in: $entry"
    getent group strata >/dev/null || fail "no strata group"
fi
[ "$(owner /var/lib/strata)" = "strata:strata 750" ] || fail "/var/lib/strata is $(owner /var/lib/strata)"
[ "$(owner /var/lib/strata-agent)" = "strata:strata 750" ] || fail "/var/lib/strata-agent is $(owner /var/lib/strata-agent)"
dpkg-query -W -f='${Conffiles}\n' strata-agent | grep -q '/etc/strata/agent.yaml' || fail "agent.yaml is not a conffile"
dpkg-query -W -f='${Conffiles}\n' strata-collector | grep -q '/etc/strata/collector.yaml' || fail "collector.yaml is not a conffile"
strata-agent --config /etc/strata/agent.yaml --check-config >/dev/null || fail "installed agent rejects /etc/strata/agent.yaml"
strata-collector --config /etc/strata/collector.yaml --check-config >/dev/null || fail "installed collector rejects /etc/strata/collector.yaml"
[ -f /lib/systemd/system/strata-agent.service ] || [ -f /usr/lib/systemd/system/strata-agent.service ] || fail "unit not installed"

say "upgrade over a locally changed conffile"
echo "# local change" >>/etc/strata/agent.yaml
dpkg -i --force-confold /tmp/pkg/strata-agent_*.deb
expect_call "$(calls)" "restart strata-agent.service" "upgrade of strata-agent"
grep -q "# local change" /etc/strata/agent.yaml || fail "the upgrade overwrote the changed conffile"

say "dpkg -r strata-agent"
dpkg -r strata-agent
expect_call "$(calls)" "stop strata-agent.service" "removal of strata-agent"
[ ! -e /usr/bin/strata-agent ] || fail "/usr/bin/strata-agent left after removal"
[ -f /etc/strata/agent.yaml ] || fail "removal (not purge) deleted the conffile"
[ -d /var/lib/strata-agent ] || fail "removal (not purge) deleted the spool"

say "dpkg -P both"
dpkg -P strata-agent strata-collector
[ ! -e /var/lib/strata-agent ] || fail "purge left /var/lib/strata-agent (the spool)"
[ -d /var/lib/strata ] || fail "purge deleted /var/lib/strata (the collector's store is kept)"
[ ! -e /etc/strata ] || fail "purge left /etc/strata: $(ls -A /etc/strata)"
[ ! -L /etc/systemd/system/multi-user.target.wants/strata-agent.service ] || fail "purge left the agent enabled"
getent passwd strata >/dev/null || fail "purge removed the strata user"
say "all checks passed"
EOF
cat >"$T/ov/outside.sh" <<EOF
# Runs in a private mount namespace: an overlay of / with its writes in a
# tmpfs, then the checks chrooted inside it.
set -eu
O=$T/ov/root
mkdir -p \$O
mount -t tmpfs tmpfs \$O
mkdir \$O/u \$O/w \$O/m
mount -t overlay overlay -o lowerdir=/,upperdir=\$O/u,workdir=\$O/w \$O/m
mount -t proc proc \$O/m/proc
mount --rbind /dev \$O/m/dev
mount -t tmpfs tmpfs \$O/m/tmp
mount -t tmpfs tmpfs \$O/m/run
mkdir \$O/m/tmp/pkg
cp $T/ov/*.deb \$O/m/tmp/pkg/
cp $T/ov/inside.sh \$O/m/tmp/
chroot \$O/m /bin/sh /tmp/inside.sh
EOF
rc=0
unshare -m --propagation private bash "$T/ov/outside.sh" >"$T/dpkg.out" 2>&1 || rc=$?
grep '^inside:' "$T/dpkg.out" | while read -r line; do log "$line"; done
if ((rc != 0)); then
    tail -n 40 "$T/dpkg.out"
    fail "dpkg in the overlay: $(grep INNER-FAIL "$T/dpkg.out" || echo "exit status $rc")"
fi

pass
