package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * One workload task's slice of the region and its model of what reads there return, shared by
 * {@link Workload}'s tasks and {@link NbdWorkload}'s clients: where the next operation goes, the
 * pattern a write puts there (a per-write stamp mixed with each word's device offset, so a byte
 * read from the wrong place or the wrong write differs), and which sectors are known (a failed
 * write makes its range unknown until the next successful one).
 */
final class SliceModel {

    /** The model's bytes as little-endian words: a word's bytes least significant first. */
    private static final VarHandle WORDS = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final int WORD = Long.BYTES;

    private final WorkloadSpec spec;
    private final SplittableRandom random;
    /** The slice's first byte on the device. */
    final long start;
    /** What each byte of the slice reads as, where {@link #known}. */
    final byte[] expected;
    /** Per sector of the slice: whether {@link #expected} says what a read returns. */
    final boolean[] known;

    /** The slice of task {@code taskIndex}, drawing its ranges from {@code random}. */
    SliceModel(WorkloadSpec spec, int taskIndex, SplittableRandom random) {
        this.spec = spec;
        this.random = random;
        this.start = spec.regionStartBytes() + taskIndex * spec.sliceBytes();
        this.expected = new byte[Math.toIntExact(spec.sliceBytes())];
        this.known = new boolean[expected.length / Bio.SECTOR_SIZE];
    }

    /** Picks a size and an offset inside the slice, both in whole sectors: {offset, size}. */
    long[] pickRange() {
        int sizeSteps = (spec.sizeMaxBytes() - spec.sizeMinBytes()) / Bio.SECTOR_SIZE;
        int size = spec.sizeMinBytes() + random.nextInt(sizeSteps + 1) * Bio.SECTOR_SIZE;
        long offsetSteps = (expected.length - size) / Bio.SECTOR_SIZE;
        long offset = random.nextLong(offsetSteps + 1) * Bio.SECTOR_SIZE;
        return new long[] {offset, size};
    }

    /**
     * Puts the pattern of a write stamped {@code stamp} into the model over {@code size} bytes at
     * slice offset {@code offset}, a word at a time; the caller sends {@code expected} from
     * {@code offset} as the write's data. Whether it counts is {@link #setKnown}'s, after the write.
     */
    void takePattern(long stamp, long offset, int size) {
        for (int pos = 0; pos < size; pos += WORD) {
            WORDS.set(expected, (int) (offset + pos), pattern(stamp, start + offset + pos));
        }
    }

    /** Marks the sectors of {@code size} bytes at slice offset {@code offset} known or unknown. */
    void setKnown(long offset, int size, boolean isKnown) {
        int first = (int) (offset / Bio.SECTOR_SIZE);
        Arrays.fill(known, first, first + size / Bio.SECTOR_SIZE, isKnown);
    }

    /** Whether the sector at slice offset {@code offset} read as {@code sector} holds the pattern of write {@code stamp}. */
    boolean sectorIsPattern(byte[] sector, long stamp, long offset) {
        for (int pos = 0; pos < sector.length; pos += WORD) {
            if ((long) WORDS.get(sector, pos) != pattern(stamp, start + offset + pos)) {
                return false;
            }
        }
        return true;
    }

    /** The pattern word of a write stamped {@code stamp} at device byte offset {@code deviceOffset}. */
    static long pattern(long stamp, long deviceOffset) {
        long z = stamp + deviceOffset * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
