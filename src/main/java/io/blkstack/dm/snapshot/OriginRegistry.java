package io.blkstack.dm.snapshot;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.KernelSlot;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Which snapshots an origin device has, in one kernel (dm-snapshot's {@code _origins} hash): a
 * {@code snapshot-origin X} and a {@code snapshot X cow P 16} loaded as separate mapped devices
 * find each other through the underlying device X. The table belongs to its kernel
 * ({@link #of}); an entry goes away when its last snapshot is closed, and the kernel checks the
 * table is empty when it closes.
 *
 * <p>Readers get an immutable array (copy on write at table load and close, never on the data
 * path), so an origin write looks its snapshots up without a lock.
 */
public final class OriginRegistry implements KernelSlot.Owned {

    private static final KernelSlot<OriginRegistry> SLOT = KernelSlot.of("snapshot origins", k -> new OriginRegistry());

    private final Snapshot[] none = new Snapshot[0];
    private final ConcurrentHashMap<BlockDevice, Snapshot[]> origins = new ConcurrentHashMap<>();

    private OriginRegistry() {
    }

    /** The table of {@code kernel}. */
    public static OriginRegistry of(Kernel kernel) {
        return kernel.state(SLOT);
    }

    /** The snapshots of {@code origin}, oldest first; never null. The caller must not change the array. */
    public Snapshot[] snapshotsOf(BlockDevice origin) {
        Snapshot[] s = origins.get(origin);
        return s == null ? none : s;
    }

    /** Adds a snapshot; a COW device already used by a snapshot of any origin is refused. */
    void register(Snapshot snapshot) {
        for (Snapshot[] list : origins.values()) {
            for (Snapshot s : list) {
                if (s.cow() == snapshot.cow()) {
                    throw new IllegalArgumentException("COW device " + snapshot.cow().name()
                            + " is already in use by snapshot " + s.name());
                }
            }
        }
        origins.compute(snapshot.origin(), (dev, old) -> {
            Snapshot[] now = old == null ? none : old;
            Snapshot[] grown = Arrays.copyOf(now, now.length + 1);
            grown[now.length] = snapshot;
            return grown;
        });
    }

    /** Removes a snapshot (no-op if absent). */
    void unregister(Snapshot snapshot) {
        origins.computeIfPresent(snapshot.origin(), (dev, old) -> {
            Snapshot[] left = Arrays.stream(old).filter(s -> s != snapshot).toArray(Snapshot[]::new);
            return left.length == 0 ? null : left;
        });
    }

    @Override
    public String leftOver() {
        List<String> names = origins.values().stream().flatMap(Arrays::stream).map(Snapshot::name).toList();
        return names.isEmpty() ? null : "snapshots still open: " + names;
    }
}
