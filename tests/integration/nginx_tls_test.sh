#!/usr/bin/env bash
# The nginx sampler's stub_status over HTTPS, against a real nginx whose
# certificate (for IP 127.0.0.1) is signed by a throwaway CA made here with
# the openssl CLI. The agent initialises OpenSSL lean (no error strings, no
# legacy cipher and digest tables; see st_openssl_lean_init): this test shows
# that the TLS handshake and X.509 verification still work under it.
#  1. --once with ca_file: exact stub_status figures arrive.
#  2. --once without ca_file: the system trust store does not know the CA, so
#     the sampler fails with a readable certificate error in the agent's log;
#     the agent still exits 0 and the host sampler's figures still arrive.
#  3. --check-config refuses a relative ca_file, a missing one and one for an http:// URL.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NGINX_BIN=$(command -v nginx || true)
[[ -n "$NGINX_BIN" ]] || NGINX_BIN=/usr/sbin/nginx
[[ -x "$NGINX_BIN" ]] || fail "nginx is not installed (deploy/bootstrap.sh installs nginx-light)"
command -v openssl >/dev/null || fail "the openssl CLI is not installed (deploy/bootstrap.sh installs it)"

# ---- a throwaway CA and a server certificate for 127.0.0.1 ---------------------------------

PKI=$T/pki
mkdir -p "$PKI"
cat >"$PKI/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
CN = strata nginx_tls_test CA
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
cat >"$PKI/server.ext" <<EOF
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
authorityKeyIdentifier = keyid
EOF
pki() { openssl "$@" >>"$T/openssl.out" 2>&1 || fail "openssl $1 failed: $(tail -5 "$T/openssl.out")"; }
pki req -x509 -new -config "$PKI/ca.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2
pki req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$PKI/server.key" -out "$PKI/server.csr"
pki x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -extfile "$PKI/server.ext" -days 2 -out "$PKI/server.pem"
pki verify -CAfile "$PKI/ca.pem" "$PKI/server.pem"
CA=$PKI/ca.pem

# ---- nginx: stub_status over TLS ------------------------------------------------------------

NG=$T/nginx
read -r PORT < <(free_ports 1)
STATUS_URL=https://127.0.0.1:$PORT/nginx_status

user=""
[[ $(id -u) != 0 ]] || user="user root;" # as root, workers would switch to nobody
mkdir -p "$NG"/{logs,tmp}
cat >"$NG/nginx.conf" <<EOF
$user
worker_processes 1;
error_log $NG/logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
$(nginx_temp_paths "$NG/tmp")
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $PKI/server.pem;
        ssl_certificate_key $PKI/server.key;
        location = /nginx_status { stub_status; }
    }
}
EOF
"$NGINX_BIN" -t -c "$NG/nginx.conf" -p "$NG" >"$T/nginx-t.out" 2>&1 ||
    fail "nginx -t rejects the test config: $(cat "$T/nginx-t.out")"
spawn nginx "$T/nginx.out" "$NGINX_BIN" -c "$NG/nginx.conf" -p "$NG" \
    -g "daemon off; pid $NG/nginx.pid;"
nginx_ready() { curl -fs --max-time 2 --cacert "$CA" -o /dev/null "$STATUS_URL"; }
wait_for 20 "nginx to answer on $STATUS_URL" nginx_ready
log "nginx up with TLS on :$PORT"

# status_counters: "accepts handled requests" from one stub_status request.
status_counters() {
    curl -fsS --max-time 5 --cacert "$CA" "$STATUS_URL" | awk 'NR == 3 { print $1, $2, $3 }'
}

# once NAME [CA_FILE_LINE]: runs strata-agent --once with the nginx and host
# samplers; the frame goes to $T/NAME.json, the agent's log to $T/NAME.err.out.
once() {
    cat >"$T/$1.yaml" <<EOF
host: nginx-tls
samplers:
  host:
  nginx:
    status_url: $STATUS_URL
    ${2:-}
EOF
    timeout 60 "$AGENT_BIN" --config "$T/$1.yaml" --data-dir "$T/$1-data" --once \
        --once-wait 300ms >"$T/$1.json" 2>"$T/$1.err.out" ||
        fail "strata-agent --once ($1) exited with status $?: $(tail -5 "$T/$1.err.out")"
    jq -e . "$T/$1.json" >/dev/null || fail "--once ($1) printed no JSON: $(head -c 300 "$T/$1.json")"
}
# value FILE NAME: the last point's value of the one unlabelled series NAME.
value() {
    jq -r --arg n "$2" '[.series[] | select(.name == $n)] as $s
        | if ($s | length) != 1 then "missing(\($s | length))" else $s[0].points[-1].value end' "$T/$1.json"
}

# ---- 1. with ca_file ------------------------------------------------------------------------

read -r A0 _ R0 < <(status_counters) # this status request included
[[ "$R0" =~ ^[0-9]+$ ]] || fail "stub_status did not answer with counters"
once trusted "ca_file: $CA"
if grep -qi "nginx" "$T/trusted.err.out"; then
    fail "the agent logged about nginx although the CA is trusted: $(grep -i nginx "$T/trusted.err.out" | head -3)"
fi
# Totals from zero in --once; the agent's two status requests come after R0.
assert_eq $((R0 + 2)) "$(value trusted nginx.requests)" "nginx.requests over TLS"
accepted=$(value trusted nginx.connections.accepted)
assert_ge "$accepted" $((A0 + 1)) "nginx.connections.accepted over TLS"
assert_eq "$accepted" "$(value trusted nginx.connections.handled)" "nginx.connections.handled == accepted"
assert_ge "$(value trusted nginx.connections.active)" 1 "nginx.connections.active (the status request itself)"
log "with ca_file: nginx.requests $((R0 + 2)), accepted $accepted"

# ---- 2. without ca_file: the system trust store does not know our CA --------------------------

read -r _ _ R1 < <(status_counters)
once untrusted
err=$(grep -i "nginx" "$T/untrusted.err.out" || true)
assert_contains "$err" "$STATUS_URL" "the agent's log names the status_url"
assert_contains "$(tr '[:upper:]' '[:lower:]' <<<"$err")" "certificate" \
    "the agent's log gives the verification error"
assert_eq "missing(0)" "$(value untrusted nginx.requests)" "no nginx.requests without a trusted CA"
assert_gt "$(value untrusted host.mem.available)" 0 "host.mem.available (the host sampler ran)"
# The handshake failed before any request: nginx counted none from the agent.
read -r _ _ R2 < <(status_counters)
assert_eq $((R1 + 1)) "$R2" "requests nginx served to the agent without a trusted CA"
log "without ca_file: $(head -1 <<<"$err")"

# ---- 3. configuration errors ----------------------------------------------------------------

# check_refused NAME STATUS_URL CA_FILE: --check-config must refuse; its output in $T/NAME.out.
check_refused() {
    printf 'samplers:\n  nginx:\n    status_url: %s\n    ca_file: %s\n' "$2" "$3" >"$T/$1.yaml"
    if "$AGENT_BIN" --config "$T/$1.yaml" --check-config >"$T/$1.out" 2>&1; then
        fail "--check-config accepted ca_file '$3' for $2"
    fi
    assert_contains "$(cat "$T/$1.out")" "ca_file" "--check-config names the key ($1)"
}
check_refused relative "$STATUS_URL" ca.pem
check_refused plain-http "http://127.0.0.1:$PORT/nginx_status" "$CA"
check_refused missing "$STATUS_URL" "$PKI/no-such-ca.pem"
assert_contains "$(cat "$T/missing.out")" "no-such-ca.pem" "--check-config names the missing file"
log "--check-config: $(head -1 "$T/relative.out")"

pass
