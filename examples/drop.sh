#!/bin/sh
# Enqueue without spool installed: write the JSON under a temporary name (a dotfile, which
# every scan ignores), then mv it into pending/. A rename is atomic, so no worker ever sees
# half a file. Only "job" is required; the file's stem becomes the id when it is a valid id.
set -eu
SPOOL=${SPOOL_DIR:-./spool}
id="drop-$(date +%s)-$$"
tmp="$SPOOL/pending/.$id.json"
cat > "$tmp" <<JSON
{"job": "count_words", "args": {"text": "dropped by hand with cat and mv"}, "priority": 3}
JSON
mv "$tmp" "$SPOOL/pending/$id.json"
echo "$id"
