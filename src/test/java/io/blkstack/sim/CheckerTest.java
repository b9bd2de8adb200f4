package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/** The checker's detectors: deadlock, livelock, misuse, uncontrolled blocking, with explanations. */
class CheckerTest {

    /** Two tasks taking two mutexes; in opposite orders if {@code abba}. */
    static Consumer<Kernel> lockPair(boolean abba) {
        return k -> {
            Mutex a = new Mutex("A");
            Mutex b = new Mutex("B");
            k.spawn("t1", TaskKind.USER, () -> lockBoth(a, b));
            k.spawn("t2", TaskKind.USER, () -> lockBoth(abba ? b : a, abba ? a : b));
        };
    }

    private static void lockBoth(Mutex first, Mutex second) {
        first.lock();
        try {
            second.lock();
            second.unlock();
        } finally {
            first.unlock();
        }
    }

    /**
     * Two tasks allocating from a 2-element mempool whose allocator is empty after the reserve was
     * filled; each takes {@code perTask} elements before freeing any (or frees each before the next
     * allocation if {@code perTask} is 1).
     */
    static Consumer<Kernel> mempoolPair(int perTask, int rounds) {
        return k -> {
            int[] made = {0};
            Mempool<Object> pool = new Mempool<>(k, "test-pool", 2, new Mempool.Allocator<>() {
                @Override
                public Object alloc(int gfp) {
                    return made[0] < 2 ? new Object[] {made[0]++} : null;
                }

                @Override
                public void free(Object element) {
                }
            });
            for (int t = 0; t < 2; t++) {
                k.spawn("user" + t, TaskKind.USER, () -> {
                    Object[] held = new Object[perTask];
                    for (int r = 0; r < rounds; r++) {
                        for (int i = 0; i < perTask; i++) {
                            held[i] = pool.alloc(Gfp.NOIO);
                        }
                        for (int i = 0; i < perTask; i++) {
                            pool.free(held[i]);
                        }
                    }
                });
            }
        };
    }

    // Proves deadlock detection on the classic ABBA: a random-walk campaign from a fixed master seed
    // finds it within 200 schedules, and the knot names both mutexes and their owners. Prints the
    // campaign's schedules per second for the report.
    @Test
    void abbaIsFoundAndExplained() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        SimRunner.CampaignResult c = runner.campaign(2024, 200, true, false, lockPair(true));
        SimResult r = c.firstFinding();
        assertNotNull(r, "no deadlock in " + c.schedules() + " schedules");
        assertEquals(Outcome.DEADLOCK, r.outcome(), r.explanation());
        String knot = r.explanation();
        assertTrue(knot.contains("mutex A, held by t1#4"), knot);
        assertTrue(knot.contains("mutex B, held by t2#5"), knot);
        assertTrue(knot.contains("CheckerTest.lockBoth"), "stack of the blocked tasks: " + knot);
        assertEquals(0, r.leakedThreads());
        SimResult replay = new SimRunner(SimConfig.builder().build()).runOnce(r.seed(), lockPair(true));
        assertEquals(r.traceHash(), replay.traceHash());
        assertEquals(r.explanation(), replay.explanation());
        SimRunner.CampaignResult speed = new SimRunner(SimConfig.builder().build()).campaign(1, 500, false, false, lockPair(true));
        System.out.printf("ABBA campaign: %d schedules, %d deadlocks, %.0f schedules/s, %.0f decisions/s%n",
                speed.schedules(), speed.findings().size(), speed.schedulesPerSecond(), speed.decisionsPerSecond());
    }

    // Proves PCT finds the same ABBA (depth 2 bug) from a fixed master seed within 200 schedules.
    @Test
    void pctFindsAbba() {
        SimRunner runner = new SimRunner(SimConfig.builder().strategy("pct:2").build());
        SimRunner.CampaignResult c = runner.campaign(99, 200, true, false, lockPair(true));
        assertNotNull(c.firstFinding(), "PCT found nothing in " + c.schedules() + " schedules");
        assertEquals(Outcome.DEADLOCK, c.firstFinding().outcome());
    }

    // Proves no false positives on the fixed lock order: 500 schedules, random and PCT, find nothing.
    @Test
    void consistentLockOrderFindsNothing() {
        for (String strategy : new String[] {"random", "pct:3"}) {
            SimRunner runner = new SimRunner(SimConfig.builder().strategy(strategy).build());
            SimRunner.CampaignResult c = runner.campaign(2024, 500, true, false, lockPair(false));
            assertTrue(c.findings().isEmpty(), strategy + ": " + (c.firstFinding() == null ? "" : c.firstFinding().explanation()));
            assertEquals(500, c.schedules());
        }
    }

    // Proves the mempool deadlock is found although the pool's 5-second retry keeps its waiters
    // "alive": two tasks each holding one of two elements while waiting for a second are reported
    // as a livelock (retry timers only, nothing changes), and the knot names the pool.
    @Test
    void mempoolHoldAndWaitIsFound() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        SimRunner.CampaignResult c = runner.campaign(11, 200, true, false, mempoolPair(2, 1));
        SimResult r = c.firstFinding();
        assertNotNull(r, "nothing found in " + c.schedules() + " schedules");
        assertTrue(r.outcome() == Outcome.LIVELOCK || r.outcome() == Outcome.DEADLOCK, r.explanation());
        assertTrue(r.explanation().contains("waits on mempool test-pool"), r.explanation());
        assertTrue(r.explanation().contains("reserve 0/2, 2 element(s) held outside the pool"), r.explanation());
        assertTrue(r.virtualNanos() >= 3 * Mempool.RETRY_NANOS, "three retry rounds: " + r.virtualNanos());
    }

    // Proves the fixed usage is clean: freeing each element before the next allocation, 500
    // schedules find nothing, although tasks do wait on the pool.
    @Test
    void mempoolFreeBeforeNextAllocFindsNothing() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        SimRunner.CampaignResult c = runner.campaign(11, 500, true, false, mempoolPair(1, 3));
        assertTrue(c.findings().isEmpty(), c.firstFinding() == null ? "" : c.firstFinding().explanation());
    }

    // Proves misuse detection in timer context: a timer callback that waits on a completion is
    // reported as MISUSE (blocking in atomic context).
    @Test
    void blockingInTimerCallbackIsMisuse() {
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, k -> {
            Completion c = new Completion("never");
            k.scheduler().addTimer(1_000_000, "bad-timer", c::await);
            Task.current().sleepFor(10_000_000);
        });
        assertEquals(Outcome.MISUSE, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("blocking in atomic context"), r.explanation());
    }

    // Proves misuse detection in a task's atomic context: a completion callback stand-in that
    // waits on a completion is reported as MISUSE.
    @Test
    void blockingInAtomicTaskIsMisuse() {
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, k -> k.spawn("endio", TaskKind.USER, () -> {
            Completion c = new Completion("never");
            Task.current().enterAtomic();
            c.await();
        }));
        assertEquals(Outcome.MISUSE, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("endio#4: blocking in atomic context"), r.explanation());
    }

    // Proves leak detection: an element never freed is reported when the kernel closes at the end
    // of the run.
    @Test
    void leakedPoolElementIsMisuse() {
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, k -> {
            Mempool<Object> pool = new Mempool<>(k, "leaky", 1, new Mempool.Allocator<>() {
                @Override
                public Object alloc(int gfp) {
                    return new Object();
                }

                @Override
                public void free(Object element) {
                }
            });
            pool.alloc(Gfp.KERNEL);
        });
        assertEquals(Outcome.MISUSE, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("mempool leaky: 1 element(s) not returned at close"), r.explanation());
    }

    // Proves the uncontrolled-blocking detector: a task that sleeps in real time (outside the
    // kernel primitives) for longer than the 200 ms bound is reported with its stack, and torn down.
    @Test
    void realSleepIsUncontrolledBlocking() {
        SimConfig config = SimConfig.builder().uncontrolledBlockingNanos(200_000_000L).build();
        SimResult r = new SimRunner(config).runOnce(1, k -> k.spawn("sleepy", TaskKind.USER, () -> {
            try {
                Thread.sleep(5_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        assertEquals(Outcome.UNCONTROLLED_BLOCKING, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("sleepy#4"), r.explanation());
        assertTrue(r.explanation().contains("java.lang.Thread.sleep"), r.explanation());
        assertTrue(r.explanation().contains("CheckerTest"), r.explanation());
        assertEquals(0, r.leakedThreads());
    }

    // Proves that a task crash ends the run as CRASH with the exception in the explanation.
    @Test
    void crashIsReported() {
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, k -> k.spawn("boom", TaskKind.USER, () -> {
            throw new IllegalStateException("boom at 42");
        }));
        assertEquals(Outcome.CRASH, r.outcome());
        assertTrue(r.explanation().contains("boom at 42"), r.explanation());
    }

    /** A wait target only a later layer knows how to describe. */
    record Flush(String device) {
    }

    // Proves the explanation is extensible: a describer registered in the configuration describes a
    // wait target the kernel does not know, inside the knot.
    @Test
    void registeredDescriberExplainsUnknownWaits() {
        SimConfig config = SimConfig.builder()
                .describer(what -> what instanceof Flush f ? "flush of " + f.device() + ", waiting for 3 bios in flight" : null)
                .build();
        SimResult r = new SimRunner(config).runOnce(1, k -> k.spawn("flusher", TaskKind.USER, () ->
                new io.blkstack.kernel.WaitQueue("flush").waitEvent(() -> false, new Flush("dm-0"))));
        assertEquals(Outcome.DEADLOCK, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("flusher#4 (USER) waits on flush of dm-0, waiting for 3 bios in flight"),
                r.explanation());
    }

    // Proves livelock detection on the page allocator's 100 ms retry: a task that keeps every page
    // it allocates from a 16-page arena waits for pages that never come back; the knot names the
    // page allocator.
    @Test
    void pageHoarderIsLivelock() {
        SimResult r = new SimRunner(SimConfig.builder().memory(16 * 4096).build()).runOnce(1, k ->
                k.spawn("hoarder", TaskKind.USER, () -> {
                    java.util.List<io.blkstack.mem.Page> held = new java.util.ArrayList<>();
                    for (int i = 0; i < 20; i++) {
                        held.add(k.pages().alloc(Gfp.KERNEL));
                    }
                    held.forEach(k.pages()::free);
                }));
        assertEquals(Outcome.LIVELOCK, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("hoarder#4 (USER) waits on page allocator: pages free 1/16"), r.explanation());
    }

    // Proves PCT's demotion of yielding tasks: a task spinning on yieldNow() for a flag set by a
    // lower-priority task would starve it forever under strict priorities; with demotion every one
    // of 100 schedules finishes.
    @Test
    void pctDemotesYieldingTasks() {
        SimRunner runner = new SimRunner(SimConfig.builder().strategy("pct:1").maxSteps(10_000).build());
        SimRunner.CampaignResult c = runner.campaign(5, 100, true, false, k -> {
            java.util.concurrent.atomic.AtomicBoolean flag = new java.util.concurrent.atomic.AtomicBoolean();
            k.spawn("spinner", TaskKind.USER, () -> {
                while (!flag.get()) {
                    k.scheduler().yieldNow(Task.current());
                }
            });
            k.spawn("setter", TaskKind.USER, () -> flag.set(true));
        });
        assertTrue(c.findings().isEmpty(), c.firstFinding() == null ? "" : c.firstFinding().explanation());
    }
}
