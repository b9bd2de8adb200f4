package io.blkstack.mem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The mempool algorithm of DESIGN.md section 3, step by step, and its forward-progress promise. */
class MempoolTest {

    /** An allocator that records the flags of every call and succeeds only when told to. */
    static final class RecordingAllocator implements Mempool.Allocator<Object> {
        final List<Integer> calls = new CopyOnWriteArrayList<>();
        final List<Object> freed = new CopyOnWriteArrayList<>();
        volatile boolean succeed = true;
        final Completion blockingCall = new Completion("blocking call");

        @Override
        public Object alloc(int gfp) {
            calls.add(gfp);
            if (Gfp.mayBlock(gfp)) {
                blockingCall.complete();
            }
            return succeed ? new Object() : null;
        }

        @Override
        public void free(Object element) {
            freed.add(element);
        }
    }

    private Kernel kernel;
    private Kernel.Attachment self;

    @BeforeEach
    void setUp() {
        kernel = Kernel.builder().name("mempool-test").memory(1 << 20).build();
        self = kernel.attach("test");
    }

    @AfterEach
    void tearDown() {
        self.close();
        kernel.close();
    }

    @Test
    void triesTheAllocatorWithoutBlockingBeforeTheReserve() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "order", 1, a);
        a.calls.clear();
        Object e = pool.alloc(Gfp.NOIO);
        assertNotNull(e);
        assertEquals(List.of(Gfp.NOWAIT | Gfp.NORETRY), a.calls, "step 1 succeeds: one non-blocking call, no I/O");
        assertEquals(1, pool.reserveLevel(), "the reserve is untouched while the allocator succeeds");
        pool.free(e);
        assertEquals(List.of(e), a.freed, "a full reserve sends frees to the allocator");
    }

    @Test
    void takesTheReserveBeforeABlockingRetryAndReturnsNullForNonBlockingCallers() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "order", 1, a);
        a.succeed = false;
        a.calls.clear();
        Object fromReserve = pool.alloc(Gfp.NOIO);
        assertNotNull(fromReserve);
        assertEquals(List.of(Gfp.NOWAIT | Gfp.NORETRY), a.calls, "step 2: the reserve, before any blocking call");
        assertEquals(0, pool.reserveLevel());

        a.calls.clear();
        assertNull(pool.alloc(Gfp.NOWAIT), "step 4: a non-blocking caller gets null");
        assertEquals(List.of(Gfp.NOWAIT | Gfp.NORETRY), a.calls, "and never a blocking call");

        pool.free(fromReserve);
        assertEquals(1, pool.reserveLevel(), "free refills the reserve first");
        assertTrue(a.freed.isEmpty());
    }

    @Test
    void blockingCallerRetriesOnceWithFullFlagsThenWaitsAndIsWokenByFree() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "wait", 1, a);
        a.succeed = false;
        Object held = pool.alloc(Gfp.NOIO);
        a.calls.clear();
        a.blockingCall.reinit(); // the reserve's preallocation was a blocking call too
        Object[] got = new Object[1];
        Task waiter = kernel.spawn("waiter", TaskKind.USER, () -> got[0] = pool.alloc(Gfp.NOIO));
        a.blockingCall.await();
        // The waiter now either sleeps on the pool or is about to; a free refills the reserve
        // and wakes it, and in both cases it must end up with this very element.
        pool.free(held);
        kernel.scheduler().join(waiter);
        assertSame(held, got[0]);
        assertEquals(Gfp.NOWAIT | Gfp.NORETRY, a.calls.get(0), "step 1: non-blocking");
        assertEquals(Gfp.NOIO | Gfp.NORETRY, a.calls.get(1), "step 3: once more with the caller's flags");
        pool.free(got[0]);
    }

    @Test
    void waiterIsVisibleToTheWatchdogAndExplanations() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "visible", 1, a);
        a.succeed = false;
        Object held = pool.alloc(Gfp.NOIO);
        a.blockingCall.reinit(); // the reserve's preallocation was a blocking call too
        Task waiter = kernel.spawn("waiter", TaskKind.USER, () -> pool.free(pool.alloc(Gfp.NOIO)));
        a.blockingCall.await();
        assertSame(pool, waiter.awaitWait(w -> w == pool, 10_000_000_000L));
        assertSame(pool, waiter.waitingOn());
        assertTrue(pool.describeState().contains("waiters [waiter"), pool.describeState());
        pool.free(held);
        kernel.scheduler().join(waiter);
    }

    @Test
    void doubleFreeIsRefused() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "double", 1, a);
        Object e = pool.alloc(Gfp.NOIO);
        pool.free(e);
        assertThrows(IllegalStateException.class, () -> pool.free(e));
        assertEquals(1, kernel.misuses().size());
    }

    @Test
    void closeReportsElementsThatDidNotComeBack() {
        RecordingAllocator a = new RecordingAllocator();
        Mempool<Object> pool = new Mempool<>(kernel, "leaky", 1, a);
        pool.alloc(Gfp.NOIO);
        assertThrows(IllegalStateException.class, pool::close);
    }

    @Test
    void oneElementReserveKeepsManyAllocateSubmitFreeLoopsGoing() {
        // Eight tasks loop: allocate a page from a 1-element pool while the arena is exhausted,
        // hand it to a "device" task that frees it, wait for that completion. Rule 1 holds (no
        // task holds two elements), so every loop must finish, fed by the reserve alone.
        PageAllocator pages = kernel.pages();
        List<Page> hog = new ArrayList<>();
        Mempool<Page> pool = new Mempool<>(kernel, "pages", 1, new Mempool.Allocator<>() {
            @Override
            public Page alloc(int gfp) {
                return pages.alloc(gfp);
            }

            @Override
            public void free(Page p) {
                pages.free(p);
            }
        });
        for (Page p = pages.alloc(Gfp.NOWAIT); p != null; p = pages.alloc(Gfp.NOWAIT)) {
            hog.add(p);
        }
        int loops = 8;
        int rounds = 300;
        Ring ring = new Ring(4);
        Task device = kernel.spawn("device", TaskKind.DEVICE, () -> {
            for (int i = 0; i < loops * rounds; i++) {
                Request r = ring.take();
                pool.free(r.page);
                r.done.complete();
            }
        });
        AtomicInteger finished = new AtomicInteger();
        List<Task> tasks = new ArrayList<>();
        for (int l = 0; l < loops; l++) {
            tasks.add(kernel.spawn("loop" + l, TaskKind.USER, () -> {
                Request r = new Request();
                for (int i = 0; i < rounds; i++) {
                    r.page = pool.alloc(Gfp.NOIO);
                    r.done.reinit();
                    ring.put(r);
                    r.done.await();
                }
                finished.incrementAndGet();
            }));
        }
        tasks.forEach(kernel.scheduler()::join);
        kernel.scheduler().join(device);
        assertEquals(loops, finished.get());
        assertTrue(kernel.counters().value("mempool.reserve-used") > 0, "the reserve must have been exercised");
        hog.forEach(pages::free);
        pages.checkInvariants();
    }

    /** A request handed to the test device. */
    static final class Request {
        Page page;
        final Completion done = new Completion("request");
    }

    /** A bounded hand-off between tasks built from kernel primitives. */
    static final class Ring {
        private final Request[] slots;
        private final SpinLock lock = new SpinLock("ring");
        private final WaitQueue changed = new WaitQueue("ring");
        private int head;
        private int count;

        Ring(int capacity) {
            slots = new Request[capacity];
        }

        void put(Request r) {
            while (true) {
                changed.waitEvent(() -> count < slots.length, "ring full");
                lock.lock();
                try {
                    if (count < slots.length) {
                        slots[(head + count++) % slots.length] = r;
                        break;
                    }
                } finally {
                    lock.unlock();
                }
            }
            changed.wakeAll();
        }

        Request take() {
            Request r;
            while (true) {
                changed.waitEvent(() -> count > 0, "ring empty");
                lock.lock();
                try {
                    if (count > 0) {
                        r = slots[head];
                        slots[head] = null;
                        head = (head + 1) % slots.length;
                        count--;
                        break;
                    }
                } finally {
                    lock.unlock();
                }
            }
            changed.wakeAll();
            return r;
        }
    }
}
