#!/bin/sh
# A command job: argv comes from spool.toml ("{src}" "{width}"), the full args as JSON on
# stdin and in $SPOOL_ARGS. Output goes to the job's log; a JSON result may be written to
# $SPOOL_RESULT. Exit 0 = completed, 100 = cancelled (no retry), anything else = failed.
set -eu
src=$1
width=$2
[ -r "$src" ] || { echo "no such file: $src" >&2; exit 100; }
echo "attempt $SPOOL_ATTEMPT of $SPOOL_JOB_ID: thumbnail of $src at ${width}px"
size=$(wc -c < "$src")
printf '{"source": "%s", "width": %s, "bytes": %s}\n' "$src" "$width" "$size" > "$SPOOL_RESULT"
