package io.blkstack.dm.snapshot;

import io.blkstack.block.BlockDevice;
import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Which snapshots an origin device has (dm-snapshot's {@code _origins} hash): a
 * {@code snapshot-origin X} and a {@code snapshot X cow P 16} loaded as separate mapped devices
 * find each other through the underlying device X. Devices belong to one kernel, so the map is per
 * kernel in effect; an entry goes away when its last snapshot is closed.
 *
 * <p>Readers get an immutable array (copy on write at table load and close, never on the data
 * path), so an origin write looks its snapshots up without a lock.
 */
public final class OriginRegistry {

    private static final Snapshot[] NONE = new Snapshot[0];
    private static final ConcurrentHashMap<BlockDevice, Snapshot[]> ORIGINS = new ConcurrentHashMap<>();

    private OriginRegistry() {
    }

    /** The snapshots of {@code origin}, oldest first; never null. */
    public static Snapshot[] snapshotsOf(BlockDevice origin) {
        Snapshot[] s = ORIGINS.get(origin);
        return s == null ? NONE : s;
    }

    /** Adds a snapshot; a COW device already used by a snapshot of any origin is refused. */
    static void register(Snapshot snapshot) {
        for (Snapshot[] list : ORIGINS.values()) {
            for (Snapshot s : list) {
                if (s.cow() == snapshot.cow()) {
                    throw new IllegalArgumentException("COW device " + snapshot.cow().name()
                            + " is already in use by snapshot " + s.name());
                }
            }
        }
        ORIGINS.compute(snapshot.origin(), (dev, old) -> {
            Snapshot[] now = old == null ? NONE : old;
            Snapshot[] grown = Arrays.copyOf(now, now.length + 1);
            grown[now.length] = snapshot;
            return grown;
        });
    }

    /** Removes a snapshot (no-op if absent). */
    static void unregister(Snapshot snapshot) {
        ORIGINS.computeIfPresent(snapshot.origin(), (dev, old) -> {
            Snapshot[] left = Arrays.stream(old).filter(s -> s != snapshot).toArray(Snapshot[]::new);
            return left.length == 0 ? null : left;
        });
    }
}
