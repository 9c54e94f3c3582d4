# Sourced by the smoke scripts: find the node that takes writes, as a client does,
# through GET /hello on each of the given local HTTP ports.
#   writable_primary SECONDS PORT...   prints the port of the first node whose /hello
#                                      says isWritablePrimary, polling until one does;
#                                      returns 1 if none does within SECONDS
writable_primary() {
  local until=$((SECONDS + $1)) port
  shift
  while [ $SECONDS -le $until ]; do
    for port in "$@"; do
      if curl -fsS -m 2 "http://127.0.0.1:$port/hello" 2>/dev/null | grep -q '"isWritablePrimary":true'; then
        echo "$port"
        return 0
      fi
    done
    sleep 0.2
  done
  return 1
}
