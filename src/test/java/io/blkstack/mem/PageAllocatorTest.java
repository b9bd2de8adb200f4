package io.blkstack.mem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The page arena: watermarks, GFP behaviour, reclaim and the budget invariant. */
class PageAllocatorTest {

    /** A cache of pages that gives them back when reclaim asks, and counts the calls. */
    static final class PageCache implements Shrinker {
        final ArrayDeque<Page> cached = new ArrayDeque<>();
        final PageAllocator pages;
        final AtomicInteger scans = new AtomicInteger();
        /** Woken after every scan, so a test can wait for reclaim's effect on the free count. */
        final WaitQueue scanned = new WaitQueue("test cache scanned");
        volatile int lastGfp = -1;

        PageCache(PageAllocator pages) {
            this.pages = pages;
        }

        @Override
        public String name() {
            return "test cache";
        }

        @Override
        public synchronized long count() {
            return cached.size();
        }

        @Override
        public long scan(long toScan, int gfp) {
            scans.incrementAndGet();
            lastGfp = gfp;
            long freed = 0;
            while (freed < toScan) {
                Page p;
                synchronized (this) {
                    p = cached.pollFirst();
                }
                if (p == null) {
                    break;
                }
                pages.free(p);
                freed++;
            }
            scanned.wakeAll();
            return freed;
        }
    }

    @Test
    void nonBlockingAllocationStopsAtTheMinWatermark() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            pages.setWatermarks(4, 6, 8);
            List<Page> taken = new ArrayList<>();
            for (Page p = pages.alloc(Gfp.NOWAIT); p != null; p = pages.alloc(Gfp.NOWAIT)) {
                taken.add(p);
            }
            assertEquals(60, taken.size(), "64 pages minus the 4 kept below min");
            assertEquals(4, pages.freePages());
            assertNull(pages.alloc(Gfp.NOIO | Gfp.NORETRY), "one reclaim pass with nothing to shrink, then fail");
            assertTrue(kernel.counters().value("pages.alloc-failures") >= 2);
            pages.checkInvariants();
            taken.forEach(pages::free);
            assertEquals(64, pages.freePages());
        }
    }

    /**
     * The ledger: a promise keeps its pages from everyone else (allocations stop at the min
     * watermark above the promised pages), its owner takes them without waiting, a freed page is
     * promised again, a reservation that does not fit is refused with the ledger in the message,
     * and closing gives the pages back.
     */
    @Test
    void aPromiseKeepsItsPagesFromEveryoneElse() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            pages.setWatermarks(4, 6, 8);
            Reservation promise = pages.reserve("payload", 20);
            Reservation record = pages.record("copy buffer", 3);
            assertEquals(20, pages.promisedPages());
            assertEquals(44, pages.availablePages());
            List<Page> taken = new ArrayList<>();
            for (Page p = pages.alloc(Gfp.NOWAIT); p != null; p = pages.alloc(Gfp.NOWAIT)) {
                taken.add(p);
            }
            assertEquals(40, taken.size(), "64 pages minus the 20 promised and the 4 kept below min");
            MemoryAdmissionException refused = assertThrows(MemoryAdmissionException.class, () -> pages.reserve("late", 1));
            assertTrue(refused.getMessage().contains("late: cannot reserve 1 pages, only 0 are left above the min watermark"
                    + " of 4: arena of 64 pages, 24 free (20 of them promised), min watermark 4; ledger: payload 20 promised"
                    + " (0 taken), copy buffer 3 held, other use 37"), refused.getMessage());
            Page[] mine = new Page[24];
            assertEquals(20, promise.allocBulk(mine, 24), "the whole promise, and no more");
            assertEquals(20, promise.heldPages());
            assertEquals(0, pages.promisedPages());
            assertEquals(4, pages.freePages());
            pages.checkInvariants();
            pages.freeBulk(mine, 5);
            assertEquals(5, pages.promisedPages(), "freed pages are promised to their owner again");
            assertNull(pages.alloc(Gfp.NOWAIT), "and nobody else gets them");
            assertEquals(5, promise.allocBulk(mine, 5));
            pages.checkInvariants();
            for (int i = 0; i < 20; i++) {
                pages.free(mine[i]);
            }
            promise.close();
            record.close();
            assertEquals(0, pages.promisedPages());
            assertTrue(pages.ledger().isEmpty());
            Page again = pages.alloc(Gfp.NOWAIT);
            assertNotNull(again, "closed: the pages are everyone's again");
            pages.free(again);
            taken.forEach(pages::free);
            pages.checkInvariants();
        }
    }

    /**
     * Both kinds of arena memory: pages read as zeros before first written, keep what is written,
     * and are page-aligned; a mapped arena is unmapped when the allocator closes (a buffer touched
     * afterwards throws instead of reaching unmapped memory), direct memory stays with the
     * garbage collector. On Linux the default is the mapping.
     */
    @Test
    void mappedAndDirectArenasBehaveTheSame() {
        for (boolean mapped : new boolean[] {true, false}) {
            java.nio.ByteBuffer kept;
            try (Kernel kernel = Kernel.builder().memory(16 * Page.SIZE).mappedArena(mapped).build();
                    var self = kernel.attach("test")) {
                PageAllocator pages = kernel.pages();
                if (NativeCalls.onLinux()) {
                    assertEquals(mapped, pages.isMapped());
                }
                Page p = pages.alloc(Gfp.KERNEL);
                for (int i = 0; i < Page.SIZE; i += 512) {
                    assertEquals(0, p.buffer().get(i), "fresh memory reads as zeros");
                }
                p.buffer().put(100, (byte) 42);
                assertEquals(42, p.slice(0, Page.SIZE).get(100));
                java.nio.ByteBuffer run = pages.sliceRun(p, 0, Page.SIZE);
                assertTrue(run.isDirect());
                kept = p.buffer();
                pages.free(p);
            }
            if (mapped && kept != null && NativeCalls.onLinux()) {
                java.nio.ByteBuffer gone = kept;
                assertThrows(IllegalStateException.class, () -> gone.get(0), "unmapped at close");
            } else {
                assertEquals(42, kept.get(100), "direct memory lives while referenced");
            }
        }
    }

    @Test
    void directReclaimRunsShrinkersWithTheCallersFlags() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            pages.setWatermarks(4, 4, 4);
            PageCache cache = new PageCache(pages);
            pages.registerShrinker(cache);
            List<Page> taken = new ArrayList<>();
            for (Page p = pages.alloc(Gfp.NOWAIT); p != null; p = pages.alloc(Gfp.NOWAIT)) {
                taken.add(p);
            }
            synchronized (cache) {
                for (int i = 0; i < 10; i++) {
                    cache.cached.add(taken.remove(taken.size() - 1));
                }
            }
            Page p;
            try (var scope = self.task().noio()) {
                p = pages.alloc(Gfp.KERNEL);
            }
            assertNotNull(p, "reclaim freed cached pages, so the blocking allocation succeeds");
            assertTrue(cache.scans.get() >= 1);
            assertTrue(!Gfp.mayIo(cache.lastGfp), "a noio scope strips I/O from reclaim's flags");
            taken.add(p);
            taken.forEach(pages::free);
            synchronized (cache) {
                cache.cached.forEach(pages::free);
                cache.cached.clear();
            }
        }
    }

    @Test
    void blockedAllocationWaitsForAFreedPage() {
        try (Kernel kernel = Kernel.builder().memory(16 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            pages.setWatermarks(1, 1, 1);
            List<Page> taken = new ArrayList<>();
            for (Page p = pages.alloc(Gfp.NOWAIT); p != null; p = pages.alloc(Gfp.NOWAIT)) {
                taken.add(p);
            }
            Completion started = new Completion("started");
            Page[] got = new Page[1];
            Task waiter = kernel.spawn("waiter", TaskKind.USER, () -> {
                started.complete();
                got[0] = pages.alloc(Gfp.NOIO);
            });
            started.await();
            pages.free(taken.remove(0));
            kernel.scheduler().join(waiter);
            assertNotNull(got[0]);
            taken.add(got[0]);
            taken.forEach(pages::free);
        }
    }

    @Test
    void backgroundReclaimShrinksToTheHighWatermark() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            // low 4: the 60 allocations stop exactly at low, so they never wake kswapd (it wakes
            // only below low); with low above 4 a wake-up during the loop could run its pass after
            // the shrinker is registered below and break the exact count checked there.
            pages.setWatermarks(2, 4, 16);
            PageCache cache = new PageCache(pages);
            for (int i = 0; i < 60; i++) {
                Page p = pages.alloc(Gfp.NOWAIT);
                assertNotNull(p);
                synchronized (cache) {
                    cache.cached.add(p);
                }
            }
            // Only now may reclaim free anything: no pass was requested yet, so none can run early.
            pages.registerShrinker(cache);
            assertEquals(4, pages.freePages());
            Page trigger = pages.alloc(Gfp.NOWAIT); // below low: wakes kswapd
            assertNotNull(trigger);
            cache.scanned.waitEvent(() -> pages.freePages() >= 16, "kswapd to reach the high watermark");
            assertTrue(cache.scans.get() >= 1);
            pages.free(trigger);
            synchronized (cache) {
                cache.cached.forEach(pages::free);
                cache.cached.clear();
            }
        }
    }

    @Test
    void doubleFreeIsRefusedAndLeaksAreReportedAtClose() {
        Kernel kernel = Kernel.builder().memory(16 * Page.SIZE).build();
        Page leaked;
        try (var self = kernel.attach("test")) {
            Page p = kernel.pages().alloc(Gfp.NOWAIT);
            kernel.pages().free(p);
            assertThrows(IllegalStateException.class, () -> kernel.pages().free(p));
            leaked = kernel.pages().alloc(Gfp.NOWAIT);
        }
        IllegalStateException e = assertThrows(IllegalStateException.class, kernel::close);
        assertTrue(e.getMessage().contains("1 of 16 pages"), e.getMessage());
        assertNotNull(leaked);
    }

    @Test
    void budgetIsNeverExceededUnderConcurrentLoad() {
        // Six tasks allocate and free pages at random with every flag combination against a
        // 128-page arena; a monitor task checks the invariant continuously. The allocated count
        // can never exceed the arena, and every page comes back.
        try (Kernel kernel = Kernel.builder().memory(128 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            PageAllocator pages = kernel.pages();
            AtomicLong maxAllocated = new AtomicLong();
            int[] flags = {Gfp.NOWAIT, Gfp.NOIO | Gfp.NORETRY, Gfp.KERNEL | Gfp.NORETRY};
            List<Task> tasks = new ArrayList<>();
            for (int t = 0; t < 6; t++) {
                long seed = t;
                tasks.add(kernel.spawn("load" + t, TaskKind.USER, () -> {
                    SplittableRandom random = new SplittableRandom(seed);
                    ArrayDeque<Page> held = new ArrayDeque<>();
                    for (int i = 0; i < 20_000; i++) {
                        if (held.size() < 30 && random.nextBoolean()) {
                            Page p = pages.alloc(flags[random.nextInt(flags.length)]);
                            if (p != null) {
                                held.add(p);
                            }
                        } else if (!held.isEmpty()) {
                            pages.free(held.poll());
                        }
                        maxAllocated.accumulateAndGet(pages.allocatedPages(), Math::max);
                    }
                    held.forEach(pages::free);
                }));
            }
            tasks.forEach(kernel.scheduler()::join);
            pages.checkInvariants();
            assertTrue(maxAllocated.get() <= pages.totalPages());
            assertTrue(maxAllocated.get() > pages.totalPages() / 2, "the load must have pressed the budget");
            assertEquals(0, pages.allocatedPages());
        }
    }

    @Test
    void slabChargesPagesAndGivesThemBackThroughItsShrinker() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            Slab<int[]> slab = new Slab<>(kernel, "objects", 1024, () -> new int[1]);
            int before = kernel.pages().freePages();
            List<int[]> objects = new ArrayList<>();
            for (int i = 0; i < 9; i++) {
                objects.add(slab.alloc(Gfp.NOWAIT));
            }
            assertEquals(3, slab.chargedPages(), "nine 1 KiB objects take three pages");
            assertEquals(before - 3, kernel.pages().freePages());
            objects.forEach(slab::free);
            assertEquals(3, slab.scan(10, Gfp.NOWAIT), "twelve free objects are three whole pages");
            assertEquals(0, slab.chargedPages());
            assertEquals(before, kernel.pages().freePages());
        }
    }
}
