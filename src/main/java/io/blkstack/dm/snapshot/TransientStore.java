package io.blkstack.dm.snapshot;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;

/**
 * The {@code N} store (dm's transient store): exceptions live only in memory; every COW chunk holds
 * data and nothing survives a close.
 */
final class TransientStore extends ExceptionStore {

    private long nextFree;

    TransientStore(BlockDevice cow, int chunkSectors) {
        super(cow, chunkSectors);
    }

    @Override
    long allocate() {
        if (nextFree >= cowChunks) {
            return -1;
        }
        return nextFree++;
    }

    @Override
    int allocatableRun(int maxChunks) {
        return (int) Math.min(maxChunks, cowChunks - nextFree);
    }

    @Override
    BioStatus commit(PendingException[] batch, int count) {
        return BioStatus.OK;
    }

    @Override
    BioStatus persistInvalid() {
        return BioStatus.OK;
    }

    @Override
    boolean validOnOpen() {
        return true;
    }

    @Override
    long sectorsAllocated() {
        return nextFree << chunkShift;
    }

    @Override
    long metadataSectors() {
        return 0;
    }
}
