#!/bin/sh
# The scripts with options follow the CLI conventions: -h/--help print the
# usage on stdout and exit 0; an unknown argument is one line on stderr and
# exit 2. Argument: the source directory.
set -u
src=$1
dir=$(mktemp -d /tmp/vgpu-scripts-cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
for s in demo.sh check-aarch64.sh; do
    for h in -h --help; do
        "$src/scripts/$s" $h >"$dir/out" 2>"$dir/err"; rc=$?
        [ $rc -eq 0 ] && grep -q "^usage: scripts/$s" "$dir/out" && [ ! -s "$dir/err" ] ||
            fail "$s $h: usage on stdout, exit 0 (rc $rc)"
    done
    "$src/scripts/$s" --bogus >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <"$dir/err")" -eq 1 ] && [ ! -s "$dir/out" ] ||
        fail "$s --bogus: one line on stderr, exit 2 (rc $rc)"
done
echo "scripts_cli: ok"
