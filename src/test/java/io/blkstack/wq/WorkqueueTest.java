package io.blkstack.wq;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Workqueues as DESIGN.md section 5 describes them, on the real scheduler: items, bounds, flushes, delays. */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class WorkqueueTest {

    static final long MILLISECOND = 1_000_000L;
    static final long SECOND = 1_000_000_000L;

    static Kernel newKernel(Faults faults) {
        return Kernel.builder().name("wq-test").memory(4L << 20).faults(faults).build();
    }

    /** Waits until {@code task} has begun a logical wait; returns what it waits on. */
    static Object awaitWaiting(Task task) {
        Object what = task.awaitWait(w -> true, 10 * SECOND);
        if (what == null) {
            fail("task " + task + " never started waiting");
        }
        return what;
    }

    @Test
    void itemsRunOnWorkersThatHoldTheirPages() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "plain", 0, 4);
            AtomicInteger ran = new AtomicInteger();
            AtomicReference<TaskKind> kind = new AtomicReference<>();
            for (int i = 0; i < 20; i++) {
                assertTrue(wq.queue(new Work("item" + i, () -> {
                    kind.set(Task.current().kind());
                    ran.incrementAndGet();
                })));
            }
            wq.flush();
            assertEquals(20, ran.get());
            assertEquals(TaskKind.WORKER, kind.get());
            assertEquals(0, wq.pendingCount());
            assertEquals(0, wq.activeCount());
            assertTrue(kernel.counters().value("wq.workers-created") > 0);
            assertTrue(kernel.pages().allocatedPages() >= WorkerPool.WORKER_PAGES, "a live worker holds its pages");
            assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
        }
    }

    @Test
    void maxActiveBoundsConcurrencyAndTheRestWaitInFifoOrder() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "bounded", 0, 2);
            AtomicInteger running = new AtomicInteger();
            AtomicInteger maxRunning = new AtomicInteger();
            AtomicInteger ran = new AtomicInteger();
            Completion started = new Completion("started");
            Completion gate = new Completion("gate");
            Work[] items = new Work[6];
            for (int i = 0; i < items.length; i++) {
                items[i] = new Work("item" + i, () -> {
                    maxRunning.accumulateAndGet(running.incrementAndGet(), Math::max);
                    started.complete();
                    gate.await();
                    running.decrementAndGet();
                    ran.incrementAndGet();
                });
                assertTrue(wq.queue(items[i]));
            }
            try {
                started.await();
                started.await();
                assertEquals(2, wq.activeCount());
            assertEquals(4, wq.pendingCount());
            assertTrue(items[0].isRunning() && items[1].isRunning(), wq.describeState());
            for (int i = 2; i < items.length; i++) {
                assertTrue(items[i].isPending(), "item" + i + " waits: " + wq.describeState());
            }
            String state = wq.describeState();
            assertTrue(state.contains("pending 4 [item2, item3, item4, item5]"), state);
            assertTrue(state.contains("item0 on kworker/"), state);
            } finally {
                gate.completeAll(); // a failed check must not leave the kernel's close waiting for the gate
            }
            wq.flush();
            assertEquals(6, ran.get());
            assertEquals(2, maxRunning.get());
        }
    }

    @Test
    void maxActiveOneRunsItemsInQueueOrder() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "ordered", 0, 1);
            int[] order = new int[50];
            AtomicInteger next = new AtomicInteger();
            for (int i = 0; i < order.length; i++) {
                int id = i;
                wq.queue(new Work("item" + i, () -> order[next.getAndIncrement()] = id));
            }
            wq.flush();
            assertEquals(order.length, next.get());
            for (int i = 0; i < order.length; i++) {
                assertEquals(i, order[i]);
            }
        }
    }

    @Test
    void flushWaitsForEarlierItemsButNotLaterOnes() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "flushed", 0, 4);
            Completion startedA = new Completion("a started");
            Completion gateA = new Completion("gate a");
            Completion gateB = new Completion("gate b");
            AtomicBoolean doneA = new AtomicBoolean();
            AtomicBoolean doneB = new AtomicBoolean();
            Work itemA = new Work("a", () -> {
                startedA.complete();
                gateA.await();
                doneA.set(true);
            });
            Work itemB = new Work("b", () -> {
                gateB.await();
                doneB.set(true);
            });
            try {
                wq.queue(itemA);
                startedA.await();
                Completion flushed = new Completion("flushed");
                AtomicBoolean aDoneAtFlush = new AtomicBoolean();
                AtomicBoolean bDoneAtFlush = new AtomicBoolean(true);
                Task flusher = kernel.spawn("flusher", TaskKind.USER, () -> {
                    wq.flush();
                    aDoneAtFlush.set(doneA.get());
                    bDoneAtFlush.set(doneB.get());
                    flushed.complete();
                });
                String what = String.valueOf(awaitWaiting(flusher));
                assertTrue(what.contains("flush of wq flushed waiting for item a"), what);
                assertFalse(flusher.waitIsIdle());
                wq.queue(itemB); // queued after the flush began: the flush must not wait for it
                gateA.completeAll();
                assertTrue(flushed.await(10 * SECOND), "flush did not return: " + wq.describeState());
                assertTrue(aDoneAtFlush.get());
                assertFalse(bDoneAtFlush.get());
                assertTrue(itemB.isPending() || itemB.isRunning());
            } finally {
                gateA.completeAll();
                gateB.completeAll();
            }
            wq.flush();
            assertTrue(doneB.get());
        }
    }

    @Test
    void flushOfOneWorkWaitsForItsLastQueueingAndNeverRunsItTwiceAtOnce() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "single", 0, 4);
            AtomicInteger runs = new AtomicInteger();
            AtomicInteger running = new AtomicInteger();
            AtomicInteger maxRunning = new AtomicInteger();
            Completion started = new Completion("started");
            Completion gate = new Completion("gate");
            Work work = new Work("w", () -> {
                maxRunning.accumulateAndGet(running.incrementAndGet(), Math::max);
                started.complete();
                gate.await();
                running.decrementAndGet();
                runs.incrementAndGet();
            });
            assertFalse(work.flush(), "an idle item has nothing to flush");
            Completion flushed = new Completion("flushed");
            AtomicBoolean flushResult = new AtomicBoolean();
            AtomicInteger runsAtFlush = new AtomicInteger(-1);
            try {
                assertTrue(wq.queue(work));
                started.await();
                assertTrue(work.isRunning());
                assertTrue(wq.queue(work), "a running item can be queued again");
                assertFalse(wq.queue(work), "but only once while pending");
                Task flusher = kernel.spawn("flusher", TaskKind.USER, () -> {
                    flushResult.set(work.flush());
                    runsAtFlush.set(runs.get());
                    flushed.complete();
                });
                String what = String.valueOf(awaitWaiting(flusher));
                assertTrue(what.contains("flush of work w waiting for item w"), what);
            } finally {
                gate.completeAll();
            }
            flushed.await();
            assertTrue(flushResult.get());
            assertEquals(2, runsAtFlush.get());
            assertEquals(1, maxRunning.get(), "a work item is non-reentrant");
        }
    }

    @Test
    void cancelRemovesAPendingItemButNotARunningOne() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "cancel", 0, 1);
            Completion started = new Completion("started");
            Completion gate = new Completion("gate");
            AtomicInteger ranB = new AtomicInteger();
            Work itemA = new Work("a", () -> {
                started.complete();
                gate.await();
            });
            Work itemB = new Work("b", ranB::incrementAndGet);
            try {
                wq.queue(itemA);
                wq.queue(itemB);
                started.await();
                assertFalse(itemA.cancel(), "a running item is not pending");
                assertTrue(itemB.cancel());
                assertFalse(itemB.isPending());
                assertFalse(itemB.cancel());
                assertEquals(0, wq.pendingCount());
            } finally {
                gate.completeAll();
            }
            wq.flush();
            assertEquals(0, ranB.get());
        }
    }

    @Test
    void delayedWorkRunsAfterItsDelayOnTheKernelClock() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "delayed", 0, 1);
            AtomicLong ranAt = new AtomicLong();
            Completion done = new Completion("done");
            DelayedWork work = new DelayedWork("later", () -> {
                ranAt.set(kernel.scheduler().nanoTime());
                done.complete();
            });
            long queuedAt = kernel.scheduler().nanoTime();
            assertTrue(wq.queueDelayed(work, 20 * MILLISECOND));
            done.await();
            assertTrue(ranAt.get() - queuedAt >= 20 * MILLISECOND, "ran after " + (ranAt.get() - queuedAt) + " ns");
        }
    }

    @Test
    void armedDelayedWorkIsPendingCancellableAndFlushedAtOnce() {
        AtomicInteger ran = new AtomicInteger();
        AtomicInteger ranAtClose = new AtomicInteger();
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "delayed", 0, 1);
            DelayedWork work = new DelayedWork("much-later", ran::incrementAndGet);
            assertTrue(wq.queueDelayed(work, 3600 * SECOND));
            assertTrue(work.isPending());
            assertFalse(wq.queue(work));
            assertFalse(wq.queueDelayed(work, SECOND));
            assertTrue(work.cancelTimer());
            assertFalse(work.isPending());
            assertFalse(work.cancelTimer());
            assertFalse(work.flush());
            assertTrue(wq.queueDelayed(work, 3600 * SECOND));
            assertTrue(work.flush(), "flushing a delayed item runs it now");
            assertEquals(1, ran.get());
            DelayedWork atClose = new DelayedWork("at-close", ranAtClose::incrementAndGet);
            assertTrue(wq.queueDelayed(atClose, 3600 * SECOND));
        }
        assertEquals(1, ranAtClose.get(), "closing a workqueue runs its armed delayed items");
    }

    @Test
    void aThrowingItemIsReportedAndTheWorkerGoesOn() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "crashy", 0, 1);
            AtomicBoolean after = new AtomicBoolean();
            wq.queue(new Work("boom", () -> {
                throw new IllegalStateException("boom");
            }));
            wq.queue(new Work("after", () -> after.set(true)));
            wq.flush();
            assertTrue(after.get());
            assertEquals(1, kernel.crashes().size());
            assertTrue(kernel.crashes().get(0).contains("boom"), kernel.crashes().get(0));
        }
    }

    /**
     * A component closed with the kernel may queue work and wait for it, even on a queue without a
     * rescuer whose pool has no worker yet: the pool must still be able to create one. (Spawning
     * was refused from the start of the kernel's close; such a flush waited for ever, as
     * log-writes' close did in a CI run.)
     */
    @Test
    void workQueuedWhileTheKernelClosesGetsAWorker() {
        AtomicInteger ran = new AtomicInteger();
        AtomicReference<TaskKind> ranOn = new AtomicReference<>();
        AtomicLong workersBefore = new AtomicLong(-1);
        Kernel kernel = newKernel(Faults.NONE);
        try (Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "plain at close", 0, 1);
            kernel.register(new io.blkstack.kernel.Component() {
                @Override
                public String name() {
                    return "queues work as it closes";
                }

                @Override
                public void close() {
                    workersBefore.set(kernel.counters().value("wq.workers-created"));
                    assertTrue(wq.queue(new Work("last words", () -> {
                        ranOn.set(Task.current().kind());
                        ran.incrementAndGet();
                    })));
                    wq.flush();
                }
            });
        }
        kernel.close();
        assertEquals(0, workersBefore.get(), "no worker existed before the close");
        assertEquals(1, ran.get());
        assertEquals(TaskKind.WORKER, ranOn.get());
        assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
        assertThrows(IllegalStateException.class, () -> kernel.spawn("after close", TaskKind.WORKER, () -> { }),
                "a closed kernel still refuses new tasks");
    }

    @Test
    void closeDrainsEverythingAndThenRefusesNewItems() {
        AtomicInteger ran = new AtomicInteger();
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "drained", Workqueue.MEM_RECLAIM, 1);
            Work[] chain = new Work[1];
            chain[0] = new Work("chained", ran::incrementAndGet);
            for (int i = 0; i < 10; i++) {
                wq.queue(new Work("item" + i, ran::incrementAndGet));
            }
            wq.queue(new Work("chaining", () -> {
                ran.incrementAndGet();
                assertTrue(wq.queue(chain[0]), "an item of a draining queue may queue more");
            }));
            Task rescuer = wq.rescuer();
            wq.close();
            assertEquals(12, ran.get());
            assertTrue(rescuer.hasExited(), "close stops the rescuer");
            assertFalse(wq.queue(new Work("late", ran::incrementAndGet)));
            assertEquals(1, kernel.misuses().size(), kernel.misuses().toString());
            assertFalse(kernel.components().contains(wq));
        }
        assertEquals(12, ran.get());
    }

    @Test
    void badArgumentsAreRefusedWithTheirValues() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            IllegalArgumentException zero = assertThrows(IllegalArgumentException.class,
                    () -> Workqueue.create(kernel, "z", 0, 0));
            assertTrue(zero.getMessage().contains("maxActive 0"), zero.getMessage());
            IllegalArgumentException flags = assertThrows(IllegalArgumentException.class,
                    () -> Workqueue.create(kernel, "f", 6, 1));
            assertTrue(flags.getMessage().contains("0x6"), flags.getMessage());
            Workqueue wq = Workqueue.create(kernel, "d", 0, 1);
            assertThrows(IllegalArgumentException.class, () -> wq.queueDelayed(new DelayedWork("n", () -> { }), -1));
        }
    }

    @Test
    void flushFromAnItemOfTheSameQueueIsRefused() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "self", 0, 2);
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            wq.queue(new Work("self-flush", () -> {
                try {
                    wq.flush();
                } catch (IllegalStateException e) {
                    thrown.set(e);
                }
            }));
            wq.flush();
            assertTrue(thrown.get() != null && thrown.get().getMessage().contains("wait for itself"), String.valueOf(thrown.get()));
        }
    }

    /**
     * Proves queueing is safe from many tasks and from timer (atomic) context at once: four
     * producers and a timer queue 900 items over three queues with different bounds; every item runs
     * exactly once and no queue ever exceeds its maxActive.
     */
    @Test
    void concurrentProducersAndTimersNeverExceedMaxActiveAndLoseNothing() {
        try (Kernel kernel = newKernel(Faults.NONE); Kernel.Attachment a = kernel.attach("test")) {
            int[] bounds = {1, 3, 8};
            Workqueue[] queues = new Workqueue[bounds.length];
            AtomicInteger[] running = new AtomicInteger[bounds.length];
            AtomicInteger[] maxRunning = new AtomicInteger[bounds.length];
            for (int q = 0; q < bounds.length; q++) {
                queues[q] = Workqueue.create(kernel, "q" + q, q == 0 ? Workqueue.MEM_RECLAIM : 0, bounds[q]);
                running[q] = new AtomicInteger();
                maxRunning[q] = new AtomicInteger();
            }
            int producers = 4;
            int perProducer = 200;
            int fromTimer = 100;
            AtomicInteger[] runs = new AtomicInteger[producers * perProducer + fromTimer];
            Work[] items = new Work[runs.length];
            for (int i = 0; i < items.length; i++) {
                int id = i;
                int q = i % bounds.length;
                runs[i] = new AtomicInteger();
                items[i] = new Work("item" + i, () -> {
                    maxRunning[q].accumulateAndGet(running[q].incrementAndGet(), Math::max);
                    runs[id].incrementAndGet();
                    running[q].decrementAndGet();
                });
            }
            Completion producersDone = new Completion("producers done");
            for (int p = 0; p < producers; p++) {
                int first = p * perProducer;
                kernel.spawn("producer" + p, TaskKind.USER, () -> {
                    for (int i = first; i < first + perProducer; i++) {
                        if (!queues[i % bounds.length].queue(items[i])) {
                            throw new IllegalStateException("item" + i + " was already pending");
                        }
                    }
                    producersDone.complete();
                });
            }
            int timerFirst = producers * perProducer;
            kernel.scheduler().addTimer(0, "timer producer", () -> {
                for (int i = timerFirst; i < items.length; i++) {
                    queues[i % bounds.length].queue(items[i]);
                }
                producersDone.complete();
            });
            for (int p = 0; p <= producers; p++) {
                producersDone.await();
            }
            for (Workqueue wq : queues) {
                wq.flush();
            }
            for (int i = 0; i < runs.length; i++) {
                assertEquals(1, runs[i].get(), "item" + i + " runs");
            }
            for (int q = 0; q < bounds.length; q++) {
                assertTrue(maxRunning[q].get() <= bounds[q], "q" + q + " ran " + maxRunning[q].get() + " at once");
            }
            assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
        }
    }
}
