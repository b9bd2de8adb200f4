package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;

/**
 * A target whose clones can wait on a pending exception: when the exception is committed the
 * snapshot's workqueue hands each waiting clone back to the target that mapped it (found through
 * the clone's {@link io.blkstack.dm.TargetIo}), which maps it again and submits or ends it.
 */
public interface DeferredRemap {

    /** Maps a clone that waited again; submits it, ends it, or lets it wait once more. Called from a workqueue. */
    void remapDeferred(Bio clone);
}
