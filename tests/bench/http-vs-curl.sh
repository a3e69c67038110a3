#!/usr/bin/env bash
# Benchmark: flipslot install over HTTP from a local nginx into a loop-device slot,
# against `curl URL | dd of=SLOT bs=4M oflag=direct conv=fsync` of the raw image from the
# same nginx, and against the install of the same bundle from the local file, in the same
# run. Prints time ratios (median of RUNS, default 3) and every case's peak RSS.
#
#   tests/bench/http-vs-curl.sh [SIZE...]     (default: 1G 4G; needs root)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sizes=("$@")
((${#sizes[@]})) || sizes=(1G 4G)
runs=${RUNS:-3}
bench_setup
declare -A label=([curl]="curl | dd" [fraw]="flipslot file no-read-back"
  [frb]="flipslot file read-back" [raw]="flipslot http no-read-back"
  [rb]="flipslot http read-back")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www" "$work/nginx/tmp"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
stop_nginx() { kill "$nginx_pid" 2>/dev/null; }
cleanup_hooks+=(stop_nginx)
sleep 0.5
base="http://127.0.0.1:$port"
# curl | dd URL SLOT: the baseline.
curl_dd='set -o pipefail; curl -sf "$1" | dd of="$2" bs=4M iflag=fullblock oflag=direct conv=fsync status=none'

header "curl|dd"
for size in "${sizes[@]}"; do
  bytes=$(numfmt --from=iec "$size")
  head -c "$bytes" /dev/urandom > "$work/www/image.raw"
  "$bin/flipslot-image" build --compatible bench --version 1.0.0 \
    --image rootfs="$work/www/image.raw" --key "$work/bench.key" --out "$work/www/bundle.fsb" >/dev/null
  make_slots "$bytes"
  cat "$work/www/image.raw" "$work/www/bundle.fsb" > /dev/null
  curl -sf "$base/image.raw" | dd of="$lb" bs=4M iflag=fullblock oflag=direct conv=fsync status=none
  "${fs[@]}" install --no-daemon --no-read-back "$base/bundle.fsb" >/dev/null
  "${fs[@]}" install --no-daemon --no-read-back "$work/www/bundle.fsb" >/dev/null
  declare -A t=() rss=()
  for _ in $(seq "$runs"); do
    time_case curl bash -c "$curl_dd" _ "$base/image.raw" "$lb"
    time_install fraw "$work/www/bundle.fsb" --no-read-back
    time_install frb "$work/www/bundle.fsb"
    time_install raw "$base/bundle.fsb" --no-read-back
    time_install rb "$base/bundle.fsb"
  done
  report "$size" "$bytes" curl fraw frb raw:fraw rb:frb
  drop_slots
  rm -f "$work/www/image.raw" "$work/www/bundle.fsb"
done
