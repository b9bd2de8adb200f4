package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The device queue's dispatch: requests of the exclusive class are served one batch at a time
 * while others pass them, and queued requests merge behind the oldest one up to the batch bound.
 */
class DeviceQueueDispatchTest {

    private Kernel kernel;
    private Kernel.Attachment self;

    @BeforeEach
    void setUp() {
        kernel = Kernel.builder().name("dispatch-test").memory(1 << 20).build();
        self = kernel.attach("test");
    }

    @AfterEach
    void tearDown() {
        if (self != null) {
            self.close();
        }
        kernel.close();
    }

    /** Even numbers are exclusive; a request merges if it is the batch's last plus one. */
    private static final DeviceQueue.Dispatch<Integer> EVEN_EXCLUSIVE_CONSECUTIVE = new DeviceQueue.Dispatch<>() {
        @Override
        public boolean exclusive(Integer request) {
            return request % 2 == 0;
        }

        @Override
        public boolean merges(DeviceQueue.Batch<Integer> batch, Integer next) {
            return next == batch.last() + 1;
        }
    };

    private static final DeviceQueue.Dispatch<Integer> CONSECUTIVE = new DeviceQueue.Dispatch<>() {
        @Override
        public boolean exclusive(Integer request) {
            return false;
        }

        @Override
        public boolean merges(DeviceQueue.Batch<Integer> batch, Integer next) {
            return next == batch.last() + 1;
        }
    };

    @Test
    void anExclusiveRequestWaitsForTheOneInServiceWhileOthersPassIt() {
        Completion gate = new Completion("gate");
        Completion oddServed = new Completion("odd served");
        Set<Integer> started = ConcurrentHashMap.newKeySet();
        AtomicInteger exclusiveNow = new AtomicInteger();
        AtomicInteger exclusiveMax = new AtomicInteger();
        DeviceQueue<Integer> queue = new DeviceQueue<>(kernel, "q", 16, 3, 1, EVEN_EXCLUSIVE_CONSECUTIVE,
                (batch, task) -> {
                    int request = batch.get(0);
                    started.add(request);
                    boolean exclusive = request % 2 == 0;
                    if (exclusive) {
                        exclusiveMax.accumulateAndGet(exclusiveNow.incrementAndGet(), Math::max);
                    }
                    if (request == 0) {
                        gate.await();
                    }
                    if (request == 1) {
                        oddServed.complete();
                    }
                    if (exclusive) {
                        exclusiveNow.decrementAndGet();
                    }
                });
        assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(0));
        assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(2));
        assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(1));
        oddServed.await();
        assertFalse(started.contains(2), "an exclusive request started while another was in service: " + started);
        assertEquals(1, queue.queued(), "the second exclusive request is still queued");
        gate.completeAll();
        queue.stop();
        assertEquals(Set.of(0, 1, 2), started);
        assertEquals(1, exclusiveMax.get(), "exclusive requests served at once");
    }

    @Test
    void queuedRequestsMergeBehindTheOldestUpToTheBatchBound() {
        Completion taken = new Completion("gate request taken");
        Completion gate = new Completion("gate");
        List<List<Integer>> batches = Collections.synchronizedList(new ArrayList<>());
        DeviceQueue<Integer> queue = new DeviceQueue<>(kernel, "q", 16, 1, 4, CONSECUTIVE, (batch, task) -> {
            List<Integer> got = new ArrayList<>();
            for (int i = 0; i < batch.size(); i++) {
                got.add(batch.get(i));
            }
            batches.add(got);
            if (got.get(0) == 100) {
                taken.complete();
                gate.await();
            }
        });
        queue.tryEnqueue(100);
        taken.await();
        for (int request : new int[] {1, 2, 3, 4, 5, 6, 7, 20, 21, 40}) {
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(request));
        }
        gate.completeAll();
        queue.stop();
        assertEquals(List.of(List.of(100), List.of(1, 2, 3, 4), List.of(5, 6, 7), List.of(20, 21), List.of(40)),
                batches);
        assertEquals(11, queue.served(), "every request of every batch is counted served");
        assertEquals(0, queue.inFlight());
    }

    @Test
    void mergingStaysInsideTheExclusiveClassAndTheServingTaskTakesTheQueuedExclusivesNext() {
        Completion taken = new Completion("gate request taken");
        Completion gate = new Completion("gate");
        List<List<Integer>> batches = Collections.synchronizedList(new ArrayList<>());
        DeviceQueue<Integer> queue = new DeviceQueue<>(kernel, "q", 16, 2, 8, EVEN_EXCLUSIVE_CONSECUTIVE,
                (batch, task) -> {
                    List<Integer> got = new ArrayList<>();
                    for (int i = 0; i < batch.size(); i++) {
                        got.add(batch.get(i));
                    }
                    batches.add(got);
                    if (got.get(0) == 100) {
                        taken.complete();
                        gate.await();
                    }
                });
        queue.tryEnqueue(100);
        taken.await();
        // 2 and 3 are consecutive but of different classes; 4 cannot merge behind 2 (not last + 1).
        for (int request : new int[] {2, 4, 3}) {
            assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(request));
        }
        gate.completeAll();
        queue.stop();
        List<List<Integer>> sorted = new ArrayList<>(batches);
        sorted.sort((a, b) -> Integer.compare(a.get(0), b.get(0)));
        assertEquals(List.of(List.of(2), List.of(3), List.of(4), List.of(100)), sorted);
        assertTrue(batches.indexOf(List.of(2)) < batches.indexOf(List.of(4)), "exclusive requests keep their order: "
                + batches);
    }

    // Under the simulator: three submitters (one plugged, one exclusive only) against two tasks.
    // A wake-up lost by the exclusive class (a request queued behind the batch in service while
    // the serving task goes to sleep, or leaves it for other work) would strand it: DEADLOCK.
    @Test
    void noScheduleStrandsARequestOfEitherClass() {
        self.close(); // the simulation's controller must not be a kernel task
        self = null;
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        for (long seed = 0; seed < 60; seed++) {
            AtomicInteger served = new AtomicInteger();
            SimResult r = runner.runOnce(seed, k -> {
                Completion[] own = new Completion[3];
                for (int s = 0; s < 3; s++) {
                    own[s] = new Completion("submitter" + s + " served");
                }
                DeviceQueue<Integer> queue = new DeviceQueue<>(k, "mixed", 4, 2, 3, EVEN_EXCLUSIVE_CONSECUTIVE,
                        (batch, task) -> {
                            for (int i = 0; i < batch.size(); i++) {
                                served.incrementAndGet();
                                own[batch.get(i) / 100].complete();
                            }
                        });
                Completion done = new Completion("submitters");
                for (int s = 0; s < 3; s++) {
                    final int id = s;
                    k.spawn("submitter" + s, TaskKind.USER, () -> {
                        try (Plug.Scope scope = id == 0 ? Task.current().plug().start() : null) {
                            for (int i = 0; i < 11; i++) {
                                // Submitter 2 sends only requests of the exclusive class.
                                int request = id * 100 + (id == 2 ? 2 * i : i);
                                assertEquals(DeviceQueue.Admit.QUEUED, queue.enqueue(request));
                            }
                            // Each submitter waits for its own requests: none may be left queued.
                            for (int i = 0; i < 11; i++) {
                                own[id].await();
                            }
                        }
                        done.complete();
                    });
                }
                for (int s = 0; s < 3; s++) {
                    done.await();
                }
                queue.stop();
            });
            assertEquals(Outcome.OK, r.outcome(), "seed " + seed + ": " + r.explanation());
            assertEquals(33, served.get(), "seed " + seed);
        }
    }

    @Test
    void batchBoundIsChecked() {
        assertThrows(IllegalArgumentException.class,
                () -> new DeviceQueue<Integer>(kernel, "q", 4, 1, 5, null, (b, t) -> { }));
        assertThrows(IllegalArgumentException.class,
                () -> new DeviceQueue<Integer>(kernel, "q", 4, 1, 0, null, (b, t) -> { }));
    }
}
