#!/usr/bin/env bash
# Benchmark: flipslot install over HTTP from a local nginx into a loop-device slot,
# against `curl URL | dd of=SLOT bs=4M oflag=direct conv=fsync` of the raw image from the
# same nginx, in the same run. Prints time ratios and flipslot's peak RSS per size.
#
#   tests/bench/http-vs-curl.sh [SIZE...]     (default: 1G 4G; needs root)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
sizes=("$@")
((${#sizes[@]})) || sizes=(1G 4G)
runs=${RUNS:-3}

tests/deps.sh
cargo build --release --locked --quiet
bin="$repo/target/release"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/flipslot-httpbench.XXXXXX")
loops=()
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null || true
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www" "$work/nginx"
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
sleep 0.5
base="http://127.0.0.1:$port"

"$bin/flipslot-image" keygen --out-dir "$work" --name bench >/dev/null
mkdir -p "$work/keyring" && cp "$work/bench.pub" "$work/keyring/"
grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
echo "flipslot.slot=A" > "$work/cmdline"

printf '%-6s %-24s %9s %9s %8s %10s\n' size case seconds "x curl|dd" MiB/s "peak RSS"
for size in "${sizes[@]}"; do
  bytes=$(numfmt --from=iec "$size")
  head -c "$bytes" /dev/urandom > "$work/www/image.raw"
  "$bin/flipslot-image" build --compatible bench --version 1.0.0 \
    --image rootfs="$work/www/image.raw" --key "$work/bench.key" --out "$work/www/bundle.fsb" >/dev/null
  # Preallocated backing files: no side pays for block allocation.
  for s in a b; do fallocate -l "$bytes" "$work/slot-$s.img"; done
  la=$(losetup --direct-io=on --find --show "$work/slot-a.img"); loops+=("$la")
  lb=$(losetup --direct-io=on --find --show "$work/slot-b.img"); loops+=("$lb")
  cat > "$work/system.toml" <<TOML
compatible = "bench"
bootloader = "grub"
grubenv = "$work/grubenv"
keyring = "$work/keyring"
data-directory = "$work/data"
[[slot.rootfs]]
device = "$la"
bootname = "A"
[[slot.rootfs]]
device = "$lb"
bootname = "B"
TOML
  cat "$work/www/image.raw" "$work/www/bundle.fsb" > /dev/null
  fs=("$bin/flipslot" --config "$work/system.toml" --cmdline-file "$work/cmdline")

  # One untimed pass of each so caches and the loop devices are warm for both sides.
  curl -sf "$base/image.raw" | dd of="$lb" bs=4M iflag=fullblock oflag=direct conv=fsync status=none
  "${fs[@]}" install --no-daemon --no-read-back "$base/bundle.fsb" >/dev/null
  declare -A t=() rss=()
  for _ in $(seq "$runs"); do
    s=$(now)
    curl -sf "$base/image.raw" | dd of="$lb" bs=4M iflag=fullblock oflag=direct conv=fsync status=none
    e=$(now)
    t[curl]+="$(echo "$e - $s" | bc) "
    for mode in no-read-back read-back; do
      extra=(); [[ $mode == no-read-back ]] && extra=(--no-read-back)
      rm -rf "$work/data"
      s=$(now)
      /usr/bin/time -f %M -o "$work/rss" "${fs[@]}" install --no-daemon "${extra[@]}" "$base/bundle.fsb" >/dev/null
      e=$(now)
      t[$mode]+="$(echo "$e - $s" | bc) "
      rss[$mode]=$(cat "$work/rss")
    done
  done
  basetime=$(tr ' ' '\n' <<<"${t[curl]}" | grep . | median)
  for c in curl no-read-back read-back; do
    m=$(tr ' ' '\n' <<<"${t[$c]}" | grep . | median)
    ratio=$(echo "scale=3; $m / $basetime" | bc)
    mibs=$(echo "scale=0; $bytes / 1048576 / $m" | bc)
    r="-"; [[ -n ${rss[$c]:-} ]] && r="$((rss[$c] / 1024)) MiB"
    label="curl | dd"; [[ $c != curl ]] && label="flipslot http $c"
    printf '%-6s %-24s %9.2f %9s %8s %10s\n' "$size" "$label" "$m" "${ratio}x" "$mibs" "$r"
  done
  losetup -d "$la" "$lb"; loops=()
  rm -f "$work/slot-a.img" "$work/slot-b.img" "$work/www/image.raw" "$work/www/bundle.fsb"
done
