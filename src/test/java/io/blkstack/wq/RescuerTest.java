package io.blkstack.wq;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * When no worker can be created, mayday reaches the rescuers of MEM_RECLAIM queues and only them;
 * a rescuer runs its queue's items strictly one at a time (the property seed 004 depends on).
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class RescuerTest {

    /** Fails the {@code worker-create} fault site while switched on. */
    static final class CreateFaults implements Faults {
        final AtomicBoolean failCreate = new AtomicBoolean(true);

        @Override
        public boolean shouldFail(String site) {
            return failCreate.get() && WorkerPool.FAULT_SITE.equals(site);
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    }

    /** Items that count runs and record the largest number running at once, and on which kind of task. */
    static final class Recorder {
        final AtomicInteger ran = new AtomicInteger();
        final AtomicInteger running = new AtomicInteger();
        final AtomicInteger maxRunning = new AtomicInteger();
        final AtomicInteger ranOnRescuer = new AtomicInteger();

        Work item(String name) {
            return new Work(name, () -> {
                maxRunning.accumulateAndGet(running.incrementAndGet(), Math::max);
                if (Task.current().kind() == TaskKind.RESCUER) {
                    ranOnRescuer.incrementAndGet();
                }
                running.decrementAndGet();
                ran.incrementAndGet();
            });
        }
    }

    /**
     * Proves the mayday path with creation failing at its fault site: 40 items of a MEM_RECLAIM
     * queue (more than two rescuer batches) all run on the rescuer, while a plain queue's items stay
     * pending until creation works again.
     */
    @Test
    void maydayRescuesMemReclaimQueuesWhenWorkerCreationFails() {
        CreateFaults faults = new CreateFaults();
        try (Kernel kernel = WorkqueueTest.newKernel(faults); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue reclaim = Workqueue.create(kernel, "reclaim", Workqueue.MEM_RECLAIM, 4);
            Workqueue plain = Workqueue.create(kernel, "plain", 0, 4);
            Recorder reclaimItems = new Recorder();
            Recorder plainItems = new Recorder();
            Work[] plainWork = new Work[5];
            for (int i = 0; i < plainWork.length; i++) {
                plainWork[i] = plainItems.item("plain" + i);
                assertTrue(plain.queue(plainWork[i]));
            }
            for (int i = 0; i < 40; i++) {
                assertTrue(reclaim.queue(reclaimItems.item("reclaim" + i)));
            }
            reclaim.flush();
            assertEquals(40, reclaimItems.ran.get());
            assertEquals(40, reclaimItems.ranOnRescuer.get());
            assertEquals(1, reclaimItems.maxRunning.get());
            assertTrue(kernel.counters().value("wq.maydays") > 0);
            assertEquals(40, kernel.counters().value("wq.rescuer-runs"));
            assertTrue(kernel.counters().value("wq.worker-create-failures") > 0);
            assertEquals(0, kernel.counters().value("wq.workers-created"));
            assertEquals(0, WorkerPool.of(kernel).workerCount());

            assertEquals(0, plainItems.ran.get(), "a queue without a rescuer waits for a worker");
            assertEquals(5, plain.pendingCount());
            for (Work w : plainWork) {
                assertTrue(w.isPending());
            }
            faults.failCreate.set(false);
            plain.flush();
            assertEquals(5, plainItems.ran.get());
            assertEquals(0, plainItems.ranOnRescuer.get());
            assertTrue(kernel.counters().value("wq.workers-created") > 0);
        }
    }

    /** The same with real memory pressure: every free page above the min watermark is taken, so the worker's pages cannot be had. */
    @Test
    void maydayRescuesWhenWorkerPagesCannotBeAllocated() {
        try (Kernel kernel = Kernel.builder().name("wq-tiny").memory(64L * Page.SIZE).build();
                Kernel.Attachment a = kernel.attach("test")) {
            List<Page> hog = new ArrayList<>();
            for (Page p = kernel.pages().alloc(Gfp.NOWAIT); p != null; p = kernel.pages().alloc(Gfp.NOWAIT)) {
                hog.add(p);
            }
            Workqueue reclaim = Workqueue.create(kernel, "reclaim", Workqueue.MEM_RECLAIM, 8);
            Workqueue plain = Workqueue.create(kernel, "plain", 0, 8);
            Recorder reclaimItems = new Recorder();
            Recorder plainItems = new Recorder();
            for (int i = 0; i < 3; i++) {
                plain.queue(plainItems.item("plain" + i));
            }
            for (int i = 0; i < 20; i++) {
                reclaim.queue(reclaimItems.item("reclaim" + i));
            }
            reclaim.flush();
            assertEquals(20, reclaimItems.ranOnRescuer.get());
            assertTrue(kernel.counters().value("wq.maydays") > 0);
            assertTrue(kernel.counters().value("wq.rescuer-runs") >= 20);
            assertTrue(kernel.counters().value("wq.worker-create-failures") > 0);
            assertEquals(0, plainItems.ran.get());
            assertEquals(3, plain.pendingCount());
            for (Page p : hog) {
                kernel.pages().free(p);
            }
            plain.flush();
            assertEquals(3, plainItems.ran.get());
        }
    }

    /**
     * Proves the rescuer is one execution context: item A waits (up to 200 ms of kernel time) for
     * item B of the same queue. Under rescue B can only run after A returns, so A must time out,
     * and no two items ever run at once.
     */
    @Test
    void rescuerRunsItemsStrictlyOneAtATime() {
        CreateFaults faults = new CreateFaults();
        try (Kernel kernel = WorkqueueTest.newKernel(faults); Kernel.Attachment a = kernel.attach("test")) {
            Workqueue wq = Workqueue.create(kernel, "serial", Workqueue.MEM_RECLAIM, 8);
            Recorder others = new Recorder();
            AtomicInteger running = others.running;
            AtomicInteger maxRunning = others.maxRunning;
            Completion bRan = new Completion("b ran");
            AtomicBoolean aSawB = new AtomicBoolean(true);
            AtomicBoolean bRanAfterA = new AtomicBoolean();
            AtomicBoolean aDone = new AtomicBoolean();
            wq.queue(new Work("a", () -> {
                maxRunning.accumulateAndGet(running.incrementAndGet(), Math::max);
                aSawB.set(bRan.await(200 * WorkqueueTest.MILLISECOND));
                aDone.set(true);
                running.decrementAndGet();
            }));
            wq.queue(new Work("b", () -> {
                maxRunning.accumulateAndGet(running.incrementAndGet(), Math::max);
                bRanAfterA.set(aDone.get());
                bRan.complete();
                running.decrementAndGet();
            }));
            for (int i = 0; i < 20; i++) {
                wq.queue(others.item("c" + i));
            }
            wq.flush();
            assertFalse(aSawB.get(), "b ran while a was running: the rescuer is not serial");
            assertTrue(bRanAfterA.get());
            assertEquals(1, maxRunning.get(), "items of one queue ran at once under rescue");
            assertEquals(20, others.ranOnRescuer.get());
            assertEquals(22, kernel.counters().value("wq.rescuer-runs"));
        }
    }
}
