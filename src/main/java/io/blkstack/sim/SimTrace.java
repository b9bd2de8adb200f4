package io.blkstack.sim;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.Tracer;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * The event stream of one simulated run: task switches, timer fires, fault decisions and the
 * kernel's own tracer events. Every event is folded into a 64-bit hash, part by part (two runs
 * with the same hash took the same path), the last {@link #RECENT_MAX} are kept for explanations, and all of
 * them can be written as JSON lines.
 *
 * <p>Events must not contain identity hash codes or real times, or the hash would differ between
 * replays. Methods are synchronized only because torn-down tasks may still report while they unwind.
 */
public final class SimTrace implements Tracer, AutoCloseable {

    /** How many recent events an explanation shows. */
    public static final int RECENT_MAX = 30;

    private static final long HASH_START = 0xcbf29ce484222325L;
    /** Odd constants of the fold's two multiplications (those of SplitMix64's finalizer). */
    private static final long MIX_1 = 0xbf58476d1ce4e5b9L;
    private static final long MIX_2 = 0x94d049bb133111ebL;
    /**
     * Folded after an event's parts, one per form of event (with a detail, with none, with a
     * detail and a number), so that events' boundaries and forms count.
     */
    private static final long EVENT_END = 0xe000_0000_0000_0001L;
    private static final long EVENT_END_BARE = 0xe000_0000_0000_0002L;
    private static final long EVENT_END_NUMBERED = 0xe000_0000_0000_0003L;

    /** The last events' parts; lines are built only when {@link #recent} asks. */
    private final long[] recentNow = new long[RECENT_MAX];
    private final String[] recentWho = new String[RECENT_MAX];
    private final String[] recentType = new String[RECENT_MAX];
    private final String[] recentDetail = new String[RECENT_MAX];
    private final String[] recentSeparator = new String[RECENT_MAX];
    private final long[] recentNumber = new long[RECENT_MAX];
    private final BufferedWriter json;
    private LongSupplier clock = () -> 0;
    private long hash = HASH_START;
    private long count;
    private boolean frozen;

    /** A trace that writes JSON lines to {@code jsonFile}, or only hashes if it is null. */
    public SimTrace(Path jsonFile) {
        try {
            this.json = jsonFile == null ? null : Files.newBufferedWriter(jsonFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write trace " + jsonFile, e);
        }
    }

    /** Sets the virtual clock events are stamped with. */
    void clock(LongSupplier value) {
        this.clock = value;
    }

    @Override
    public boolean enabled() {
        return true;
    }

    @Override
    public void event(Task task, String type, String detail) {
        record(task == null ? "-" : task.toString(), type, detail);
    }

    /** Records one event of {@code who} (a task name or "sim"). */
    public synchronized void record(String who, String type, String detail) {
        record(who, type, detail == null ? "" : detail, null, 0);
    }

    /**
     * Records one event whose detail is {@code detail + separator + number}, written to JSON as
     * {@code record(who, type, detail + separator + number)} would be but without building the
     * string: the scheduler records one for every scheduling step.
     */
    public synchronized void record(String who, String type, String detail, String separator, long number) {
        if (frozen) {
            return;
        }
        long now = clock.getAsLong();
        // Each part is folded whole: a number as it is, a string four characters per round (see
        // foldString); the end marker says which of the event's forms it was.
        long h = fold(hash, now);
        h = foldString(h, who);
        h = foldString(h, type);
        if (separator != null) {
            h = fold(foldString(foldString(h, detail), separator), number);
        } else if (!detail.isEmpty()) {
            h = foldString(h, detail);
        }
        hash = fold(h, separator != null ? EVENT_END_NUMBERED : detail.isEmpty() ? EVENT_END_BARE : EVENT_END);
        int slot = (int) (count % RECENT_MAX);
        recentNow[slot] = now;
        recentWho[slot] = who;
        recentType[slot] = type;
        recentDetail[slot] = detail;
        recentSeparator[slot] = separator;
        recentNumber[slot] = number;
        count++;
        if (json != null) {
            writeJson(now, who, type, separator == null ? detail : detail + separator + number);
        }
    }

    /**
     * Folds a string: its length, then its characters four to a round (64 bits each), so that
     * strings differ in the hash wherever they differ in a character. (A string's own 32-bit hash
     * code would be cheaper, but distinct strings share one too easily: "Aa" and "BB".)
     */
    private static long foldString(long hash, String s) {
        int n = s.length();
        long h = fold(hash, n);
        int i = 0;
        for (; i + 4 <= n; i += 4) {
            h = fold(h, s.charAt(i) | (long) s.charAt(i + 1) << 16 | (long) s.charAt(i + 2) << 32
                    | (long) s.charAt(i + 3) << 48);
        }
        if (i < n) {
            long rest = 0;
            for (int shift = 0; i < n; i++, shift += 16) {
                rest |= (long) s.charAt(i) << shift;
            }
            h = fold(h, rest);
        }
        return h;
    }

    /** Folds one part into the hash: a multiply-xorshift round, so that order and every bit count. */
    private static long fold(long hash, long part) {
        long h = (hash ^ part) * MIX_1;
        h ^= h >>> 29;
        h *= MIX_2;
        return h ^ (h >>> 32);
    }

    private void writeJson(long now, String who, String type, String detail) {
        try {
            json.write("{\"seq\":" + (count - 1) + ",\"t\":" + now + ",\"task\":" + quote(who) + ",\"type\":" + quote(type)
                    + ",\"detail\":" + quote(detail == null ? "" : detail) + "}\n");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write trace event", e);
        }
    }

    private static String quote(String s) {
        StringBuilder sb = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }

    /** The hash of every event so far. */
    public synchronized long hash() {
        return hash;
    }

    /** How many events were recorded. */
    public synchronized long count() {
        return count;
    }

    /** The last events, oldest first. */
    public synchronized List<String> recent() {
        List<String> list = new ArrayList<>(RECENT_MAX);
        long first = Math.max(0, count - RECENT_MAX);
        for (long i = first; i < count; i++) {
            int slot = (int) (i % RECENT_MAX);
            String detail = recentSeparator[slot] == null ? recentDetail[slot]
                    : recentDetail[slot] + recentSeparator[slot] + recentNumber[slot];
            list.add(recentNow[slot] + " " + recentWho[slot] + " " + recentType[slot] + (detail.isEmpty() ? "" : " " + detail));
        }
        return list;
    }

    /** Stops recording: events of tasks unwinding after the end of a run are not part of it. */
    public synchronized void freeze() {
        frozen = true;
    }

    @Override
    public synchronized void close() {
        frozen = true;
        if (json != null) {
            try {
                json.close();
            } catch (IOException e) {
                throw new UncheckedIOException("cannot close trace", e);
            }
        }
    }
}
