package io.blkstack.mem;

/**
 * One line of the arena's ledger (DESIGN.md section 3, "Admission, not hope"): a named share of
 * the page arena that one consumer is owed, taken when the consumer is built and given back when it
 * closes. There are two kinds.
 *
 * <ul>
 *   <li>A <b>promise</b> ({@link PageAllocator#reserve}) sets pages aside for later: they stay on
 *       the free list, but no allocation outside the reservation may take them, so the consumer's
 *       own allocations ({@link #allocBulk}) always find them and never wait. The NBD server's
 *       payload budget is one: a request admitted to the budget gets all its pages at once, even
 *       when slabs and caches have grown into every other free page. Its pages are freed like
 *       any other ({@link PageAllocator#free}, {@link PageAllocator#freeBulk}) and are then
 *       promised to it again.</li>
 *   <li>A <b>record</b> ({@link PageAllocator#record}) names pages a consumer took for good when it
 *       was built (a mempool's reserve elements, a target's copy buffer, a cache's reserve
 *       buffers): they are allocated already, so nothing can take them; the line says whose they
 *       are, so an admission error lists what each consumer keeps.</li>
 * </ul>
 *
 * The allocator's lock guards every field but the constants.
 */
public final class Reservation implements AutoCloseable {

    private final PageAllocator arena;
    private final String owner;
    private final int pages;
    private final boolean promise;
    /** Pages of a promise now allocated through it (guarded by the arena's lock). */
    int held;
    /** Whether the line left the ledger (guarded by the arena's lock). */
    boolean closed;

    Reservation(PageAllocator arena, String owner, int pages, boolean promise) {
        this.arena = arena;
        this.owner = owner;
        this.pages = pages;
        this.promise = promise;
    }

    /** Who the pages are for, as the ledger prints it. */
    public String owner() {
        return owner;
    }

    /** The pages this line accounts for. */
    public int pages() {
        return pages;
    }

    /** Whether this line is a promise (pages allocated later through it) rather than a record. */
    public boolean isPromise() {
        return promise;
    }

    /** Pages of a promise allocated through it now (a record: all of its pages). */
    public int heldPages() {
        return arena.heldPages(this);
    }

    /**
     * Takes up to {@code count} pages of this promise into {@code out[0..)}; never blocks or
     * reclaims. Returns how many it took: {@code count} unless that would exceed the promise, which
     * is the owner's accounting error (the owner admits its users against {@link #pages} first).
     */
    public int allocBulk(Page[] out, int count) {
        return arena.allocReserved(this, out, count);
    }

    /**
     * Removes the line from the ledger: a promise's pages are free for everyone again (pages still
     * taken through it are too, once freed), a record's pages are no longer named. Idempotent.
     */
    @Override
    public void close() {
        arena.release(this);
    }

    PageAllocator arena() {
        return arena;
    }

    @Override
    public String toString() {
        return owner + " " + pages + (promise ? " promised" : " held");
    }
}
