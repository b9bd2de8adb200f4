package io.blkstack.remote;

/**
 * What a remote device knows about the allocation of its export ({@code base:allocation}), in
 * regions of a fixed power-of-two size: unknown, data, or hole. It answers
 * {@link RemoteDevice#allocatedExtent} without asking the server, so the question never blocks;
 * an unknown region answers "data" (always correct in NBD: data may read as anything, including
 * zeros) and is noted as a miss, which the device answers with one bounded {@code BLOCK_STATUS}
 * query in the background.
 *
 * <p>Bounded: at most {@link #REGIONS_MAX} regions (one byte each), the region size grows with
 * the device. A region is a hole only if the server said so for all of it. Writes of any kind make
 * the regions they touch unknown again when submitted, and every write's submission or completion
 * raises an epoch; a reply is applied only if the epoch did not move since its query was sent with
 * no write in flight, so a reply can never describe data older than a write it raced with. Not
 * thread-safe: the device's lock guards it.
 */
final class AllocationMap {

    /** Most regions: 64 Ki bytes of state. */
    static final int REGIONS_MAX = 1 << 16;
    /** Smallest region: 64 KiB. */
    static final int REGION_SHIFT_MIN = 16;

    private static final byte UNKNOWN = 0;
    private static final byte DATA = 1;
    private static final byte HOLE = 2;

    private final long capacityBytes;
    private final int shift;
    private final byte[] states;
    private long epoch;
    private long missOffset = -1;

    // The reply being applied.
    private long applyPos;
    private long applyRegion;
    private boolean applyAllHole;
    private boolean applyStartKnown;

    AllocationMap(long capacityBytes) {
        if (capacityBytes <= 0) {
            throw new IllegalArgumentException("allocation map of " + capacityBytes + " bytes");
        }
        int s = REGION_SHIFT_MIN;
        while ((capacityBytes + (1L << s) - 1) >>> s > REGIONS_MAX) {
            s++;
        }
        this.capacityBytes = capacityBytes;
        this.shift = s;
        this.states = new byte[(int) ((capacityBytes + (1L << s) - 1) >>> s)];
    }

    /** Bytes per region. */
    long regionBytes() {
        return 1L << shift;
    }

    long epoch() {
        return epoch;
    }

    /** A write of any kind to {@code [offset, offset + length)} is submitted or completed. */
    void invalidate(long offset, long length) {
        epoch++;
        if (length <= 0) {
            return;
        }
        long first = offset >>> shift;
        long last = Math.min(states.length - 1, (offset + length - 1) >>> shift);
        for (long r = first; r <= last; r++) {
            states[(int) r] = UNKNOWN;
        }
    }

    /** A write completed: only the epoch moves (its submission already made the range unknown). */
    void writeCompleted() {
        epoch++;
    }

    /**
     * The run of same-kind bytes at {@code offset}, at most {@code maxBytes}: positive for data
     * (or unknown), negative for hole. Notes the first unknown offset as a miss.
     */
    long extent(long offset, long maxBytes) {
        long end = Math.min(capacityBytes, offset + maxBytes);
        long region = offset >>> shift;
        boolean hole = states[(int) region] == HOLE;
        long at = offset;
        while (at < end) {
            byte state = states[(int) (at >>> shift)];
            if ((state == HOLE) != hole) {
                break;
            }
            if (state == UNKNOWN && missOffset < 0) {
                missOffset = at >>> shift << shift;
            }
            at = Math.min(end, ((at >>> shift) + 1) << shift);
        }
        long run = at - offset;
        return hole ? -run : run;
    }

    /** The first unknown offset a query should cover, or -1; clears it. */
    long takeMiss() {
        long m = missOffset;
        missOffset = -1;
        return m;
    }

    /** Starts applying a reply to a query at {@code offset}. */
    void beginApply(long offset) {
        applyPos = offset;
        applyRegion = offset >>> shift;
        applyAllHole = true;
        applyStartKnown = (offset & (regionBytes() - 1)) == 0;
    }

    /** Applies the next extent of the reply: {@code length} bytes of hole or data. */
    void applyExtent(long length, boolean hole) {
        long end = Math.min(capacityBytes, applyPos + length);
        while (applyPos < end) {
            long regionEnd = Math.min(capacityBytes, (applyRegion + 1) << shift);
            if (!hole) {
                applyAllHole = false;
            }
            applyPos = Math.min(end, regionEnd);
            if (applyPos == regionEnd) {
                if (!applyAllHole) {
                    states[(int) applyRegion] = DATA;
                } else if (applyStartKnown) {
                    states[(int) applyRegion] = HOLE;
                }
                applyRegion++;
                applyAllHole = true;
                applyStartKnown = true;
            }
        }
    }
}
