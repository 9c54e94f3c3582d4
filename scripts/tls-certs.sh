#!/usr/bin/env bash
# Make a test certificate authority and one certificate per node, for --tls-cert,
# --tls-key and --tls-ca (CHORUS_TLS=1 scripts/cluster.sh and the tests use it).
#
#   scripts/tls-certs.sh DIR NAME [NAME...]
#
# Writes DIR/ca.pem (the CA's certificate: every member's and client's --tls-ca),
# DIR/ca-key.pem, and for each NAME DIR/NAME.pem and DIR/NAME-key.pem. Each node's
# certificate is valid for its name, localhost, 127.0.0.1 and ::1, as a server and as a
# client (members dial each other), for 30 days. Keys are P-256 (PKCS#8), mode 600. An
# existing CA in DIR is reused, so nodes can be added later. For tests and trials: a
# real deployment's certificates come from its own CA.
set -euo pipefail
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

dir=${1:?usage: tls-certs.sh DIR NAME [NAME...]}
shift
[ $# -ge 1 ] || { echo "usage: tls-certs.sh DIR NAME [NAME...]" >&2; exit 2; }
mkdir -p "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca-key.pem" ]; then
  key "$dir/ca-key.pem"
  openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days 30 \
    -subj "/O=chorus test/CN=chorus test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
fi

for name in "$@"; do
  case "$name" in
    *[!A-Za-z0-9._-]*) echo "tls-certs.sh: $name is not a usable host name" >&2; exit 2 ;;
  esac
  key "$dir/$name-key.pem"
  ext=$(mktemp)
  cat > "$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1
EOF
  openssl req -new -key "$dir/$name-key.pem" -subj "/O=chorus test/CN=$name" 2>/dev/null |
    openssl x509 -req -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
      -days 30 -sha256 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$ext"
done
chmod 644 "$dir/ca.pem" "$dir"/*.pem 2>/dev/null || true
chmod 600 "$dir"/*-key.pem
echo "certificates in $dir: ca.pem, $(printf '%s.pem ' "$@")"
