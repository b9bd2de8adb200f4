package io.blkstack.dm.thin;

import io.blkstack.bio.BioEndIo;

/**
 * Per-bio state of a thin clone that went through the pool's worker (the front pad of dm-thin's
 * {@code dm_thin_endio_hook}): which device and virtual block it is for, the data blocks involved
 * in a provisioning or copy-on-write, and the mapped device's completion callback, which the pool
 * replaces while the data write is in flight so that the mapping is inserted before the clone
 * completes.
 */
public final class ThinBioState {

    ThinDevice device;
    long vblock;
    /** The block the write goes to and the mapping will point at; -1 when nothing is provisioned. */
    long newBlock = -1;
    /** The mapping before (a shared block being broken), or -1 for a hole. */
    long oldBlock = -1;
    /** The mapped device's callback, saved while the pool's own one is installed. */
    BioEndIo savedEndIo;
    /** The pool's in-flight generation this clone entered ({@link Pool#enterIo}), or -1. */
    long ioGeneration = -1;

    private ThinBioState() {
    }

    /** A fresh state, once per bio object (the thin target's per-bio data). */
    public static ThinBioState create() {
        return new ThinBioState();
    }

    /** Readies the state for a new clone. */
    public void reset(ThinDevice dev, long block) {
        this.device = dev;
        this.vblock = block;
        this.newBlock = -1;
        this.oldBlock = -1;
        this.savedEndIo = null;
        this.ioGeneration = -1;
    }
}
