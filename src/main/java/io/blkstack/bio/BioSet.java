package io.blkstack.bio;

import io.blkstack.block.Submit;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.Teardown;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.mem.Slab;
import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import jdk.jfr.EventType;

/**
 * A source of bios with a guaranteed reserve (the kernel's {@code bio_set}): a {@link Mempool} of
 * bios over a {@link Slab}, and one of 256-entry vec arrays, both charged to the kernel's page
 * budget, plus an optional rescuer.
 *
 * <p>Why the rescuer (seed 000): inside the submit loop, bios a stacking driver submits are only
 * queued on the task's pending lists; they reach their device, complete and return to the pool
 * after the driver returns. A driver that allocates a second bio from the same set while its
 * first sits on that list would, with an empty reserve, wait for an element only its own return
 * can free. So when the current task has pending bios and the set has a rescuer, {@link #alloc}
 * first tries without blocking; if that fails it moves <em>this set's</em> pending bios (from both
 * lists, keeping the order of the others) to the rescue list, queues the rescue work on a
 * {@code MEM_RECLAIM} workqueue that submits them from its own thread, and only then retries with
 * the caller's full flags. Under {@code bioset-rescuer=legacy} it blocks at once.
 *
 * <p>For explanations the set remembers every bio object its slab constructed (weakly, so bios a
 * shrinker dropped can go), and {@link #describeState} lists the outstanding ones by holder. The
 * registry is touched only when the slab grows, never on allocation or free.
 *
 * <p>Pool names for fault injection: the bio mempool is {@code <name>-bio}, the vec mempool
 * {@code <name>-bvec} (fault sites {@code alloc:<name>-bio}, {@code alloc:<name>-bvec}).
 */
public final class BioSet implements Component {

    /** The accounted size of one bio object: 16 bios per slab page. */
    static final int BIO_OBJECT_BYTES = 256;

    private final Kernel kernel;
    private final String name;
    private final Slab<Bio> bioSlab;
    private final Mempool<Bio> bioPool;
    private final Slab<BioVec[]> vecSlab;
    private final Mempool<BioVec[]> vecPool;
    private final boolean hasRescuer;
    private final BioRescuer rescuer;
    private final SpinLock rescueLock;
    private final BioList rescueList = new BioList();
    private final AtomicLong punts;
    /** JFR's handle on {@link BioRescuerPuntEvent}: asked before one is built. */
    private final EventType puntEvents = EventType.getEventType(BioRescuerPuntEvent.class);
    private final AtomicLong bioOut = new AtomicLong();
    private final SpinLock registryLock;
    private final List<WeakReference<Bio>> constructed = new ArrayList<>();
    private int constructedPruneAt = REGISTRY_PRUNE_MIN;
    private boolean closed;

    /** Registry size below which cleared references are not pruned. */
    private static final int REGISTRY_PRUNE_MIN = 64;
    /** How many holders {@link #describeState} names before summarising the rest. */
    static final int HOLDERS_SHOWN_MAX = 16;

    /**
     * Creates the set and fills its reserves.
     *
     * @param poolSize bios kept in reserve
     * @param vecPoolSize vec arrays kept in reserve (0 for a set that only clones and splits)
     * @param frontPad creates the per-bio driver data once per bio object, or null for none
     * @param rescuer whether the set gets a rescuer workqueue (needed by stacking drivers that
     *     allocate from it inside the submit loop)
     */
    public BioSet(Kernel kernel, String name, int poolSize, int vecPoolSize, Supplier<?> frontPad, boolean rescuer) {
        if (poolSize < 0) {
            throw new IllegalArgumentException("bio set " + name + ": negative pool size " + poolSize);
        }
        if (vecPoolSize < 0) {
            throw new IllegalArgumentException("bio set " + name + ": negative vec pool size " + vecPoolSize);
        }
        this.kernel = kernel;
        this.name = name;
        this.rescueLock = new SpinLock("bioset " + name + " rescue");
        this.punts = kernel.counters().get("bioset.rescuer-punts");
        this.registryLock = new SpinLock("bioset " + name + " registry");
        this.bioSlab = new Slab<>(kernel, name + "-bio", BIO_OBJECT_BYTES,
                () -> register(new Bio(this, frontPad == null ? null : frontPad.get())));
        this.bioPool = new Mempool<>(kernel, name + "-bio", poolSize, bioSlab);
        this.vecSlab = new Slab<>(kernel, name + "-bvec", Page.SIZE, BioSet::newVecArray);
        this.vecPool = new Mempool<>(kernel, name + "-bvec", vecPoolSize, vecSlab);
        this.hasRescuer = rescuer;
        this.rescuer = rescuer ? new BioRescuer(kernel, this, name) : null;
        kernel.register(this);
    }

    /** Remembers a bio the slab just constructed (slab growth only); prunes dropped ones now and then. */
    private Bio register(Bio bio) {
        registryLock.lock();
        try {
            if (constructed.size() >= constructedPruneAt) {
                constructed.removeIf(ref -> ref.get() == null);
                constructedPruneAt = Math.max(REGISTRY_PRUNE_MIN, constructed.size() * 2);
            }
            constructed.add(new WeakReference<>(bio));
        } finally {
            registryLock.unlock();
        }
        return bio;
    }

    /**
     * The outstanding bios of this set grouped by {@link Bio#describeHolder()}, in the order their
     * objects were constructed: holder sentence to count. From a thread that is not a kernel task
     * (the checker, while every task is parked) it reads without the lock.
     */
    public Map<String, Integer> holders() {
        Map<String, Integer> byHolder = new LinkedHashMap<>();
        for (Bio bio : outstandingBios()) {
            byHolder.merge(bio.describeHolder(), 1, Integer::sum);
        }
        return byHolder;
    }

    /**
     * The bios of this set not in its pool, in the order their objects were constructed: for
     * explanations (which bio a waiter waits for, and where it is). Locking as {@link #holders}.
     */
    public List<Bio> outstandingBios() {
        List<Bio> bios = new ArrayList<>();
        boolean locked = Task.currentOrNull() != null;
        if (locked) {
            registryLock.lock();
        }
        try {
            for (WeakReference<Bio> ref : constructed) {
                Bio bio = ref.get();
                if (bio != null && bio.state() != BioState.FREE) {
                    bios.add(bio);
                }
            }
        } finally {
            if (locked) {
                registryLock.unlock();
            }
        }
        return bios;
    }

    private static BioVec[] newVecArray() {
        BioVec[] array = new BioVec[Bio.VECS_MAX];
        for (int i = 0; i < array.length; i++) {
            array[i] = new BioVec();
        }
        return array;
    }

    /**
     * Allocates a bio with room for {@code nrVecs} segments (0 for clones, splits, flushes,
     * discards), following the rescuer rule of the class comment.
     *
     * @return the bio with one reference, or null if {@code gfp} may not block and nothing was free
     */
    public Bio alloc(int gfp, int nrVecs) {
        if (nrVecs < 0 || nrVecs > Bio.VECS_MAX) {
            throw new IllegalArgumentException("bio set " + name + ": nrVecs " + nrVecs + " not in 0.." + Bio.VECS_MAX);
        }
        if (closed) {
            throw new IllegalStateException("bio set " + name + " is closed");
        }
        Task self = Task.currentOrNull();
        int savedGfp = gfp;
        if (self != null && hasRescuer && Submit.hasPending(self)
                && !kernel.policies().isLegacy(PolicySwitch.BIOSET_RESCUER)) {
            gfp &= ~Gfp.DIRECT_RECLAIM;
        }
        Bio bio = bioPool.alloc(gfp);
        if (bio == null && gfp != savedGfp) {
            puntBiosToRescuer(self);
            gfp = savedGfp;
            bio = bioPool.alloc(gfp);
        }
        if (bio == null) {
            return null;
        }
        BioVec[] vecs = null;
        if (nrVecs > 0) {
            vecs = vecPool.alloc(gfp);
            if (vecs == null && gfp != savedGfp) {
                puntBiosToRescuer(self);
                gfp = savedGfp;
                vecs = vecPool.alloc(gfp);
            }
            if (vecs == null) {
                bioPool.free(bio);
                return null;
            }
        }
        bio.init(vecs, nrVecs, self);
        bioOut.incrementAndGet();
        return bio;
    }

    /**
     * Moves this set's bios from the task's pending lists to the rescue list, keeping the order of
     * both the moved bios and the others, and queues the rescue work (the kernel's
     * {@code punt_bios_to_rescuer}).
     */
    private void puntBiosToRescuer(Task self) {
        BioList[] lists = Submit.pendingLists(self);
        if (lists == null) {
            return;
        }
        int moved = 0;
        rescueLock.lock();
        try {
            // Rotate each list once: this set's bios go to the rescue list, the others back to the
            // tail of their own list, so both keep their order and nothing is allocated.
            for (BioList list : lists) {
                for (int n = list.size(); n > 0; n--) {
                    Bio bio = list.pop();
                    if (bio.pool() == this) {
                        bio.setState(BioState.RESCUE, this);
                        rescueList.add(bio);
                        moved++;
                    } else {
                        list.add(bio);
                    }
                }
            }
        } finally {
            rescueLock.unlock();
        }
        if (moved == 0) {
            return;
        }
        punts.addAndGet(moved);
        if (puntEvents.isEnabled()) {
            recordPunt(moved);
        }
        rescuer.kick();
    }

    /** JFR: {@code moved} bios were punted to the rescuer. */
    private void recordPunt(int moved) {
        BioRescuerPuntEvent event = new BioRescuerPuntEvent();
        if (event.shouldCommit()) {
            event.bioSet = name;
            event.bios = moved;
            event.commit();
        }
    }

    /** Takes the next punted bio, or null; the rescue work calls this in a loop. */
    Bio popRescued() {
        rescueLock.lock();
        try {
            return rescueList.pop();
        } finally {
            rescueLock.unlock();
        }
    }

    /** Returns a freed bio and its vec array (if it owned one) to the pools. */
    void free(Bio bio, BioVec[] vecs, int usedVecs) {
        if (vecs != null) {
            for (int i = 0; i < usedVecs; i++) {
                vecs[i].clear();
            }
            vecPool.free(vecs);
        }
        bioOut.decrementAndGet();
        bioPool.free(bio);
    }

    /** The kernel this set charges its memory to. */
    public Kernel kernel() {
        return kernel;
    }

    /** Bios handed out and not yet freed. */
    public long outstanding() {
        return bioOut.get();
    }

    /** Bios waiting on the rescue list. */
    public int rescueQueued() {
        rescueLock.lock();
        try {
            return rescueList.size();
        } finally {
            rescueLock.unlock();
        }
    }

    /** The bio mempool, for explanations. */
    public Mempool<Bio> bioPool() {
        return bioPool;
    }

    /** The vec-array mempool, for explanations. */
    public Mempool<BioVec[]> vecPool() {
        return vecPool;
    }

    @Override
    public String name() {
        return "bioset " + name;
    }

    @Override
    public String describeState() {
        StringBuilder sb = new StringBuilder();
        // The checker calls this from its controller thread while every task is parked: no lock then.
        int rescue = Task.currentOrNull() != null ? rescueQueued() : rescueList.size();
        sb.append(name()).append(": ").append(bioOut.get()).append(" bio(s) out, rescue list ").append(rescue)
                .append(", ").append(bioPool.describeState()).append("; ").append(vecPool.describeState());
        Map<String, Integer> byHolder = holders();
        if (!byHolder.isEmpty()) {
            sb.append("; outstanding bios by holder:");
            int shown = 0;
            for (Map.Entry<String, Integer> e : byHolder.entrySet()) {
                if (shown++ == HOLDERS_SHOWN_MAX) {
                    sb.append(" ... (").append(byHolder.size() - HOLDERS_SHOWN_MAX).append(" more holders)");
                    break;
                }
                sb.append(shown == 1 ? " " : "; ").append(e.getValue()).append(" x ").append(e.getKey());
            }
        }
        return sb.toString();
    }

    @Override
    public long fingerprint() {
        return bioPool.fingerprint() * 31 + vecPool.fingerprint();
    }

    /** Stops the rescuer and closes the pools; every bio must have come back. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        kernel.unregister(this);
        Teardown teardown = new Teardown().close(rescuer);
        long out = bioOut.get();
        int rescued = rescueList.size();
        for (AutoCloseable c : new AutoCloseable[] {vecPool, bioPool, vecSlab, bioSlab}) {
            teardown.close(c);
        }
        if (!teardown.failed() && (out != 0 || rescued != 0)) {
            teardown.add(new IllegalStateException("bio set " + name + ": " + out + " bio(s) not returned, "
                    + rescued + " on the rescue list at close"));
        }
        teardown.finish();
    }

    @Override
    public String toString() {
        return name();
    }
}
