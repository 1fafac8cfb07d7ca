# Sourced by the benchmarks: writes into $1 a CA (ca.crt), a serving certificate for
# 127.0.0.1 / nodectl-agent (server.crt, server.key) and a client certificate (op.crt, op.key).
make_certs() {
  (
    cd "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -subj /CN=bench-ca -days 2 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
      -subj /CN=nodectl-agent 2>/dev/null
    printf 'subjectAltName=DNS:nodectl-agent,IP:127.0.0.1\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
      -days 2 -extfile server.ext 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout op.key -out op.csr \
      -subj /CN=operator 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > op.ext
    openssl x509 -req -in op.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out op.crt -days 2 \
      -extfile op.ext 2>/dev/null
  )
}
