#!/usr/bin/env bash
# `make run`: migrate, seed the demo, start a Celery worker and the web server.
# Ctrl-C stops both (see stop() below). Running it again reuses the venv, the database
# and the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The app's data dir (settings.VAR_DIR): the database, the broker, and here the worker's log
# and beat schedule.
VAR=${VAR_DIR:-var}

$PY manage.py migrate --noinput
$PY manage.py seed_demo

mkdir -p "$VAR/log"
# The worker runs in its own process group, so Ctrl-C reaches it only through our trap:
# the first Ctrl-C asks its main process for a warm shutdown (the output being written
# finishes and is stored); a second one sends SIGTERM to the whole group, which cancels
# the output (annotations.tasks puts its row back to pending at once). Whatever is still
# there after COLD_WAIT_S seconds is killed, so nothing is left behind.
setsid .venv/bin/celery -A webapp worker -Q generation,execution,judge -c 1 -B -l info \
  -s "$VAR/celerybeat-schedule" \
  --logfile "$VAR/log/worker.log" &
WORKER_PID=$!
COLD_WAIT_S=${COLD_WAIT_S:-30}
stop() {
  trap cold INT TERM
  trap - EXIT
  echo "Stopping: the server now; the worker once the output it is writing is stored."
  echo "(Ctrl-C again cancels that output.)"
  [ -n "${SERVER_PID:-}" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  kill -TERM "$WORKER_PID" 2>/dev/null || true
  wait "$WORKER_PID" 2>/dev/null || true
  finish
}
cold() {
  trap - INT TERM
  echo "Cancelling the output being written (it goes back to pending)..."
  kill -TERM -- -"$WORKER_PID" 2>/dev/null || true
  for _ in $(seq "$COLD_WAIT_S"); do
    kill -0 "$WORKER_PID" 2>/dev/null || break
    sleep 1
  done
  finish
}
finish() {
  # Whatever of the worker's group is still alive (a pool child, the embedded beat).
  kill -KILL -- -"$WORKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "Stopped."
  exit 0
}
trap stop INT TERM EXIT

cat <<MSG

  Sparsity preference lab is starting at http://$HOST:$PORT/
    staff:  admin / admin-demo-password   -> study page with progress, alpha and win rates
    rater:  rater / rater-demo-password   -> blind pairwise rating
  The worker's log is $VAR/log/worker.log; the line above says what it was sent.
  Ctrl-C stops both (the worker first finishes the output it is writing).

MSG
$PY manage.py runserver --noreload "$HOST:$PORT" &
SERVER_PID=$!
wait "$SERVER_PID"
