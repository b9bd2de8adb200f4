package io.blkstack.sim.workload;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import org.junit.jupiter.api.Test;

/** The checker's NBD-path workload: clients speaking NBD through the server's real request path. */
class NbdWorkloadTest {

    /** 4 MiB arena, as in the edges issue's hang. */
    static final long MEMORY_BYTES = 4L << 20;
    /**
     * Three clients of large reads and writes (64 KiB to 1 MiB), with every free page but 360 taken
     * after the stack is built: the stack "keeps" about two thirds of the arena, as log-writes kept
     * a quarter of it in the edges issue.
     */
    static final String SPEC = "tasks=3,ops=6,mix=write:50,read:40,flush:10,size=64k-1m,region=0-3m,flushEvery=3,"
            + "pressure=on,sparePages=360";

    static NbdWorkload workload() {
        return new NbdWorkload(k -> new MemoryDevice(k, "mem0", 4L << 20, 50_000), WorkloadSpec.parse(SPEC));
    }

    static SimConfig config(Policies policies) {
        return SimConfig.builder().memory(MEMORY_BYTES).policies(policies).build();
    }

    // Proves the NBD path runs clean under the default policies: 20 random-walk schedules of three
    // clients whose reads are checked against the reference model end OK, and each seed replays
    // to the same trace hash (the in-process pipes and the server's tasks are all on kernel waits).
    @Test
    void nbdPathRunsCleanAndReplays() {
        SimRunner runner = new SimRunner(config(Policies.defaults()));
        SimRunner.CampaignResult c = runner.campaign(7, 20, false, true, workload());
        System.out.println("nbd path, default policies: " + c.outcomes() + ", " + c.schedulesPerSecond()
                + " schedules/s, counters " + c.counters());
        if (!c.findings().isEmpty()) {
            System.out.println(c.firstFinding().summary() + "\n" + c.firstFinding().explanation());
        }
        assertEquals(0, c.findings().size(), () -> "findings: " + c.outcomes());
        assertTrue(c.counters().getOrDefault("nbd.windowed-requests", 0L) > 0,
                "no request was longer than the maximum payload the budget left: the budget never shaped a request");
        assertTrue(c.nondeterministicSeeds().isEmpty(), () -> "nondeterministic seeds " + c.nondeterministicSeeds());
    }

    // Proves the edges issue's over-commit is a checker finding on the old budget sizing
    // (nbd-budget=legacy: three quarters of the arena whatever the stack keeps): a campaign finds a
    // stall whose knot has a reader waiting for pages, and replaying its seed gives the same run.
    @Test
    void legacyBudgetOverCommitIsFound() {
        SimRunner runner = new SimRunner(config(Policies.defaults().with(PolicySwitch.NBD_BUDGET, "legacy")));
        SimRunner.CampaignResult c = runner.campaign(7, 20, true, false, workload());
        System.out.println("nbd path, nbd-budget=legacy: " + c.outcomes());
        SimResult first = c.firstFinding();
        assertTrue(first != null, () -> "no finding in " + c.outcomes());
        System.out.println(first.summary() + "\n" + first.explanation());
        assertTrue(first.outcome() == Outcome.DEADLOCK || first.outcome() == Outcome.LIVELOCK, first::summary);
        String knot = first.explanation();
        assertTrue(knot.contains("-reader") && (knot.contains("waits on page allocator")
                || knot.contains("nbd payload budget")), () -> "no NBD reader waits for pages or budget in\n" + knot);
        SimResult again = runner.runOnce(first.seed(), workload());
        assertEquals(first.outcome(), again.outcome());
        assertEquals(first.traceHash(), again.traceHash());
    }
}
