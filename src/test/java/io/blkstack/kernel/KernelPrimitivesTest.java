package io.blkstack.kernel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The blocking primitives under the real scheduler, checked from their contracts. */
class KernelPrimitivesTest {

    private Kernel kernel;
    private Kernel.Attachment self;

    @BeforeEach
    void setUp() {
        kernel = Kernel.builder().name("test").memory(1 << 20).build();
        self = kernel.attach("test");
    }

    @AfterEach
    void tearDown() {
        self.close();
        kernel.close();
    }

    @Test
    void completionWakesAWaiterInAnotherTask() {
        Completion started = new Completion("started");
        Completion go = new Completion("go");
        AtomicInteger stage = new AtomicInteger();
        Task t = kernel.spawn("waiter", TaskKind.USER, () -> {
            started.complete();
            go.await();
            stage.set(2);
        });
        started.await();
        assertEquals(0, stage.get());
        go.complete();
        kernel.scheduler().join(t);
        assertEquals(2, stage.get());
    }

    @Test
    void awaitWaitIsWokenWhenAnotherTaskBeginsTheWaitItLooksFor() {
        long tenSeconds = Duration.ofSeconds(10).toNanos();
        Task tester = self.task();
        Completion go = new Completion("go");
        AtomicReference<Object> testerSeen = new AtomicReference<>();
        AtomicReference<Boolean> goCompleted = new AtomicReference<>();
        // The task first waits for the tester to be asleep in awaitWait, then waits on go for at
        // most five seconds. The tester must be woken by that wait's start: one that only
        // re-checked when its own ten-second timeout ran out would find the task gone.
        Task t = kernel.spawn("blocked", TaskKind.USER, () -> {
            testerSeen.set(tester.awaitWait(w -> true, tenSeconds));
            goCompleted.set(go.await(tenSeconds / 2));
        });
        assertSame(go, t.awaitWait(w -> w == go, tenSeconds));
        assertNotNull(testerSeen.get(), "the task saw the tester's wait");
        go.complete();
        kernel.scheduler().join(t);
        assertTrue(goCompleted.get(), "the task was still waiting when the tester completed go");
        assertNull(t.awaitWait(w -> true, 1_000_000L), "an exited task never begins a wait");
    }

    @Test
    void completionCountsSignalsAndCompleteAllReleasesEveryone() {
        Completion c = new Completion("counted");
        c.complete();
        c.complete();
        assertTrue(c.await(0));
        assertTrue(c.await(0));
        assertFalse(c.await(0), "two signals, two consumptions, the third must time out");
        c.completeAll();
        for (int i = 0; i < 5; i++) {
            assertTrue(c.await(0));
        }
        c.reinit();
        assertFalse(c.isDone());
    }

    @Test
    void mutexTracksItsOwnerAndExcludes() {
        Mutex m = new Mutex("m");
        m.lock();
        assertSame(self.task(), m.owner());
        assertThrows(IllegalStateException.class, m::lock, "relocking by the owner is a self-deadlock");
        AtomicInteger inside = new AtomicInteger();
        AtomicInteger maxInside = new AtomicInteger();
        List<Task> tasks = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            tasks.add(kernel.spawn("locker" + i, TaskKind.USER, () -> {
                for (int j = 0; j < 200; j++) {
                    m.lock();
                    int now = inside.incrementAndGet();
                    maxInside.accumulateAndGet(now, Math::max);
                    inside.decrementAndGet();
                    m.unlock();
                }
            }));
        }
        m.unlock();
        assertNotSame(self.task(), m.owner(), "after unlock the test task owns nothing (a locker may already)");
        tasks.forEach(kernel.scheduler()::join);
        assertEquals(1, maxInside.get());
    }

    @Test
    void unlockByANonOwnerThrows() {
        Mutex m = new Mutex("m");
        Completion locked = new Completion("locked");
        Completion release = new Completion("release");
        Task owner = kernel.spawn("owner", TaskKind.USER, () -> {
            m.lock();
            locked.complete();
            release.await();
            m.unlock();
        });
        locked.await();
        assertThrows(IllegalStateException.class, m::unlock);
        release.complete();
        kernel.scheduler().join(owner);
    }

    @Test
    void waitQueueLosesNoWakeUpUnderContention() {
        // A producer and a consumer hand 20,000 tokens through one counter and two wait queues;
        // a lost wake-up would hang the test.
        WaitQueue notEmpty = new WaitQueue("not empty");
        WaitQueue notFull = new WaitQueue("not full");
        AtomicInteger slots = new AtomicInteger();
        int count = 20_000;
        Task producer = kernel.spawn("producer", TaskKind.USER, () -> {
            for (int i = 0; i < count; i++) {
                notFull.waitEvent(() -> slots.get() < 4, "full");
                slots.incrementAndGet();
                notEmpty.wakeAll();
            }
        });
        AtomicInteger consumed = new AtomicInteger();
        Task consumer = kernel.spawn("consumer", TaskKind.USER, () -> {
            for (int i = 0; i < count; i++) {
                notEmpty.waitEvent(() -> slots.get() > 0, "empty");
                slots.decrementAndGet();
                consumed.incrementAndGet();
                notFull.wakeOne();
            }
        });
        kernel.scheduler().join(producer);
        kernel.scheduler().join(consumer);
        assertEquals(count, consumed.get());
        assertFalse(notEmpty.hasWaiters());
    }

    @Test
    void waitEventTimeoutReturnsFalseWhenNothingHappens() {
        WaitQueue q = new WaitQueue("never");
        assertFalse(q.waitEventTimeout(() -> false, "nothing", 1_000_000L, false));
        assertNull(self.task().waitingOn(), "the wait record ends with the wait");
    }

    @Test
    void blockingInAtomicContextIsReportedAndRefused() {
        Completion never = new Completion("never");
        self.task().enterAtomic();
        try {
            assertThrows(IllegalStateException.class, never::await);
        } finally {
            self.task().exitAtomic();
        }
        assertEquals(1, kernel.misuses().size());
        assertTrue(kernel.misuses().get(0).contains("atomic"), kernel.misuses().toString());
    }

    @Test
    void sleepingWhileHoldingASpinLockIsRefused() {
        SpinLock lock = new SpinLock("held");
        lock.lock();
        try {
            assertThrows(IllegalStateException.class, () -> self.task().sleepFor(1));
        } finally {
            lock.unlock();
        }
        assertFalse(kernel.misuses().isEmpty());
    }

    @Test
    void timersFireInDeadlineOrderAndCancelledOnesDoNot() {
        List<String> fired = new java.util.concurrent.CopyOnWriteArrayList<>();
        Completion last = new Completion("last");
        // Wide gaps, and the cancel right after its add: a test thread descheduled for a few ms on
        // a busy machine must not let the cancelled timer fire first or reorder early and late.
        // Its deadline lies before late's, so if the cancel did not take, it would fire before late.
        kernel.scheduler().addTimer(400_000_000L, "late", () -> {
            fired.add("late");
            last.complete();
        });
        Timer cancelled = kernel.scheduler().addTimer(200_000_000L, "cancelled", () -> fired.add("cancelled"));
        assertTrue(cancelled.cancel());
        kernel.scheduler().addTimer(1_000_000L, "early", () -> fired.add("early"));
        last.await();
        assertEquals(List.of("early", "late"), fired);
        assertFalse(cancelled.cancel(), "a cancelled timer cannot be cancelled twice");
    }

    @Test
    void timerCallbacksRunInAtomicContext() {
        AtomicReference<Boolean> mayBlock = new AtomicReference<>();
        Completion done = new Completion("done");
        kernel.scheduler().addTimer(0, "probe", () -> {
            mayBlock.set(Task.current().mayBlock());
            done.complete();
        });
        done.await();
        assertFalse(mayBlock.get());
    }

    @Test
    void noioScopesNest() {
        Task t = self.task();
        assertFalse(t.inNoio());
        try (var outer = t.noio()) {
            try (var inner = t.noio()) {
                assertTrue(t.inNoio());
            }
            assertTrue(t.inNoio());
        }
        assertFalse(t.inNoio());
    }

    @Test
    void threadsOutsideTheKernelAreRefused() throws Exception {
        AtomicReference<Throwable> error = new AtomicReference<>();
        Thread foreign = new Thread(() -> {
            try {
                new Completion("x").complete();
            } catch (Throwable e) {
                error.set(e);
            }
        });
        foreign.start();
        foreign.join();
        assertTrue(error.get() instanceof IllegalStateException, String.valueOf(error.get()));
    }

    @Test
    void policiesParseAndRejectUnknownNames() {
        Policies p = Policies.parse(List.of("submit-order=legacy", "map-sg=in-flight"));
        assertTrue(p.isLegacy(PolicySwitch.SUBMIT_ORDER));
        assertEquals("in-flight", p.value(PolicySwitch.MAP_SG));
        assertFalse(p.isLegacy(PolicySwitch.BIOSET_RESCUER));
        assertEquals("on", p.with(PolicySwitch.BIOSET_RESCUER, "fixed").value(PolicySwitch.BIOSET_RESCUER));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Policies.parse(List.of("no-such=legacy")));
        assertTrue(e.getMessage().contains("no-such"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Policies.parse(List.of("dm-split=sideways")));
        assertTrue(e.getMessage().contains("sideways"), e.getMessage());
    }

    @Test
    void watchdogReportsATaskStuckOnOneWait() {
        // A task waits on a completion nobody completes; a watchdog with a 50 ms threshold on a
        // second kernel must report it with what it waits on. The listener signals the test.
        Completion reported = new Completion("reported");
        AtomicReference<HungTaskWatchdog.Report> report = new AtomicReference<>();
        try (Kernel watched = Kernel.builder().name("watched").memory(1 << 20)
                .watchdog(Duration.ofMillis(50), r -> {
                    report.compareAndSet(null, r);
                    reported.complete();
                }).build()) {
            Completion never = new Completion("never-completed");
            Task stuck = watched.spawn("stuck", TaskKind.USER, never::await);
            reported.await();
            assertSame(stuck, report.get().task());
            assertTrue(report.get().waitingOn().contains("never-completed"), report.get().waitingOn());
            assertTrue(report.get().describe().contains("blocked for more than"));
            never.complete();
            watched.scheduler().join(stuck);
        }
    }
}
