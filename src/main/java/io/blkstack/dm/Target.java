package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import java.util.List;

/**
 * One table line's mapping (the kernel's {@code dm_target} with its {@code target_type}): a
 * constructor that parses the arguments strictly, {@link #map} that says what happened to a clone,
 * two status forms, messages, suspend hooks, and one teardown path.
 *
 * <p>Contract with the core ({@link MappedDevice}):
 * <ul>
 *   <li>{@link #map} gets a clone whose range lies inside this target and does not cross
 *       {@link #maxIoSectors}; its sector is the mapped device's sector (use {@link #targetOffset}).
 *       It allocates nothing: per-bio state comes from {@link TargetIo#perBioData}.</li>
 *   <li>Empty flushes: the core sends {@link #flushBioCount} clones of op FLUSH to each target,
 *       numbered by {@link TargetIo#bioNumber}; a target with devices remaps each to one device.</li>
 *   <li>{@link #statusTable} reproduces the constructor's arguments exactly (device names as the
 *       table wrote them, numbers in decimal).</li>
 *   <li>{@link #close} releases what the constructor took and copes with a half-built target.</li>
 * </ul>
 */
public abstract class Target {

    private final String type;
    private final long begin;
    private final long length;

    /** Records the target's place; subclasses parse {@code args} after calling this. */
    protected Target(TargetArgs args) {
        this.type = args.type();
        this.begin = args.begin();
        this.length = args.length();
    }

    /** The type name, as in the table ({@code linear}). */
    public final String type() {
        return type;
    }

    /** The first sector of this target on the mapped device. */
    public final long begin() {
        return begin;
    }

    /** The length in sectors. */
    public final long length() {
        return length;
    }

    /** The clone's start relative to this target (the kernel's {@code dm_target_offset}). */
    protected final long targetOffset(Bio clone) {
        long offset = clone.sector() - begin;
        if (offset < 0 || offset > length) {
            throw new IllegalStateException("target " + type + " at " + begin + "+" + length + " got " + clone);
        }
        return offset;
    }

    /** Maps one clone: remap it (REMAPPED), take it over (SUBMITTED), fail it (KILL) or ask to retry (REQUEUE). */
    public abstract MapResult map(Bio clone, TargetIo io);

    /**
     * Called when a clone this target mapped completes, before the original hears of it, in atomic
     * context (never blocks). May change the status with {@link Bio#resetStatus}/{@link Bio#setStatus}.
     */
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
    }

    /** The status counters form ({@code STATUSTYPE_INFO}); empty if the target has none. */
    public String statusInfo() {
        return "";
    }

    /** The arguments that rebuild this target exactly ({@code STATUSTYPE_TABLE}). */
    public abstract String statusTable();

    /**
     * Handles {@code dmsetup message}; returns a reply (possibly empty).
     *
     * @throws IllegalArgumentException if the message is unknown or malformed, naming it
     */
    public String message(String[] args) {
        throw new IllegalArgumentException("target " + type + " accepts no messages (got '" + String.join(" ", args) + "')");
    }

    /**
     * How many sectors a bio starting {@code offset} sectors into this target may cover before it
     * must be split (a stripe chunk boundary; the kernel's {@code max_io_len}). The default is the
     * rest of the target.
     */
    public long maxIoSectors(long offset) {
        return length - offset;
    }

    /** Whether {@link #allocatedExtent} tells allocated ranges from holes (thin provisioning does). */
    public boolean knowsAllocation() {
        return false;
    }

    /**
     * The allocation run at {@code offset} sectors into this target, at most {@code maxSectors}
     * (which stays inside the target): positive for allocated sectors, negative for a hole. The
     * default says allocated. Must not block: NBD block status calls it from a connection task.
     */
    public long allocatedExtent(long offset, long maxSectors) {
        return maxSectors;
    }

    /** How many empty flush clones this target needs, one per device (the kernel's {@code num_flush_bios}). */
    public int flushBioCount() {
        return 0;
    }

    /**
     * Whether this target only remaps a READ onto its devices, never looking at or changing the
     * data, so a READ offered by reference ({@link io.blkstack.bio.ReadReference}) may keep the
     * offer (clones inherit it). False by default: a new target gets pages until it says otherwise.
     */
    public boolean passesReadReference() {
        return false;
    }

    /** The devices this target maps to, for limits and explanations. */
    public List<BlockDevice> devices() {
        return List.of();
    }

    /**
     * The devices this target needs to exist while it does (dmsetup's {@code deps}): those it maps
     * to, and any it reaches through another (a thin device's pool). Nothing may remove them first.
     */
    public List<BlockDevice> dependencies() {
        return devices();
    }

    /** Creates this target's per-bio data object; called once per bio object (see {@link TargetIo}). */
    protected Object newPerBioData() {
        return null;
    }

    /** Before suspend waits for in-flight I/O: release anything held back so it can finish. */
    public void presuspend() {
    }

    /**
     * Fails now, with {@code status}, the bios this target holds back waiting for something that
     * may never come (a thin pool's writes waiting for data space); returns how many. For a
     * server whose drain deadline passed. Never blocks. Most targets hold nothing back.
     */
    public int failWaiting(BioStatus status) {
        return 0;
    }

    /** After every in-flight clone finished. */
    public void postsuspend() {
    }

    /** Before I/O flows again (also when a table becomes live). */
    public void resume() {
    }

    /** Releases what the constructor took (the kernel's {@code dtr}); copes with a half-built target. */
    public void close() {
    }

    @Override
    public String toString() {
        return begin + " " + length + " " + type + (statusTable().isEmpty() ? "" : " " + statusTable());
    }
}
