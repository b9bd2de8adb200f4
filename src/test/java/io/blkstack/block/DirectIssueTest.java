package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Direct issue (policy {@code direct-issue}, blk-mq's {@code blk_mq_try_issue_directly}): the
 * device queue admits a submitter to serve a request itself only with the ring empty, a slot free
 * and a lane free, and its stop waits for such a request; the file device takes the path for a
 * plain READ or WRITE on an idle queue (the completion runs on the submitter, before the submit
 * returns) and queues everything else (a submission from a completion callback, FLUSH, FUA, and
 * every bio under {@code direct-issue=legacy} or for the operation the policy leaves out).
 */
class DirectIssueTest {

    private static final long TIMEOUT_NANOS = 30_000_000_000L;
    private static final long SIZE = 1L << 20;

    @TempDir
    Path dir;

    @Test
    void queueIssuesDirectlyOnlyWithAnEmptyRingAFreeSlotAndAFreeLane() {
        try (TestKernel tk = new TestKernel("direct-queue")) {
            Completion gate = new Completion("gate");
            Completion started = new Completion("started");
            AtomicInteger served = new AtomicInteger();
            DeviceQueue<Integer> queue = new DeviceQueue<>(tk.kernel, "q", 3, 1, (request, task) -> {
                started.complete();
                gate.await();
                served.incrementAndGet();
            });
            assertEquals(1, queue.directLanes(), "one lane per I/O task");
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(1));
            assertTrue(started.await(TIMEOUT_NANOS), "the I/O task did not take request 1");
            // Ring empty, 1 of 3 slots in flight: the submitter may serve; the only lane is then taken.
            int lane = queue.tryIssueDirectly();
            assertEquals(0, lane);
            assertEquals(2, queue.inFlight(), "a direct issue holds a slot");
            assertEquals(-1, queue.tryIssueDirectly(), "the only lane is busy");
            queue.finishDirect(lane);
            assertEquals(1, queue.directIssues());
            // Request 2 waits in the ring behind the busy task: a direct issue would overtake it.
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(2));
            assertEquals(-1, queue.tryIssueDirectly(), "a request is queued");
            gate.completeAll();
            queue.stop();
            assertEquals(2, served.get(), "the queued requests were served by the I/O task");
            assertEquals(-1, queue.tryIssueDirectly(), "a stopped queue admits nothing");
            assertEquals(0, queue.inFlight());
        }
    }

    @Test
    void aFullQueueIsNotIdle() {
        try (TestKernel tk = new TestKernel("direct-full")) {
            Completion gate = new Completion("gate");
            Completion started = new Completion("started");
            DeviceQueue<Integer> queue = new DeviceQueue<>(tk.kernel, "q", 1, 2, (request, task) -> {
                started.complete();
                gate.await();
            });
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(1));
            assertTrue(started.await(TIMEOUT_NANOS), "the I/O task did not take request 1");
            assertEquals(-1, queue.tryIssueDirectly(), "the one slot is in flight, though the ring is empty");
            gate.completeAll();
            queue.stop();
        }
    }

    /**
     * A stop that begins while a submitter serves a request itself waits for it (every admitted
     * request is served before the stop returns): the stopper is seen waiting on the queue, the
     * direct issue ends, and the stop then returns with nothing in flight.
     */
    @Test
    void stopWaitsForADirectIssueInProgress() {
        try (TestKernel tk = new TestKernel("direct-stop")) {
            DeviceQueue<Integer> queue = new DeviceQueue<>(tk.kernel, "q", 2, 1, (request, task) -> { });
            int lane = queue.tryIssueDirectly();
            assertEquals(0, lane);
            Completion stopped = new Completion("stopped");
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Task stopper = tk.kernel.spawn("stopper", TaskKind.USER, () -> {
                try {
                    queue.stop();
                } catch (RuntimeException e) {
                    failure.set(e);
                }
                stopped.complete();
            });
            assertSame(queue, stopper.awaitWait(what -> what == queue, TIMEOUT_NANOS),
                    "the stopper never waited for the direct issue");
            assertFalse(stopped.isDone(), "the stop returned with a direct issue in flight");
            queue.finishDirect(lane);
            assertTrue(stopped.await(TIMEOUT_NANOS), "the stop did not end after the direct issue");
            assertEquals(null, failure.get());
            assertEquals(0, queue.inFlight());
            tk.kernel.scheduler().join(stopper);
        }
    }

    @Test
    void anIdleFileDeviceServesReadsAndWritesOnTheSubmitter() throws Exception {
        try (TestKernel tk = new TestKernel("direct-file", 8L << 20, Policies.defaults(), Faults.NONE)) {
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            FileDevice dev = FileDevice.open(tk.kernel, "a", dir.resolve("a.img"), SIZE,
                    FileDevice.Options.defaults().withCreate(true));
            Page page = tk.kernel.pages().alloc(Gfp.KERNEL);
            try {
                byte[] data = MemoryDeviceTest.filled(Page.SIZE, (byte) 7);
                page.buffer().put(0, data);
                assertEquals(Thread.currentThread(), submitAndReturnCompleter(set, dev, BioOp.WRITE, 0, page),
                        "the WRITE completed on its submitter");
                page.zero(0, Page.SIZE);
                assertEquals(Thread.currentThread(), submitAndReturnCompleter(set, dev, BioOp.READ, 0, page),
                        "the READ completed on its submitter");
                byte[] got = new byte[Page.SIZE];
                page.buffer().get(0, got);
                assertArrayEquals(data, got);
                assertEquals(2, dev.directIssues());

                // FLUSH, FUA and a submission from a completion callback go to the I/O tasks.
                assertNotEquals(Thread.currentThread(), submitAndReturnCompleter(set, dev, BioOp.FLUSH, 0, null));
                assertNotEquals(Thread.currentThread(), submitAndReturnCompleter(set, dev, BioOp.WRITE, BioFlags.FUA, page));
                Thread completer = submitAndReturnCompleterAtomic(set, dev, page);
                assertNotEquals(Thread.currentThread(), completer, "a READ from atomic context was queued");
                assertEquals(2, dev.directIssues());
            } finally {
                tk.kernel.pages().free(page);
                dev.close();
                set.close();
            }
        }
    }

    @Test
    void legacyAndSingleOperationPoliciesQueueWhatTheyLeaveOut() throws Exception {
        String[][] cases = {{"legacy", "0"}, {"reads", "1"}, {"writes", "1"}};
        for (String[] c : cases) {
            Policies policies = Policies.defaults().with(PolicySwitch.DIRECT_ISSUE, c[0]);
            try (TestKernel tk = new TestKernel("direct-" + c[0], 8L << 20, policies, Faults.NONE)) {
                BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
                FileDevice dev = FileDevice.open(tk.kernel, "a", dir.resolve(c[0] + ".img"), SIZE,
                        FileDevice.Options.defaults().withCreate(true));
                Page page = tk.kernel.pages().alloc(Gfp.KERNEL);
                try {
                    Thread writer = submitAndReturnCompleter(set, dev, BioOp.WRITE, 0, page);
                    Thread reader = submitAndReturnCompleter(set, dev, BioOp.READ, 0, page);
                    assertEquals(c[0].equals("writes"), writer == Thread.currentThread(), c[0] + ": WRITE");
                    assertEquals(c[0].equals("reads"), reader == Thread.currentThread(), c[0] + ": READ");
                    assertEquals(Long.parseLong(c[1]), dev.directIssues(), c[0]);
                } finally {
                    tk.kernel.pages().free(page);
                    dev.close();
                    set.close();
                }
            }
        }
    }

    /**
     * Submits a one-page bio (no page for FLUSH) at {@code position}, waits for it, checks it
     * succeeded, and returns the thread its completion ran on.
     */
    private static Thread submitAndReturnCompleter(BioSet set, FileDevice dev, BioOp op, int flags, Page page) {
        Bio bio = set.alloc(Gfp.KERNEL, page == null ? 0 : 1);
        try {
            bio.init(dev, op, flags, 0);
            if (page != null && !bio.addPage(page, Page.SIZE, 0)) {
                throw new IllegalStateException("no room for one page");
            }
            AtomicReference<Thread> completer = new AtomicReference<>();
            Completion done = new Completion("bio");
            bio.setEndIo(b -> {
                completer.set(Thread.currentThread());
                done.complete();
            });
            Submit.submitBio(bio);
            assertTrue(done.await(TIMEOUT_NANOS), op + " did not complete");
            assertEquals(BioStatus.OK, bio.status(), op.toString());
            return completer.get();
        } finally {
            bio.put();
        }
    }

    /**
     * As {@link #submitAndReturnCompleter} for a NOWAIT READ submitted in atomic context, as a
     * completion callback would; the wait for it happens outside.
     */
    private static Thread submitAndReturnCompleterAtomic(BioSet set, FileDevice dev, Page page) {
        Bio bio = set.alloc(Gfp.NOWAIT, 1);
        AtomicReference<Thread> completer = new AtomicReference<>();
        Completion done = new Completion("bio");
        bio.init(dev, BioOp.READ, BioFlags.NOWAIT, 0);
        bio.addPage(page, Page.SIZE, 0);
        bio.setEndIo(b -> {
            completer.set(Thread.currentThread());
            done.complete();
        });
        Task self = Task.current();
        self.enterAtomic();
        try {
            Submit.submitBio(bio);
        } finally {
            self.exitAtomic();
        }
        try {
            assertTrue(done.await(TIMEOUT_NANOS), "the READ did not complete");
            assertEquals(BioStatus.OK, bio.status());
        } finally {
            bio.put();
        }
        return completer.get();
    }
}
