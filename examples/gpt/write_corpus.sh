#!/bin/sh
# write_corpus.sh BIBLE OUT: the King James Bible from bible-kjv's program,
# 80 columns whatever the terminal, written whole or not at all.
set -eu
"$1" -l80 gen1:1-rev22:21 > "$2.tmp"
mv "$2.tmp" "$2"
