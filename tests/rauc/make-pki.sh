#!/bin/sh
# Creates a throwaway RAUC-style PKI in DIR with openssl, for tests and benchmarks:
#   ca.pem / ca.key                root CA (the keyring)
#   signer.pem / signer.key        S/MIME signer (EKU emailProtection), issued by the root
#   codesign.pem / codesign.key    code-signing signer (EKU codeSigning only)
#   expired.pem / expired.key      S/MIME signer valid 2020-01-01 .. 2021-01-01
#   other-ca.pem, rogue.pem/.key   a second root and a signer under it (untrusted)
# Usage: make-pki.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
cat > openssl.cnf <<'CNF'
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = .
database = index.txt
serial = serial.txt
new_certs_dir = .
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = anything
copy_extensions = none
[ anything ]
commonName = supplied
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ smime ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ codesign ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
: > index.txt
echo 1000 > serial.txt
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }
root() { # name cn
  q openssl req -x509 -config openssl.cnf -newkey rsa:2048 -nodes -keyout "$1.key" \
    -out "$1.pem" -subj "/CN=$2" -days 3650 -extensions v3_ca
}
leaf() { # name cn extensions [ca-name] [start end]
  q openssl req -new -config openssl.cnf -newkey rsa:2048 -nodes -keyout "$1.key" \
    -out "$1.csr" -subj "/O=flipslot tests/CN=$2"
  cacert=${4:-ca}
  if [ $# -ge 6 ]; then dates="-startdate $5 -enddate $6"; else dates="-days 365"; fi
  # shellcheck disable=SC2086
  q openssl ca -batch -config openssl.cnf -notext -extfile openssl.cnf -extensions "$3" \
    -cert "$cacert.pem" -keyfile "$cacert.key" $dates -in "$1.csr" -out "$1.pem"
}
root ca "flipslot test root CA"
leaf signer "flipslot test signer" smime
leaf codesign "flipslot test code signer" codesign
leaf expired "flipslot expired signer" smime ca 20200101000000Z 20210101000000Z
root other-ca "some other root CA"
leaf rogue "rogue signer" smime other-ca
