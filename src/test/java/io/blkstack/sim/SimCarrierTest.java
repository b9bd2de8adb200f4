package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.TaskKind;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A run's own carrier ({@link SimCarrier}) and campaigns of several schedules at once: both only
 * change the speed, never what a run does or what a campaign reports.
 */
class SimCarrierTest {

    /** What a campaign saw of each schedule, in the order it reported them. */
    private record Seen(long seed, Outcome outcome, long traceHash, long steps) {
        static Seen of(SimResult r) {
            return new Seen(r.seed(), r.outcome(), r.traceHash(), r.steps());
        }
    }

    private record Campaign(SimRunner.CampaignResult result, List<Seen> seen) {
    }

    private static Campaign campaign(SimConfig config, int jobs, int schedules, boolean stopAtFirst,
            Consumer<Kernel> workload) {
        List<Seen> seen = new ArrayList<>();
        SimRunner.CampaignResult c = new SimRunner(config, jobs).campaign(3, schedules, stopAtFirst, false, workload,
                r -> seen.add(Seen.of(r)));
        return new Campaign(c, seen);
    }

    // Proves the test runner opens java.lang, so the checker's tests run on the runs' own carriers
    // (the fast path; the shared pool is the fallback, tested below).
    @Test
    void runsGetTheirOwnCarrierWhereJavaLangIsOpen() {
        try (SimCarrier carrier = SimCarrier.open("t", true)) {
            assertTrue(carrier.own(), "java.lang is not opened to the tests (surefire's argLine)");
        }
        try (SimCarrier shared = SimCarrier.open("t", false)) {
            assertFalse(shared.own());
        }
    }

    // Proves the carrier changes nothing but speed: the same campaign (ABBA locks, about half the
    // schedules deadlock) on the runs' own carriers and on the JDK's shared pool reports every
    // schedule with the same outcome, trace hash and step count.
    @Test
    void ownAndSharedCarriersRunTheSameSchedules() {
        Consumer<Kernel> abba = CheckerTest.lockPair(true);
        Campaign own = campaign(SimConfig.builder().ownCarrier(true).build(), 1, 40, false, abba);
        Campaign shared = campaign(SimConfig.builder().ownCarrier(false).build(), 1, 40, false, abba);
        assertEquals(shared.seen(), own.seen());
        assertTrue(own.result().outcomes().getOrDefault(Outcome.DEADLOCK, 0) > 0, own.result().outcomes().toString());
        assertTrue(own.result().outcomes().getOrDefault(Outcome.OK, 0) > 0, own.result().outcomes().toString());
    }

    // Proves a campaign on three threads reports what one at a time reports: every schedule in
    // order with the same outcome and trace, the same totals and kept findings; and that with
    // stop-at-first it stops at the same schedule, with the same first finding.
    @Test
    void aCampaignOnSeveralThreadsReportsWhatOneAtATimeDoes() {
        Consumer<Kernel> abba = CheckerTest.lockPair(true);
        SimConfig config = SimConfig.builder().build();
        Campaign one = campaign(config, 1, 60, false, abba);
        Campaign three = campaign(config, 3, 60, false, abba);
        assertEquals(one.seen(), three.seen());
        assertEquals(60, three.seen().size());
        assertEquals(one.result().outcomes(), three.result().outcomes());
        assertEquals(one.result().steps(), three.result().steps());
        assertEquals(one.result().decisions(), three.result().decisions());
        assertEquals(one.result().findings().stream().map(SimResult::seed).toList(),
                three.result().findings().stream().map(SimResult::seed).toList());

        Campaign firstOne = campaign(config, 1, 60, true, abba);
        Campaign firstThree = campaign(config, 3, 60, true, abba);
        assertNotNull(firstOne.result().firstFinding());
        assertEquals(firstOne.result().schedules(), firstThree.result().schedules());
        assertEquals(firstOne.seen(), firstThree.seen());
        assertEquals(firstOne.result().firstFinding().seed(), firstThree.result().firstFinding().seed());
    }

    // Proves a campaign explains only the findings it may keep: in an ABBA campaign with more than
    // 16 deadlocks, the kept ones carry their knot and the later ones none; a later one replayed
    // alone is explained, with the same outcome and trace hash (the explanation only reads the run).
    @Test
    void findingsACampaignCannotKeepAreNotExplainedAndReplayTheSame() {
        Consumer<Kernel> abba = CheckerTest.lockPair(true);
        SimConfig config = SimConfig.builder().build();
        List<SimResult> deadlocks = new ArrayList<>();
        SimRunner runner = new SimRunner(config, 2);
        SimRunner.CampaignResult c = runner.campaign(3, 120, false, false, abba, r -> {
            if (r.outcome() == Outcome.DEADLOCK) {
                deadlocks.add(r);
            }
        });
        assertTrue(deadlocks.size() > SimRunner.FINDINGS_KEPT_PER_KIND + 2, "too few deadlocks: " + deadlocks.size());
        assertEquals(SimRunner.FINDINGS_KEPT_PER_KIND, c.findings().size());
        for (SimResult kept : deadlocks.subList(0, SimRunner.FINDINGS_KEPT_PER_KIND)) {
            assertTrue(kept.explanation().contains("wait-for knot"), kept.explanation());
        }
        SimResult unexplained = deadlocks.get(deadlocks.size() - 1);
        assertEquals("", unexplained.explanation());
        SimResult replay = new SimRunner(config).runOnce(unexplained.seed(), abba);
        assertEquals(Outcome.DEADLOCK, replay.outcome());
        assertEquals(unexplained.traceHash(), replay.traceHash());
        assertTrue(replay.explanation().contains("wait-for knot"), replay.explanation());
    }

    // Proves a schedule that fails outside the run (here its trace file cannot be written) ends a
    // campaign on several threads with that failure, instead of leaving the caller waiting for the
    // schedule's result or the other workers waiting for room.
    @Test
    @Timeout(60)
    void aFailingScheduleEndsAParallelCampaignWithItsError(@TempDir Path dir) {
        SimConfig config = SimConfig.builder().traceFile(dir.resolve("no-such-dir").resolve("trace.json")).build();
        UncheckedIOException e = assertThrows(UncheckedIOException.class,
                () -> new SimRunner(config, 3).campaign(3, 50, false, false, CheckerTest.lockPair(true)));
        assertTrue(e.getMessage().contains("cannot write trace"), e.getMessage());
    }

    // Proves PCT with a learned bound stays one at a time (each schedule's bound depends on the runs
    // before it), and with a fixed bound runs on the threads asked for.
    @Test
    void pctRunsInParallelOnlyWithAFixedBound() {
        SimConfig learned = SimConfig.builder().strategy("pct:3").build();
        assertEquals(1, new SimRunner(learned, 4).parallelJobs());
        assertEquals(4, new SimRunner(learned.withPctStepBound(50), 4).parallelJobs());
        assertEquals(4, new SimRunner(SimConfig.builder().build(), 4).parallelJobs());
    }

    // Proves the rescue carrier: a task that spins without reaching a scheduling point holds the
    // run's only carrier, so the controller could never run; the watchdog starts a second carrier,
    // the run ends as uncontrolled blocking naming the task, and teardown unwinds it (the spin
    // ends when the task is interrupted) with no thread left behind. Without the rescue the run
    // never ends (the timeout turns that into a failure).
    @Test
    @Timeout(60)
    void aTaskSpinningOnTheRunsOnlyCarrierIsReportedAndTornDown() {
        SimConfig config = SimConfig.builder().uncontrolledBlockingNanos(200_000_000L).build();
        SimResult r = new SimRunner(config).runOnce(1, k -> k.spawn("spinner", TaskKind.USER, () -> {
            while (!Thread.currentThread().isInterrupted()) {
                Thread.onSpinWait();
            }
        }));
        assertEquals(Outcome.UNCONTROLLED_BLOCKING, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("spinner"), r.explanation());
        assertEquals(0, r.leakedThreads());
    }
}
