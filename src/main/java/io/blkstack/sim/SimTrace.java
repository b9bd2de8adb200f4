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
 * kernel's own tracer events. Every event is folded into a 64-bit FNV-1a hash (two runs with the
 * same hash took the same path), the last {@link #RECENT_MAX} are kept for explanations, and all of
 * them can be written as JSON lines.
 *
 * <p>Events must not contain identity hash codes or real times, or the hash would differ between
 * replays. Methods are synchronized only because torn-down tasks may still report while they unwind.
 */
public final class SimTrace implements Tracer, AutoCloseable {

    /** How many recent events an explanation shows. */
    public static final int RECENT_MAX = 30;

    private static final long FNV_OFFSET = 0xcbf29ce484222325L;
    private static final long FNV_PRIME = 0x100000001b3L;

    /** The last events' parts; lines are built only when {@link #recent} asks. */
    private final long[] recentNow = new long[RECENT_MAX];
    private final String[] recentWho = new String[RECENT_MAX];
    private final String[] recentType = new String[RECENT_MAX];
    private final String[] recentDetail = new String[RECENT_MAX];
    private final String[] recentSeparator = new String[RECENT_MAX];
    private final long[] recentNumber = new long[RECENT_MAX];
    /** Scratch for the decimal digits of one number. */
    private final char[] digits = new char[20];
    /**
     * The decimal digits of the last event's time, from {@link #nowDigitsAt}: consecutive events
     * mostly share a virtual time, so {@link #record} spells it once per change, not per event.
     */
    private final char[] nowDigits = new char[20];
    private int nowDigitsAt = nowDigits.length;
    private long nowSpelled = Long.MIN_VALUE;
    private final BufferedWriter json;
    private LongSupplier clock = () -> 0;
    private long hash = FNV_OFFSET;
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
     * Records one event whose detail is {@code detail + separator + number}, the same event as
     * {@code record(who, type, detail + separator + number)} but without building the string: the
     * scheduler records one for every scheduling step.
     */
    public synchronized void record(String who, String type, String detail, String separator, long number) {
        if (frozen) {
            return;
        }
        long now = clock.getAsLong();
        // The hash is FNV-1a over the line "NOW WHO TYPE[ DETAIL]\n", fed piece by piece.
        if (now != nowSpelled) {
            nowDigitsAt = spell(now, nowDigits);
            nowSpelled = now;
        }
        long h = hashDigits(hash, now < 0, nowDigits, nowDigitsAt);
        h = hashChars(hashChars(hashChars(h, " "), who), " ");
        h = hashChars(h, type);
        if (separator != null || !detail.isEmpty()) {
            h = hashChars(hashChars(h, " "), detail);
            if (separator != null) {
                h = hashNumber(hashChars(h, separator), number);
            }
        }
        h ^= '\n';
        h *= FNV_PRIME;
        hash = h;
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

    private static long hashChars(long hash, String s) {
        long h = hash;
        for (int i = 0; i < s.length(); i++) {
            h ^= s.charAt(i);
            h *= FNV_PRIME;
        }
        return h;
    }

    /** Folds the decimal form of {@code value} into {@code hash}, as {@code Long.toString} spells it. */
    private long hashNumber(long hash, long value) {
        return hashDigits(hash, value < 0, digits, spell(value, digits));
    }

    /** Puts the decimal digits of {@code value} (without a sign) at the end of {@code out}; returns where they start. */
    private static int spell(long value, char[] out) {
        int at = out.length;
        long rest = value < 0 ? value : -value; // negative, so Long.MIN_VALUE works too
        do {
            out[--at] = (char) ('0' - rest % 10);
            rest /= 10;
        } while (rest != 0);
        return at;
    }

    /** Folds a minus sign if {@code negative}, then the digits of {@code digits} from {@code at}, into {@code hash}. */
    private static long hashDigits(long hash, boolean negative, char[] digits, int at) {
        long h = hash;
        if (negative) {
            h ^= '-';
            h *= FNV_PRIME;
        }
        for (int i = at; i < digits.length; i++) {
            h ^= digits[i];
            h *= FNV_PRIME;
        }
        return h;
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
