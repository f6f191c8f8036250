#!/usr/bin/env bash
# Backtests on real third-party data (and the synthetic brand), with default settings: the
# figures quoted in the README. Rerun with:
#
#   scripts/real_data.sh            # needs ../shared/data (or REAL_DATA_DIR)
#
# Writes target/real-data/<name>.json (the `backtest --json` reports) and prints a table of
# each model beside its baselines.
set -euo pipefail
cd "$(dirname "$0")/.."

data=${REAL_DATA_DIR:-../shared/data}
work=target/real-data
mkdir -p "$work"
cargo build --release --quiet
bin=target/release/retentiond

# run NAME CONVERT_ARGS|generate AS_OF HORIZON
run() {
  local name=$1 source=$2 as_of=$3 horizon=$4
  local db="$work/$name.db" csv="$work/$name-csv"
  rm -rf "$csv" "$db" "$db-wal" "$db-shm"
  if [ "$source" = generate ]; then
    "$bin" generate --customers 20000 --seed 7 --end 2026-11-01 --out "$csv" > /dev/null
  else
    # shellcheck disable=SC2086
    "$bin" convert-dataset $source "$csv" > /dev/null
  fi
  "$bin" --config /dev/null --log error --database "sqlite://$db" import "$csv" --quiet --report-dir "$work/reports" > /dev/null
  "$bin" --config /dev/null --log error --database "sqlite://$db" backtest --as-of "$as_of" --horizon-days "$horizon" --json > "$work/$name.json"
  echo "$name: $work/$name.json" >&2
}

run cdnow "cdnow $data/cdnow" 1997-10-01 90
run completejourney-department "completejourney-department $data/completejourney" 2017-10-01 14
run completejourney-product-category "completejourney-product-category $data/completejourney" 2017-10-01 14
run synthetic-20k generate 2026-08-01 90

python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
names = ["cdnow", "completejourney-department", "completejourney-product-category", "synthetic-20k"]
f = lambda v: "–" if v is None else f"{v:.3f}"
print("\n## Will they return? (AUC; PR AUC in brackets)")
print("| data | customers | base rate | model | recency | frequency | BG/NBD | model log loss | BG/NBD log loss |")
print("|---|---|---|---|---|---|---|---|---|")
for n in names:
    r = json.load(open(os.path.join(work, n + ".json")))
    m, b = r["return"], r["return"]["baselines"]
    print(f"| {n} | {r['customers']} | {f(m['base_rate'])} | {f(m['auc'])} ({f(m['pr_auc'])}) | {f(b['recency']['auc'])} ({f(b['recency']['pr_auc'])}) | {f(b['frequency']['auc'])} ({f(b['frequency']['pr_auc'])}) | {f(b['bgnbd']['auc'])} ({f(b['bgnbd']['pr_auc'])}) | {f(m['log_loss'])} | {f(b['bgnbd']['log_loss'])} |")
print("\n## When? (MAE of the median in days on returners; C-index; window coverage vs nominal)")
print("| data | returners | model MAE | baseline MAE | model C | baseline C | coverage (nominal) |")
print("|---|---|---|---|---|---|---|")
for n in names:
    r = json.load(open(os.path.join(work, n + ".json")))
    t, b = r["timing"], r["timing"]["baselines"]["last_plus_mean_gap"]
    print(f"| {n} | {t['returners']} | {t['mae_days']:.2f} | {b['mae_days']:.2f} | {f(t['c_index'])} | {f(b['c_index'])} | {f(t['window_coverage'])} ({t['window_nominal']}) |")
print("\n## Which category? (hit@1 / hit@3 / MRR)")
print("| data | categories | next orders | model | popular | most frequent | last | model repeat hit@1 | model explore hit@3 |")
print("|---|---|---|---|---|---|---|---|---|")
for n in names:
    r = json.load(open(os.path.join(work, n + ".json")))
    c = r["category"]
    if c is None:
        print(f"| {n} | – | – | no items | | | | | |"); continue
    trio = lambda x: f"{x['hit_at_1']:.3f} / {x['hit_at_3']:.3f} / {x['mrr']:.3f}"
    b = c["baselines"]
    print(f"| {n} | {c['categories']} | {c['n']} | {trio(c)} | {trio(b['popular'])} | {trio(b['most_frequent'])} | {trio(b['last'])} | {c['repeat']['hit_at_1']:.3f} | {c['explore']['hit_at_3']:.3f} |")
PY
