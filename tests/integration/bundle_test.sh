#!/usr/bin/env bash
# The bundle sampler on real bundler output. Builds the fixture app (two
# entries sharing a module, a lazy chunk, CSS) with Vite from npm, runs
# `strata-agent --once` on its dist/ and checks every gzip size against zlib,
# the entry flags against Vite's manifest, the totals, and unused bytes from a
# coverage export written for the built files. Then builds the same entries
# with esbuild without code splitting (the shared module copied into both:
# found by content) and with webpack 5 (its stats.json: entry flags and
# duplicate bytes by module). npm packages are installed once into
# $ST_BIN/bundle-npm and reused; without node and npm the test fails.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/bundle_test.sh

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FIXTURE=$ST_SRC/tests/integration/fixtures/bundle
NPM_DIR=$ST_BIN/bundle-npm
NPM_SPECS=(vite@7 webpack@5 webpack-cli@6)

for tool in node npm gzip; do
    command -v "$tool" >/dev/null || fail "$tool is required (deploy/bootstrap.sh installs nodejs and npm)"
done

# ---- npm packages, cached in the build directory ----------------------------------------

VITE=$NPM_DIR/node_modules/.bin/vite
ESBUILD=$NPM_DIR/node_modules/.bin/esbuild
WEBPACK=$NPM_DIR/node_modules/.bin/webpack

npm_ready() {
    [[ -x "$VITE" && -x "$ESBUILD" && -x "$WEBPACK" ]] && "$VITE" --version >/dev/null 2>&1 &&
        "$WEBPACK" --version >/dev/null 2>&1
}

if ! npm_ready; then
    log "installing ${NPM_SPECS[*]} into $NPM_DIR (once per build directory)"
    mkdir -p "$NPM_DIR"
    [[ -f "$NPM_DIR/package.json" ]] || echo '{"name": "strata-bundle-test", "private": true}' >"$NPM_DIR/package.json"
    if ! (cd "$NPM_DIR" && timeout 300 npm install --no-audit --no-fund --loglevel=error "${NPM_SPECS[@]}") \
        >"$T/npm.out" 2>&1; then
        fail "npm install ${NPM_SPECS[*]} failed (is the npm registry reachable?): $(tail -n 20 "$T/npm.out")"
    fi
    npm_ready || fail "npm installed ${NPM_SPECS[*]} but vite, esbuild or webpack does not run: $(tail -n 20 "$T/npm.out")"
fi
log "$("$VITE" --version | head -n 1), esbuild $("$ESBUILD" --version)," \
    "webpack $(node -p "require('$NPM_DIR/node_modules/webpack/package.json').version"), node $(node --version)"

# ---- helpers -----------------------------------------------------------------------------

# zlib_gz FILE: the size of FILE as zlib's deflate level 9 with a gzip wrapper
# writes it (nginx and most servers use zlib; GNU gzip has its own deflate).
zlib_gz() {
    python3 -c 'import sys, zlib
c = zlib.compressobj(9, zlib.DEFLATED, 31)
d = open(sys.argv[1], "rb").read()
print(len(c.compress(d) + c.flush()))' "$1"
}

# run_once NAME YAML: runs the agent once with the bundle sampler configured by
# YAML (indented under bundle:); the frame goes to $T/NAME.json.
run_once() {
    local name=$1 yaml=$2 d=$T/$1
    mkdir -p "$d/data"
    cat >"$d/agent.yaml" <<EOF
data_dir: $d/data
host: bundle-test
role: app
samplers:
  bundle:
$yaml
EOF
    "$AGENT_BIN" --config "$d/agent.yaml" --once --once-wait 100ms >"$T/$name.json" 2>"$T/$name.out" ||
        fail "strata-agent --once ($name) exited with $?: $(tail -n 20 "$T/$name.out")"
    jq -e '.series | length > 0' "$T/$name.json" >/dev/null || fail "$name: no series in the frame"
}

# last FRAME NAME [CHUNK]: the last point of a series (by chunk label when given).
last() {
    jq -r --arg n "$2" --arg c "${3:-}" \
        '[.series[] | select(.name == $n and ($c == "" or .labels.chunk == $c))]
         | if length == 1 then .[0].points[-1].value else "missing(\(length))" end' "$1"
}

# assets DIR: the .js/.mjs/.css files below DIR, relative, sorted.
assets() { (cd "$1" && find . -type f \( -name '*.js' -o -name '*.mjs' -o -name '*.css' \) | sed 's|^\./||' | LC_ALL=C sort); }

check_common() {
    local frame=$1 dir=$2 n=0 sum=0 bytes=0 f want got gnu
    while read -r f; do
        want=$(zlib_gz "$dir/$f")
        got=$(last "$frame" frontend.bundle.gzip_bytes "$f")
        assert_eq "$want" "$got" "gzip size of $f (zlib level 9, gzip wrapper)"
        # GNU gzip's own deflate lands within a few bytes for small files.
        gnu=$(gzip -9 -n -c "$dir/$f" | wc -c)
        ((gnu - want <= 32 && want - gnu <= 32 + want / 100)) ||
            fail "$f: gzip -9 -n gives $gnu bytes, the sampler $want: too far apart"
        n=$((n + 1))
        sum=$((sum + want))
        bytes=$((bytes + $(wc -c <"$dir/$f")))
    done < <(assets "$dir")
    assert_gt "$n" 1 "assets in $dir"
    assert_eq "$n" "$(jq '[.series[] | select(.name == "frontend.bundle.gzip_bytes")] | length' "$frame")" \
        "gzip_bytes series, one per asset"
    assert_eq "$n" "$(last "$frame" frontend.bundle.files)" "frontend.bundle.files"
    assert_eq "$sum" "$(last "$frame" frontend.bundle.total_gzip_bytes)" "total_gzip_bytes is the sum"
    assert_eq "$bytes" "$(last "$frame" frontend.bundle.total_bytes)" "total_bytes is the sum of sizes"
    assert_eq 0 "$(jq '[.series[] | select(.name == "frontend.bundle.errors") | .points[-1].value] | add' "$frame")" \
        "frontend.bundle.errors of every source"
    assert_eq 0 "$(jq '[.series[] | select(.name | startswith("frontend.")) | select(.layer != "frontend" or .kind != "gauge")] | length' "$frame")" \
        "every frontend.* series is a gauge of layer frontend"
    log "$(basename "$frame" .json): $n assets, $sum bytes gzipped, $bytes bytes"
}

# ---- Vite ---------------------------------------------------------------------------------

APP=$T/app
mkdir -p "$APP"
cp -r "$FIXTURE/src" "$FIXTURE/vite.config.mjs" "$FIXTURE/webpack.config.cjs" "$APP/"
(cd "$APP" && "$VITE" build) >"$T/vite.out" 2>&1 || fail "vite build failed: $(tail -n 30 "$T/vite.out")"
MANIFEST=$APP/dist/.vite/manifest.json
[[ -f "$MANIFEST" ]] || fail "vite wrote no manifest"
log "vite built: $(assets "$APP/dist" | tr '\n' ' ')"

# A coverage export as Chrome DevTools writes it: the first half of every
# entry script and of the CSS used, the lazy chunk never loaded (so absent).
python3 - "$APP/dist" "$MANIFEST" >"$T/coverage.json" <<'EOF'
import json, sys
dist, manifest = sys.argv[1], json.load(open(sys.argv[2]))
out = []
for rec in manifest.values():
    if not rec.get("isEntry"):
        continue
    for f in [rec["file"]] + rec.get("css", []):
        text = open(f"{dist}/{f}", encoding="utf-8").read()
        out.append({"url": f"http://127.0.0.1:4173/{f}?v=1", "text": text,
                    "ranges": [{"start": 0, "end": len(text) // 2}]})
json.dump(out, sys.stdout)
EOF

run_once vite "    dir: $APP/dist
    interval: 60s
    coverage: $T/coverage.json"
FRAME=$T/vite.json
check_common "$FRAME" "$APP/dist"

# Entry flags: the manifest's isEntry files and the CSS they list.
ENTRIES=$(jq -r '[.[] | select(.isEntry == true) | .file, (.css // [])[]] | sort | .[]' "$MANIFEST")
assert_eq 3 "$(wc -l <<<"$ENTRIES")" "entries in the manifest (main, its CSS, admin)"
while read -r f; do
    want=false
    grep -qxF "$f" <<<"$ENTRIES" && want=true
    got=$(jq -r --arg c "$f" '.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.chunk == $c) | .labels.entry' "$FRAME")
    assert_eq "$want" "$got" "entry label of $f"
    got=$(jq -r --arg c "$f" '.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.chunk == $c) | .labels.type' "$FRAME")
    assert_eq "$([[ $f == *.css ]] && echo css || echo js)" "$got" "type label of $f"
done < <(assets "$APP/dist")

# Unused bytes: everything past the first half (ASCII output: characters are bytes).
UNUSED_SUM=0
while read -r f; do
    size=$(wc -c <"$APP/dist/$f")
    want=$((size - size / 2))
    assert_eq "$want" "$(last "$FRAME" frontend.bundle.chunk_unused_bytes "$f")" "unused bytes of $f"
    UNUSED_SUM=$((UNUSED_SUM + want))
done <<<"$ENTRIES"
assert_eq "$UNUSED_SUM" "$(last "$FRAME" frontend.bundle.unused_bytes)" "unused_bytes is the sum"
assert_eq 3 "$(jq '[.series[] | select(.name == "frontend.bundle.chunk_unused_bytes")] | length' "$FRAME")" \
    "chunk_unused_bytes only for files in the coverage export"
# Vite gave the shared module a chunk of its own: nothing of it is copied.
VITE_DUP=$(last "$FRAME" frontend.bundle.duplicate_bytes)
assert_true "duplicate_bytes of the split build ($VITE_DUP) is small" test "$VITE_DUP" -lt 512

# ---- esbuild without code splitting: the shared module twice ---------------------------

ESB=$T/esb
"$ESBUILD" "$APP/src/main.js" "$APP/src/admin.js" --bundle --minify --format=esm \
    --outdir="$ESB/dist" >"$T/esbuild.out" 2>&1 || fail "esbuild failed: $(tail -n 20 "$T/esbuild.out")"
"$ESBUILD" "$APP/src/shared.js" --minify --format=esm --outfile="$ESB/shared.min.js" \
    >>"$T/esbuild.out" 2>&1 || fail "esbuild (shared.js) failed"
SHARED=$(wc -c <"$ESB/shared.min.js")
log "esbuild built: $(assets "$ESB/dist" | tr '\n' ' '); shared module minified: $SHARED bytes"

run_once esbuild "    dir: $ESB/dist
    interval: 60s"
FRAME=$T/esbuild.json
check_common "$FRAME" "$ESB/dist"
# No manifest, no stats: entries by name (main*, index*, app*).
assert_eq true "$(jq -r '.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.chunk == "main.js") | .labels.entry' "$FRAME")" \
    "main.js is an entry by its name"
assert_eq false "$(jq -r '.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.chunk == "admin.js") | .labels.entry' "$FRAME")" \
    "admin.js is not an entry by its name"
DUP=$(last "$FRAME" frontend.bundle.duplicate_bytes)
SMALLER=$(($(wc -c <"$ESB/dist/main.js") < $(wc -c <"$ESB/dist/admin.js") ? $(wc -c <"$ESB/dist/main.js") : $(wc -c <"$ESB/dist/admin.js")))
log "esbuild: duplicate bytes $DUP of a shared module of $SHARED bytes"
assert_ge "$DUP" $((SHARED / 2)) "duplicate_bytes finds the copied shared module"
assert_true "duplicate_bytes ($DUP) at most the smaller file ($SMALLER)" test "$DUP" -le "$SMALLER"
assert_eq "$DUP" "$(jq '[.series[] | select(.name == "frontend.bundle.chunk_duplicate_bytes") | .points[-1].value] | add' "$FRAME")" \
    "chunk_duplicate_bytes add up to duplicate_bytes"

# ---- webpack 5 with its stats ------------------------------------------------------------

(cd "$APP" && "$WEBPACK" --config webpack.config.cjs --json="$T/stats.json") >"$T/webpack.out" 2>&1 ||
    fail "webpack failed: $(tail -n 30 "$T/webpack.out")"
log "webpack built: $(assets "$APP/wdist" | tr '\n' ' ')"
run_once webpack "    dir: $APP/wdist
    interval: 60s
    webpack_stats: $T/stats.json"
FRAME=$T/webpack.json
check_common "$FRAME" "$APP/wdist"

# Entry flags: every entrypoint's assets and auxiliary assets (the CSS file).
ENTRIES=$(jq -r '[.entrypoints[] | (.assets + (.auxiliaryAssets // []))[] | if type == "object" then .name else . end] | unique | .[]' "$T/stats.json")
while read -r f; do
    want=false
    grep -qxF "$f" <<<"$ENTRIES" && want=true
    got=$(jq -r --arg c "$f" '.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.chunk == $c) | .labels.entry' "$FRAME")
    assert_eq "$want" "$got" "entry label of $f (webpack)"
done < <(assets "$APP/wdist")
assert_eq 3 "$(jq '[.series[] | select(.name == "frontend.bundle.gzip_bytes" and .labels.entry == "true")] | length' "$FRAME")" \
    "webpack entries: main, admin and main's CSS"

# Duplicate bytes, computed here from the stats on their own: each module
# (parts of concatenated modules ship in their parent's chunks) adds
# (distinct chunks - 1) * size.
WANT_DUP=$(jq '[.modules[] | if ((.modules // []) | length) > 0
        then .chunks as $c | .modules[] | {k: (.identifier // .name), size, c: ((.chunks // []) + $c)}
        else {k: (.identifier // .name), size, c: (.chunks // [])} end]
    | group_by(.k) | map({size: (map(.size) | max), n: (map(.c[]) | unique | length)})
    | map(select(.n > 1) | (.n - 1) * .size) | add // 0' "$T/stats.json")
SHARED_SIZE=$(jq '[.. | objects | select(.name? == "./src/shared.js") | .size] | max' "$T/stats.json")
log "webpack: duplicate bytes $(last "$FRAME" frontend.bundle.duplicate_bytes), expected $WANT_DUP; shared.js $SHARED_SIZE bytes"
assert_gt "$WANT_DUP" 0 "the stats show the shared module in two chunks"
assert_eq "$WANT_DUP" "$(last "$FRAME" frontend.bundle.duplicate_bytes)" "duplicate_bytes from webpack stats"
assert_eq "$SHARED_SIZE" "$(jq '.series[] | select(.name == "frontend.bundle.duplicate_module_bytes" and .labels.module == "./src/shared.js") | .points[-1].value' "$FRAME")" \
    "duplicate_module_bytes of ./src/shared.js"
assert_eq 0 "$(jq '[.series[] | select(.name == "frontend.bundle.errors" and .labels.source == "webpack_stats") | .points[-1].value] | add' "$FRAME")" \
    "webpack_stats read without error"

pass
