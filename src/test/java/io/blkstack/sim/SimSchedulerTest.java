package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/** The simulated scheduler's engine: determinism, virtual time, teardown. */
class SimSchedulerTest {

    /** Three tasks that contend on a mutex and signal each other through completions. */
    static final Consumer<Kernel> CONTENDED = k -> {
        Mutex m = new Mutex("m");
        Completion done = new Completion("done");
        AtomicInteger counter = new AtomicInteger();
        for (int i = 0; i < 3; i++) {
            k.spawn("w" + i, TaskKind.USER, () -> {
                for (int j = 0; j < 4; j++) {
                    m.lock();
                    try {
                        counter.incrementAndGet();
                        Task.current().sleepFor(1_000);
                    } finally {
                        m.unlock();
                    }
                }
                done.complete();
            });
        }
        for (int i = 0; i < 3; i++) {
            done.await();
        }
        if (counter.get() != 12) {
            throw new IllegalStateException("lost increments: " + counter.get());
        }
    };

    // Proves replay: each of 50 seeds is run twice with fresh runners and must give the same trace
    // hash and outcome; and proves the seed matters: the 50 seeds must give many distinct traces.
    @Test
    void sameSeedSameTraceDifferentSeedsDifferentTraces() {
        SimConfig config = SimConfig.builder().build();
        Set<Long> hashes = new HashSet<>();
        for (int i = 0; i < 50; i++) {
            long seed = SimRandom.deriveSeed(42, i);
            SimResult a = new SimRunner(config).runOnce(seed, CONTENDED);
            SimResult b = new SimRunner(config).runOnce(seed, CONTENDED);
            assertEquals(Outcome.OK, a.outcome(), a.explanation());
            assertEquals(a.traceHash(), b.traceHash(), "seed " + seed);
            assertEquals(a.steps(), b.steps(), "seed " + seed);
            assertTrue(a.decisions() > 0, "the workload must offer choices");
            hashes.add(a.traceHash());
        }
        assertTrue(hashes.size() >= 40, "only " + hashes.size() + " distinct traces of 50 seeds");
    }

    // Proves the campaign's --check-determinism mode: running each seed twice finds no mismatch,
    // for the PCT strategy too (whose learned bound must be replayed).
    @Test
    void campaignDeterminismCheckFindsNoMismatch() {
        for (String strategy : new String[] {"random", "pct:3"}) {
            SimRunner runner = new SimRunner(SimConfig.builder().strategy(strategy).build());
            SimRunner.CampaignResult r = runner.campaign(7, 20, false, true, CONTENDED);
            assertEquals(20, r.schedules());
            assertTrue(r.nondeterministicSeeds().isEmpty(), strategy + ": " + r.nondeterministicSeeds());
            assertTrue(r.findings().isEmpty(), strategy + ": " + r.firstFinding());
        }
    }

    // Proves virtual time: a task that sleeps one hour finishes, and the virtual clock moved by at
    // least an hour (real time is not asserted: the point is that nobody waited for it).
    @Test
    void anHourOfVirtualSleepPassesAtOnce() {
        long hour = 3_600_000_000_000L;
        AtomicLong before = new AtomicLong();
        AtomicLong after = new AtomicLong();
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, k -> k.spawn("sleeper", TaskKind.USER, () -> {
            before.set(k.scheduler().nanoTime());
            Task.current().sleepFor(hour);
            after.set(k.scheduler().nanoTime());
        }));
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        assertTrue(after.get() - before.get() >= hour, "slept " + (after.get() - before.get()) + " ns");
        assertTrue(r.virtualNanos() >= hour);
    }

    // Proves timers run in timer context under the simulator: a callback sees the TIMER task in
    // atomic context, and can wake a task by completing a completion.
    @Test
    void timersFireInAtomicTimerContext() {
        AtomicLong kind = new AtomicLong(-1);
        AtomicLong mayBlock = new AtomicLong(-1);
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(3, k -> {
            Completion c = new Completion("tick");
            k.scheduler().addTimer(5_000_000, "tick", () -> {
                kind.set(Task.current().kind().ordinal());
                mayBlock.set(Task.current().mayBlock() ? 1 : 0);
                c.complete();
            });
            c.await();
        });
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        assertEquals(TaskKind.TIMER.ordinal(), kind.get());
        assertEquals(0, mayBlock.get());
        assertTrue(r.virtualNanos() >= 5_000_000);
    }

    // Proves that runs clean up after themselves: after many runs that end in a deadlock (tasks torn
    // down with the killed signal), no task thread is left behind.
    @Test
    void tornDownRunsLeaveNoThreads() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        for (int i = 0; i < 30; i++) {
            SimResult r = runner.runOnce(i, k -> {
                Completion never = new Completion("never");
                k.spawn("stuck", TaskKind.USER, never::await);
            });
            assertEquals(Outcome.DEADLOCK, r.outcome());
            assertEquals(0, r.leakedThreads());
        }
        long simThreads = Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.getName().matches("sim-([0-9]|[12][0-9])/.*")).count();
        assertEquals(0, simThreads, "simulation threads still alive");
    }

    // Proves a fault a task contains while the run is torn down is not reported (Kernel.reportFault):
    // one reported while the run lives counts (a CRASH finding), one met while the stuck task unwinds
    // after that finding does not.
    @Test
    void aFaultMetWhileTheRunIsTornDownIsNotReported() {
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(7, k -> {
            Completion never = new Completion("never");
            k.spawn("stuck", TaskKind.USER, () -> {
                Task self = Task.current();
                self.kernel().reportFault(self, new IllegalStateException("while the run lives"));
                try {
                    never.await();
                } finally {
                    self.kernel().reportFault(self, new IllegalStateException("while it is torn down"));
                }
            });
        });
        assertEquals(Outcome.CRASH, r.outcome(), "the first fault is a finding");
        assertEquals(1L, r.counters().get("task.crashes"), "the second came from the teardown");
    }

    // Proves the trace file: a run with a trace file writes one JSON object per event.
    @Test
    void traceWritesJsonLines(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path file = dir.resolve("trace.jsonl");
        SimResult r = new SimRunner(SimConfig.builder().traceFile(file).build()).runOnce(5, CONTENDED);
        java.util.List<String> lines = java.nio.file.Files.readAllLines(file);
        assertEquals(r.events(), lines.size());
        assertTrue(lines.get(0).startsWith("{\"seq\":0,"), lines.get(0));
        assertNotNull(r.counters());
        assertNotEquals(0, r.traceHash());
    }
}
