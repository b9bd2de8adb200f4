package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * A small description of the I/O a checker run drives into a stack's top device: how many tasks,
 * how many operations each, the operation mix, the sizes, the region they fall in, and how often
 * a task flushes. One line of text on the command line,
 * {@code tasks=3,ops=8,mix=write:60,read:30,flush:10,size=4k-64k,region=0-1m,flushEvery=4}, or the
 * same keys one per line ({@code key=value} or {@code key: value}, {@code #} comments) in a
 * {@code .workload} file.
 *
 * <p>Keys: {@code tasks} (1..64), {@code ops} per task (1..100000), {@code mix} (percentages of
 * {@code write}, {@code read}, {@code flush}, {@code fua} (a write with FUA), {@code discard},
 * {@code zeroes} (write-zeroes that may deallocate) and {@code zeroes-nohole} (write-zeroes with
 * NOUNMAP); they must add up to 100, and operations not named get 0), {@code size} (a range
 * {@code MIN-MAX} or one size, multiples of 512 up to 1 MiB), {@code region} ({@code START-END},
 * cut into one equal slice per task, each slice a multiple of 4 KiB), {@code flushEvery} (a flush
 * after every N data operations of a task, 0 for none beyond the mix), {@code pressure}
 * ({@code on}: after setting up, the run takes every free page so that every later allocation
 * lives on pool reserves; {@code off}), {@code sparePages} (pages left free under pressure) and
 * {@code events} (control events per run among the operations: {@code reload:N} table reloads,
 * {@code snap:N} thin snapshots created and deleted, {@code crash:N} crashes with a restart from
 * what was flushed; {@code none} by default).
 *
 * @param tasks user tasks submitting at once
 * @param opsPerTask data and flush operations each task issues, one at a time
 * @param writePercent share of writes
 * @param readPercent share of reads
 * @param flushPercent share of flushes
 * @param sizeMinBytes smallest data operation
 * @param sizeMaxBytes largest data operation
 * @param regionStartBytes start of the region the tasks share out
 * @param regionEndBytes end (exclusive) of that region
 * @param flushEvery an extra flush after every this many data operations (0: none)
 * @param pressure whether the run exhausts free pages before the tasks start
 * @param sparePages pages left free under pressure
 * @param fuaPercent share of writes with FUA
 * @param discardPercent share of discards
 * @param zeroesPercent share of write-zeroes that may deallocate
 * @param zeroesNoHolePercent share of write-zeroes with NOUNMAP (NBD's NO_HOLE)
 * @param events control events per run
 */
public record WorkloadSpec(int tasks, int opsPerTask, int writePercent, int readPercent, int flushPercent,
        int sizeMinBytes, int sizeMaxBytes, long regionStartBytes, long regionEndBytes, int flushEvery, boolean pressure,
        int sparePages, int fuaPercent, int discardPercent, int zeroesPercent, int zeroesNoHolePercent, Events events) {

    /**
     * Control events per run, scheduled among the operations.
     *
     * @param reloads table reloads (suspend, load the same table, resume)
     * @param snapshots thin snapshots of a driven thin device, each created then deleted
     * @param crashes crashes with a restart from what was flushed
     */
    public record Events(int reloads, int snapshots, int crashes) {
        /** No events. */
        public static final Events NONE = new Events(0, 0, 0);
        /** Events of one kind per run at most. */
        public static final int PER_KIND_MAX = 64;

        public Events {
            check(reloads >= 0 && reloads <= PER_KIND_MAX && snapshots >= 0 && snapshots <= PER_KIND_MAX
                    && crashes >= 0 && crashes <= PER_KIND_MAX, "events", "reload:" + reloads + ",snap:" + snapshots
                    + ",crash:" + crashes + " (each 0.." + PER_KIND_MAX + ")");
        }

        /** Whether there are none. */
        public boolean isEmpty() {
            return reloads + snapshots + crashes == 0;
        }

        /** The spec form, {@code none} or {@code reload:N,snap:N,crash:N} (kinds with 0 left out). */
        @Override
        public String toString() {
            if (isEmpty()) {
                return "none";
            }
            List<String> parts = new ArrayList<>();
            if (reloads > 0) {
                parts.add("reload:" + reloads);
            }
            if (snapshots > 0) {
                parts.add("snap:" + snapshots);
            }
            if (crashes > 0) {
                parts.add("crash:" + crashes);
            }
            return String.join(",", parts);
        }
    }

    /** A spec of reads, writes and flushes only, without events. */
    public WorkloadSpec(int tasks, int opsPerTask, int writePercent, int readPercent, int flushPercent,
            int sizeMinBytes, int sizeMaxBytes, long regionStartBytes, long regionEndBytes, int flushEvery,
            boolean pressure, int sparePages) {
        this(tasks, opsPerTask, writePercent, readPercent, flushPercent, sizeMinBytes, sizeMaxBytes, regionStartBytes,
                regionEndBytes, flushEvery, pressure, sparePages, 0, 0, 0, 0, Events.NONE);
    }

    /** Upper bounds on the parameters. */
    public static final int TASKS_MAX = 64;
    public static final int OPS_MAX = 100_000;
    public static final int SIZE_MAX_BYTES = 1 << 20;
    /** The largest region: the reference model holds a copy of it. */
    public static final long REGION_MAX_BYTES = 256L << 20;
    /** The slice each task owns is aligned to this. */
    public static final int SLICE_ALIGN_BYTES = Page.SIZE;
    /** The longest workload file read. */
    static final int FILE_LINES_MAX = 200;

    /** The workload used when none is given: three tasks, mostly writes and reads, under pressure. */
    public static final String DEFAULT_TEXT = "tasks=3,ops=8,mix=write:60,read:30,flush:10,size=4k-64k,region=0-1m,flushEvery=4";

    /** Checks every parameter; messages name the key and the value. */
    public WorkloadSpec {
        check(tasks >= 1 && tasks <= TASKS_MAX, "tasks", tasks + " (1.." + TASKS_MAX + ")");
        check(opsPerTask >= 1 && opsPerTask <= OPS_MAX, "ops", opsPerTask + " (1.." + OPS_MAX + ")");
        check(writePercent >= 0 && readPercent >= 0 && flushPercent >= 0 && fuaPercent >= 0 && discardPercent >= 0
                && zeroesPercent >= 0 && zeroesNoHolePercent >= 0, "mix", mixText(writePercent, readPercent, flushPercent,
                fuaPercent, discardPercent, zeroesPercent, zeroesNoHolePercent) + " (no share may be negative)");
        check(writePercent + readPercent + flushPercent + fuaPercent + discardPercent + zeroesPercent
                + zeroesNoHolePercent == 100, "mix", mixText(writePercent, readPercent, flushPercent, fuaPercent,
                discardPercent, zeroesPercent, zeroesNoHolePercent) + " (must add up to 100)");
        check(events != null, "events", "null");
        check(sizeMinBytes >= Bio.SECTOR_SIZE && sizeMinBytes % Bio.SECTOR_SIZE == 0, "size",
                sizeMinBytes + " (a positive multiple of " + Bio.SECTOR_SIZE + ")");
        check(sizeMaxBytes >= sizeMinBytes && sizeMaxBytes <= SIZE_MAX_BYTES && sizeMaxBytes % Bio.SECTOR_SIZE == 0,
                "size", sizeMinBytes + "-" + sizeMaxBytes + " (MIN <= MAX <= " + SIZE_MAX_BYTES + ", multiples of 512)");
        check(regionStartBytes >= 0 && regionStartBytes % SLICE_ALIGN_BYTES == 0 && regionEndBytes > regionStartBytes,
                "region", regionStartBytes + "-" + regionEndBytes + " (START aligned to 4k, END > START)");
        check(regionEndBytes - regionStartBytes <= REGION_MAX_BYTES, "region", regionStartBytes + "-" + regionEndBytes
                + " (at most " + REGION_MAX_BYTES + " bytes: the reference model keeps the region on the heap)");
        long slice = (regionEndBytes - regionStartBytes) / tasks / SLICE_ALIGN_BYTES * SLICE_ALIGN_BYTES;
        check(slice >= sizeMaxBytes, "region", regionStartBytes + "-" + regionEndBytes + ": a slice of " + slice
                + " bytes per task is smaller than the largest operation " + sizeMaxBytes);
        check(flushEvery >= 0 && flushEvery <= OPS_MAX, "flushEvery", Integer.toString(flushEvery));
        check(sparePages >= 0, "sparePages", Integer.toString(sparePages));
    }

    /** The mix as spec text: write, read and flush always, the other operations when not 0. */
    private static String mixText(int write, int read, int flush, int fua, int discard, int zeroes, int zeroesNoHole) {
        StringBuilder sb = new StringBuilder("write:" + write + ",read:" + read + ",flush:" + flush);
        int[] more = {fua, discard, zeroes, zeroesNoHole};
        for (int i = 0; i < more.length; i++) {
            if (more[i] != 0) {
                sb.append(',').append(MIX_EXTRA.get(i)).append(':').append(more[i]);
            }
        }
        return sb.toString();
    }

    /** The operations of the mix beyond write, read and flush, in record order. */
    private static final List<String> MIX_EXTRA = List.of("fua", "discard", "zeroes", "zeroes-nohole");

    private static void check(boolean ok, String key, String value) {
        if (!ok) {
            throw new IllegalArgumentException("workload: bad " + key + " " + value);
        }
    }

    /** The default workload. */
    public static WorkloadSpec defaults() {
        return parse(DEFAULT_TEXT);
    }

    /** Bytes of the region slice each task owns. */
    public long sliceBytes() {
        return (regionEndBytes - regionStartBytes) / tasks / SLICE_ALIGN_BYTES * SLICE_ALIGN_BYTES;
    }

    /** Pages one task needs for its largest operation. */
    public int pagesPerTask() {
        return (sizeMaxBytes + Page.SIZE - 1) / Page.SIZE;
    }

    /**
     * A command-line argument: {@code @FILE}, the path of an existing file, or spec text.
     */
    public static WorkloadSpec fromArgument(String argument) {
        String a = argument.trim();
        if (a.startsWith("@")) {
            return load(Path.of(a.substring(1)));
        }
        if (!a.contains("=") && Files.isRegularFile(Path.of(a))) {
            return load(Path.of(a));
        }
        return parse(a);
    }

    /** Reads a workload file: one {@code key=value} or {@code key: value} a line, {@code #} comments. */
    public static WorkloadSpec load(Path file) {
        List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read workload file " + file, e);
        }
        if (lines.size() > FILE_LINES_MAX) {
            throw new IllegalArgumentException("workload file " + file + ": " + lines.size() + " lines, at most "
                    + FILE_LINES_MAX);
        }
        List<String> entries = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            int hash = line.indexOf('#');
            String text = (hash >= 0 ? line.substring(0, hash) : line).trim();
            if (text.isEmpty()) {
                continue;
            }
            int colon = text.indexOf(':');
            int eq = text.indexOf('=');
            if (eq < 0 && colon < 0) {
                throw new IllegalArgumentException("workload file " + file + " line " + (i + 1) + ": '" + text
                        + "' is not key=value");
            }
            // "key: value" (YAML style) unless an '=' comes first ("mix=write:60,...").
            if (colon >= 0 && (eq < 0 || colon < eq)) {
                text = text.substring(0, colon).trim() + "=" + text.substring(colon + 1).trim();
            }
            entries.add(text);
        }
        try {
            return parse(String.join(",", entries));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("workload file " + file + ": " + e.getMessage(), e);
        }
    }

    /** Parses the one-line form; keys not given keep the defaults of {@link #DEFAULT_TEXT}. */
    public static WorkloadSpec parse(String text) {
        Map<String, String> values = new LinkedHashMap<>();
        values.putAll(split(DEFAULT_TEXT));
        values.put("pressure", "on");
        values.put("sparePages", "0");
        values.put("events", "none");
        if (text != null && !text.isBlank()) {
            Map<String, String> given = split(text);
            for (String key : given.keySet()) {
                if (!values.containsKey(key)) {
                    throw new IllegalArgumentException("workload: unknown key '" + key + "'; known: "
                            + String.join(", ", values.keySet()));
                }
            }
            values.putAll(given);
        }
        int[] mix = parseMix(values.get("mix"));
        long[] size = parseRange("size", values.get("size"));
        long[] region = parseRange("region", values.get("region"));
        if (size[1] > SIZE_MAX_BYTES) {
            throw new IllegalArgumentException("workload: bad size " + values.get("size") + " (at most 1m)");
        }
        String pressure = values.get("pressure").toLowerCase(Locale.ROOT);
        if (!pressure.equals("on") && !pressure.equals("off")) {
            throw new IllegalArgumentException("workload: bad pressure '" + values.get("pressure") + "' (on or off)");
        }
        return new WorkloadSpec(parseInt("tasks", values.get("tasks")), parseInt("ops", values.get("ops")), mix[0], mix[1],
                mix[2], (int) size[0], (int) size[1], region[0], region[1], parseInt("flushEvery", values.get("flushEvery")),
                pressure.equals("on"), parseInt("sparePages", values.get("sparePages")), mix[3], mix[4], mix[5], mix[6],
                parseEvents(values.get("events")));
    }

    /** Splits {@code k=v,...}; a piece without '=' continues the previous value ({@code mix=write:60,read:40}). */
    private static Map<String, String> split(String text) {
        Map<String, String> map = new LinkedHashMap<>();
        String key = null;
        for (String raw : text.split(",")) {
            String piece = raw.trim();
            if (piece.isEmpty()) {
                continue;
            }
            int eq = piece.indexOf('=');
            if (eq < 0) {
                if (key == null) {
                    throw new IllegalArgumentException("workload: '" + piece + "' is not key=value");
                }
                map.put(key, map.get(key) + "," + piece);
                continue;
            }
            key = piece.substring(0, eq).trim();
            map.put(key, piece.substring(eq + 1).trim());
        }
        return map;
    }

    /** The mix: write, read, flush, fua, discard, zeroes, zeroes-nohole; operations not named get 0. */
    private static int[] parseMix(String text) {
        int[] mix = new int[3 + MIX_EXTRA.size()];
        for (String part : text.split(",")) {
            String[] kv = part.trim().split(":");
            if (kv.length != 2) {
                throw new IllegalArgumentException("workload: bad mix entry '" + part + "' (OPERATION:PERCENT)");
            }
            int p = parseInt("mix " + kv[0], kv[1]);
            String op = kv[0].trim();
            switch (op) {
                case "write" -> mix[0] = p;
                case "read" -> mix[1] = p;
                case "flush" -> mix[2] = p;
                default -> {
                    int extra = MIX_EXTRA.indexOf(op);
                    if (extra < 0) {
                        throw new IllegalArgumentException("workload: bad mix operation '" + kv[0]
                                + "' (write, read, flush, " + String.join(", ", MIX_EXTRA) + ")");
                    }
                    mix[3 + extra] = p;
                }
            }
        }
        return mix;
    }

    /** {@code none} or {@code reload:N,snap:N,crash:N} in any order, kinds not named 0. */
    private static Events parseEvents(String text) {
        String t = text.trim();
        if (t.equals("none") || t.isEmpty()) {
            return Events.NONE;
        }
        int[] counts = new int[3];
        for (String part : t.split(",")) {
            String[] kv = part.trim().split(":");
            if (kv.length != 2) {
                throw new IllegalArgumentException("workload: bad events entry '" + part + "' (reload:N, snap:N, crash:N)");
            }
            int n = parseInt("events " + kv[0], kv[1]);
            switch (kv[0].trim()) {
                case "reload" -> counts[0] = n;
                case "snap" -> counts[1] = n;
                case "crash" -> counts[2] = n;
                default -> throw new IllegalArgumentException("workload: bad event '" + kv[0]
                        + "' (reload, snap or crash)");
            }
        }
        return new Events(counts[0], counts[1], counts[2]);
    }

    private static long[] parseRange(String key, String text) {
        int dash = text.indexOf('-');
        long low = parseSize(key, dash < 0 ? text : text.substring(0, dash));
        long high = dash < 0 ? low : parseSize(key, text.substring(dash + 1));
        return new long[] {low, high};
    }

    /** Parses {@code 512}, {@code 4k}, {@code 64KiB}, {@code 1m}, {@code 1MiB}, {@code 1g}. */
    static long parseSize(String key, String text) {
        String s = text.trim().toLowerCase(Locale.ROOT);
        long unit = 1;
        if (s.endsWith("ib")) {
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("b")) {
            s = s.substring(0, s.length() - 1);
        }
        if (s.endsWith("k")) {
            unit = 1L << 10;
        } else if (s.endsWith("m")) {
            unit = 1L << 20;
        } else if (s.endsWith("g")) {
            unit = 1L << 30;
        }
        if (unit != 1) {
            s = s.substring(0, s.length() - 1);
        }
        try {
            long v = Long.parseLong(s.trim());
            if (v < 0 || v > Long.MAX_VALUE / unit) {
                throw new IllegalArgumentException("workload: bad " + key + " '" + text + "'");
            }
            return v * unit;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("workload: bad " + key + " '" + text + "' (a size such as 4k or 1m)");
        }
    }

    private static int parseInt(String key, String text) {
        try {
            return Integer.parseInt(text.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("workload: bad " + key + " '" + text + "' (a number)");
        }
    }

    /** The one-line form, which {@link #parse} reads back to an equal spec. */
    @Override
    public String toString() {
        return "tasks=" + tasks + ",ops=" + opsPerTask + ",mix=" + mixText(writePercent, readPercent, flushPercent,
                fuaPercent, discardPercent, zeroesPercent, zeroesNoHolePercent) + ",size=" + sizeMinBytes + "-" + sizeMaxBytes + ",region=" + regionStartBytes + "-"
                + regionEndBytes + ",flushEvery=" + flushEvery + ",pressure=" + (pressure ? "on" : "off") + ",sparePages="
                + sparePages + (events.isEmpty() ? "" : ",events=" + events);
    }
}
