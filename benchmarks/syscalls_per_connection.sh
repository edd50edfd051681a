#!/bin/sh
# System calls per short echo connection (connect, 64-byte exchange, close;
# 8 at a time), counted by strace -c -f on the server over N connections.
#
#   benchmarks/syscalls_per_connection.sh [N] [PYTHON]
#
# PYTHON (default: python3) must import twisted and this tree's twisted_echo
# (PYTHONPATH is set to the tree). The server runs on CPU 0, loadgen on CPU
# 1; loopback only. Needs strace, taskset and benchmarks/build/loadgen
# (gcc -O2 -o benchmarks/build/loadgen benchmarks/loadgen.c).
set -e
N=${1:-2000}
PYTHON=${2:-python3}
TREE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
PYTHONPATH=$TREE taskset -c 0 "$PYTHON" -c "from twisted.scripts.twistd import run; run()" \
  -n --pidfile= sockecho --echo tcp:0:interface=127.0.0.1 --no-upper --no-welcome --no-udp \
  > server.log 2>&1 &
SERVER=$!
tries=0
until grep -q "echo listening" server.log; do
  tries=$((tries + 1)); [ $tries -lt 100 ] || { cat server.log; kill $SERVER; exit 1; }
  sleep 0.1
done
PORT=$(grep -o "echo listening on tcp:127.0.0.1:[0-9]*" server.log | grep -o "[0-9]*$")
strace -c -f -p $SERVER -o strace.out 2>/dev/null &
TRACER=$!
sleep 1
taskset -c 1 "$TREE/benchmarks/build/loadgen" connect --port "$PORT" --conns 8 --size 64 \
  --max-ops "$N" --warmup 0 --duration 60 > loadgen.json
sleep 0.5
kill -INT $TRACER; wait $TRACER || true
kill $SERVER; wait $SERVER || true
python3 - strace.out <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        rows[f[-1]] = int(f[3])
n = rows["close"]  # one close(2) per accepted connection
print(f"connections (close calls): {n}")
for name, calls in sorted(rows.items(), key=lambda kv: -kv[1]):
    print(f"  {name:12} {calls / n:6.2f}")
print(f"{sum(rows.values()) / n:.2f} system calls per connection")
PY
