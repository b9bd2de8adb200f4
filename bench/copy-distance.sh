#!/usr/bin/env bash
# Shows how fast this CPU's `rep movsb` copies 1 MiB for each distance between destination and
# source (modulo 4 KiB), the instruction Linux copies with between user memory and the kernel's
# buffers where the CPU has `fsrm`/`erms`. On the development machine (AMD EPYC) distances of 1 to
# 31 bytes ran about fifteen times slower than 0 or 32 and up: why blkstack splits a large
# structured READ reply in two chunks (README, four-connection reads; ReplyWriter.gatherReply).
#
# Needs a C compiler (cc) and an x86-64 CPU. Measures only; prints one line per distance.
# Environment: COPY_DISTANCES (default "0 1 4 8 16 28 32 40 56 64 2048"), COPY_ROUNDS (default 400).
set -euo pipefail
me=copy-distance
if [[ $(uname -m) != x86_64 ]]; then
    echo "$me: rep movsb is x86-64's; this is $(uname -m)" >&2
    exit 2
fi
if ! command -v cc >/dev/null 2>&1; then
    echo "$me: no C compiler (cc) here" >&2
    exit 2
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/copy.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void copy(void *d, const void *s, size_t n) {
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

int main(int argc, char **argv) {
    const size_t mib = 1 << 20;
    int rounds = atoi(argv[1]);
    char *src = mmap(0, 2 * mib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *dst = mmap(0, 2 * mib + 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (src == MAP_FAILED || dst == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(src, 1, 2 * mib);
    memset(dst, 2, 2 * mib + 8192);
    for (int a = 2; a < argc; a++) {
        int distance = atoi(argv[a]);
        double start = now();
        for (int r = 0; r < rounds; r++) {
            for (size_t c = 0; c < mib; c += 32768) {
                copy(dst + distance + c, src + c, 32768);
            }
        }
        double seconds = now() - start;
        printf("distance %4d bytes: %6.0f MiB/s\n", distance, rounds / seconds);
    }
    return 0;
}
C
cc -O2 -o "$dir/copy" "$dir/copy.c"
# shellcheck disable=SC2086
"$dir/copy" "${COPY_ROUNDS:-400}" ${COPY_DISTANCES:-0 1 4 8 16 28 32 40 56 64 2048}
