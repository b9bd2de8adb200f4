package io.blkstack.dm.mirror;

import io.blkstack.block.BlockDevice;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The legs of one mirror: each leg's device, its name and offset from the table line, and its
 * health. A leg is <b>healthy</b> (serves reads and writes), <b>failed</b> (an error was seen:
 * no I/O goes to it, {@code D} in the status) or <b>recovering</b> (a resync is copying onto it:
 * it receives writes but serves no reads). The states are atomics, so completions read and set
 * them without a lock (rule 2 of DESIGN.md section 1).
 */
final class MirrorLegs {

    private static final int HEALTHY = 0;
    private static final int FAILED = 1;
    private static final int RECOVERING = 2;

    private final BlockDevice[] devices;
    private final String[] names;
    private final long[] offsets;
    private final AtomicIntegerArray state;
    private final AtomicLong errors = new AtomicLong();

    /** The legs as the table line names them, all healthy. */
    MirrorLegs(BlockDevice[] devices, String[] names, long[] offsets) {
        if (devices.length != names.length || devices.length != offsets.length) {
            throw new IllegalArgumentException("mirror: " + devices.length + " devices, " + names.length + " names, "
                    + offsets.length + " offsets");
        }
        this.devices = devices.clone();
        this.names = names.clone();
        this.offsets = offsets.clone();
        this.state = new AtomicIntegerArray(devices.length);
    }

    /** How many legs. */
    int count() {
        return devices.length;
    }

    /** Leg {@code leg}'s device. */
    BlockDevice device(int leg) {
        return devices[leg];
    }

    /** Leg {@code leg}'s device name, as the table line gives it. */
    String name(int leg) {
        return names[leg];
    }

    /** Leg {@code leg}'s start sector on its device. */
    long offset(int leg) {
        return offsets[leg];
    }

    /** Every leg's device, in table order. */
    List<BlockDevice> devices() {
        return new ArrayList<>(List.of(devices));
    }

    boolean isHealthy(int leg) {
        return state.get(leg) == HEALTHY;
    }

    boolean isFailed(int leg) {
        return state.get(leg) == FAILED;
    }

    boolean isRecovering(int leg) {
        return state.get(leg) == RECOVERING;
    }

    /** The first healthy leg, or -1. */
    int firstHealthy() {
        return firstHealthyExcept(-1);
    }

    /** The first healthy leg other than {@code leg}, or -1. */
    int firstHealthyExcept(int leg) {
        for (int i = 0; i < devices.length; i++) {
            if (i != leg && state.get(i) == HEALTHY) {
                return i;
            }
        }
        return -1;
    }

    /** The first failed leg, or -1. */
    int firstFailed() {
        for (int i = 0; i < devices.length; i++) {
            if (state.get(i) == FAILED) {
                return i;
            }
        }
        return -1;
    }

    /** Whether some leg is failed (a recovering leg receives writes, so it does not count). */
    boolean anyFailed() {
        return firstFailed() >= 0;
    }

    /** Whether a leg other than {@code leg} is failed or recovering. */
    boolean anyOtherDown(int leg) {
        for (int i = 0; i < devices.length; i++) {
            if (i != leg && state.get(i) != HEALTHY) {
                return true;
            }
        }
        return false;
    }

    /** Marks a leg failed after an error (a recovering leg too: its resync then stops). */
    void markFailed(int leg) {
        errors.incrementAndGet();
        state.set(leg, FAILED);
    }

    /** Marks a leg recovering: a resync is about to copy onto it. */
    void markRecovering(int leg) {
        state.set(leg, RECOVERING);
    }

    /** Marks a recovering leg healthy; false (and no change) if it failed meanwhile. */
    boolean markHealthyIfRecovering(int leg) {
        if (state.get(leg) != RECOVERING) {
            return false;
        }
        state.set(leg, HEALTHY);
        return true;
    }

    /** Leg errors seen since creation. */
    long errors() {
        return errors.get();
    }

    /** One character per leg: {@code A} healthy, {@code D} failed or recovering (dm-raid1's health chars). */
    String healthChars() {
        StringBuilder sb = new StringBuilder(devices.length);
        for (int i = 0; i < devices.length; i++) {
            sb.append(state.get(i) == HEALTHY ? 'A' : 'D');
        }
        return sb.toString();
    }
}
