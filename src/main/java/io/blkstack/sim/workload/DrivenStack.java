package io.blkstack.sim.workload;

import io.blkstack.block.BlockDevice;
import java.util.List;

/**
 * A stack as a {@link Workload} drives it: the devices its tasks write and read (task {@code t}
 * drives device {@code t % devices().size()}), what the reference model must know about their
 * sectors, and the control events the stack offers. A plain device offers none; a configuration's
 * stack ({@link ConfigStack}) offers them all.
 *
 * <p>Control methods run on a task of the kernel, outside the submit loop, and may wait.
 */
public interface DrivenStack {

    /**
     * How a problem of {@link #crashAndRestart} ends when it is a leaked block (reference count
     * without a mapping): non-fatal, as for {@code thin_check}; the workload counts it.
     */
    String LEAK_SUFFIX = "(leaked)";

    /** What a read of a sector must return, as far as the reference model can know. */
    enum SectorClass {
        /** What was last written there (if the model knows it). */
        DATA,
        /** Always zeros: the sector is mapped to a {@code zero} target. */
        ZERO,
        /** Never compared: an {@code error} target, or a flakey target that drops or corrupts writes. */
        UNCHECKED
    }

    /** The devices the tasks drive, at least one; after {@link #crashAndRestart} the new ones. */
    List<BlockDevice> devices();

    /** Whether device {@code index} is read-only to the workload (a read-only export): writes become reads. */
    default boolean readOnly(int index) {
        return false;
    }

    /** The class of {@code sector} of device {@code index}. */
    default SectorClass sectorClass(int index, long sector) {
        return SectorClass.DATA;
    }

    /** How many mapped devices a table reload may pick; 0 if the stack has none. */
    default int reloadCandidates() {
        return 0;
    }

    /**
     * Suspends mapped device {@code candidate} (of {@link #reloadCandidates}), loads the same table
     * again and resumes it (dmsetup reload of an unchanged table); returns the device's name.
     */
    default String reload(int candidate) {
        throw new UnsupportedOperationException("this stack has no mapped devices to reload");
    }

    /** Whether device {@code index} is a thin device, which {@link #thinMessage} can snapshot. */
    default boolean isThin(int index) {
        return false;
    }

    /** The thin device id of device {@code index} ({@link #isThin}). */
    default long thinId(int index) {
        throw new UnsupportedOperationException("device " + index + " is not a thin device");
    }

    /** Sends a message ({@code create_snap NEW ORIGIN}, {@code delete ID}) to the pool of thin device {@code index}. */
    default void thinMessage(int index, String... words) {
        throw new UnsupportedOperationException("device " + index + " is not a thin device");
    }

    /**
     * Whether a bottom device may lose writes it acknowledged but had not flushed while the stack
     * runs (a remote device whose server crashes): then the reference model lets a read between a
     * write and the next flush return an older value of the range, once such a loss has happened,
     * and checks strictly again after a flush that succeeded.
     */
    default boolean mayLoseUnflushed() {
        return false;
    }

    /** Whether the stack can crash and be built again from what its bottom devices made durable. */
    default boolean canRestart() {
        return false;
    }

    /**
     * Crashes the stack (everything not flushed to the bottom devices is lost, nothing the dying
     * stack writes on its way down lands), builds it again over the same bottom devices' contents
     * and returns what checks of the reopened metadata found (empty: clean; problems ending in
     * {@link #LEAK_SUFFIX} are non-fatal). The caller must have no I/O in flight.
     */
    default List<String> crashAndRestart() {
        throw new UnsupportedOperationException("this stack cannot restart");
    }

    /** A stack of one device that offers no control events. */
    static DrivenStack of(BlockDevice device) {
        List<BlockDevice> one = List.of(device);
        return () -> one;
    }
}
