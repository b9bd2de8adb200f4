package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.TaskKind;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The device queue's two bounds: requests in flight never exceed the depth, I/O tasks never exceed their count. */
class QueueDepthDeviceTest {

    private Kernel kernel;
    private Kernel.Attachment self;

    @BeforeEach
    void setUp() {
        kernel = Kernel.builder().name("queue-test").memory(1 << 20).build();
        self = kernel.attach("test");
    }

    @AfterEach
    void tearDown() {
        self.close();
        kernel.close();
    }

    @Test
    void fullQueueRefusesWithoutBlockingAndServesEverythingAdmittedAtStop() {
        Completion gate = new Completion("gate");
        AtomicInteger served = new AtomicInteger();
        DeviceQueue<Integer> queue = new DeviceQueue<>(kernel, "q", 3, 1, (request, task) -> {
            gate.await();
            served.incrementAndGet();
        });
        for (int i = 0; i < 3; i++) {
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(i));
        }
        // The single I/O task holds at most one request at the gate; three are in flight either way.
        assertEquals(DeviceQueue.Admit.FULL, queue.tryEnqueue(99));
        assertEquals(3, queue.inFlight());
        gate.completeAll();
        queue.stop();
        assertEquals(3, served.get());
        assertEquals(DeviceQueue.Admit.STOPPED, queue.tryEnqueue(100));
        assertEquals(0, queue.inFlight());
    }

    @Test
    void manySubmittersNeverExceedDepthOrTaskCount() {
        int depth = 4;
        int tasks = 2;
        int submitters = 6;
        int perSubmitter = 200;
        AtomicInteger serving = new AtomicInteger();
        AtomicInteger servingMax = new AtomicInteger();
        AtomicInteger inFlightMax = new AtomicInteger();
        AtomicInteger served = new AtomicInteger();
        DeviceQueue<Integer>[] holder = new DeviceQueue[1];
        holder[0] = new DeviceQueue<>(kernel, "q", depth, tasks, (request, task) -> {
            int now = serving.incrementAndGet();
            servingMax.accumulateAndGet(now, Math::max);
            inFlightMax.accumulateAndGet(holder[0].inFlight(), Math::max);
            served.incrementAndGet();
            serving.decrementAndGet();
        });
        DeviceQueue<Integer> queue = holder[0];
        Completion done = new Completion("submitters");
        for (int s = 0; s < submitters; s++) {
            kernel.spawn("submitter" + s, TaskKind.USER, () -> {
                for (int i = 0; i < perSubmitter; i++) {
                    assertEquals(DeviceQueue.Admit.QUEUED, queue.enqueue(i));
                }
                done.complete();
            });
        }
        for (int s = 0; s < submitters; s++) {
            assertTrue(done.await(30_000_000_000L), "submitters did not finish: " + kernel.crashes());
        }
        queue.stop();
        assertEquals(submitters * perSubmitter, served.get());
        assertTrue(servingMax.get() <= tasks, "served concurrently " + servingMax.get() + " > tasks " + tasks);
        assertTrue(inFlightMax.get() <= depth, "in flight " + inFlightMax.get() + " > depth " + depth);
        assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
    }

    @Test
    void boundsAreChecked() {
        assertThrows(IllegalArgumentException.class, () -> new DeviceQueue<Integer>(kernel, "q", 0, 1, (r, t) -> { }));
        assertThrows(IllegalArgumentException.class, () -> new DeviceQueue<Integer>(kernel, "q", 1, 0, (r, t) -> { }));
    }
}
