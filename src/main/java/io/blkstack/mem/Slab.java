package io.blkstack.mem;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import java.util.ArrayDeque;
import java.util.function.Supplier;

/**
 * A bounded cache of reusable objects charged to the page budget: the kernel's slab cache.
 *
 * <p>Objects such as bios live on the Java heap, but their number is bounded by the pages the slab
 * has charged to its kernel's arena: growing by {@code objectsPerPage} objects takes one page with
 * the caller's flags, so under memory pressure a slab allocation fails (or waits) exactly as a page
 * allocation would. The shrinker gives whole pages back when enough objects are free.
 *
 * @param <T> the object type
 */
public final class Slab<T> implements Mempool.Allocator<T>, Shrinker, Component {

    private final Kernel kernel;
    private final String name;
    private final int objectsPerPage;
    private final Supplier<T> constructor;
    private final SpinLock lock;
    private final ArrayDeque<T> free = new ArrayDeque<>();
    private final ArrayDeque<Page> charged = new ArrayDeque<>();
    private long objectsOut;
    private boolean closed;

    /**
     * @param objectSizeBytes the accounted size of one object; at least one object fits a page
     */
    public Slab(Kernel kernel, String name, int objectSizeBytes, Supplier<T> constructor) {
        if (objectSizeBytes <= 0 || objectSizeBytes > Page.SIZE) {
            throw new IllegalArgumentException("slab " + name + ": object size " + objectSizeBytes
                    + " must be in 1.." + Page.SIZE);
        }
        this.kernel = kernel;
        this.name = name;
        this.objectsPerPage = Page.SIZE / objectSizeBytes;
        this.constructor = constructor;
        this.lock = new SpinLock("slab " + name);
        kernel.pages().registerShrinker(this);
        kernel.register(this);
    }

    /** Takes a free object, growing by one page if none is free and {@code gfp} allows. */
    @Override
    public T alloc(int gfp) {
        lock.lock();
        try {
            T object = free.pollFirst();
            if (object != null) {
                objectsOut++;
                return object;
            }
        } finally {
            lock.unlock();
        }
        Page page = kernel.pages().alloc(gfp);
        if (page == null) {
            return null;
        }
        lock.lock();
        try {
            charged.addLast(page);
            for (int i = 1; i < objectsPerPage; i++) {
                free.addLast(constructor.get());
            }
            objectsOut++;
        } finally {
            lock.unlock();
        }
        return constructor.get();
    }

    /** Returns an object to the slab. */
    @Override
    public void free(T object) {
        lock.lock();
        try {
            if (objectsOut <= 0) {
                throw new IllegalStateException("slab " + name + ": more frees than allocations");
            }
            objectsOut--;
            free.addFirst(object);
        } finally {
            lock.unlock();
        }
    }

    /** Pages {@code elements} objects take when they fill whole pages of this slab. */
    @Override
    public int pagesFor(int elements) {
        return (elements + objectsPerPage - 1) / objectsPerPage;
    }

    /** Pages this slab holds from the arena. */
    public int chargedPages() {
        return charged.size();
    }

    @Override
    public long count() {
        return free.size() / objectsPerPage;
    }

    /** Gives back whole pages worth of free objects; never blocks. */
    @Override
    public long scan(long toScan, int gfp) {
        long released = 0;
        while (released < toScan) {
            Page page;
            lock.lock();
            try {
                if (free.size() < objectsPerPage || charged.isEmpty()) {
                    break;
                }
                for (int i = 0; i < objectsPerPage; i++) {
                    free.pollLast();
                }
                page = charged.pollLast();
            } finally {
                lock.unlock();
            }
            kernel.pages().free(page);
            released++;
        }
        return released;
    }

    @Override
    public String name() {
        return "slab " + name;
    }

    @Override
    public String describeState() {
        return name() + ": " + objectsOut + " out, " + free.size() + " free, " + charged.size() + " page(s)";
    }

    /** Returns every charged page; every object must have come back. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        kernel.unregister(this);
        kernel.pages().unregisterShrinker(this);
        long out = objectsOut;
        free.clear();
        while (!charged.isEmpty()) {
            kernel.pages().free(charged.pollLast());
        }
        if (out != 0) {
            kernel.reportMisuse(null, "slab " + name + ": " + out + " object(s) not returned at close");
            throw new IllegalStateException("slab " + name + ": " + out + " object(s) not returned at close");
        }
    }
}
