package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * The stuck-wait rule: when periodic work keeps changing the kernel's state, a stall is still a
 * stall once no task that owes work has left its wait for {@link SimConfig#stuckWaitNanosMax}; a
 * task that sleeps on its own long timeout is not stuck.
 */
class StuckWaitTest {

    /** A component whose progress fingerprint moves on every tick of a 30 s periodic timer (cache eviction, say). */
    static final class Ticker implements Component {
        private final Kernel kernel;
        private long ticks;
        private Timer timer;
        private boolean closed;

        Ticker(Kernel kernel) {
            this.kernel = kernel;
            kernel.register(this);
            arm();
        }

        private void arm() {
            timer = kernel.scheduler().addTimer(30_000_000_000L, "ticker", () -> {
                ticks++;
                if (!closed) {
                    arm();
                }
            });
        }

        @Override
        public String name() {
            return "ticker";
        }

        @Override
        public long fingerprint() {
            return ticks;
        }

        @Override
        public void close() {
            closed = true;
            timer.cancel();
        }
    }

    // Proves a task blocked for good on a completion is reported while a periodic timer keeps
    // changing a component's fingerprint: the run ends as DEADLOCK (the waiter has no timeout) after
    // the 10-minute stuck-wait bound, not as TIME_LIMIT after the virtual day it used to run to.
    @Test
    void blockedForGoodUnderPeriodicWorkIsADeadlock() {
        Consumer<Kernel> workload = k -> {
            new Ticker(k);
            Completion never = new Completion("never completed");
            Task waiter = k.spawn("waiter", TaskKind.USER, never::await);
            k.scheduler().join(waiter);
        };
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, workload);
        assertEquals(Outcome.DEADLOCK, r.outcome(), r.explanation());
        assertTrue(r.explanation().startsWith("DEADLOCK: tasks that owe work wait without a timeout"), r.explanation());
        assertTrue(r.explanation().contains("task waiter#"), r.explanation());
        assertTrue(r.virtualNanos() < 3_600_000_000_000L, "ran to " + r.virtualNanos() + " ns");
    }

    // Proves the rule leaves a long sleep alone: a task that sleeps 40 minutes on its own timeout,
    // with the same periodic timer ticking, finishes and the run is OK.
    @Test
    void aLongSleepOnItsOwnTimeoutIsNotStuck() {
        Consumer<Kernel> workload = k -> {
            Ticker ticker = new Ticker(k);
            Task sleeper = k.spawn("sleeper", TaskKind.USER, () -> Task.current().sleepFor(2_400_000_000_000L));
            k.scheduler().join(sleeper);
            ticker.close();
            k.unregister(ticker);
        };
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(2, workload);
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        assertTrue(r.virtualNanos() >= 2_400_000_000_000L, "ended at " + r.virtualNanos() + " ns");
    }
}
