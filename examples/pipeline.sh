#!/bin/sh
# spool from a shell pipeline: args from stdin ('-'), --wait blocks until the job ends and
# exits like `spool wait` (0 completed, 1 failed/dead, 5 cancelled, 124 timeout).
set -eu
echo '{"text": "one two three"}' | spool submit count_words - --wait
id=$(spool submit count_words -a text="hello world")
spool wait "$id" --timeout 60 && spool show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])'
