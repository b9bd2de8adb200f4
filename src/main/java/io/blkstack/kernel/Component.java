package io.blkstack.kernel;

/**
 * Something a kernel owns and closes: a workqueue, a device, a bio set. The checker reads
 * {@link #describeState} to explain a knot and {@link #fingerprint} to detect a livelock.
 */
public interface Component extends AutoCloseable {

    /** A short unique name such as {@code bioset dm-0}. */
    String name();

    /** A human-readable state: levels, holders, queued items. */
    default String describeState() {
        return name();
    }

    /** A value that changes whenever the component's progress-relevant state changes. */
    default long fingerprint() {
        return 0;
    }

    /** Releases resources; called once, in reverse order of registration. */
    @Override
    void close();
}
