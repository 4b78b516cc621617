#!/usr/bin/env bash
# Load test of `recpredict --serve` on loopback, against batch-mode recpredict on the same
# images, model and machine. Bounded: CLIENTS concurrent clients send REQUESTS requests
# each (default 16 x 200), then it stops; every 10th request is a broken image.
#
#   scripts/bench/bench_serve.sh
#
# It builds the tools (dev profile, as the tests), reuses bench_recpredict.sh's throwaway
# ResNet-18 at 3x28x28 (`prepare`), and uses the 1,200 Fashion-MNIST PNGs in
# data/fashion-mnist. Batch mode (`recpredict --squash --sagemaker`, the same
# preprocessing as the server) predicts them once: its images/s is the reference, and its
# lines are the expected answers. The server then answers the load from a Python client
# (standard library only, one keep-alive connection per client thread): every request
# must be answered, every good answer must equal batch mode's line for that file
# byte for byte, every broken image must get 400. It prints requests/s, p50/p99
# latency, the server's mean batch size and the ratio of its images/s to batch mode's,
# as a table last. Exit 1 when an answer is wrong or missing.
#
# Environment: CLIENTS (16), REQUESTS (200 per client), BATCH (32), DELAY (ms, 5),
# BIN (default target/debug), WORK (default scripts/work/bench_serve), NO_BUILD=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${WORK:-$repo/scripts/work/bench_serve}
BIN=${BIN:-$repo/target/debug}
CLIENTS=${CLIENTS:-16}
REQUESTS=${REQUESTS:-200}
BATCH=${BATCH:-32}
DELAY=${DELAY:-5}
mkdir -p "$WORK"
log() { echo "bench_serve: $*" >&2; }

# The model (and the build) from bench_recpredict.sh's prepare step.
N=4 SKIP_R50=1 WORK="$WORK/prepared" BIN="$BIN" "$here/bench_recpredict.sh" prepare
model="$WORK/prepared/models/r18_28"
find "$repo/data/fashion-mnist" -name '*.png' | sort >"$WORK/images.txt"
n=$(wc -l <"$WORK/images.txt")

log "batch mode: $n images"
t0=$(date +%s.%N)
"$BIN/recpredict" -m "$model" --device cpu --squash --sagemaker --batch-size "$BATCH" - \
  <"$WORK/images.txt" >"$WORK/batch.jsonl" 2>"$WORK/batch.log"
t1=$(date +%s.%N)
batch_rate=$(python3 -c "print(f'{$n / ($t1 - $t0):.1f}')")

log "server: --batch-size $BATCH --max-batch-delay $DELAY"
"$BIN/recpredict" -m "$model" --device cpu --squash --serve 127.0.0.1:0 \
  --batch-size "$BATCH" --max-batch-delay "$DELAY" 2>"$WORK/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
url=""
for _ in $(seq 600); do
  url=$(sed -n 's/.* on \(http:\/\/[^ ]*\) .*/\1/p' "$WORK/server.log" | head -1)
  [[ -n $url ]] && break
  kill -0 $server 2>/dev/null || { cat "$WORK/server.log" >&2; exit 2; }
  sleep 0.1
done
[[ -n $url ]] || { log "the server did not start"; exit 2; }

rc=0
python3 - "$url" "$WORK/images.txt" "$WORK/batch.jsonl" "$CLIENTS" "$REQUESTS" \
  "$batch_rate" "$WORK/server.log" <<'EOF' || rc=$?
import http.client, sys, threading, time, urllib.parse

url, images, expected, clients, per_client, batch_rate, server_log = sys.argv[1:]
clients, per_client, batch_rate = int(clients), int(per_client), float(batch_rate)
paths = open(images).read().split("\n")[:-1]
want = open(expected).read().split("\n")[:-1]
assert len(paths) == len(want), "batch mode gave one line per image"
bodies = [open(p, "rb").read() for p in paths]
host = urllib.parse.urlsplit(url)
lock = threading.Lock()
latencies, wrong, counts = [], [], {"ok": 0, "bad": 0, "lost": 0}

def client(c):
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    mine = []
    for i in range(per_client):
        k = (c * per_client + i) % len(paths)
        broken = i % 10 == 9
        body = b"\x89PNG\r\n\x1a\nbroken" if broken else bodies[k]
        t = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body,
                         {"Content-Type": "image/png", "Accept": "application/jsonlines"})
            r = conn.getresponse()
            text = r.read().decode()
        except Exception as e:  # a request without an answer
            with lock:
                counts["lost"] += 1
                wrong.append(f"{paths[k]}: no answer: {e!r}")
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
            continue
        mine.append(time.perf_counter() - t)
        with lock:
            if broken and r.status == 400:
                counts["bad"] += 1
            elif not broken and r.status == 200 and text == want[k] + "\n":
                counts["ok"] += 1
            else:
                wrong.append(f"{paths[k]} broken={broken}: {r.status} {text[:200]!r}")
    with lock:
        latencies.extend(mine)

start = time.perf_counter()
threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
wall = time.perf_counter() - start
latencies.sort()
pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
total = clients * per_client
batches = [int(l.rsplit("batch=", 1)[1]) for l in open(server_log) if " batch=" in l]
mean_batch = sum(batches) / len(batches) if batches else 0
served_rate = counts["ok"] / wall
for w in wrong[:10]:
    print("bench_serve: WRONG", w, file=sys.stderr)
print(f"| requests | clients | answered | good / 400 | wrong or lost | requests/s | p50 ms | p99 ms "
      f"| mean batch | served images/s | batch mode images/s | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {total} | {clients} | {len(latencies)} | {counts['ok']} / {counts['bad']} | {len(wrong)} "
      f"| {total / wall:.1f} | {pct(0.50):.1f} | {pct(0.99):.1f} | {mean_batch:.2f} "
      f"| {served_rate:.1f} | {batch_rate:.1f} | {served_rate / batch_rate:.2f}x |")
sys.exit(1 if wrong or len(latencies) != total else 0)
EOF
kill -TERM $server
wait $server || { log "the server exited $?"; rc=2; }
trap - EXIT
tail -1 "$WORK/server.log" >&2
exit $rc
