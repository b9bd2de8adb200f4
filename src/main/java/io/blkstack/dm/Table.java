package io.blkstack.dm;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Function;

/**
 * A device-mapper table (the kernel's {@code dm_table}): targets that cover a mapped device
 * contiguously from sector 0, parsed from dmsetup syntax.
 *
 * <p>Syntax: one target per line, {@code <start> <length> <type> <args...>}, in sectors; words are
 * separated by blanks; {@code #} starts a comment; blank lines are skipped. Lines must follow each
 * other without gap or overlap, starting at 0. Every error names the line, the target and argument,
 * and why. A table owns its targets: {@link #close} tears them down (also the ones already built
 * when a later line fails).
 */
public final class Table implements AutoCloseable {

    private final Target[] targets;
    private final long[] begins;
    private final long lengthSectors;
    private boolean closed;

    private Table(List<Target> list) {
        this.targets = list.toArray(new Target[0]);
        this.begins = new long[targets.length];
        for (int i = 0; i < targets.length; i++) {
            begins[i] = targets[i].begin();
        }
        Target last = targets[targets.length - 1];
        this.lengthSectors = last.begin() + last.length();
    }

    /** Parses {@code text} with the kernel's target registry. */
    public static Table parse(Kernel kernel, String deviceName, String text, Function<String, BlockDevice> resolver)
            throws TableException {
        return parse(kernel, deviceName, text, resolver, TargetRegistry.of(kernel));
    }

    /**
     * Parses {@code text} (dmsetup syntax) for the mapped device {@code deviceName}, resolving device
     * names through {@code resolver} (null result: no such device).
     */
    public static Table parse(Kernel kernel, String deviceName, String text, Function<String, BlockDevice> resolver,
            TargetRegistry registry) throws TableException {
        List<Target> built = new ArrayList<>();
        try {
            String[] lines = text.split("\r?\n", -1);
            long next = 0;
            for (int i = 0; i < lines.length; i++) {
                int lineNumber = i + 1;
                String line = lines[i];
                int hash = line.indexOf('#');
                if (hash >= 0) {
                    line = line.substring(0, hash);
                }
                line = line.strip();
                if (line.isEmpty()) {
                    continue;
                }
                String[] words = line.split("\\s+");
                built.add(parseLine(kernel, deviceName, lineNumber, words, next, resolver, registry));
                next = built.get(built.size() - 1).begin() + built.get(built.size() - 1).length();
            }
            if (built.isEmpty()) {
                throw new TableException(0, null, 0, null, "table for " + deviceName + " has no targets");
            }
            return new Table(built);
        } catch (TableException | RuntimeException e) {
            closeAll(built);
            throw e;
        }
    }

    /** Parses one non-empty line starting where the previous one ended ({@code expectedBegin}). */
    private static Target parseLine(Kernel kernel, String deviceName, int lineNumber, String[] words,
            long expectedBegin, Function<String, BlockDevice> resolver, TargetRegistry registry) throws TableException {
        if (words.length < 3) {
            throw new TableException(lineNumber, null, 0, null,
                    "expected '<start> <length> <target> <args...>', got " + words.length + " word(s)");
        }
        long begin = lineNumber(lineNumber, words[0], "start is not a sector number");
        long length = lineNumber(lineNumber, words[1], "length is not a sector number");
        if (begin != expectedBegin) {
            throw new TableException(lineNumber, null, 0, words[0], begin > expectedBegin
                    ? "start leaves a gap: the previous target ends at sector " + expectedBegin
                    : "start overlaps: the previous target ends at sector " + expectedBegin);
        }
        if (length == 0) {
            throw new TableException(lineNumber, null, 0, words[1], "length must be at least 1 sector");
        }
        String type = words[2];
        TargetFactory factory = registry.find(type);
        if (factory == null) {
            throw new TableException(lineNumber, null, 0, type, "is not a target type; known: "
                    + String.join(", ", registry.types()));
        }
        TargetArgs args = new TargetArgs(kernel, deviceName, type, begin, length,
                Arrays.asList(words).subList(3, words.length), resolver);
        try {
            Target t = factory.create(args);
            if (t.begin() != begin || t.length() != length) {
                throw new IllegalStateException("target " + type + " built at " + t.begin() + "+" + t.length()
                        + " for line " + lineNumber + " at " + begin + "+" + length);
            }
            return t;
        } catch (TableException e) {
            throw e.line() == 0 ? e.atLine(lineNumber) : e;
        }
    }

    private static long lineNumber(int line, String word, String reason) throws TableException {
        if (word.isEmpty() || word.length() > 18 || !word.chars().allMatch(c -> c >= '0' && c <= '9')) {
            throw new TableException(line, null, 0, word, reason);
        }
        return Long.parseLong(word);
    }

    private static void closeAll(List<Target> built) {
        for (int i = built.size() - 1; i >= 0; i--) {
            built.get(i).close();
        }
    }

    /** The mapped device's size this table covers, in sectors. */
    public long lengthSectors() {
        return lengthSectors;
    }

    /** How many targets. */
    public int targetCount() {
        return targets.length;
    }

    /** Target {@code index} in sector order. */
    public Target target(int index) {
        return targets[index];
    }

    /** The targets in sector order. */
    public List<Target> targets() {
        return List.of(targets);
    }

    /** The target covering {@code sector} (binary search; the kernel's {@code dm_table_find_target}). */
    public Target targetAt(long sector) {
        if (sector < 0 || sector >= lengthSectors) {
            throw new IllegalArgumentException("sector " + sector + " outside table of " + lengthSectors + " sectors");
        }
        int i = Arrays.binarySearch(begins, sector);
        return targets[i >= 0 ? i : -i - 2];
    }

    /** The devices every target maps to, without repeats, in table order. */
    public List<BlockDevice> devices() {
        List<BlockDevice> out = new ArrayList<>();
        for (Target t : targets) {
            for (BlockDevice d : t.devices()) {
                if (!out.contains(d)) {
                    out.add(d);
                }
            }
        }
        return out;
    }

    /** The normalized lines: {@code <start> <length> <type> <table status>}. */
    public List<String> lines() {
        List<String> out = new ArrayList<>(targets.length);
        for (Target t : targets) {
            out.add(line(t, t.statusTable()));
        }
        return out;
    }

    /** One status line: place, type and the given form's text (no trailing blank). */
    static String line(Target t, String text) {
        String head = t.begin() + " " + t.length() + " " + t.type();
        return text.isEmpty() ? head : head + " " + text;
    }

    /** Whether {@link #close} ran. */
    public boolean isClosed() {
        return closed;
    }

    /** Tears down every target, last first. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        closeAll(Arrays.asList(targets));
    }

    /** The normalized table text, one line per target. */
    @Override
    public String toString() {
        return String.join("\n", lines()) + "\n";
    }
}
