#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoder and the trip-file readers with libFuzzer, on stable Rust
# (the instrumentation cargo-fuzz adds, passed as stable -C flags; no sanitizer, which would need
# nightly). Seeds come from the project's fixtures and the contract's examples.
#
#   scripts/fuzz.sh [seconds per target]      (default 30; scripts/test.sh runs it for 20)
#
# A crash stops the run, leaves its input under $CARGO_TARGET_DIR/fuzz/artifacts/<target>/ and
# exits non-zero; `scripts/fuzz.sh` reruns from the corpus kept under $CARGO_TARGET_DIR/fuzz/corpus.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-30}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/tripline/target}/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
# With an explicit --target, RUSTFLAGS instrument the fuzzed code only, not build scripts.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target-dir "$target_dir" --target "$host"
bin="$target_dir/$host/release"

# Seeds: each trip fixture as a trip file (first byte: its format), and as telemetry payloads
# (first byte: the topic; points grouped ten to a message).
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
python3 - "$seeds" <<'PY'
import csv, io, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
(out / "decode").mkdir()
(out / "trip_file").mkdir()
formats = {".csv": 0, ".jsonl": 1, ".gpx": 2}
for n, path in enumerate(sorted(pathlib.Path("fixtures/trips").iterdir())):
    if path.suffix not in formats:
        continue
    text = path.read_bytes()
    (out / "trip_file" / f"{n}-{path.name}").write_bytes(bytes([formats[path.suffix]]) + text)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.decode().splitlines() if line.strip().startswith("{")]
    elif path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text.decode())))
    else:
        continue
    points = []
    for row in rows:
        point = {k: v for k, v in row.items() if k not in ("vehicle_id", "trip_id") and v not in ("", None)}
        for k, v in point.items():
            try:
                point[k] = float(v) if k not in ("ts", "ignition") else v
            except (TypeError, ValueError):
                pass
        points.append(point)
    for i in range(0, min(len(points), 200), 10):
        message = {"trip_id": rows[0].get("trip_id") or "t1", "points": points[i:i + 10]}
        (out / "decode" / f"{n}-{i}.json").write_bytes(bytes([0]) + json.dumps(message).encode())
(out / "decode" / "marker.json").write_bytes(
    bytes([1]) + b'{"trip_id": "t1", "event": "end", "ts": "2026-11-24T08:00:00Z"}')
(out / "decode" / "topic.json").write_bytes(bytes([3]) + b'vehicles/x/telemetry\n{"points": []}')
PY

status=0
for target in decode trip_file; do
  corpus="$target_dir/corpus/$target"
  artifacts="$target_dir/artifacts/$target/"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz.sh: $target for ${seconds} s" >&2
  if ! "$bin/$target" "$corpus" "$seeds/$target" -max_total_time="$seconds" \
      -max_len=300000 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts" \
      -print_final_stats=1 2>"$target_dir/$target.log"; then
    status=1
    tail -n 40 "$target_dir/$target.log" >&2
    echo "fuzz.sh: $target failed; its input is under $artifacts" >&2
  fi
  grep -E "stat::number_of_executed_units|cov:" "$target_dir/$target.log" | tail -n 2 >&2 || true
done
exit "$status"
