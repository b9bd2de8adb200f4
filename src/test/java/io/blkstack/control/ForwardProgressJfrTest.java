package io.blkstack.control;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.HungTaskWatchdog;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;
import io.blkstack.mem.Shrinker;
import io.blkstack.wq.Work;
import io.blkstack.wq.WorkerPool;
import io.blkstack.wq.Workqueue;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The forward-progress events a JFR recording shows (issue 15's JDK Mission Control view), read
 * back from the file: a workqueue mayday, a shrinker scan and a hung-task warning, each provoked
 * the way the mechanism's own tests provoke it (worker creation failing at its fault site, as
 * {@code RescuerTest}; direct reclaim at the min watermark, as {@code PageAllocatorTest}; a task
 * waiting on a completion nobody completes under a watchdog, as {@code KernelPrimitivesTest}).
 * Each test records in-process with {@link Recording}, dumps, reads with {@link RecordingFile},
 * and checks the events' fields against what the kernel counted, one for one. Names are unique
 * to this class, so events of other kernels in the same JVM are not counted.
 */
class ForwardProgressJfrTest {

    @TempDir
    Path tmp;

    /** Fails worker creation: only the rescuer can run a MEM_RECLAIM queue's items. */
    private static final Faults NO_WORKERS = new Faults() {
        @Override
        public boolean shouldFail(String site) {
            return WorkerPool.FAULT_SITE.equals(site);
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    };

    // Proves: with no worker creatable, 20 items of a MEM_RECLAIM queue all run (on its rescuer),
    // and every mayday the pool counted is one WorkqueueMayday event naming that queue and pool.
    @Test
    @Timeout(60)
    void maydayIsRecordedWithItsQueueAndPool() throws Exception {
        Path file = tmp.resolve("mayday.jfr");
        long maydays;
        String poolName;
        AtomicInteger ran = new AtomicInteger();
        try (Recording recording = new Recording()) {
            recording.enable("blkstack.WorkqueueMayday");
            recording.start();
            try (Kernel kernel = Kernel.builder().name("jfr-mayday").memory(4L << 20).faults(NO_WORKERS).build();
                    Kernel.Attachment self = kernel.attach("test")) {
                Workqueue wq = Workqueue.create(kernel, "jfr-reclaim", Workqueue.MEM_RECLAIM, 4);
                for (int i = 0; i < 20; i++) {
                    assertTrue(wq.queue(new Work("jfr-item" + i, ran::incrementAndGet)));
                }
                wq.flush();
                maydays = kernel.counters().value("wq.maydays");
                poolName = WorkerPool.of(kernel).name();
            }
            recording.stop();
            recording.dump(file);
        }
        assertEquals(20, ran.get());
        List<RecordedEvent> events = named(file, "blkstack.WorkqueueMayday").stream()
                .filter(e -> e.getString("pool").equals(poolName)).toList();
        assertTrue(maydays > 0, "creation failed, so the pool sent mayday");
        assertEquals(maydays, events.size(), "one event per mayday: " + events);
        for (RecordedEvent e : events) {
            assertEquals("jfr-reclaim", e.getString("workqueue"), e.toString());
        }
    }

    /** A cache of pages that gives them back when reclaim asks, and counts what it was asked. */
    private static final class PageCache implements Shrinker {
        final ArrayDeque<Page> cached = new ArrayDeque<>();
        final PageAllocator pages;
        final AtomicInteger scans = new AtomicInteger();
        final AtomicLong freed = new AtomicLong();

        PageCache(PageAllocator pages) {
            this.pages = pages;
        }

        @Override
        public String name() {
            return "jfr-test-cache";
        }

        @Override
        public synchronized long count() {
            return cached.size();
        }

        @Override
        public synchronized long scan(long toScan, int gfp) {
            scans.incrementAndGet();
            long n = 0;
            for (Page p; n < toScan && (p = cached.pollFirst()) != null; n++) {
                pages.free(p);
            }
            freed.addAndGet(n);
            return n;
        }
    }

    // Proves: a blocking allocation at the min watermark runs direct reclaim; each scan of the
    // cache is one ShrinkerScan event with the shrinker's name, what it was asked (at least one
    // object, at most what it held) and exactly what it freed, and the events add up to the pages
    // the cache gave back.
    @Test
    @Timeout(60)
    void shrinkerScanIsRecordedWithWhatItWasAskedAndFreed() throws Exception {
        Path file = tmp.resolve("shrink.jfr");
        PageCache cache;
        try (Recording recording = new Recording()) {
            recording.enable("blkstack.ShrinkerScan").withThreshold(Duration.ZERO);
            recording.start();
            try (Kernel kernel = Kernel.builder().name("jfr-shrink").memory(64 * Page.SIZE).build();
                    Kernel.Attachment self = kernel.attach("test")) {
                PageAllocator pages = kernel.pages();
                pages.setWatermarks(4, 4, 4);
                cache = new PageCache(pages);
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
                Page p = pages.alloc(Gfp.KERNEL);
                assertNotNull(p, "reclaim freed cached pages, so the blocking allocation succeeds");
                taken.add(p);
                pages.unregisterShrinker(cache);
                taken.forEach(pages::free);
                synchronized (cache) {
                    cache.cached.forEach(pages::free);
                    cache.cached.clear();
                }
            }
            recording.stop();
            recording.dump(file);
        }
        List<RecordedEvent> events = named(file, "blkstack.ShrinkerScan").stream()
                .filter(e -> e.getString("shrinker").equals("jfr-test-cache")).toList();
        assertTrue(cache.scans.get() >= 1, "reclaim scanned the cache");
        assertEquals(cache.scans.get(), events.size(), "one event per scan: " + events);
        long freed = 0;
        for (RecordedEvent e : events) {
            long asked = e.getLong("toScan");
            assertTrue(asked >= 1 && asked <= 10, e.toString());
            assertTrue(e.getLong("freed") <= asked, e.toString());
            freed += e.getLong("freed");
        }
        assertEquals(cache.freed.get(), freed, "the events add up to what the cache gave back");
        assertTrue(freed >= 1);
    }

    // Proves: a task stuck on a completion past the watchdog's 50 ms threshold is one HungTask
    // event with the task, what it waits on and exactly the blocked time the watchdog reported.
    @Test
    @Timeout(60)
    void hungTaskIsRecordedWithTaskWaitAndBlockedTime() throws Exception {
        Path file = tmp.resolve("hung.jfr");
        AtomicReference<HungTaskWatchdog.Report> report = new AtomicReference<>();
        // The test thread is not a kernel task: it waits on a plain latch the listener counts down.
        CountDownLatch reported = new CountDownLatch(1);
        String stuckName;
        try (Recording recording = new Recording()) {
            recording.enable("blkstack.HungTask");
            recording.start();
            try (Kernel watched = Kernel.builder().name("jfr-hung").memory(1 << 20)
                    .watchdog(Duration.ofMillis(50), r -> {
                        if (report.compareAndSet(null, r)) {
                            reported.countDown();
                        }
                    }).build()) {
                Completion never = new Completion("jfr-never-completed");
                Task stuck = watched.spawn("jfr-stuck", TaskKind.USER, never::await);
                stuckName = stuck.toString();
                assertTrue(reported.await(30, TimeUnit.SECONDS), "the watchdog reported within 30 s");
                try (Kernel.Attachment self = watched.attach("test")) {
                    never.complete();
                    watched.scheduler().join(stuck);
                }
            }
            recording.stop();
            recording.dump(file);
        }
        List<RecordedEvent> events = named(file, "blkstack.HungTask").stream()
                .filter(e -> e.getString("waitingOn").contains("jfr-never-completed")).toList();
        assertEquals(1, events.size(), "each stuck wait is reported once: " + events);
        RecordedEvent e = events.get(0);
        assertEquals(stuckName, e.getString("task"));
        assertEquals(report.get().waitingOn(), e.getString("waitingOn"));
        assertEquals(report.get().blockedNanos(), e.getLong("blocked"));
        assertTrue(e.getLong("blocked") >= Duration.ofMillis(50).toNanos(), e.toString());
    }

    private static List<RecordedEvent> named(Path file, String name) throws Exception {
        return RecordingFile.readAllEvents(file).stream().filter(e -> e.getEventType().getName().equals(name))
                .toList();
    }
}
