#!/usr/bin/env bash
# Whole-pipeline benchmark: wall time, CPU time and peak memory of each step, on SQLite and
# PostgreSQL, at each size given (default: 100000 1000000 customers).
#
#   scripts/bench.sh                 # 100 k and 1 M customers
#   scripts/bench.sh 20000 100000    # other sizes
#   BENCH_BACKENDS=sqlite scripts/bench.sh 100000
#   BENCH_REPEATS=1 scripts/bench.sh  # one run per size (default: 3 at every size but the largest)
#
# Prints a table and writes target/bench/results.json. Steps measured so far: generate, import,
# train, score, campaigns (the three shipped campaigns, `campaigns run` into an empty outbox),
# dispatch (`dispatch --once` of that outbox to a local mock HTTP provider, limits off).
# Growth is computed from the median run of each step at each size: a 100 k step takes seconds,
# and on a shared machine one run of it varied by a quarter (PostgreSQL import, 15.8-20.5 s),
# enough to move a growth ratio across the line by itself. The largest size runs once (it is
# most of the benchmark's time, and its longer steps vary less).
# PostgreSQL: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) is used to
# create a scratch database per size.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
repeats=${BENCH_REPEATS:-3}
largest=$(printf '%s\n' "${sizes[@]}" | sort -n | tail -1)
backends=${BENCH_BACKENDS:-"sqlite postgres"}
pg_admin=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
cargo build --release --quiet --bin retentiond --example mock_provider
bin=target/release/retentiond
# dispatch sends to a local mock provider (examples/mock_provider.rs) through the signed
# webhook provider: real HTTP, real signing, a receiver that counts receipts by idempotency key.
mock_addr=${BENCH_MOCK_ADDR:-127.0.0.1:18999}
target/release/examples/mock_provider "$mock_addr" 2> "$work/mock_provider.err" &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null || true' EXIT
export RETENTIOND_WEBHOOK_SECRET=${RETENTIOND_WEBHOOK_SECRET:-bench-webhook-secret-$RANDOM$RANDOM}
# Campaign runs sign links and derive codes: throw-away secrets for the benchmark.
export RETENTIOND_UNSUBSCRIBE_SECRET=${RETENTIOND_UNSUBSCRIBE_SECRET:-bench-unsubscribe-secret-$RANDOM$RANDOM}
export RETENTIOND_CODE_SECRET=${RETENTIOND_CODE_SECRET:-bench-code-secret-$RANDOM$RANDOM}
results="$work/results.jsonl"; : > "$results"

# measure NAME SIZE BACKEND -- command...   (the run number is $run)
run=1
measure() {
  local step=$1 size=$2 backend=$3; shift 3
  local out="$work/$step-$backend-$size-$run.out"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time.txt" "$@" > "$out" 2> "$work/$step-$backend-$size-$run.err"
  read -r wall user sys rss_kb < "$work/time.txt"
  local rows; rows=$(grep -Eo '^[0-9]+ rows read' "$out" | grep -Eo '^[0-9]+' || true)
  [ -n "$rows" ] || rows=$(grep -Eo '"sent":[0-9]+' "$out" | grep -Eo '[0-9]+' || true)
  printf '{"step":"%s","customers":%s,"backend":"%s","run":%s,"wall_s":%s,"user_s":%s,"sys_s":%s,"peak_kb":%s,"rows":%s}\n' \
    "$step" "$size" "$backend" "$run" "$wall" "$user" "$sys" "$rss_kb" "${rows:-null}" >> "$results"
}

for n in "${sizes[@]}"; do
  data="$work/brand-$n"
  runs=$repeats; [ "$n" = "$largest" ] && runs=1
  for run in $(seq 1 "$runs"); do
  rm -rf "$data"
  measure generate "$n" none "$bin" generate --customers "$n" --seed 7 --end 2026-11-01 --out "$data"
  for backend in $backends; do
    case $backend in
      sqlite) db="$work/bench-$n.db"; rm -f "$db" "$db-wal" "$db-shm"; url="sqlite://$db" ;;
      postgres)
        name="retentiond_bench_$n"
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
        url="${pg_admin%/*}/$name" ;;
    esac
    "$bin" --database "$url" migrate > /dev/null
    measure import "$n" "$backend" "$bin" --log warn --database "$url" import "$data" --quiet --report-dir "$work/reports"
    measure train "$n" "$backend" "$bin" --config /dev/null --log warn --database "$url" train --as-of 2026-11-01
    measure score "$n" "$backend" "$bin" --config /dev/null --log warn --database "$url" score --as-of 2026-11-01
    measure campaigns "$n" "$backend" "$bin" --config /dev/null --log warn --database "$url" campaigns run --as-of 2026-11-01 --at 2026-11-01T12:00:00+05:30
    # The run was rehearsed at a past clock: make its queued messages due now (send hours are
    # not what is measured), then drain them to the mock provider with limits off.
    due="UPDATE outbox SET not_before = 0, expires_at = 4102444800 WHERE status = 'queued'"
    case $backend in sqlite) sqlite3 "$db" "$due" ;; postgres) psql "$url" -qc "$due" ;; esac
    printf '[delivery]\nemail = "webhook"\nsms = "webhook"\nwhatsapp = "webhook"\n[delivery.webhook]\nurl = "http://%s/messages"\nconcurrency = 64\n[dispatch]\nclaim_batch = 1000\n' "$mock_addr" > "$work/dispatch.toml"
    curl -s -X DELETE "http://$mock_addr/stats" > /dev/null
    measure dispatch "$n" "$backend" "$bin" --config "$work/dispatch.toml" --log warn --database "$url" dispatch --once
    echo "mock provider after dispatch $backend $n run $run: $(curl -s "http://$mock_addr/stats")" | tee -a "$work/mock_provider.log"
  done
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    r["cpu_s"] = round(r.pop("user_s") + r.pop("sys_s"), 2)
    r["peak_mb"] = round(r.pop("peak_kb") / 1024)
print(f"{'step':<10} {'backend':<9} {'customers':>10} {'run':>4} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'rows/s':>10}  (dispatch: messages/s)")
for r in rows:
    rate = f"{r['rows']/r['wall_s']:,.0f}" if r.get('rows') and r['wall_s'] > 0 else ""
    print(f"{r['step']:<10} {r['backend']:<9} {r['customers']:>10} {r['run']:>4} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_mb']:>8.0f} {rate:>10}")
# Growth from the smallest to the largest size, per step and backend: "linear" means the cost
# per unit (rows for import, messages for dispatch, customers otherwise) does not grow; the
# ratio printed is (time ratio) / (size ratio), <= 1.10 passes (noise on a shared machine).
# Each size's time is the median of its runs (the run with the median wall time).
by = {}
for r in rows:
    by.setdefault((r['step'], r['backend']), {}).setdefault(r['customers'], []).append(r)
def median_run(rs):
    rs = sorted(rs, key=lambda r: r['wall_s'])
    return rs[(len(rs) - 1) // 2]
growth = []
for (step, backend), sizes in by.items():
    if len(sizes) < 2:
        continue
    a, b = median_run(sizes[min(sizes)]), median_run(sizes[max(sizes)])
    if a['wall_s'] <= 0:
        continue
    size = (b['rows'] / a['rows']) if a.get('rows') and b.get('rows') else b['customers'] / a['customers']
    t = b['wall_s'] / a['wall_s']
    walls = sorted(r['wall_s'] for r in sizes[min(sizes)])
    g = {"step": step, "backend": backend, "customers_ratio": b['customers']/a['customers'], "size_ratio": round(size, 2),
         "small_runs_wall_s": walls, "small_wall_s": a['wall_s'], "large_wall_s": b['wall_s'],
         "time_ratio": round(t, 2), "per_unit_ratio": round(t / size, 2), "linear_or_better": t / size <= 1.10}
    growth.append(g)
    spread = f" (median of {', '.join(f'{w:g}' for w in walls)} s)" if len(walls) > 1 else ""
    print(f"growth {step:<10} {backend:<9} customers x{g['customers_ratio']:.0f}, size x{size:.1f}, time x{t:.1f}{spread}: per unit x{t/size:.2f} {'ok' if g['linear_or_better'] else 'WORSE THAN LINEAR'}")
# The targets (issue: performance) at 1 M customers.
targets = []
for r in rows:
    if r['customers'] < 1_000_000 or r['step'] == 'generate':
        continue
    checks = [("peak <= 2 GB", r['peak_mb'] * 1024 * 1024 <= 2e9)]
    rate = r['rows'] / r['wall_s'] if r.get('rows') and r['wall_s'] > 0 else None
    if r['step'] == 'import': checks.append(("import >= 200,000 rows/s", rate is not None and rate >= 200_000))
    if r['step'] == 'train': checks.append(("train <= 180 s", r['wall_s'] <= 180))
    if r['step'] == 'score': checks.append(("score <= 30 s", r['wall_s'] <= 30))
    if r['step'] == 'campaigns': checks.append(("campaigns run <= 20 s", r['wall_s'] <= 20))
    if r['step'] == 'dispatch': checks.append(("dispatch >= 1,000 msg/s", rate is not None and rate >= 1000))
    for name, ok in checks:
        targets.append({"step": r['step'], "backend": r['backend'], "target": name, "met": ok})
        print(f"target {r['step']:<10} {r['backend']:<9} {name:<26} {'met' if ok else 'MISSED'}")
json.dump({"results": rows, "growth": growth, "targets": targets}, open(sys.argv[1].replace('.jsonl', '.json'), 'w'), indent=2)
print("written:", sys.argv[1].replace('.jsonl', '.json'))
PY
