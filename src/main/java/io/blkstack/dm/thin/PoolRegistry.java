package io.blkstack.dm.thin;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import java.util.HashMap;
import java.util.Map;

/**
 * The open thin pools of every kernel, keyed by the pool's mapped device (dm-thin's
 * {@code dm_thin_pool_table}). A {@code thin-pool} table line binds a pool under the name of the
 * mapped device it is loaded for; a {@code thin} line names that device and finds the pool here.
 * A reloaded pool table over the same metadata device binds the same {@link Pool} again (two
 * pools over one metadata device would corrupt it). Each binder holds a reference; the last
 * release closes the pool.
 *
 * <p>Control paths only: every method takes the registry's kernel {@link io.blkstack.kernel.Mutex}.
 */
public final class PoolRegistry {

    private static final io.blkstack.kernel.Mutex LOCK = new io.blkstack.kernel.Mutex("thin pool registry");
    private static final Map<Key, Pool> POOLS = new HashMap<>();

    private record Key(Kernel kernel, String poolDevice) {
    }

    private PoolRegistry() {
    }

    /** A factory for a new pool, called with the registry locked. */
    public interface Opener {
        /** Opens a pool. */
        Pool open();
    }

    /**
     * The pool bound to {@code poolDevice}, with one more reference; opened with {@code opener} if
     * none is bound. An existing pool over another metadata device is an error.
     */
    public static Pool bind(Kernel kernel, String poolDevice, BlockDevice metadataDevice, Opener opener) {
        LOCK.lock();
        try {
            Key key = new Key(kernel, poolDevice);
            Pool p = POOLS.get(key);
            if (p != null && p.metadataDevice() != metadataDevice) {
                throw new IllegalArgumentException("thin-pool " + poolDevice + " is already open over metadata device "
                        + p.metadataDevice().name() + ", not " + metadataDevice.name());
            }
            if (p == null) {
                for (Map.Entry<Key, Pool> e : POOLS.entrySet()) {
                    if (e.getKey().kernel() == kernel && e.getValue().metadataDevice() == metadataDevice) {
                        throw new IllegalArgumentException("metadata device " + metadataDevice.name()
                                + " is already used by thin-pool " + e.getKey().poolDevice());
                    }
                }
                p = opener.open();
                POOLS.put(key, p);
            }
            p.refs++;
            return p;
        } finally {
            LOCK.unlock();
        }
    }

    /** The pool bound to {@code poolDevice} with one more reference, or null if none. */
    public static Pool get(Kernel kernel, String poolDevice) {
        LOCK.lock();
        try {
            Pool p = POOLS.get(new Key(kernel, poolDevice));
            if (p != null) {
                p.refs++;
            }
            return p;
        } finally {
            LOCK.unlock();
        }
    }

    /** Drops a reference; the last one unbinds and closes the pool. */
    public static void release(Pool pool) {
        boolean last = false;
        LOCK.lock();
        try {
            if (pool.refs <= 0) {
                throw new IllegalStateException(pool + " released more often than bound (refs " + pool.refs + ")");
            }
            if (--pool.refs == 0) {
                POOLS.values().remove(pool);
                last = true;
            }
        } finally {
            LOCK.unlock();
        }
        if (last) {
            pool.close();
        }
    }
}
