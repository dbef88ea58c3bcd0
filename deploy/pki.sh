#!/usr/bin/env bash
# Creates what a fleet needs for mutual TLS and signed frames: a CA, the
# collector's certificate, one client certificate and one HMAC key per agent,
# and the collector's keys_file. Only openssl (3.x, as in Debian 12) is used.
# Idempotent: a file that exists is kept (and reused) unless --force.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/pki.sh [options] DIR

Creates in DIR (made if missing):
  ca.key ca.crt                 the CA; ca.crt is the agents' tls.ca and the
                                collector's ingest.tls_ca
  collector.key collector.crt   the collector's key and certificate
  collector.pem                 both in one file: the collector's ingest.tls_cert
  agents/NAME.key NAME.crt      each agent's key and client certificate
  agents/NAME.pem               both in one file: the agent's tls.cert
  agents/NAME.hmac              the agent's HMAC key (32 random bytes as hex):
                                its key_file
  agents/NAME.id                the agent's UUID: copy it to
                                <data_dir>/spool/agent.id before the agent's
                                first start (an agent keeps the id it finds)
  groups/NAME.hmac              an enrolment group's shared HMAC key (--group)
  keys                          the collector's keys_file: one
                                'agent UUID HEX' line per agent and one
                                'group NAME HEX' line per group

Options:
  --name NAME        DNS name of the collector, its certificate's CN and
                     subjectAltName (default: localhost); the agents' tls.server_name
  --dns NAME         another DNS name in the collector's certificate (repeatable)
  --ip ADDR          another IP address in the collector's certificate
                     (repeatable; 127.0.0.1 is always there)
  --agents N         N agents named agent-1 .. agent-N
  --agent NAME[=UUID]
                     one agent (repeatable); with =UUID that is its id, else a
                     random UUID is made (kept in agents/NAME.id)
  --group NAME       an enrolment group key (repeatable): agents whose id is
                     not listed sign with it and are accepted
  --days N           validity of the collector and agent certificates
                     (default: 825; the CA gets 3650)
  --ca-name CN       the CA's common name (default: "Strata CA")
  --rsa              RSA 3072 keys instead of ECDSA P-256
  --force            make keys, certificates and the keys file again even
                     when they exist (a new CA invalidates every certificate
                     made before; the keys file then lists only the agents and
                     groups of this run); agents keep their ids
  -h, --help         this text

Examples:
  deploy/pki.sh --name collector.example.net --ip 10.0.0.5 --agents 3 /etc/strata/tls
  deploy/pki.sh --agent web-17 --agent db-1=3f2a9c0d-1e4b-4a67-8c1d-2b3e4f5a6b7c /etc/strata/tls
  deploy/pki.sh --group edge-fra1 /etc/strata/tls

Running it again with more agents adds them and their lines to 'keys';
existing files stay as they are. Secrets are made mode 0600 and new
directories 0700; let the daemons' user read them, e.g.
  chgrp -R strata DIR && chmod -R g+rX DIR
and give each host only its own agents/NAME.{pem,hmac,id} and ca.crt.
EOF
}

die() {
    echo "pki.sh: $*" >&2
    exit 1
}

name=localhost
ca_cn="Strata CA"
days=825
ca_days=3650
force=0
rsa=0
names_given=0
dir=
declare -a dns_names=() ips=() agents=() groups=()

while (($# > 0)); do
    case $1 in
    --name) name=${2:?--name needs a value}; names_given=1; shift 2 ;;
    --dns) dns_names+=("${2:?--dns needs a value}"); names_given=1; shift 2 ;;
    --ip) ips+=("${2:?--ip needs a value}"); names_given=1; shift 2 ;;
    --agents)
        [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--agents needs a number"
        for ((n = 1; n <= $2; n++)); do agents+=("agent-$n"); done
        shift 2 ;;
    --agent) agents+=("${2:?--agent needs a value}"); shift 2 ;;
    --group) groups+=("${2:?--group needs a value}"); shift 2 ;;
    --days)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--days needs a positive number"
        days=$2; shift 2 ;;
    --ca-name) ca_cn=${2:?--ca-name needs a value}; shift 2 ;;
    --rsa) rsa=1; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage >&2; die "unknown option $1" ;;
    *)
        [[ -z "$dir" ]] || die "one directory only ('$dir' and '$1')"
        dir=$1; shift ;;
    esac
done
if (($# > 0)); then
    [[ -z "$dir" && $# == 1 ]] || die "one directory only"
    dir=$1
fi
[[ -n "$dir" ]] || { usage >&2; exit 2; }
command -v openssl >/dev/null || die "openssl is required"

# Names end up in file names and certificate subjects: keep them plain.
safe_name='^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
uuid_re='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
[[ "$name" =~ ^[A-Za-z0-9*][A-Za-z0-9.-]*$ ]] || die "--name '$name' is not a DNS name"
for n in "${dns_names[@]}"; do
    [[ "$n" =~ ^[A-Za-z0-9*][A-Za-z0-9.-]*$ ]] || die "--dns '$n' is not a DNS name"
done
for a in "${ips[@]}"; do
    [[ "$a" =~ ^[0-9.]+$ || "$a" =~ ^[0-9A-Fa-f:]+$ ]] || die "--ip '$a' is not an IP address"
done
for a in "${agents[@]}"; do
    [[ "${a%%=*}" =~ $safe_name ]] || die "agent name '${a%%=*}' may hold only letters, digits, . _ -"
    if [[ "$a" == *=* ]]; then
        [[ "${a#*=}" =~ $uuid_re ]] || die "agent '${a%%=*}': '${a#*=}' is not a UUID"
    fi
done
for g in "${groups[@]}"; do
    [[ "$g" =~ $safe_name ]] || die "group name '$g' may hold only letters, digits, . _ -"
done

umask 077
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/agents" "$dir/groups"
work=$(mktemp -d "$dir/.pki.XXXXXX")
trap 'rm -rf "$work"' EXIT

# fresh FILE: true when FILE should be (re)made.
fresh() { [[ $force == 1 || ! -s "$1" ]]; }

say() { echo "pki.sh: $*"; }

newkey() {
    if ((rsa)); then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1" 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
    fi
    chmod 600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# A random version-4 UUID.
uuid4() {
    local h
    h=$(openssl rand -hex 16)
    h=${h:0:12}4${h:13:3}$(printf '%x' $((0x${h:16:1} & 0x3 | 0x8)))${h:17:15}
    echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
}

# sign KEY CRT CN EXTENSIONS: a certificate for KEY issued by the CA.
sign() {
    local key=$1 crt=$2 cn=$3 ext=$4
    printf '[ext]\n%s\n' "$ext" >"$work/ext.cnf"
    openssl req -new -key "$key" -subj "/CN=$cn" -out "$work/req.csr"
    openssl x509 -req -in "$work/req.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "$(serial)" -days "$days" -sha256 -extfile "$work/ext.cnf" \
        -extensions ext -out "$work/cert.pem" 2>/dev/null
    mv "$work/cert.pem" "$crt"
    chmod 644 "$crt"
}

# bundle CRT KEY PEM: certificate and key in one file, as nng wants them.
bundle() {
    cat "$1" "$2" >"$work/bundle.pem"
    chmod 600 "$work/bundle.pem"
    mv "$work/bundle.pem" "$3"
}

# A leaf whose CA changed must be issued again even without --force.
issued_by_ca() {
    [[ -s "$1" ]] && openssl verify -CAfile "$dir/ca.crt" "$1" >/dev/null 2>&1
}

leaf_usage=digitalSignature
((rsa)) && leaf_usage=digitalSignature,keyEncipherment

# ---- The CA ---------------------------------------------------------------------
new_ca=0
if fresh "$dir/ca.key"; then
    newkey "$dir/ca.key"
    new_ca=1
fi
if ((new_ca)) || fresh "$dir/ca.crt"; then
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=$ca_cn" -days "$ca_days" -sha256 \
        -set_serial "$(serial)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$work/ca.crt"
    mv "$work/ca.crt" "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
    say "CA: $dir/ca.crt ($ca_cn)"
fi

# ---- The collector --------------------------------------------------------------
san="DNS:$name"
for n in "${dns_names[@]}"; do san+=",DNS:$n"; done
san+=",IP:127.0.0.1"
for a in "${ips[@]}"; do [[ "$a" == 127.0.0.1 ]] || san+=",IP:$a"; done
if fresh "$dir/collector.key"; then newkey "$dir/collector.key"; fi
if fresh "$dir/collector.crt" || ! issued_by_ca "$dir/collector.crt"; then
    sign "$dir/collector.key" "$dir/collector.crt" "$name" \
        "basicConstraints=critical,CA:FALSE
keyUsage=critical,$leaf_usage
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid"
    say "collector: $dir/collector.crt ($san)"
fi
have_san=$(openssl x509 -in "$dir/collector.crt" -noout -ext subjectAltName 2>/dev/null |
    tail -n +2 | tr -d ' ' | sed 's/IPAddress:/IP:/g')
if ((names_given)) && [[ "$have_san" != "$san" ]]; then
    echo "pki.sh: warning: $dir/collector.crt names $have_san, not $san; use --force to issue it again" >&2
fi
if fresh "$dir/collector.pem" || [[ "$dir/collector.crt" -nt "$dir/collector.pem" ]]; then
    bundle "$dir/collector.crt" "$dir/collector.key" "$dir/collector.pem"
fi

# ---- The keys file --------------------------------------------------------------
keys=$dir/keys
if fresh "$keys"; then
    {
        echo "# strata-collector keys_file (ingest.keys_file), made by deploy/pki.sh."
        echo "#   agent <uuid> <hex key>   the key of one agent"
        echo "#   group <name> <hex key>   a key shared by an enrolment group"
        echo "# Edit, then 'systemctl reload strata-collector' (SIGHUP) to apply."
    } >"$work/keys"
    chmod 640 "$work/keys"
    mv "$work/keys" "$keys"
fi

# add_key_line KIND WHO HEX: appends the line unless WHO already has one.
add_key_line() {
    if ! awk -v k="$1" -v w="$2" '$1 == k && $2 == w { found = 1 } END { exit !found }' "$keys"; then
        echo "$1 $2 $3" >>"$keys"
        return 0
    fi
    if ! grep -qxF "$1 $2 $3" "$keys"; then
        echo "pki.sh: warning: $keys has another key for $1 $2; left as it is" >&2
    fi
}

newhmac() {
    openssl rand -hex 32 >"$work/hmac"
    chmod 600 "$work/hmac"
    mv "$work/hmac" "$1"
}

# ---- The agents -----------------------------------------------------------------
for spec in "${agents[@]}"; do
    a=${spec%%=*}
    base=$dir/agents/$a
    # The id is the agent's identity, not a secret: --force keeps it.
    if [[ "$spec" == *=* ]]; then
        id=$(tr 'A-F' 'a-f' <<<"${spec#*=}")
        if [[ -s "$base.id" && "$(cat "$base.id")" != "$id" && $force == 0 ]]; then
            die "agent $a already has id $(cat "$base.id") in $base.id; use --force to change it"
        fi
        echo "$id" >"$base.id"
    elif [[ ! -s "$base.id" ]]; then
        uuid4 >"$base.id"
    fi
    chmod 644 "$base.id"
    id=$(cat "$base.id")
    [[ "$id" =~ $uuid_re ]] || die "$base.id does not hold a UUID"
    if fresh "$base.key"; then newkey "$base.key"; fi
    if fresh "$base.crt" || ! issued_by_ca "$base.crt"; then
        sign "$base.key" "$base.crt" "$a" \
            "basicConstraints=critical,CA:FALSE
keyUsage=critical,$leaf_usage
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid"
        say "agent $a: $base.crt, id $id"
    fi
    if fresh "$base.pem" || [[ "$base.crt" -nt "$base.pem" ]]; then
        bundle "$base.crt" "$base.key" "$base.pem"
    fi
    if fresh "$base.hmac"; then newhmac "$base.hmac"; fi
    add_key_line agent "$id" "$(cat "$base.hmac")"
done

for g in "${groups[@]}"; do
    f=$dir/groups/$g.hmac
    if fresh "$f"; then
        newhmac "$f"
        say "group $g: $f"
    fi
    add_key_line group "$g" "$(cat "$f")"
done

for crt in "$dir"/agents/*.crt; do
    [[ -e "$crt" ]] || continue
    issued_by_ca "$crt" || echo "pki.sh: warning: $crt is not issued by $dir/ca.crt (made before a new CA?); run again with --agent $(basename "$crt" .crt)" >&2
done
say "done: $dir (keys file $keys: $(grep -c -E '^(agent|group) ' "$keys" || true) key(s))"
