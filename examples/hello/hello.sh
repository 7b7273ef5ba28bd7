#!/bin/sh
# Greets its argument, then shows what the build put in the image.
set -eu
echo "$GREETING, $1!"
echo "running as $(id -un) in $(pwd)"
cat message.txt
echo "message.txt has $(cat lines.txt) lines"
