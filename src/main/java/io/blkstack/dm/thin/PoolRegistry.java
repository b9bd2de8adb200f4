package io.blkstack.dm.thin;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.KernelSlot;
import io.blkstack.kernel.Mutex;
import java.util.HashMap;
import java.util.Map;

/**
 * The open thin pools of one kernel, keyed by the pool's mapped device (dm-thin's
 * {@code dm_thin_pool_table}); each kernel has its own ({@link #of}), checked empty when the
 * kernel closes. A {@code thin-pool} table line binds a pool under the name of the
 * mapped device it is loaded for; a {@code thin} line names that device and finds the pool here.
 * A reloaded pool table over the same metadata device binds the same {@link Pool} again (two
 * pools over one metadata device would corrupt it). Each binder holds a reference; the last
 * release closes the pool.
 *
 * <p>Control paths only: every method takes the registry's kernel {@link io.blkstack.kernel.Mutex}.
 */
public final class PoolRegistry implements KernelSlot.Owned {

    private static final KernelSlot<PoolRegistry> SLOT = KernelSlot.of("thin pools", k -> new PoolRegistry());

    private final Mutex lock = new Mutex("thin pool registry");
    /** Open pools by the name of their mapped device; guarded by {@link #lock}. */
    private final Map<String, Pool> pools = new HashMap<>();

    private PoolRegistry() {
    }

    /** The table of {@code kernel}. */
    public static PoolRegistry of(Kernel kernel) {
        return kernel.state(SLOT);
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
    public Pool bind(String poolDevice, BlockDevice metadataDevice, Opener opener) {
        lock.lock();
        try {
            Pool p = pools.get(poolDevice);
            if (p != null && p.metadataDevice() != metadataDevice) {
                throw new IllegalArgumentException("thin-pool " + poolDevice + " is already open over metadata device "
                        + p.metadataDevice().name() + ", not " + metadataDevice.name());
            }
            if (p == null) {
                for (Map.Entry<String, Pool> e : pools.entrySet()) {
                    if (e.getValue().metadataDevice() == metadataDevice) {
                        throw new IllegalArgumentException("metadata device " + metadataDevice.name()
                                + " is already used by thin-pool " + e.getKey());
                    }
                }
                p = opener.open();
                pools.put(poolDevice, p);
            }
            p.refs++;
            return p;
        } finally {
            lock.unlock();
        }
    }

    /** The pool bound to {@code poolDevice} with one more reference, or null if none. */
    public Pool get(String poolDevice) {
        lock.lock();
        try {
            Pool p = pools.get(poolDevice);
            if (p != null) {
                p.refs++;
            }
            return p;
        } finally {
            lock.unlock();
        }
    }

    /** Drops a reference; the last one unbinds and closes the pool. */
    public void release(Pool pool) {
        boolean last = false;
        lock.lock();
        try {
            if (pool.refs <= 0) {
                throw new IllegalStateException(pool + " released more often than bound (refs " + pool.refs + ")");
            }
            if (--pool.refs == 0) {
                pools.values().remove(pool);
                last = true;
            }
        } finally {
            lock.unlock();
        }
        if (last) {
            pool.close();
        }
    }

    /** Pools still bound; read when the kernel closes, after every table was destroyed. */
    @Override
    public String leftOver() {
        lock.lock();
        try {
            return pools.isEmpty() ? null : "thin pools still open: " + pools.keySet();
        } finally {
            lock.unlock();
        }
    }
}
