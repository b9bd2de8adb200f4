package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * One workload task's slice of the region and its model of what reads there return, shared by
 * {@link Workload}'s tasks and {@link NbdWorkload}'s clients: where the next operation goes, the
 * pattern a write puts there (a per-write stamp mixed with each word's device offset, so a byte
 * read from the wrong place or the wrong write differs), and which sectors are known (a failed
 * write makes its range unknown until the next successful one).
 *
 * <p>A sector's data is a function of the stamp of the write that put it there, so the model keeps
 * one stamp per sector rather than the bytes: stamp {@value #ZEROS} stands for zeros (a
 * write-zeroes, or the sector before any write). A run builds a model per task, so this keeps a
 * run's set-up and a flush's snapshot of the model to a word per sector.
 */
final class SliceModel {

    /** The stamp of a sector that reads as zeros. */
    static final long ZEROS = 0;

    /** Bytes as little-endian words: a word's bytes least significant first. */
    private static final VarHandle WORDS = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final int WORD = Long.BYTES;

    private final WorkloadSpec spec;
    private final SplittableRandom random;
    /** The slice's first byte on the device. */
    final long start;
    /** The slice's length in bytes. */
    final int length;
    /** Per sector of the slice: the stamp of what it reads as, where {@link #known}. */
    final long[] stamps;
    /** Per sector of the slice: whether {@link #stamps} says what a read returns. */
    final boolean[] known;
    /** Where {@link #fill} builds the data it puts. */
    private final byte[] scratch = new byte[4096];

    /** The slice of task {@code taskIndex}, drawing its ranges from {@code random}. */
    SliceModel(WorkloadSpec spec, int taskIndex, SplittableRandom random) {
        this.spec = spec;
        this.random = random;
        this.start = spec.regionStartBytes() + taskIndex * spec.sliceBytes();
        this.length = Math.toIntExact(spec.sliceBytes());
        this.stamps = new long[length / Bio.SECTOR_SIZE];
        this.known = new boolean[stamps.length];
    }

    /** Picks a size and an offset inside the slice, both in whole sectors: {offset, size}. */
    long[] pickRange() {
        int sizeSteps = (spec.sizeMaxBytes() - spec.sizeMinBytes()) / Bio.SECTOR_SIZE;
        int size = spec.sizeMinBytes() + random.nextInt(sizeSteps + 1) * Bio.SECTOR_SIZE;
        long offsetSteps = (length - size) / Bio.SECTOR_SIZE;
        long offset = random.nextLong(offsetSteps + 1) * Bio.SECTOR_SIZE;
        return new long[] {offset, size};
    }

    /**
     * Puts stamp {@code stamp} (a write's, or {@link #ZEROS}) over {@code size} bytes at slice
     * offset {@code offset}; {@link #fill} gives the write's data. Whether it counts is
     * {@link #setKnown}'s, after the write.
     */
    void stamp(long stamp, long offset, int size) {
        int first = (int) (offset / Bio.SECTOR_SIZE);
        Arrays.fill(stamps, first, first + size / Bio.SECTOR_SIZE, stamp);
    }

    /**
     * Puts what the model says of {@code size} bytes at slice offset {@code offset} (both whole
     * sectors) into {@code out} at {@code outPos}: a sector at a time into {@link #scratch}, then
     * in bulk.
     */
    void fill(ByteBuffer out, int outPos, long offset, int size) {
        for (int done = 0; done < size; ) {
            int n = Math.min(scratch.length, size - done);
            for (int pos = 0; pos < n; pos += Bio.SECTOR_SIZE) {
                long sectorOffset = offset + done + pos;
                long stamp = stamps[(int) (sectorOffset / Bio.SECTOR_SIZE)];
                for (int w = 0; w < Bio.SECTOR_SIZE; w += WORD) {
                    WORDS.set(scratch, pos + w, word(stamp, sectorOffset + w));
                }
            }
            out.put(outPos + done, scratch, 0, n);
            done += n;
        }
    }

    /** The word that stamp {@code stamp} puts at slice offset {@code offset} (a multiple of a word). */
    private long word(long stamp, long offset) {
        return stamp == ZEROS ? 0 : pattern(stamp, start + offset);
    }

    /** The byte the model says is at slice offset {@code offset}. */
    byte expectedByte(long offset) {
        long word = word(stamps[(int) (offset / Bio.SECTOR_SIZE)], offset & -WORD);
        return (byte) (word >>> (8 * (offset & (WORD - 1))));
    }

    /** Marks the sectors of {@code size} bytes at slice offset {@code offset} known or unknown. */
    void setKnown(long offset, int size, boolean isKnown) {
        int first = (int) (offset / Bio.SECTOR_SIZE);
        Arrays.fill(known, first, first + size / Bio.SECTOR_SIZE, isKnown);
    }

    /**
     * The index of the first byte of {@code sector}, read at slice offset {@code offset}, that
     * differs from what the model says, or -1 if none does.
     */
    int mismatch(byte[] sector, long offset) {
        return mismatch(sector, stamps[(int) (offset / Bio.SECTOR_SIZE)], offset);
    }

    /**
     * The index of the first byte of {@code sector}, read at slice offset {@code offset}, that
     * differs from the data of stamp {@code stamp} there, or -1 if none does.
     */
    int mismatch(byte[] sector, long stamp, long offset) {
        for (int pos = 0; pos < sector.length; pos += WORD) {
            long differs = (long) WORDS.get(sector, pos) ^ word(stamp, offset + pos);
            if (differs != 0) {
                return pos + Long.numberOfTrailingZeros(differs) / 8;
            }
        }
        return -1;
    }

    /**
     * The pattern word of a write stamped {@code stamp} at device byte offset {@code deviceOffset}:
     * a bijective mix of {@code stamp + deviceOffset * golden ratio}, so another offset or another
     * stamp gives another word.
     */
    private static long pattern(long stamp, long deviceOffset) {
        long z = stamp + deviceOffset * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 32)) * 0xD6E8FEB86659FD93L;
        return z ^ (z >>> 32);
    }
}
