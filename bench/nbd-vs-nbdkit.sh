#!/usr/bin/env bash
# The old name of bench/nbd-peers.sh, kept so existing commands still work: it runs the same
# benchmark (blkstack against nbdkit, qemu-nbd and fio on the file itself), with the same
# environment settings. See bench/nbd-peers.sh.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/nbd-peers.sh" "$@"
