package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Kernel;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The reference bottom device of the bio and block tests: a plain byte array, completing every bio
 * synchronously on the submitting task. It first splits to its own limits, records every bio it
 * handles ({@code name:sector+count}), and fails a bio that touches an injected bad sector.
 */
public final class RefMemoryDevice extends BlockDevice {

    private final byte[] data;
    private final Map<Long, BioStatus> badSectors = new HashMap<>();
    private final List<String> log;
    private int handled;

    /** A device of {@code capacitySectors} whose handled bios are appended to {@code log} (may be null). */
    public RefMemoryDevice(Kernel kernel, String name, long capacitySectors, QueueLimits limits, List<String> log) {
        super(kernel, name, capacitySectors, limits);
        this.data = new byte[Math.toIntExact(capacitySectors << Bio.SECTOR_SHIFT)];
        this.log = log == null ? new ArrayList<>() : log;
    }

    /** Makes every bio touching {@code sector} fail with {@code status}. */
    public void fail(long sector, BioStatus status) {
        badSectors.put(sector, status);
    }

    /** The device's bytes (the test's view of what was written). */
    public byte[] data() {
        return data;
    }

    /** How many bios reached the device (after its own split to limits). */
    public int handled() {
        return handled;
    }

    public List<String> log() {
        return log;
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        handled++;
        log.add(name() + ":" + bio.sector() + "+" + bio.sectorCount());
        for (long s = bio.sector(); s < bio.endSector(); s++) {
            BioStatus bad = badSectors.get(s);
            if (bad != null) {
                bio.setStatus(bad);
                bio.endio();
                return;
            }
        }
        int offset = Math.toIntExact(bio.sector() << Bio.SECTOR_SHIFT);
        switch (bio.op()) {
            case READ -> bio.copyFrom(data, offset);
            case WRITE -> bio.copyTo(data, offset);
            case DISCARD, WRITE_ZEROES -> java.util.Arrays.fill(data, offset, offset + bio.sizeBytes(), (byte) 0);
            case FLUSH -> { }
        }
        bio.endio();
    }
}
