package io.blkstack.dm.thin;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import java.util.HashMap;
import java.util.Map;

/**
 * The open thin pools of a kernel, keyed by the pool's mapped device (dm-thin's
 * {@code dm_thin_pool_table}). A {@code thin-pool} table line binds a pool under the name of the
 * mapped device it is loaded for; a {@code thin} line names that device and finds the pool here.
 * A reloaded pool table over the same metadata device binds the same {@link Pool} again (two
 * pools over one metadata device would corrupt it). Each binder holds a reference; the last
 * release closes the pool.
 *
 * <p>Control paths only: every method takes the kernel's registry {@link io.blkstack.kernel.Mutex}.
 */
public final class PoolRegistry {

    /** One kernel's table: its lock and its pools by pool device name. */
    private static final class Table {
        private final io.blkstack.kernel.Mutex lock = new io.blkstack.kernel.Mutex("thin pool registry");
        private final Map<String, Pool> pools = new HashMap<>();
    }

    private PoolRegistry() {
    }

    /** A factory for a new pool, called with the registry locked. */
    public interface Opener {
        /** Opens a pool. */
        Pool open();
    }

    /**
     * The kernel's table, made on first use. It lives in the kernel, not in a static, so the pools of
     * a kernel that is dropped without closing (a simulated run torn down after a finding) go with it.
     */
    private static Table table(Kernel kernel) {
        Table t = kernel.perKernel(Table.class);
        return t != null ? t : kernel.installPerKernel(Table.class, new Table());
    }

    /**
     * The pool bound to {@code poolDevice}, with one more reference; opened with {@code opener} if
     * none is bound. An existing pool over another metadata device is an error.
     */
    public static Pool bind(Kernel kernel, String poolDevice, BlockDevice metadataDevice, Opener opener) {
        Table table = table(kernel);
        table.lock.lock();
        try {
            Pool p = table.pools.get(poolDevice);
            if (p != null && p.metadataDevice() != metadataDevice) {
                throw new IllegalArgumentException("thin-pool " + poolDevice + " is already open over metadata device "
                        + p.metadataDevice().name() + ", not " + metadataDevice.name());
            }
            if (p == null) {
                for (Map.Entry<String, Pool> e : table.pools.entrySet()) {
                    if (e.getValue().metadataDevice() == metadataDevice) {
                        throw new IllegalArgumentException("metadata device " + metadataDevice.name()
                                + " is already used by thin-pool " + e.getKey());
                    }
                }
                p = opener.open();
                table.pools.put(poolDevice, p);
            }
            p.refs++;
            return p;
        } finally {
            table.lock.unlock();
        }
    }

    /** The pool bound to {@code poolDevice} with one more reference, or null if none. */
    public static Pool get(Kernel kernel, String poolDevice) {
        Table table = table(kernel);
        table.lock.lock();
        try {
            Pool p = table.pools.get(poolDevice);
            if (p != null) {
                p.refs++;
            }
            return p;
        } finally {
            table.lock.unlock();
        }
    }

    /** Drops a reference; the last one unbinds and closes the pool. */
    public static void release(Pool pool) {
        Table table = table(pool.kernel());
        boolean last = false;
        table.lock.lock();
        try {
            if (pool.refs <= 0) {
                throw new IllegalStateException(pool + " released more often than bound (refs " + pool.refs + ")");
            }
            if (--pool.refs == 0) {
                table.pools.values().remove(pool);
                last = true;
            }
        } finally {
            table.lock.unlock();
        }
        if (last) {
            pool.close();
        }
    }
}
