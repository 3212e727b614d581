#!/usr/bin/env bash
# Installs and runs the real storage API servers the live test lanes use, on loopback:
#   S3    moto server (PyPI moto[server])
#   Azure Azurite (npm azurite)
#   GCS   tests/servers/gcs_xml_adapter.py over gcp-storage-emulator (PyPI)
#   and tests/servers/fault_proxy.py in front of the S3 server, failing 10% of requests
# Usage: scripts/test-servers.sh start|stop|env|s3s
# `start` installs what is missing (into $JAMMI_SERVERS_DIR, default ~/.cache/jammi-servers),
# starts the servers, creates the test buckets/containers and writes an env file that
# `env` prints (eval "$(scripts/test-servers.sh env)").
# `s3s` installs and starts a second S3 server, s3s-fs (crates.io, file-backed), and prints
# the endpoint to use instead of moto's (moto reads a whole object to serve a range, so
# range-heavy benchmarks measure it rather than the client).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${JAMMI_SERVERS_DIR:-$HOME/.cache/jammi-servers}"
S3_PORT="${JAMMI_S3_PORT:-45055}"
AZ_PORT="${JAMMI_AZURE_PORT:-40000}"
GCS_PORT="${JAMMI_GCS_PORT:-44443}"
PROXY_PORT="${JAMMI_S3_PROXY_PORT:-45057}"
BUCKETS="$(seq -f "jammi-%g" 1 50 | tr "\n" " ")benchmarks archives snapshots cluster"
mkdir -p "$dir"

install() {
  if [ ! -x "$dir/venv/bin/moto_server" ] || ! "$dir/venv/bin/python" -c 'import gcp_storage_emulator, azure.storage.blob' 2>/dev/null; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' gcp-storage-emulator azure-storage-blob
  fi
  if [ ! -x "$dir/node/node_modules/.bin/azurite-blob" ]; then
    mkdir -p "$dir/node"
    (cd "$dir/node" && npm install --silent --no-audit --no-fund azurite >/dev/null)
  fi
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "server on port $1 did not start; see $dir/*.log" >&2
  return 1
}

start() {
  stop >/dev/null 2>&1 || true
  install
  "$dir/venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  "$dir/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
    --inMemoryPersistence --skipApiVersionCheck --loose --disableTelemetry >"$dir/azurite.log" 2>&1 &
  echo $! >"$dir/azurite.pid"
  "$dir/venv/bin/python" "$here/tests/servers/gcs_xml_adapter.py" 127.0.0.1 "$GCS_PORT" $BUCKETS >"$dir/gcs.log" 2>&1 &
  echo $! >"$dir/gcs.pid"
  python3 "$here/tests/servers/fault_proxy.py" 127.0.0.1 "$PROXY_PORT" 127.0.0.1 "$S3_PORT" >"$dir/proxy.log" 2>&1 &
  echo $! >"$dir/proxy.pid"
  wait_port "$S3_PORT"; wait_port "$AZ_PORT"; wait_port "$GCS_PORT"; wait_port "$PROXY_PORT"
  for b in $BUCKETS; do
    curl -sf -X PUT "http://127.0.0.1:$S3_PORT/$b" >/dev/null
  done
  "$dir/venv/bin/python" - "$AZ_PORT" $BUCKETS <<'PY'
import sys
from azure.storage.blob import BlobServiceClient
port = sys.argv[1]
conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
svc = BlobServiceClient.from_connection_string(conn)
for c in sys.argv[2:]:
    try:
        svc.create_container(c)
    except Exception as e:  # already there
        if "ContainerAlreadyExists" not in str(e):
            raise
PY
  cat >"$dir/env.sh" <<ENV
export JAMMI_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export JAMMI_TEST_AZURE_ENDPOINT=http://127.0.0.1:$AZ_PORT/devstoreaccount1
export JAMMI_TEST_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT
export JAMMI_TEST_S3_PROXY=http://127.0.0.1:$PROXY_PORT
export JAMMI_TEST_BUCKETS="$(echo $BUCKETS)"
export JAMMI_STORAGE_MAX_RETRIES=2
ENV
  echo "servers up: S3 :$S3_PORT, Azure :$AZ_PORT, GCS :$GCS_PORT (env: $dir/env.sh)"
}

s3s() {
  local port="${JAMMI_S3S_PORT:-45056}"
  if [ ! -x "$dir/s3s/bin/s3s-fs" ]; then
    cargo install -q s3s-fs@0.14.1 --features binary --root "$dir/s3s"
  fi
  [ -f "$dir/s3s.pid" ] && kill "$(cat "$dir/s3s.pid")" 2>/dev/null || true
  rm -rf "$dir/s3s-data"
  for b in $BUCKETS; do mkdir -p "$dir/s3s-data/$b"; done
  "$dir/s3s/bin/s3s-fs" --host 127.0.0.1 --port "$port" --access-key testing \
    --secret-key testing "$dir/s3s-data" >"$dir/s3s.log" 2>&1 &
  echo $! >"$dir/s3s.pid"
  wait_port "$port"
  echo "export JAMMI_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
}

stop() {
  for s in moto azurite gcs proxy s3s; do
    if [ -f "$dir/$s.pid" ]; then
      kill "$(cat "$dir/$s.pid")" 2>/dev/null || true
      rm -f "$dir/$s.pid"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$dir/env.sh" ;;
  s3s) s3s ;;
  *) echo "usage: $0 start|stop|env|s3s" >&2; exit 2 ;;
esac
