package io.blkstack.kernel;

import java.util.List;

/**
 * One mechanism whose old design (from a seed in {@code shared/seeds/}) can be switched back on.
 *
 * <p>Each switch has a fixed default, the value {@code legacy}, and for some a second fixed
 * variant. {@code fixed} is accepted as a name for the default.
 */
public enum PolicySwitch {
    /** Seed 000/001: depth-first two-list submit loop, or the pre-2017 single FIFO list. */
    SUBMIT_ORDER("submit-order", "depth-first", "legacy"),
    /** Seed 000: a bio set punts the current task's pending bios to its rescuer before blocking. */
    BIOSET_RESCUER("bioset-rescuer", "on", "legacy"),
    /** Seed 001: dm splits off the front fragment and resubmits the remainder, or maps all in one call. */
    DM_SPLIT("dm-split", "front", "legacy"),
    /** Seed 002: bounce from a private pool, or have the previous bio in flight first, or allocate all then bounce. */
    MAP_SG("map-sg", "private-pool", "in-flight", "legacy"),
    /** Seed 003: the bufio shrinker kicks a workqueue, or writes and waits inline. */
    BUFIO_SHRINKER("bufio-shrinker", "workqueue", "legacy"),
    /** Seed 004: offload B-tree splits only when holding a group with reserved space, or always. */
    SPLIT_OFFLOAD("split-offload", "reserved-only", "legacy"),
    /**
     * The edges issue's over-commit: the NBD payload budget is what the arena has left once the
     * stack is built (admission), or, as before the admission work, three quarters of the whole
     * arena above its min watermark whatever the stack keeps (a checker switch, not a serve option).
     */
    NBD_BUDGET("nbd-budget", "admitted", "legacy"),
    /**
     * Issue 16's reads by reference: the NBD server offers each READ to be completed by file
     * references and sends them with sendfile ({@code on}), offers only READs of at least 64 KiB
     * ({@code large}: for small ones the copy costs less than the send call and the hold), or
     * always reads into pages and sends those ({@code legacy}: references off, for comparison and
     * tests).
     */
    READ_REFERENCES("read-references", "on", "large", "legacy"),
    /**
     * Issue 16's direct issue (blk-mq's {@code blk_mq_try_issue_directly}): a bottom device whose
     * queue is idle lets the submitting task serve a plain READ or WRITE itself instead of waking
     * an I/O task ({@code on}), only READs ({@code reads}) or only WRITEs ({@code writes}); or
     * every request is queued for the device's I/O tasks ({@code legacy}).
     */
    DIRECT_ISSUE("direct-issue", "on", "reads", "writes", "legacy"),
    /**
     * Issue 16's noisy neighbours: an NBD connection's reader sends the replies that are ready
     * before it blocks for the next request and right after each READ of 64 KiB or more, with a
     * send that never waits, and hands what the socket did not take to the writer, whose wake-up
     * it holds back meanwhile ({@code on}); the same only before it blocks ({@code before-read});
     * or the writer sends every reply ({@code legacy}).
     */
    INLINE_REPLY("inline-reply", "on", "before-read", "legacy");

    /** The value every switch accepts for its old design. */
    public static final String LEGACY = "legacy";

    private final String key;
    private final List<String> choices;

    PolicySwitch(String key, String... values) {
        this.key = key;
        this.choices = List.of(values);
    }

    /** The name users type, such as {@code submit-order}. */
    public String key() {
        return key;
    }

    /** The accepted values, default first. */
    public List<String> choices() {
        return choices;
    }

    /** The fixed design's value. */
    public String defaultValue() {
        return choices.get(0);
    }

    /** Looks a switch up by its user-facing name. */
    public static PolicySwitch byKey(String key) {
        for (PolicySwitch s : values()) {
            if (s.key.equals(key)) {
                return s;
            }
        }
        throw new IllegalArgumentException("unknown policy switch '" + key + "'; known: " + knownKeys());
    }

    static String knownKeys() {
        StringBuilder sb = new StringBuilder();
        for (PolicySwitch s : values()) {
            if (sb.length() > 0) {
                sb.append(", ");
            }
            sb.append(s.key);
        }
        return sb.toString();
    }
}
