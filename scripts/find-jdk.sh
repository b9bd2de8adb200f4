#!/usr/bin/env bash
# Prints the home directory of a JDK whose major version is at least 25 (or $BLKSTACK_JDK_MIN).
#
# Order: $JAVA_HOME if it is new enough, then the `java` on PATH, then the newest JDK under
# /usr/lib/jvm/. Exits 1 with a message on stderr if none is found.
#
# Run it (`JAVA_HOME=$(scripts/find-jdk.sh)`) or source it and call `blkstack_find_jdk`.

# Prints the major version of the `java` binary $1 (8, 17, 21, ...); fails if it does not run.
blkstack_java_major() {
    local java=$1 line version
    [[ -x $java ]] || return 1
    # The line looks like: openjdk version "21.0.5" 2024-10-15 (or "1.8.0_392" for Java 8).
    # grep rather than head: JAVA_TOOL_OPTIONS makes the JVM print "Picked up ..." first.
    line=$("$java" -version 2>&1 | grep -m1 ' version "') || return 1
    version=$(sed -n 's/^[^"]*"\([0-9][0-9.]*\).*/\1/p' <<<"$line")
    version=${version#1.}      # 1.8.0 -> 8.0
    version=${version%%.*}     # 21.0.5 -> 21
    [[ $version =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$version"
}

# Prints the JDK home with major version >= ${BLKSTACK_JDK_MIN:-25}.
blkstack_find_jdk() {
    local min=${BLKSTACK_JDK_MIN:-25} major java home best_home="" best_major=0

    # A JDK, not only a JRE: Maven needs javac.
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/javac ]]; then
        major=$(blkstack_java_major "$JAVA_HOME/bin/java") || major=0
        if (( major >= min )); then
            printf '%s\n' "$JAVA_HOME"
            return 0
        fi
    fi

    java=$(command -v java 2>/dev/null) || java=""
    if [[ -n $java ]]; then
        java=$(readlink -f "$java")
        home=${java%/bin/java}
        major=$(blkstack_java_major "$java") || major=0
        if (( major >= min )) && [[ -x $home/bin/javac ]]; then
            printf '%s\n' "$home"
            return 0
        fi
    fi

    for home in /usr/lib/jvm/*; do
        [[ -x $home/bin/java && -x $home/bin/javac && ! -L $home ]] || continue
        major=$(blkstack_java_major "$home/bin/java") || continue
        if (( major >= min && major > best_major )); then
            best_major=$major
            best_home=$home
        fi
    done
    if [[ -n $best_home ]]; then
        printf '%s\n' "$best_home"
        return 0
    fi

    {
        echo "blkstack: no JDK $min or newer found."
        echo "  looked at: \$JAVA_HOME (${JAVA_HOME:-unset}), java on PATH (${java:-none}), /usr/lib/jvm/*"
        echo "  install one (Debian: apt-get install temurin-25-jdk or openjdk-25-jdk-headless) or set JAVA_HOME."
    } >&2
    return 1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    blkstack_find_jdk
fi
