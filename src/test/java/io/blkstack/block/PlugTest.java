package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.Task;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The task plug ({@link Plug}): device wake-ups held back while plugged, delivered per queue on
 * unplug, and never owed across a sleep (the simulator would report the stranded request).
 */
class PlugTest {

    /** A queue stand-in that records the kicks it gets. */
    private static final class Kicks implements Plug.Kickable {
        final List<Integer> kicks = new ArrayList<>();

        @Override
        public void kick(int queued) {
            kicks.add(queued);
        }
    }

    @Test
    void holdsWakeUpsPerQueueUntilTheOutermostScopeCloses() {
        try (Kernel kernel = Kernel.builder().memory(16 * 4096).build(); var self = kernel.attach("test")) {
            Plug plug = Task.current().plug();
            Kicks a = new Kicks();
            Kicks b = new Kicks();
            assertFalse(plug.defer(a), "an unplugged task wakes at once");
            try (Plug.Scope outer = plug.start()) {
                assertTrue(plug.defer(a));
                assertTrue(plug.defer(b));
                try (Plug.Scope inner = plug.start()) {
                    assertTrue(plug.defer(a));
                }
                assertEquals(List.of(), a.kicks, "closing a nested scope does not unplug");
                assertEquals(3, plug.deferred());
            }
            assertEquals(List.of(2), a.kicks);
            assertEquals(List.of(1), b.kicks);
            assertEquals(0, plug.deferred());
            assertFalse(plug.active());
            Plug.Scope once = plug.start();
            once.close();
            assertThrows(IllegalStateException.class, once::close, "closed more often than started");
        }
    }

    @Test
    void aFullPlugLetsTheNextQueueWakeAtOnce() {
        try (Kernel kernel = Kernel.builder().memory(16 * 4096).build(); var self = kernel.attach("test")) {
            Plug plug = Task.current().plug();
            List<Kicks> queues = new ArrayList<>();
            try (Plug.Scope scope = plug.start()) {
                for (int i = 0; i < Plug.QUEUES_MAX; i++) {
                    Kicks q = new Kicks();
                    queues.add(q);
                    assertTrue(plug.defer(q));
                }
                assertFalse(plug.defer(new Kicks()), "one queue more than the plug holds");
                plug.flush();
                assertTrue(plug.active(), "a flush does not unplug");
                queues.forEach(q -> assertEquals(List.of(1), q.kicks));
            }
        }
    }

    // A plugged task that waits for its own requests must flush first: under the simulator, any
    // schedule in which the I/O tasks sleep when the requests arrive would otherwise be a deadlock.
    @Test
    void aPluggedTaskThatSleepsDeliversItsWakeUps() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        for (long seed = 0; seed < 40; seed++) {
            AtomicInteger heldBack = new AtomicInteger(-1);
            SimResult r = runner.runOnce(seed, k -> {
                Completion served = new Completion("served");
                DeviceQueue<Integer> queue = new DeviceQueue<>(k, "plugged", 8, 2, (request, task) -> served.complete());
                Plug plug = Task.current().plug();
                try (Plug.Scope scope = plug.start()) {
                    for (int i = 0; i < 3; i++) {
                        assertEquals(DeviceQueue.Admit.QUEUED, queue.tryEnqueue(i));
                    }
                    heldBack.set(plug.deferred());
                    for (int i = 0; i < 3; i++) {
                        served.await();
                    }
                }
                queue.stop();
            });
            assertEquals(Outcome.OK, r.outcome(), "seed " + seed + ": " + r.explanation());
            assertEquals(3, heldBack.get(), "seed " + seed + ": the three wake-ups were held back");
        }
    }
}
