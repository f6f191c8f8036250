#!/usr/bin/env bash
# Dispatch throughput, two binaries side by side on the same outbox: the machine is shared and
# noisy, so only ratios within one run are compared.
#
#   scripts/bench_dispatch.sh OLD_BINARY [CUSTOMERS]     # default 100000 customers
#   BENCH_BACKENDS=sqlite scripts/bench_dispatch.sh /tmp/retentiond-old
#
# Builds this tree's release binary (the "new" one), generates a brand, imports, trains, scores
# and runs the shipped campaigns once per backend, then alternates `dispatch --once` of that same
# outbox (restored before every run) between OLD_BINARY and the new binary, BENCH_REPEATS times
# (default 3), to the local mock provider (examples/mock_provider.rs, signed webhook provider,
# concurrency 64, as scripts/bench.sh). Prints messages/s per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

old=${1:?usage: scripts/bench_dispatch.sh OLD_BINARY [CUSTOMERS]}
n=${2:-100000}
repeats=${BENCH_REPEATS:-3}
backends=${BENCH_BACKENDS:-"sqlite postgres"}
pg_admin=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench-dispatch}
mkdir -p "$work"
cargo build --release --quiet --bin retentiond --example mock_provider
target_dir=${CARGO_TARGET_DIR:-target}
new=$target_dir/release/retentiond
mock_addr=${BENCH_MOCK_ADDR:-127.0.0.1:18998}
"$target_dir/release/examples/mock_provider" "$mock_addr" 2> "$work/mock_provider.err" &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null || true' EXIT
export RETENTIOND_WEBHOOK_SECRET=${RETENTIOND_WEBHOOK_SECRET:-bench-webhook-secret-$RANDOM$RANDOM}
export RETENTIOND_UNSUBSCRIBE_SECRET=${RETENTIOND_UNSUBSCRIBE_SECRET:-bench-unsubscribe-secret-$RANDOM$RANDOM}
export RETENTIOND_CODE_SECRET=${RETENTIOND_CODE_SECRET:-bench-code-secret-$RANDOM$RANDOM}
printf '[delivery]\nemail = "webhook"\nsms = "webhook"\nwhatsapp = "webhook"\n[delivery.webhook]\nurl = "http://%s/messages"\nconcurrency = 64\n[dispatch]\nclaim_batch = 1000\n' "$mock_addr" > "$work/dispatch.toml"
results="$work/results.txt"; : > "$results"

data="$work/brand-$n"
[ -d "$data" ] || "$new" generate --customers "$n" --seed 7 --end 2026-11-01 --out "$data" > /dev/null
due="UPDATE outbox SET not_before = 0, expires_at = 4102444800 WHERE status = 'queued'"
for backend in $backends; do
  case $backend in
    sqlite) db="$work/bench-$n.db"; rm -f "$db" "$db-wal" "$db-shm"; url="sqlite://$db" ;;
    postgres)
      name="retentiond_dbench_$n"
      psql "$pg_admin" -qc "DROP DATABASE IF EXISTS ${name}_run WITH (FORCE)" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" > /dev/null
      url="${pg_admin%/*}/$name" ;;
  esac
  "$new" --database "$url" import "$data" --quiet --report-dir "$work/reports" > /dev/null
  "$new" --config /dev/null --log warn --database "$url" train --as-of 2026-11-01 > /dev/null
  "$new" --config /dev/null --log warn --database "$url" score --as-of 2026-11-01 > /dev/null
  "$new" --config /dev/null --log warn --database "$url" campaigns run --as-of 2026-11-01 --at 2026-11-01T12:00:00+05:30 > /dev/null
  case $backend in
    sqlite) sqlite3 "$db" "$due"; sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null ;;
    postgres) psql "$url" -qc "$due"; psql "$url" -qc "CHECKPOINT" ;;
  esac
  for run in $(seq 1 "$repeats"); do
    for which in old new; do
      bin=$old; [ "$which" = new ] && bin=$new
      case $backend in
        sqlite) cp "$db" "$work/run.db"; rm -f "$work/run.db-wal" "$work/run.db-shm"; run_url="sqlite://$work/run.db" ;;
        postgres)
          psql "$pg_admin" -qc "DROP DATABASE IF EXISTS ${name}_run WITH (FORCE)" -c "CREATE DATABASE ${name}_run TEMPLATE $name" > /dev/null
          run_url="${pg_admin%/*}/${name}_run" ;;
      esac
      curl -s -X DELETE "http://$mock_addr/stats" > /dev/null
      start=$(date +%s.%N)
      out=$("$bin" --config "$work/dispatch.toml" --log warn --database "$run_url" dispatch --once)
      end=$(date +%s.%N)
      sent=$(grep -Eo '"sent":[0-9]+' <<< "$out" | grep -Eo '[0-9]+' || echo 0)
      python3 -c "import sys; s,e,n=float(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]); print(f'$backend $which run $run: {n} sent in {e-s:.2f} s = {n/(e-s):,.0f} msg/s')" "$start" "$end" "$sent" | tee -a "$results"
      echo "  mock provider: $(curl -s "http://$mock_addr/stats")"
    done
  done
done
python3 - "$results" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) (old|new) run \d+: (\d+) sent in ([\d.]+) s", line)
    if m:
        runs.setdefault((m[1], m[2]), []).append(int(m[3]) / float(m[4]))
for backend in sorted({b for b, _ in runs}):
    old, new = statistics.median(runs[(backend, "old")]), statistics.median(runs[(backend, "new")])
    print(f"{backend}: median old {old:,.0f} msg/s, new {new:,.0f} msg/s, new/old x{new / old:.2f}")
PY
